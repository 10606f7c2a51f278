//! Unit tests of the client session core, one per rule of the module docs.

use bytes::Bytes;
use copycat_proto::{
    ClientError, ClientId, CommandFailure, Consistency, Event, EventBatch, EventIndex, Request,
    RequestId, Response, Sequence, ServerMessage, SessionId,
};

use super::*;

fn config() -> ClientConfig {
    ClientConfig {
        session_timeout_ms: 1_000,
        request_timeout_ms: 500,
        backoff_ms: vec![100, 100, 200, 300, 500],
        ..ClientConfig::new(ClientId(42))
    }
}

/// The requests among the outputs, as (server, id, request).
fn sends(outputs: &[ClientOutput]) -> Vec<(ServerId, RequestId, Request)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            ClientOutput::Send { server, request } => {
                Some((*server, request.id, request.request.clone()))
            }
            _ => None,
        })
        .collect()
}

fn command_sends(outputs: &[ClientOutput]) -> Vec<(RequestId, u64)> {
    sends(outputs)
        .into_iter()
        .filter_map(|(_, id, r)| match r {
            Request::Command { sequence, .. } => Some((id, sequence.0)),
            _ => None,
        })
        .collect()
}

fn respond(
    client: &mut ClientSession,
    server: ServerId,
    id: RequestId,
    result: Result<Response, ClientError>,
) {
    client.on_message(server, ServerMessage::Response { id, result });
}

fn command_ok(
    sequence: u64,
    index: u64,
    event_index: u64,
    output: &'static [u8],
) -> Result<Response, ClientError> {
    Ok(Response::Command {
        sequence: Sequence(sequence),
        index,
        event_index: EventIndex(event_index),
        output: Ok(Bytes::from_static(output)),
    })
}

/// A client registered as session 7 through server 1 at time 0.
fn registered(config: ClientConfig) -> ClientSession {
    let mut client = ClientSession::new(config, 0).unwrap();
    client.connected(1);
    let out = client.take_outputs();
    let (server, id, request) = sends(&out).pop().expect("register sent");
    assert_eq!(server, 1);
    assert!(matches!(
        request,
        Request::Register {
            client: ClientId(42),
            ..
        }
    ));
    respond(
        &mut client,
        1,
        id,
        Ok(Response::Registered {
            session: SessionId(7),
            timeout_ms: 1_000,
        }),
    );
    let out = client.take_outputs();
    assert!(out.contains(&ClientOutput::SessionOpened {
        session: SessionId(7),
        timeout_ms: 1_000
    }));
    client
}

