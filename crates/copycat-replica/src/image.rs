//! [`ReplicaImage`]: a replica snapshot image held in two parts, so that
//! taking a snapshot never copies the state machine's image.

use bytes::Bytes;
use serde::Serialize;

/// A replica snapshot image (see [`crate::Replica::snapshot`]) in two parts:
/// `head` holds the format version, the encoded replica state (sessions,
/// results, events, timers, clock) and the length prefix of the state
/// machine's image; `machine` is that image, as the state machine returned
/// it. Written one after the other they are the snapshot's bytes, so the
/// image is produced in one pass and the largest part is never copied.
#[derive(Clone, Debug)]
pub struct ReplicaImage {
    head: Vec<u8>,
    machine: Bytes,
}

impl ReplicaImage {
    /// Encode `state` after `version`, then the length of `machine`, as
    /// postcard encodes a struct of the state and the machine image.
    pub(crate) fn encode<S: Serialize>(version: u8, state: &S, machine: Bytes) -> Self {
        let head = postcard::to_extend(state, vec![version]).expect("replica state serializes");
        // `Bytes` serializes as postcard bytes: a varint length, then the
        // bytes; a `u64` is the same varint.
        let head = postcard::to_extend(&(machine.len() as u64), head).expect("a length serializes");
        Self { head, machine }
    }

    /// Bytes of the whole image.
    pub fn len(&self) -> u64 {
        (self.head.len() + self.machine.len()) as u64
    }

    /// Whether the image has no bytes (never: it holds at least its
    /// version).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The two parts, in the order they are written.
    pub fn parts(&self) -> [&[u8]; 2] {
        [&self.head, &self.machine]
    }

    /// The whole image in one buffer (a copy).
    pub fn to_bytes(&self) -> Bytes {
        let mut out = Vec::with_capacity(self.head.len() + self.machine.len());
        out.extend_from_slice(&self.head);
        out.extend_from_slice(&self.machine);
        Bytes::from(out)
    }
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
            let image = ReplicaImage::encode(1, &state, machine.clone());
            let mut expected = vec![1u8];
            expected.extend(
                postcard::to_allocvec(&Whole {
                    state: state.clone(),
                    machine,
                })
                .expect("encode"),
            );
            assert_eq!(image.to_bytes(), expected, "machine image of {len} bytes");
            assert_eq!(image.len(), expected.len() as u64);
            assert_eq!(image.parts().concat(), expected);
            assert!(!image.is_empty());
        }
    }
}
