//! Fuzzing every frame decoder a socket or a log entry reaches:
//! `Hello`, `ServerHello`, `ClientRequest`, `ServerMessage`, `LogCommand`
//! (log entry bodies) and `copycat_raft::Message` (peer frames, decoded by
//! the server with the same `decode_frame`). Each gets random bytes and
//! mutated valid encodings (bytes flipped, inserted, deleted, cut off, or
//! a huge varint written in); decoding must never panic, and whatever
//! decodes must be no bigger than its input and survive a round trip.
//!
//! Case counts keep the file at a few seconds under `cargo test`; run
//! longer with `PROPTEST_CASES=100000 cargo test -p copycat-proto --test
//! fuzz_frames`.

mod support;

use copycat_proto::{decode_frame, ClientRequest, Hello, LogCommand, ServerHello, ServerMessage};
use copycat_raft::Message;
use proptest::prelude::*;
use support::*;

proptest! {
    #![proptest_config(config(8192))]

    #[test]
    fn random_bytes_never_panic_any_decoder(bytes in garbage()) {
        check::<Hello>(&bytes)?;
        check::<ServerHello>(&bytes)?;
        check::<ClientRequest>(&bytes)?;
        check::<ServerMessage>(&bytes)?;
        check::<LogCommand>(&bytes)?;
        check::<Message>(&bytes)?;
    }

    #[test]
    fn mutated_hellos(hello in hello(), server in server_hello(), edits in edits()) {
        prop_assert_eq!(decode_frame::<Hello>(&encoded(&hello)), Ok(hello.clone()));
        prop_assert_eq!(decode_frame::<ServerHello>(&encoded(&server)), Ok(server.clone()));
        check::<Hello>(&mutate(encoded(&hello), &edits))?;
        check::<ServerHello>(&mutate(encoded(&server), &edits))?;
    }

    #[test]
    fn mutated_client_requests(request in client_request(), edits in edits()) {
        prop_assert_eq!(decode_frame::<ClientRequest>(&encoded(&request)), Ok(request.clone()));
        check::<ClientRequest>(&mutate(encoded(&request), &edits))?;
    }

    #[test]
    fn mutated_server_messages(message in server_message(), edits in edits()) {
        prop_assert_eq!(decode_frame::<ServerMessage>(&encoded(&message)), Ok(message.clone()));
        check::<ServerMessage>(&mutate(encoded(&message), &edits))?;
    }

    #[test]
    fn mutated_log_entry_bodies(command in log_command(), edits in edits()) {
        prop_assert_eq!(LogCommand::decode(&command.encode()), Ok(command.clone()));
        let bytes = mutate(command.encode().to_vec(), &edits);
        check::<LogCommand>(&bytes)?;
        if let Ok(decoded) = LogCommand::decode(&bytes) {
            prop_assert_eq!(decode_frame::<LogCommand>(&bytes), Ok(decoded));
        }
    }

    #[test]
    fn mutated_peer_messages(message in peer_message(), edits in edits()) {
        prop_assert_eq!(decode_frame::<Message>(&encoded(&message)), Ok(message.clone()));
        check::<Message>(&mutate(encoded(&message), &edits))?;
    }
}
