//! Decoding allocates in proportion to the input, never by a declared
//! length: a counting global allocator (this test binary only) measures
//! the peak heap use of each decode on the decoding thread, and every
//! decoder reachable from a socket or a log entry must stay under
//! `RATIO × input + SLACK` bytes, for random bytes, mutated valid
//! encodings, and crafted frames whose sequence lengths claim far more
//! elements than the input holds.
//!
//! Postcard sizes a `Vec`'s first allocation by the declared length only
//! when that many bytes remain in the input (and serde caps it at 1 MiB),
//! so a 10-byte frame claiming 2^60 events reserves nothing. The control
//! test below shows the meter catches a decoder that does trust the
//! declared length.
//!
//! `RATIO` is not 1: a decoded message is bigger in memory than on the
//! wire (a 3-byte no-op entry becomes a 56-byte `Entry`).
//!
//! `PROPTEST_CASES=100000 cargo test -p copycat-proto --test fuzz_alloc`
//! runs longer.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use copycat_proto::{
    decode_frame, ClientRequest, Hello, LogCommand, ServerHello, ServerMessage, FORMAT_VERSION,
};
use copycat_raft::Message;
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use support::*;

/// Bytes of heap per byte of input a decode may use at its peak.
const RATIO: usize = 64;
/// Heap a decode may use whatever its input (error strings and the like).
const SLACK: usize = 4096;

struct Counting;

