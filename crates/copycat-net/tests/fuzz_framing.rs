//! Fuzzing the frame reader: random byte streams cut at random points,
//! valid streams with bytes flipped, inserted, deleted or cut off. The
//! reader never panics, agrees with a plain reference parser, and never
//! reserves memory for bytes that have not arrived (beyond
//! `FRAME_READ_AHEAD_BYTES`).
//!
//! Case counts are small so the file runs in about a second under
//! `cargo test`; `PROPTEST_CASES=100000 cargo test -p copycat-net --test
//! fuzz_framing` runs longer.

use bytes::{Bytes, BytesMut};
use copycat_net::{framed, FrameCodec, FRAME_READ_AHEAD_BYTES};
use copycat_proto::MAX_FRAME_BYTES;
use futures_util::{FutureExt, StreamExt};
use proptest::prelude::*;
use tokio::io::AsyncWriteExt;
use tokio_util::codec::{Decoder, Encoder};

fn config(default_cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// What a stream of bytes means: the complete frames at its start, then
/// either the end (`Ok`, possibly with an incomplete frame pending) or a
/// length over the limit (`Err`).
fn reference(stream: &[u8]) -> (Vec<Vec<u8>>, bool) {
    let mut frames = Vec::new();
    let mut rest = stream;
    while rest.len() >= 4 {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        if len > MAX_FRAME_BYTES {
            return (frames, true);
        }
        if rest.len() < 4 + len {
            break;
        }
        frames.push(rest[4..4 + len].to_vec());
        rest = &rest[4 + len..];
    }
    (frames, false)
}

/// Feed `stream` to the codec in pieces cut at `cuts`, as a socket would
/// deliver it; returns the frames decoded and whether it stopped on an
/// error. Checks after every step that the buffer holds no more room than
/// twice the bytes received plus the read-ahead bound (a growing buffer
/// doubles).
fn decode_in_pieces(stream: &[u8], cuts: &[usize]) -> (Vec<Vec<u8>>, bool) {
    let mut codec = FrameCodec;
    let mut buffer = BytesMut::new();
    let mut frames = Vec::new();
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    points.push(stream.len());
    points.sort_unstable();
    let mut from = 0;
    for to in points {
        buffer.extend_from_slice(&stream[from..to]);
        from = to;
        loop {
            match codec.decode(&mut buffer) {
                Ok(Some(frame)) => frames.push(frame.to_vec()),
                Ok(None) => break,
                Err(_) => return (frames, true),
            }
        }
        assert!(
            buffer.capacity() <= 2 * (to + FRAME_READ_AHEAD_BYTES),
            "reserved {} bytes after receiving {}",
            buffer.capacity(),
            to
        );
    }
    (frames, false)
}

/// A valid stream of frames.
fn frames() -> impl Strategy<Value = Vec<Vec<u8>>> {
    proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..6)
}

fn encode(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut codec = FrameCodec;
    let mut out = BytesMut::new();
    for frame in frames {
        codec
            .encode(Bytes::copy_from_slice(frame), &mut out)
            .unwrap();
    }
    out.to_vec()
}

#[derive(Clone, Debug)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Truncate(usize),
    /// Overwrite four bytes with a big-endian length.
    Length(usize, u32),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1..=u8::MAX).prop_map(|(at, bits)| Edit::Flip(at, bits)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Edit::Insert(at, byte)),
        any::<usize>().prop_map(Edit::Delete),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), any::<u32>()).prop_map(|(at, len)| Edit::Length(at, len)),
    ]
}

fn mutate(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        let len = bytes.len();
        match *edit {
            Edit::Flip(at, bits) if len > 0 => bytes[at % len] ^= bits,
            Edit::Insert(at, byte) => bytes.insert(at % (len + 1), byte),
            Edit::Delete(at) if len > 0 => {
                bytes.remove(at % len);
            }
            Edit::Truncate(at) => bytes.truncate(at % (len + 1)),
            Edit::Length(at, value) if len >= 4 => {
                let at = at % (len - 3);
                bytes[at..at + 4].copy_from_slice(&value.to_be_bytes());
            }
            _ => {}
        }
    }
    bytes
}

proptest! {
    #![proptest_config(config(8192))]

    #[test]
    fn random_streams_decode_as_the_reference_says(
        stream in proptest::collection::vec(any::<u8>(), 0..256),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        prop_assert_eq!(decode_in_pieces(&stream, &cuts), reference(&stream));
    }

    #[test]
    fn valid_streams_round_trip_however_they_are_cut(
        frames in frames(),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let stream = encode(&frames);
        prop_assert_eq!(decode_in_pieces(&stream, &cuts), (frames, false));
    }

    #[test]
    fn mutated_streams_decode_as_the_reference_says(
        frames in frames(),
        edits in proptest::collection::vec(edit(), 1..5),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let stream = mutate(encode(&frames), &edits);
        prop_assert_eq!(decode_in_pieces(&stream, &cuts), reference(&stream));
    }
}

#[test]
fn a_declared_length_alone_reserves_only_the_read_ahead() {
    let mut codec = FrameCodec;
    let mut buffer = BytesMut::new();
    buffer.extend_from_slice(&(MAX_FRAME_BYTES as u32).to_be_bytes());
    buffer.extend_from_slice(b"a little");
    assert!(codec.decode(&mut buffer).unwrap().is_none());
    assert!(
        buffer.capacity() <= FRAME_READ_AHEAD_BYTES + 64,
        "a 12-byte input reserved {} bytes",
        buffer.capacity()
    );
}

#[test]
fn a_socket_declaring_a_huge_frame_does_not_make_the_reader_reserve_it() {
    // The same through `framed`, as the server reads a connection.
    let (mut peer, ours) = tokio::io::duplex(1 << 16);
    let mut framed = framed(ours);
    peer.write_all(&(MAX_FRAME_BYTES as u32).to_be_bytes())
        .now_or_never()
        .expect("the duplex buffer takes 4 bytes")
        .unwrap();
    peer.write_all(&[7; 100]).now_or_never().unwrap().unwrap();
    assert!(
        framed.next().now_or_never().is_none(),
        "no frame is complete"
    );
    assert!(
        framed.read_buffer().capacity() <= 2 * FRAME_READ_AHEAD_BYTES,
        "104 bytes received, {} reserved",
        framed.read_buffer().capacity()
    );
}

#[test]
fn frames_over_the_limit_are_refused_both_ways() {
    let mut codec = FrameCodec;
    let mut buffer = BytesMut::from(&(MAX_FRAME_BYTES as u32 + 1).to_be_bytes()[..]);
    let error = codec.decode(&mut buffer).unwrap_err();
    assert!(error.to_string().contains("exceeds the limit"), "{error}");
    let mut out = BytesMut::new();
    assert!(codec
        .encode(Bytes::from(vec![0; MAX_FRAME_BYTES + 1]), &mut out)
        .is_err());
    codec
        .encode(Bytes::from(vec![0; MAX_FRAME_BYTES]), &mut out)
        .unwrap();
}
