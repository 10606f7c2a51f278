//! A state machine that defers its snapshot: the image is frozen when the
//! snapshot is taken and encoded later, off the thread that drives Raft,
//! and it equals what `snapshot` gave at that point.

use std::sync::Arc;

use bytes::Bytes;
use copycat_proto::{ClientId, LogBody, LogCommand, Sequence, SessionId};
use copycat_replica::testing::command_entry;
use copycat_replica::{
    codec, ApplyContext, DeferredSnapshot, QueryContext, Replica, ReplicaConfig, RestoreError,
    StateMachine, Typed,
};

/// A log of numbers behind an `Arc`: a snapshot clones the `Arc`, a later
/// command copies on write.
#[derive(Default)]
struct Numbers(Arc<Vec<u64>>);

impl StateMachine for Numbers {
    type Command = u64;
    type Query = ();
    type Output = usize;
    type Error = String;

    fn apply(&mut self, _ctx: &mut ApplyContext<'_>, n: u64) -> Result<usize, String> {
        Arc::make_mut(&mut self.0).push(n);
        Ok(self.0.len())
    }

    fn query(&self, _ctx: &QueryContext, (): ()) -> Result<usize, String> {
        Ok(self.0.len())
    }

    fn snapshot(&self) -> Bytes {
        codec::encode(&*self.0)
    }

    fn deferred_snapshot(&self) -> Option<DeferredSnapshot> {
        let frozen = Arc::clone(&self.0);
        Some(Box::new(move || codec::encode(&*frozen)))
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), RestoreError> {
        self.0 = Arc::new(codec::decode(data).map_err(|e| RestoreError(e.to_string()))?);
        Ok(())
    }
}

fn apply(replica: &mut Replica<Typed<Numbers>>, index: u64, body: LogBody) {
    let data = LogCommand {
        timestamp_ms: index * 10,
        body,
    }
    .encode();
    replica.apply(&command_entry(index, data));
}

#[test]
fn a_deferred_image_is_frozen_when_taken_and_encoded_later() {
    let mut replica =
        Replica::new(ReplicaConfig::default(), Typed(Numbers::default())).expect("replica");
    let register = LogBody::Register {
        client: ClientId(1),
        timeout_ms: 5_000,
    };
    apply(&mut replica, 1, register);
    let session = SessionId(1);
    let command = |sequence: u64| LogBody::Command {
        session,
        sequence: Sequence(sequence),
        acked: Sequence(sequence - 1),
        payload: codec::encode(&(sequence * 7)),
    };
    for sequence in 1..=5 {
        apply(&mut replica, sequence + 1, command(sequence));
    }
    let expected = replica.snapshot();
    let mut image = replica.image();
    assert!(image.is_deferred(), "the machine's part waits");

    // The replica moves on before the image is encoded (on another thread).
    for sequence in 6..=9 {
        apply(&mut replica, sequence + 1, command(sequence));
    }
    let encoded = std::thread::spawn(move || {
        image.resolve();
        image.to_bytes()
    })
    .join()
    .expect("encoded");
    assert_eq!(encoded, expected, "the image as it was when taken");

    let mut restored =
        Replica::new(ReplicaConfig::default(), Typed(Numbers::default())).expect("replica");
    restored.restore(&encoded).expect("restores");
    assert_eq!(*restored.machine().0 .0, vec![7, 14, 21, 28, 35]);
    assert_eq!(replica.machine().0 .0.len(), 9);
}
