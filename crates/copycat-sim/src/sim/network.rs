//! The simulated network: per-message delay (so messages reorder), loss and
//! duplication in the safety phase, and the links cut by network faults.
//! Clients reach servers over the same kind of lossy links; a client is cut
//! from a server only by a client-cut fault, so an isolated old leader keeps
//! receiving client requests.

use copycat_proto::ServerMessage;
use copycat_raft::{Message, MessageBody};
use rand::Rng;

use super::world::{Event, Simulation};

impl Simulation {
    fn delay(&mut self) -> u64 {
        self.rng
            .gen_range(self.params.delay_min_ms..=self.params.delay_max_ms)
    }

    /// Put a peer message on the network.
    pub(super) fn send(&mut self, message: Message) {
        let (loss, duplicate) = if self.safety {
            (self.params.loss, self.params.duplicate)
        } else {
            (0.0, 0.0)
        };
        if self.rng.gen_bool(loss) {
            return;
        }
        let copies = if self.rng.gen_bool(duplicate) { 2 } else { 1 };
        for _ in 0..copies {
            let delay = self.delay();
            self.schedule(delay, Event::Deliver(message.clone()));
        }
    }

    /// A peer message arrives (unless its link is cut or its destination is
    /// down).
    pub(super) fn deliver(&mut self, message: Message) {
        let to = (message.to.0 - 1) as usize;
        let from = (message.from.0 - 1) as usize;
        if self.cuts.server_cut(from, to) || self.nodes[to].live.is_none() {
            return;
        }
        self.trace(format_args!(
            "{:?}->{:?} {} {:?}",
            message.from,
            message.to,
            message.body.kind(),
            message.term
        ));
        // A follower answered a read round: the leader may base its lease
        // on that round's send time.
        if let MessageBody::HeartbeatResponse { read_round }
        | MessageBody::AppendResponse { read_round, .. } = &message.body
        {
            let sim_node = &mut self.nodes[to];
            if let Some(sent) = sim_node.rounds.get(&(message.term, *read_round)).copied() {
                let best = sim_node
                    .answered
                    .filter(|(term, _)| *term == message.term)
                    .map(|(_, time)| time);
                if best.is_none_or(|best| sent > best) {
                    sim_node.answered = Some((message.term, sent));
                }
            }
        }
        self.nodes[to]
            .live
            .as_mut()
            .expect("live")
            .shell
            .server_mut()
            .raft_mut()
            .step(message);
        self.process_soon(to);
    }

    /// A server's message for a client connection.
    pub(super) fn send_to_client(
        &mut self,
        connection: usize,
        node: usize,
        message: ServerMessage,
    ) {
        if let ServerMessage::Response { id, result } = &message {
            if let Some(floor) = self.nodes[node].read_floors.remove(&(connection, *id)) {
                if let Ok(copycat_proto::Response::Query { index, .. }) = result {
                    if *index < floor.0 {
                        self.fail(format!(
                            "read index: n{} answered a linearizable read on connection {connection} from the state at {index}, but had committed {floor:?} when the read arrived",
                            node + 1
                        ));
                        return;
                    }
                }
            }
        }
        match &message {
            ServerMessage::Response { id, result } => self.trace(format_args!(
                "n{} -> connection {connection} {id:?} {}",
                node + 1,
                match result {
                    Ok(_) => "ok".to_string(),
                    Err(error) => format!("{error:?}"),
                }
            )),
            ServerMessage::Events(batch) => self.trace(format_args!(
                "n{} -> connection {connection} events {:?} of {:?}",
                node + 1,
                batch.event_index,
                batch.session
            )),
        }
        if self.safety && self.rng.gen_bool(self.params.loss) {
            return;
        }
        let delay = self.delay();
        self.schedule(
            delay,
            Event::ClientReply {
                connection,
                node,
                message,
            },
        );
    }

    /// A client request on its way to a server.
    pub(super) fn send_to_server(
        &mut self,
        client: usize,
        node: usize,
        request: copycat_proto::ClientRequest,
    ) {
        self.trace(format_args!(
            "client {client} -> n{} {:?} {}",
            node + 1,
            request.id,
            request_kind(&request.request)
        ));
        if self.safety && self.rng.gen_bool(self.params.loss) {
            return;
        }
        let delay = self.delay();
        self.schedule(
            delay,
            Event::ClientRequest {
                node,
                client,
                request,
            },
        );
    }
}

fn request_kind(request: &copycat_proto::Request) -> String {
    use copycat_proto::Request;
    match request {
        Request::Register { .. } => "register".into(),
        Request::KeepAlive { session, .. } => format!("keep-alive {session:?}"),
        Request::Unregister { session } => format!("unregister {session:?}"),
        Request::Command {
            session, sequence, ..
        } => format!("command {session:?} {sequence:?}"),
        Request::Query {
            session,
            consistency,
            index,
            ..
        } => format!("query {session:?} {consistency:?} at {index}"),
        Request::ResetEvents {
            session,
            from_event_index,
        } => format!("reset {session:?} from {from_event_index:?}"),
    }
}