thread_local! {
    static CURRENT: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn grew(bytes: usize) {
    let _ = CURRENT.try_with(|current| {
        let now = current.get() + bytes as isize;
        current.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

fn shrank(bytes: usize) {
    let _ = CURRENT.try_with(|current| current.set(current.get() - bytes as isize));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrank(layout.size());
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Both blocks exist while the old one is copied.
        grew(new_size);
        let moved = System.realloc(ptr, layout, new_size);
        shrank(layout.size());
        moved
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The peak heap use of this thread while `f` runs, above what it used
/// before.
fn peak_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let base = CURRENT.with(Cell::get);
    PEAK.with(|peak| peak.set(base));
    let result = f();
    let peak = PEAK.with(Cell::get);
    (result, (peak - base).max(0) as usize)
}

fn bounded<T: DeserializeOwned>(bytes: &[u8]) -> Result<(), TestCaseError> {
    let (decoded, peak) = peak_during(|| decode_frame::<T>(bytes).is_ok());
    prop_assert!(
        peak <= RATIO * bytes.len() + SLACK,
        "decoding {} bytes as {} (ok: {}) peaked at {} bytes of heap",
        bytes.len(),
        std::any::type_name::<T>(),
        decoded,
        peak
    );
    Ok(())
}

fn all_bounded(bytes: &[u8]) -> Result<(), TestCaseError> {
    bounded::<Hello>(bytes)?;
    bounded::<ServerHello>(bytes)?;
    bounded::<ClientRequest>(bytes)?;
    bounded::<ServerMessage>(bytes)?;
    bounded::<LogCommand>(bytes)?;
    bounded::<Message>(bytes)
}

proptest! {
    #![proptest_config(config(4096))]

    #[test]
    fn random_bytes_allocate_in_proportion(bytes in garbage()) {
        all_bounded(&bytes)?;
    }

    #[test]
    fn mutated_messages_allocate_in_proportion(
        server in server_hello(),
        request in client_request(),
        message in server_message(),
        command in log_command(),
        peer in peer_message(),
        edits in edits(),
    ) {
        for valid in [encoded(&server), encoded(&request), encoded(&message), encoded(&command), encoded(&peer)] {
            all_bounded(&valid)?;
            all_bounded(&mutate(valid, &edits))?;
        }
    }
}

/// A frame: the version byte, then the parts.
fn frame(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = vec![FORMAT_VERSION];
    for part in parts {
        out.extend_from_slice(part);
    }
    out
}

/// Every sequence length a crafted frame claims.
const CLAIMS: [u64; 5] = [1 << 16, 1 << 20, u32::MAX as u64, 1 << 40, u64::MAX >> 1];

#[test]
fn declared_lengths_beyond_the_input_reserve_nothing() {
    for claim in CLAIMS {
        let n = varint(claim);
        let frames = [
            // ServerHello { node: 1, members: [claim elements] }
            ("server hello members", frame(&[&[1], &n, &[1, 2, 3]])),
            // ServerMessage::Events(EventBatch { session 1, index 2, previous 1, events })
            ("event batch", frame(&[&[1, 1, 2, 1], &n, &[1, b'x', 0]])),
            // An event name or payload of `claim` bytes.
            ("event name", frame(&[&[1, 1, 2, 1, 1], &n, b"abc"])),
            // ClientRequest { id 1, Command { session 1, sequence 1, acked 0, payload } }
            ("command payload", frame(&[&[1, 3, 1, 1, 0], &n, b"abc"])),
            // Message { from 1, to 2, term 1, Append { prev 0, 0, entries } }
            (
                "append entries",
                frame(&[&[1, 2, 1, 4, 0, 0], &n, &[1, 1, 0]]),
            ),
            // Message ReserveHeartbeat { commit 0, config members }
            ("configuration", frame(&[&[1, 2, 1, 8, 0], &n, &[1, 0]])),
            // LogCommand { timestamp 5, Command { 1, 1, 0, payload } }
            (
                "log command payload",
                frame(&[&[5, 3, 1, 1, 0], &n, b"abc"]),
            ),
        ];
        for (what, bytes) in frames {
            let ((), peak) = peak_during(|| {
                let _ = decode_frame::<ServerHello>(&bytes);
                let _ = decode_frame::<ServerMessage>(&bytes);
                let _ = decode_frame::<ClientRequest>(&bytes);
                let _ = decode_frame::<Message>(&bytes);
                let _ = decode_frame::<LogCommand>(&bytes);
            });
            assert!(
                peak <= RATIO * bytes.len() + SLACK,
                "{what} claiming {claim} elements in {} bytes peaked at {peak} bytes",
                bytes.len()
            );
        }
    }
}

/// A postcard input that hides how many bytes remain, as a streaming
/// reader would: postcard then passes the declared length on as the size
/// hint, and serde preallocates by it (up to 1 MiB).
struct Unsized<'de>(&'de [u8]);

impl<'de> postcard::de_flavors::Flavor<'de> for Unsized<'de> {
    type Remainder = ();
    type Source = ();

    fn pop(&mut self) -> postcard::Result<u8> {
        let (&first, rest) = self
            .0
            .split_first()
            .ok_or(postcard::Error::DeserializeUnexpectedEnd)?;
        self.0 = rest;
        Ok(first)
    }

    fn try_take_n(&mut self, ct: usize) -> postcard::Result<&'de [u8]> {
        if ct > self.0.len() {
            return Err(postcard::Error::DeserializeUnexpectedEnd);
        }
        let (taken, rest) = self.0.split_at(ct);
        self.0 = rest;
        Ok(taken)
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

#[test]
fn control_the_meter_catches_a_decoder_that_trusts_declared_lengths() {
    let bytes = frame(&[&[1, 1, 2, 1], &varint(u32::MAX as u64), &[1, b'x', 0]]);
    let ((), peak) = peak_during(|| {
        let mut deserializer = postcard::Deserializer::from_flavor(Unsized(&bytes[1..]));
        let decoded: Result<ServerMessage, _> = serde::Deserialize::deserialize(&mut deserializer);
        assert!(decoded.is_err());
    });
    assert!(
        peak > RATIO * bytes.len() + SLACK,
        "the meter saw only {peak} bytes for a preallocating decode"
    );
    // And through the real decoder, the same bytes stay small.
    let ((), peak) = peak_during(|| assert!(decode_frame::<ServerMessage>(&bytes).is_err()));
    assert!(peak <= SLACK, "{peak}");
}