fn done(outputs: &[ClientOutput]) -> Vec<(OperationId, Result<Bytes, OperationError>)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            ClientOutput::CommandDone { operation, result }
            | ClientOutput::QueryDone { operation, result } => Some((*operation, result.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn commands_submitted_before_registration_are_sequenced_after_it() {
    let mut client = ClientSession::new(config(), 0).unwrap();
    let a = client.submit_command(Bytes::from_static(b"a")).unwrap();
    let b = client.submit_command(Bytes::from_static(b"b")).unwrap();
    assert!(client.take_outputs().is_empty(), "no server yet");
    client.connected(1);
    let (_, id, _) = sends(&client.take_outputs()).pop().unwrap();
    respond(
        &mut client,
        1,
        id,
        Ok(Response::Registered {
            session: SessionId(7),
            timeout_ms: 1_000,
        }),
    );
    let out = client.take_outputs();
    let commands = command_sends(&out);
    assert_eq!(commands.iter().map(|c| c.1).collect::<Vec<_>>(), [1, 2]);
    // Answers out of order are handed over in order.
    respond(&mut client, 1, commands[1].0, command_ok(2, 11, 0, b"B"));
    assert!(done(&client.take_outputs()).is_empty(), "2 waits for 1");
    respond(&mut client, 1, commands[0].0, command_ok(1, 10, 0, b"A"));
    assert_eq!(
        done(&client.take_outputs()),
        vec![
            (a, Ok(Bytes::from_static(b"A"))),
            (b, Ok(Bytes::from_static(b"B")))
        ]
    );
    // Late duplicate answers are ignored.
    respond(&mut client, 1, commands[0].0, command_ok(1, 10, 0, b"A"));
    assert!(client.take_outputs().is_empty());
}

// Reference: docs/semantics.md "a gap is rejected with the last sequence seen
// and the client resends from there" (and the original's live-lock: resend
// each lost command once per gap, not once per gap response).
#[test]
fn a_gap_resends_the_missing_commands_once_with_the_same_sequences() {
    let mut client = registered(config());
    for payload in ["1", "2", "3"] {
        client.submit_command(Bytes::from(payload)).unwrap();
    }
    let sent = command_sends(&client.take_outputs());
    assert_eq!(sent.len(), 3);
    // Command 1 was lost; 2 and 3 hit gaps.
    let gap = Err(ClientError::CommandGap {
        last_sequence: Sequence(0),
    });
    respond(&mut client, 1, sent[1].0, gap.clone());
    let resent = command_sends(&client.take_outputs());
    assert_eq!(resent.iter().map(|c| c.1).collect::<Vec<_>>(), [1, 2]);
    respond(&mut client, 1, sent[2].0, gap);
    let resent_again = command_sends(&client.take_outputs());
    assert_eq!(
        resent_again.iter().map(|c| c.1).collect::<Vec<_>>(),
        [3],
        "1 and 2 are already resent"
    );
    // The original request of 1 is no longer awaited.
    respond(&mut client, 1, sent[0].0, command_ok(1, 5, 0, b"x"));
    assert!(done(&client.take_outputs()).is_empty());
}

#[test]
fn a_disconnect_resends_in_flight_commands_elsewhere_with_the_same_sequences() {
    let mut client = registered(config());
    client.connected(2);
    client.take_outputs();
    let op = client.submit_command(Bytes::from_static(b"x")).unwrap();
    let out = client.take_outputs();
    assert_eq!(sends(&out)[0].0, 1);
    client.disconnected(1);
    let out = client.take_outputs();
    let (server, id, request) = sends(&out)
        .into_iter()
        .find(|s| matches!(s.2, Request::Command { .. }))
        .unwrap();
    assert_eq!(server, 2);
    assert!(matches!(
        request,
        Request::Command {
            sequence: Sequence(1),
            session: SessionId(7),
            ..
        }
    ));
    respond(&mut client, 2, id, command_ok(1, 3, 0, b"ok"));
    assert_eq!(
        done(&client.take_outputs()),
        vec![(op, Ok(Bytes::from_static(b"ok")))]
    );
}

#[test]
fn timeouts_resend_with_fibonacci_backoff() {
    let mut client = registered(ClientConfig {
        session_timeout_ms: 100_000,
        ..config()
    });
    client.submit_command(Bytes::from_static(b"x")).unwrap();
    client.take_outputs();
    // Timeout at 500, then resent after 100, 100, 200, 300, 500, 500 ms.
    let mut now = 0;
    let mut resend_times = Vec::new();
    while resend_times.len() < 6 {
        now += 10;
        client.tick(now);
        if !command_sends(&client.take_outputs()).is_empty() {
            resend_times.push(now);
        }
    }
    let gaps: Vec<u64> = resend_times.windows(2).map(|w| w[1] - w[0] - 500).collect();
    assert_eq!(resend_times[0], 600);
    assert_eq!(gaps, [100, 200, 300, 500, 500]);
}

// Reference: "Responses carry the last event index published before them,
// and the client delivers events before the response that follows them."
#[test]
fn events_are_delivered_before_the_response_that_follows_them() {
    let mut client = registered(config());
    let op = client.submit_command(Bytes::from_static(b"x")).unwrap();
    let (id, _) = command_sends(&client.take_outputs())[0];
    // The response overtakes the event published at index 9.
    respond(&mut client, 1, id, command_ok(1, 9, 9, b"r"));
    let out = client.take_outputs();
    assert!(done(&out).is_empty(), "the result waits for event 9");
    assert!(sends(&out).iter().any(|s| matches!(
        s.2,
        Request::ResetEvents {
            from_event_index: EventIndex(0),
            ..
        }
    )));
    let batch = EventBatch {
        session: SessionId(7),
        event_index: EventIndex(9),
        previous_event_index: EventIndex(0),
        events: vec![Event {
            name: "changed".into(),
            payload: Bytes::new(),
        }],
    };
    client.on_message(1, ServerMessage::Events(batch.clone()));
    let out = client.take_outputs();
    assert_eq!(
        out,
        vec![
            ClientOutput::Event {
                session: SessionId(7),
                event_index: EventIndex(9),
                event: batch.events[0].clone()
            },
            ClientOutput::CommandDone {
                operation: op,
                result: Ok(Bytes::from_static(b"r"))
            },
        ]
    );
    // The same batch again (e.g. from the reset) is not delivered twice.
    client.on_message(1, ServerMessage::Events(batch));
    assert!(client.take_outputs().is_empty());
}

#[test]
fn an_event_gap_asks_for_a_reset_and_the_resent_batches_deliver_in_order() {
    let mut client = registered(config());
    let batch = |index: u64, previous: u64| EventBatch {
        session: SessionId(7),
        event_index: EventIndex(index),
        previous_event_index: EventIndex(previous),
        events: vec![Event {
            name: format!("e{index}"),
            payload: Bytes::new(),
        }],
    };
    client.on_message(1, ServerMessage::Events(batch(3, 0)));
    client.take_outputs();
    // Batch 5 is lost; 8 arrives.
    client.on_message(1, ServerMessage::Events(batch(8, 5)));
    let out = client.take_outputs();
    let reset: Vec<_> = sends(&out)
        .into_iter()
        .filter(|s| {
            matches!(
                s.2,
                Request::ResetEvents {
                    from_event_index: EventIndex(3),
                    ..
                }
            )
        })
        .collect();
    assert_eq!(reset.len(), 1);
    assert!(!out.iter().any(|o| matches!(o, ClientOutput::Event { .. })));
    // Only one reset at a time.
    client.on_message(1, ServerMessage::Events(batch(9, 8)));
    assert!(sends(&client.take_outputs()).is_empty());
    respond(
        &mut client,
        1,
        reset[0].1,
        Ok(Response::EventsReset {
            event_index: EventIndex(8),
        }),
    );
    client.on_message(1, ServerMessage::Events(batch(5, 3)));
    client.on_message(1, ServerMessage::Events(batch(8, 5)));
    let names: Vec<String> = client
        .take_outputs()
        .into_iter()
        .filter_map(|o| match o {
            ClientOutput::Event { event, .. } => Some(event.name),
            _ => None,
        })
        .collect();
    assert_eq!(names, ["e5", "e8"]);
}

// Found by the simulator: a server that had not applied the events (a
// lagging follower, a removed server that does not know it) answered every
// reset at once, and the client asked it again, for ever.
#[test]
fn a_reset_answered_by_a_lagging_server_backs_off_and_goes_to_the_leader() {
    // Learn that 3 leads.
    let (mut client, out) = redirected_to_3(ClientConfig {
        selection: ServerSelection::Followers,
        ..config()
    });
    let (id, _) = command_sends(&out)[0];
    // The command published events up to 6; the client has none.
    respond(&mut client, 3, id, command_ok(1, 6, 6, b"ok"));
    let resets = |out: &[ClientOutput]| -> Vec<(ServerId, RequestId)> {
        sends(out)
            .into_iter()
            .filter(|s| matches!(s.2, Request::ResetEvents { .. }))
            .map(|s| (s.0, s.1))
            .collect()
    };
    let first = resets(&client.take_outputs());
    assert_eq!(first.len(), 1);
    let (server, id) = first[0];
    assert_ne!(server, 3, "followers first, by the selection");
    // That follower knows only up to 2.
    respond(
        &mut client,
        server,
        id,
        Ok(Response::EventsReset {
            event_index: EventIndex(2),
        }),
    );
    assert!(
        resets(&client.take_outputs()).is_empty(),
        "no reset at once"
    );
    client.tick(100);
    let again = resets(&client.take_outputs());
    assert_eq!(again.iter().map(|r| r.0).collect::<Vec<_>>(), [3]);
}

#[test]
fn a_reset_whose_resent_batches_never_arrive_is_retried_after_a_pause() {
    let mut client = registered(config());
    client.submit_command(Bytes::from_static(b"c1")).unwrap();
    let (id, _) = command_sends(&client.take_outputs())[0];
    // The command published events up to 6; none arrived.
    respond(&mut client, 1, id, command_ok(1, 6, 6, b"ok"));
    let resets = |out: &[ClientOutput]| -> Vec<RequestId> {
        sends(out)
            .into_iter()
            .filter(|s| matches!(s.2, Request::ResetEvents { .. }))
            .map(|s| s.1)
            .collect()
    };
    let first = resets(&client.take_outputs());
    assert_eq!(first.len(), 1);
    // The server resent them before answering, but they were lost (or left
    // with the server by a client whose application is not reading).
    let answer = Ok(Response::EventsReset {
        event_index: EventIndex(6),
    });
    respond(&mut client, 1, first[0], answer);
    assert!(
        resets(&client.take_outputs()).is_empty(),
        "no reset at once: client and server would loop"
    );
    client.tick(99);
    assert!(resets(&client.take_outputs()).is_empty());
    // A later answer that still shows the gap asks again after the pause.
    client.tick(100);
    client
        .submit_query(Bytes::from_static(b"q"), Consistency::Sequential)
        .unwrap();
    let out = client.take_outputs();
    let query = sends(&out)
        .into_iter()
        .find(|s| matches!(s.2, Request::Query { .. }))
        .map(|s| s.1);
    if let Some(query) = query {
        respond(
            &mut client,
            1,
            query,
            Ok(Response::Query {
                index: 6,
                event_index: EventIndex(6),
                output: Ok(Bytes::from_static(b"v")),
            }),
        );
    }
    let mut again = resets(&out);
    again.extend(resets(&client.take_outputs()));
    assert_eq!(again.len(), 1, "asked again once the pause is over");
}

// Reference: "Keep-alive every timeout/2, carrying the highest command
// sequence the client received in order and the highest event index".
#[test]
fn keep_alives_go_out_every_half_timeout_acknowledging_what_was_delivered() {
    let mut client = registered(config());
    client.submit_command(Bytes::from_static(b"x")).unwrap();
    let (id, _) = command_sends(&client.take_outputs())[0];
    respond(&mut client, 1, id, command_ok(1, 9, 0, b"r"));
    client.on_message(
        1,
        ServerMessage::Events(EventBatch {
            session: SessionId(7),
            event_index: EventIndex(4),
            previous_event_index: EventIndex(0),
            events: vec![],
        }),
    );
    client.take_outputs();
    let mut keep_alives = Vec::new();
    for now in (10..=2_000).step_by(10) {
        client.tick(now);
        for (server, id, request) in sends(&client.take_outputs()) {
            if let Request::KeepAlive {
                command_sequence,
                event_index,
                ..
            } = request
            {
                keep_alives.push((now, command_sequence.0, event_index.0));
                respond(
                    &mut client,
                    server,
                    id,
                    Ok(Response::KeptAlive {
                        event_index: EventIndex(4),
                    }),
                );
            }
        }
    }
    assert_eq!(
        keep_alives,
        [(500, 1, 4), (1_000, 1, 4), (1_500, 1, 4), (2_000, 1, 4)]
    );
    assert_eq!(client.state(), ClientState::Connected);
}

// Reference: client states CONNECTED, SUSPENDED, CLOSED.
#[test]
fn no_keep_alive_for_a_timeout_suspends_and_a_later_one_reconnects() {
    let mut client = registered(config());
    let mut last = None;
    for now in (10..=1_100).step_by(10) {
        client.tick(now);
        for (_, id, request) in sends(&client.take_outputs()) {
            if matches!(request, Request::KeepAlive { .. }) {
                last = Some(id);
            }
        }
    }
    assert_eq!(client.state(), ClientState::Suspended);
    respond(
        &mut client,
        1,
        last.unwrap(),
        Ok(Response::KeptAlive {
            event_index: EventIndex(0),
        }),
    );
    assert_eq!(
        client.take_outputs(),
        vec![ClientOutput::StateChanged(ClientState::Connected)]
    );
}

#[test]
fn expiry_with_close_fails_pending_operations_and_closes() {
    let mut client = registered(config());
    let op = client.submit_command(Bytes::from_static(b"x")).unwrap();
    let (id, _) = command_sends(&client.take_outputs())[0];
    respond(&mut client, 1, id, Err(ClientError::SessionExpired));
    let out = client.take_outputs();
    assert!(out.contains(&ClientOutput::StateChanged(ClientState::Closed)));
    assert_eq!(
        done(&out),
        vec![(
            op,
            Err(OperationError::Rejected(ClientError::SessionExpired))
        )]
    );
    assert_eq!(
        client.submit_command(Bytes::new()),
        Err(OperationError::Closed)
    );
    client.tick(10_000);
    assert!(
        client.take_outputs().is_empty(),
        "a closed session sends nothing"
    );
}

#[test]
fn expiry_with_recover_registers_a_new_session_and_restarts_sequences() {
    let mut client = registered(ClientConfig {
        recovery: RecoveryStrategy::Recover,
        ..config()
    });
    client.submit_command(Bytes::from_static(b"x")).unwrap();
    let (id, _) = command_sends(&client.take_outputs())[0];
    respond(&mut client, 1, id, Err(ClientError::UnknownSession));
    let out = client.take_outputs();
    assert!(out.contains(&ClientOutput::StateChanged(ClientState::Suspended)));
    let (_, register, request) = sends(&out).pop().unwrap();
    assert!(matches!(request, Request::Register { .. }));
    let next = client.submit_command(Bytes::from_static(b"y")).unwrap();
    respond(
        &mut client,
        1,
        register,
        Ok(Response::Registered {
            session: SessionId(20),
            timeout_ms: 1_000,
        }),
    );
    let out = client.take_outputs();
    assert!(out.contains(&ClientOutput::StateChanged(ClientState::Connected)));
    let sent = sends(&out);
    assert!(sent.iter().any(|s| matches!(
        s.2,
        Request::Command {
            session: SessionId(20),
            sequence: Sequence(1),
            ..
        }
    )));
    assert_eq!(client.session_id(), Some(SessionId(20)));
    let _ = next;
}

/// A client registered through server 1, connected to 1, 2 and 3, whose
/// first command server 1 redirected to 3; with the outputs after the
/// redirect.
fn redirected_to_3(config: ClientConfig) -> (ClientSession, Vec<ClientOutput>) {
    let mut client = registered(config);
    client.connected(2);
    client.connected(3);
    client.take_outputs();
    client.submit_command(Bytes::from_static(b"x")).unwrap();
    let (id, _) = command_sends(&client.take_outputs())[0];
    respond(
        &mut client,
        1,
        id,
        Err(ClientError::NotLeader { hint: Some(3) }),
    );
    let out = client.take_outputs();
    (client, out)
}

#[test]
fn not_leader_follows_the_hint_and_leader_selection_sticks_to_it() {
    let (mut client, out) = redirected_to_3(config());
    assert_eq!(
        sends(&out).into_iter().map(|s| s.0).collect::<Vec<_>>(),
        [3]
    );
    assert_eq!(client.current_server(), Some(3));
    // No hint: back off before retrying.
    let (id, _) = command_sends(&out)[0];
    respond(
        &mut client,
        3,
        id,
        Err(ClientError::NotLeader { hint: None }),
    );
    assert!(command_sends(&client.take_outputs()).is_empty());
    client.tick(100);
    assert_eq!(command_sends(&client.take_outputs()).len(), 1);
}

#[test]
fn followers_selection_avoids_the_known_leader() {
    let mut client = registered(ClientConfig {
        selection: ServerSelection::Followers,
        ..config()
    });
    client.connected(2);
    client.take_outputs();
    // Server 1 answered the registration, which only a leader does: the
    // sequential query goes to the follower.
    assert_eq!(client.leader_hint(), Some(1));
    client
        .submit_query(Bytes::from_static(b"q"), Consistency::Sequential)
        .unwrap();
    let out = client.take_outputs();
    assert_eq!(sends(&out)[0].0, 2);
}

#[test]
fn a_server_answering_a_leader_only_request_is_taken_as_the_leader() {
    let mut client = registered(config());
    client.connected(2);
    client.take_outputs();
    client.submit_command(Bytes::from_static(b"c")).unwrap();
    let (id, _) = command_sends(&client.take_outputs())[0];
    // Server 1 no longer leads and knows no leader: no hint left.
    respond(
        &mut client,
        1,
        id,
        Err(ClientError::NotLeader { hint: None }),
    );
    assert_eq!(client.leader_hint(), None);
    client.tick(100);
    let out = client.take_outputs();
    let sent = sends(&out);
    let (server, id, _) = sent
        .iter()
        .find(|s| matches!(s.2, Request::Command { .. }))
        .expect("resent")
        .clone();
    assert_eq!(server, 2);
    // Server 2 applies it: only a leader does, so it is the leader now.
    respond(&mut client, 2, id, command_ok(1, 5, 0, b"ok"));
    assert_eq!(client.leader_hint(), Some(2));
}

// Found by the simulator: with a policy other than Leader, a command
// redirected to the leader went back to a follower, for ever.
#[test]
fn leader_only_requests_follow_the_redirect_whatever_the_selection() {
    for selection in [ServerSelection::Any, ServerSelection::Followers] {
        let (mut client, out) = redirected_to_3(ClientConfig {
            selection,
            ..config()
        });
        assert_eq!(
            sends(&out).into_iter().map(|s| s.0).collect::<Vec<_>>(),
            [3],
            "{selection:?}: the command goes to the leader"
        );
        // A linearizable query too; a sequential one follows the policy.
        client
            .submit_query(Bytes::from_static(b"q"), Consistency::Linearizable)
            .unwrap();
        assert_eq!(sends(&client.take_outputs())[0].0, 3, "{selection:?}");
        if selection == ServerSelection::Followers {
            client
                .submit_query(Bytes::from_static(b"q"), Consistency::Sequential)
                .unwrap();
            assert_ne!(sends(&client.take_outputs())[0].0, 3);
        }
    }
}

// Reference: "Queries carry the last command sequence and the highest index
// the client has seen".
#[test]
fn queries_carry_the_last_sequence_and_index_and_follow_earlier_results() {
    let mut client = registered(config());
    let command = client.submit_command(Bytes::from_static(b"w")).unwrap();
    let query = client
        .submit_query(Bytes::from_static(b"r"), Consistency::Linearizable)
        .unwrap();
    let out = client.take_outputs();
    let sent = sends(&out);
    let (command_id, query_id) = (sent[0].1, sent[1].1);
    assert!(matches!(
        sent[1].2,
        Request::Query {
            sequence: Sequence(1),
            index: 0,
            ..
        }
    ));
    respond(
        &mut client,
        1,
        query_id,
        Ok(Response::Query {
            index: 12,
            event_index: EventIndex(0),
            output: Ok(Bytes::from_static(b"R")),
        }),
    );
    assert!(
        done(&client.take_outputs()).is_empty(),
        "the query waits for the command's result"
    );
    respond(&mut client, 1, command_id, command_ok(1, 11, 0, b"W"));
    assert_eq!(
        done(&client.take_outputs()),
        vec![
            (command, Ok(Bytes::from_static(b"W"))),
            (query, Ok(Bytes::from_static(b"R")))
        ]
    );
    client
        .submit_query(Bytes::from_static(b"r2"), Consistency::Sequential)
        .unwrap();
    let out = client.take_outputs();
    assert!(matches!(
        sends(&out)[0].2,
        Request::Query {
            sequence: Sequence(1),
            index: 12,
            ..
        }
    ));
}

#[test]
fn application_failures_and_local_limits_reach_the_caller() {
    let mut client = registered(ClientConfig {
        max_payload_bytes: 4,
        max_pending_operations: 2,
        ..config()
    });
    assert!(matches!(
        client.submit_command(Bytes::from_static(b"12345")),
        Err(OperationError::Refused(_))
    ));
    let op = client.submit_command(Bytes::from_static(b"1")).unwrap();
    client.submit_command(Bytes::from_static(b"2")).unwrap();
    assert!(matches!(
        client.submit_command(Bytes::from_static(b"3")),
        Err(OperationError::Refused(_))
    ));
    let (id, _) = command_sends(&client.take_outputs())[0];
    let failure = CommandFailure::Application(Bytes::from_static(b"nope"));
    respond(
        &mut client,
        1,
        id,
        Ok(Response::Command {
            sequence: Sequence(1),
            index: 3,
            event_index: EventIndex(0),
            output: Err(failure.clone()),
        }),
    );
    assert_eq!(
        done(&client.take_outputs()),
        vec![(op, Err(OperationError::Failed(failure)))]
    );
}

#[test]
fn close_unregisters_and_fails_pending_operations() {
    let mut client = registered(config());
    let op = client.submit_command(Bytes::from_static(b"x")).unwrap();
    client.take_outputs();
    client.close();
    let out = client.take_outputs();
    assert_eq!(done(&out), vec![(op, Err(OperationError::Closed))]);
    let (_, id, request) = sends(&out).pop().unwrap();
    assert_eq!(
        request,
        Request::Unregister {
            session: SessionId(7)
        }
    );
    respond(&mut client, 1, id, Ok(Response::Unregistered));
    assert_eq!(client.state(), ClientState::Closed);
}

/// `next_deadline` is never later than the next time `tick` acts: under a
/// random mix of submissions, answers, errors, disconnects and time, a tick
/// before the deadline produces nothing, so a driver that sleeps until the
/// deadline misses no work.
#[test]
fn a_tick_before_the_next_deadline_has_nothing_to_do() {
    for seed in 0..200u64 {
        let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut next = |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        // Requests time out sooner than keep-alives fall due, so the
        // deadlines of the two differ.
        let mut client = registered(ClientConfig {
            request_timeout_ms: 150,
            ..config()
        });
        client.connected(2);
        let mut now = 0u64;
        let mut in_flight: Vec<(ServerId, RequestId, Request)> = Vec::new();
        for _ in 0..200 {
            match next(8) {
                0 => {
                    let _ = client.submit_command(Bytes::from_static(b"c"));
                }
                1 => {
                    let _ =
                        client.submit_query(Bytes::from_static(b"q"), Consistency::Linearizable);
                }
                2 | 3 if !in_flight.is_empty() => {
                    let (server, id, request) =
                        in_flight.remove(next(in_flight.len() as u64) as usize);
                    let result = match (next(3), request) {
                        (0, _) => Err(ClientError::Unavailable("busy".into())),
                        (_, Request::Command { sequence, .. }) => {
                            command_ok(sequence.0, 10, 0, b"ok")
                        }
                        (_, Request::Query { .. }) => Ok(Response::Query {
                            index: 10,
                            event_index: EventIndex::ZERO,
                            output: Ok(Bytes::from_static(b"v")),
                        }),
                        (_, Request::KeepAlive { .. }) => Ok(Response::KeptAlive {
                            event_index: EventIndex::ZERO,
                        }),
                        _ => Err(ClientError::Timeout),
                    };
                    respond(&mut client, server, id, result);
                }
                4 => client.disconnected(1 + next(2)),
                5 => client.connected(1 + next(2)),
                _ => {
                    let deadline = client.next_deadline().expect("open");
                    if deadline > now + 1 {
                        // Anywhere strictly before the deadline: nothing.
                        let early = now + 1 + next(deadline - now - 1);
                        client.tick(early);
                        now = now.max(early);
                        let out = client.take_outputs();
                        assert!(
                            out.is_empty(),
                            "seed {seed}: tick at {early} before the deadline {deadline} did {out:?}"
                        );
                        // Nor did it change what waits on time.
                        assert_eq!(
                            client.next_deadline(),
                            Some(deadline),
                            "seed {seed}: tick at {early} acted before the deadline"
                        );
                    }
                    now = now.max(deadline);
                    client.tick(now);
                }
            }
            let out = client.take_outputs();
            in_flight.extend(sends(&out));
        }
    }
}

/// A request is stamped with the time it is sent at when the driver tells
/// the core the time before each input (`observe_time`), as a driver that
/// ticks only when something falls due does: the next tick does not take
/// it for one unanswered since an older time, and resends nothing.
#[test]
fn a_request_sent_between_ticks_is_stamped_with_the_time_it_is_sent_at() {
    let mut client = registered(config());
    client.tick(100);
    client.take_outputs();
    // 450 ms later, with no tick in between, a command goes out.
    client.observe_time(550);
    client.submit_command(Bytes::from_static(b"a")).unwrap();
    let sent = command_sends(&client.take_outputs());
    assert_eq!(sent.len(), 1);
    // 100 ms after it was sent (600 ms after the last tick; the resend
    // timeout is 500 ms) it is still waiting, not sent again.
    client.tick(650);
    let resent = command_sends(&client.take_outputs());
    assert!(resent.is_empty(), "resent 100 ms after sending: {resent:?}");
    // Past its own timeout it is sent again (after the backoff).
    client.tick(1_100);
    let mut resent = command_sends(&client.take_outputs());
    client.tick(1_300);
    resent.extend(command_sends(&client.take_outputs()));
    assert_eq!(resent.len(), 1, "{resent:?}");
}
