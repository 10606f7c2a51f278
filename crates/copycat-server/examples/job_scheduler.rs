//! A replicated job scheduler: three embedded servers on 127.0.0.1 and a
//! client that submits jobs and prints the events the cluster pushes when
//! each job comes due. Time comes from the log (timers scheduled by the
//! state machine), so every server fires the same job at the same point of
//! its history, and a job survives the loss of any one server.
//!
//! Run it with `cargo run -p copycat-server --example job_scheduler`.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use copycat_client::{Client, Machine};
use copycat_server::{
    codec, ApplyContext, QueryContext, RestoreError, Server, SessionId, StateMachine, TimerId,
};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Job {
    pub name: String,
    /// The session that submitted it hears when it is due.
    owner: SessionId,
}

/// Jobs waiting for their timers.
#[derive(Default, Serialize, Deserialize)]
pub struct Scheduler {
    waiting: BTreeMap<TimerId, Job>,
}

#[derive(Serialize, Deserialize)]
pub enum Command {
    /// Run `name` after `delay_ms`; answers the number of waiting jobs.
    Submit { name: String, delay_ms: u64 },
    /// Cancel every waiting job called `name`; answers how many.
    Cancel { name: String },
}

#[derive(Serialize, Deserialize)]
pub enum Query {
    Waiting,
}

impl StateMachine for Scheduler {
    type Command = Command;
    type Query = Query;
    type Output = usize;
    type Error = String;

    fn apply(&mut self, ctx: &mut ApplyContext<'_>, command: Command) -> Result<usize, String> {
        let owner = ctx.session().ok_or("jobs come from sessions")?;
        match command {
            Command::Submit { name, delay_ms } => {
                if name.is_empty() {
                    return Err("a job needs a name".into());
                }
                let timer = ctx.schedule(delay_ms).map_err(|e| e.to_string())?;
                self.waiting.insert(timer, Job { name, owner });
                Ok(self.waiting.len())
            }
            Command::Cancel { name } => {
                let cancelled: Vec<TimerId> = (self.waiting.iter())
                    .filter(|(_, job)| job.name == name)
                    .map(|(timer, _)| *timer)
                    .collect();
                for timer in &cancelled {
                    ctx.cancel(*timer);
                    self.waiting.remove(timer);
                }
                Ok(cancelled.len())
            }
        }
    }

    fn query(&self, _ctx: &QueryContext, Query::Waiting: Query) -> Result<usize, String> {
        Ok(self.waiting.len())
    }

    fn on_timer(&mut self, ctx: &mut ApplyContext<'_>, timer: TimerId) {
        if let Some(job) = self.waiting.remove(&timer) {
            let due_at = ctx.time_ms();
            ctx.publish_value(job.owner, "due", &(job.name, due_at));
        }
    }

    fn snapshot(&self) -> Bytes {
        codec::encode(self)
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), RestoreError> {
        *self = codec::decode(data).map_err(|e| RestoreError(e.to_string()))?;
        Ok(())
    }
}

/// The client's view of the scheduler's types.
pub struct Jobs;

impl Machine for Jobs {
    type Command = Command;
    type Query = Query;
    type Output = usize;
    type Error = String;
}

/// Start three servers with data under `dir`, submit four jobs, cancel
/// one, and return the names of the jobs in the order they came due.
pub async fn run(dir: &std::path::Path) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await?);
    }
    let addrs: Vec<String> = (listeners.iter())
        .map(|l| l.local_addr().map(|a| a.to_string()))
        .collect::<Result<_, _>>()?;
    let members: Vec<(u64, String)> = (1..).zip(addrs.iter().cloned()).collect();
    let mut servers = Vec::new();
    for ((id, _), listener) in members.iter().zip(listeners) {
        let server = Server::builder(Scheduler::default())
            .id(*id)
            .listener(listener)
            .data_dir(dir.join(format!("server-{id}")))
            .bootstrap(members.clone())
            .start()
            .await?;
        servers.push(server);
    }

    let client = Client::builder().servers(addrs).connect().await?;
    let mut events = client.events();
    let jobs = client.machine::<Jobs>();
    let started = std::time::Instant::now();
    for (name, delay_ms) in [
        ("backup", 600),
        ("report", 200),
        ("cleanup", 400),
        ("spam", 300),
    ] {
        let waiting = jobs
            .command(Command::Submit {
                name: name.into(),
                delay_ms,
            })
            .await?;
        println!("submitted {name:8} due in {delay_ms} ms ({waiting} waiting)");
    }
    let cancelled = jobs
        .command(Command::Cancel {
            name: "spam".into(),
        })
        .await?;
    println!("cancelled {cancelled} job(s) called spam");

    let mut due = Vec::new();
    while due.len() < 3 {
        let event = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await?
            .ok_or("the client closed")?;
        let (name, _log_time_ms): (String, u64) = event.decode().map_err(|e| e.to_string())?;
        let elapsed = started.elapsed().as_millis();
        println!(
            "{}: {name} ({elapsed} ms after the first submission)",
            event.name
        );
        due.push(name);
    }
    println!("still waiting: {}", jobs.query(Query::Waiting).await?);
    client.close().await;
    for server in servers {
        server.shutdown().await?;
    }
    Ok(due)
}

#[tokio::main]
#[allow(dead_code)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("copycat-jobs-{}", std::process::id()));
    let result = run(&dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result.map(|_| ())
}
