//! [`ReplicaImage`]: a replica snapshot image held in two parts, so that
//! taking a snapshot never copies the state machine's image.

use bytes::Bytes;
use serde::Serialize;

use crate::machine::DeferredSnapshot;

/// A replica snapshot image (see [`crate::Replica::snapshot`]) in two parts:
/// `head` holds the format version and the encoded replica state (sessions,
/// results, events, timers, clock); then comes the state machine's image,
/// behind its length. Written one after the other they are the snapshot's
/// bytes, so the image is produced in one pass and the largest part is never
/// copied. The state machine's part may be deferred (see
/// [`crate::StateMachine::deferred_snapshot`]): it is then encoded by
/// [`resolve`](Self::resolve), on whatever thread writes the snapshot.
pub struct ReplicaImage {
    head: Vec<u8>,
    machine: Machine,
}

enum Machine {
    Ready { length: Vec<u8>, image: Bytes },
    Deferred(DeferredSnapshot),
}

impl std::fmt::Debug for ReplicaImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let machine = match &self.machine {
            Machine::Ready { image, .. } => format!("{} bytes", image.len()),
            Machine::Deferred(_) => "deferred".to_string(),
        };
        f.debug_struct("ReplicaImage")
            .field("head", &self.head.len())
            .field("machine", &machine)
            .finish()
    }
}

impl ReplicaImage {
    /// Encode `state` after `version`, then the length of `machine`, as
    /// postcard encodes a struct of the state and the machine image.
    pub(crate) fn encode<S: Serialize>(version: u8, state: &S, machine: Bytes) -> Self {
        let mut image = Self::deferred(version, state, Box::new(Bytes::new));
        image.machine = ready(machine);
        image
    }

    /// Encode `state` after `version`; the machine image comes from
    /// `machine` when the image is [resolved](Self::resolve).
    pub(crate) fn deferred<S: Serialize>(
        version: u8,
        state: &S,
        machine: DeferredSnapshot,
    ) -> Self {
        let head = postcard::to_extend(state, vec![version]).expect("replica state serializes");
        Self {
            head,
            machine: Machine::Deferred(machine),
        }
    }

    /// Encode a deferred state machine image now (a no-op otherwise). May
    /// take long for a large state: call it off the thread that drives
    /// Raft.
    pub fn resolve(&mut self) {
        if let Machine::Deferred(_) = &self.machine {
            let Machine::Deferred(encode) =
                std::mem::replace(&mut self.machine, ready(Bytes::new()))
            else {
                unreachable!("checked above");
            };
            self.machine = ready(encode());
        }
    }

    /// Whether the state machine's part is still to be encoded.
    pub fn is_deferred(&self) -> bool {
        matches!(self.machine, Machine::Deferred(_))
    }

    /// Bytes of the whole image (resolving it first).
    pub fn len(&mut self) -> u64 {
        self.parts().iter().map(|p| p.len() as u64).sum()
    }

    /// Whether the image has no bytes (never: it holds at least its
    /// version).
    pub fn is_empty(&mut self) -> bool {
        self.len() == 0
    }

    /// The parts, in the order they are written (resolving first).
    pub fn parts(&mut self) -> [&[u8]; 3] {
        self.resolve();
        match &self.machine {
            Machine::Ready { length, image } => [&self.head, length, image],
            Machine::Deferred(_) => unreachable!("resolved above"),
        }
    }

    /// The whole image in one buffer (a copy).
    pub fn to_bytes(mut self) -> Bytes {
        Bytes::from(self.parts().concat())
    }
}

/// A resolved machine image with its postcard length prefix (`Bytes`
/// serializes as a varint length, then the bytes; a `u64` is the same
/// varint).
fn ready(image: Bytes) -> Machine {
    let length = postcard::to_allocvec(&(image.len() as u64)).expect("a length serializes");
    Machine::Ready { length, image }
}

#[cfg(test)]
mod tests {
    use serde::Serialize;

    use super::*;

    #[derive(Serialize)]
    struct Whole {
        state: (u32, String),
        machine: Bytes,
    }

    #[test]
    fn parts_are_the_encoding_of_state_and_machine_image_together() {
        let state = (7u32, "sessions".to_string());
        for len in [0usize, 1, 127, 128, 300, 70_000] {
            let machine = Bytes::from((0..len).map(|i| i as u8).collect::<Vec<u8>>());
            let mut image = ReplicaImage::encode(1, &state, machine.clone());
            let deferred_machine = machine.clone();
            let mut deferred =
                ReplicaImage::deferred(1, &state, Box::new(move || deferred_machine));
            assert!(deferred.is_deferred());
            assert_eq!(deferred.parts().concat(), image.parts().concat());
            let mut expected = vec![1u8];
            expected.extend(
                postcard::to_allocvec(&Whole {
                    state: state.clone(),
                    machine,
                })
                .expect("encode"),
            );
            assert_eq!(image.len(), expected.len() as u64);
            assert_eq!(image.parts().concat(), expected);
            assert!(!image.is_empty());
            assert_eq!(image.to_bytes(), expected, "machine image of {len} bytes");
        }
    }
}
