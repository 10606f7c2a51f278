//! How fast one session goes: three embedded servers (fsync on, data in a
//! temp dir), one client, `--commands` commands one after another, then
//! the same number from `--tasks` tasks sharing the session. Prints the
//! rate and the slowest command of each.
//!
//! ```text
//! cargo run --release -p copycat-server --example one_session -- --commands=3000 --tasks=64
//! ```

use std::time::{Duration, Instant};

use copycat_client::{Client, Machine};
use copycat_server::{ApplyContext, QueryContext, RestoreError, Server, StateMachine};

#[derive(Default)]
struct Counter(u64);

impl StateMachine for Counter {
    type Command = u64;
    type Query = ();
    type Output = u64;
    type Error = String;

    fn apply(&mut self, _ctx: &mut ApplyContext<'_>, n: u64) -> Result<u64, String> {
        self.0 += n;
        Ok(self.0)
    }

    fn query(&self, _ctx: &QueryContext, (): ()) -> Result<u64, String> {
        Ok(self.0)
    }

    fn snapshot(&self) -> bytes::Bytes {
        copycat_server::codec::encode(&self.0)
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), RestoreError> {
        self.0 = copycat_server::codec::decode(data).map_err(|e| RestoreError(e.to_string()))?;
        Ok(())
    }
}

struct Api;

impl Machine for Api {
    type Command = u64;
    type Query = ();
    type Output = u64;
    type Error = String;
}

fn setting(name: &str, default: u64) -> u64 {
    std::env::args()
        .filter_map(|a| a.strip_prefix(&format!("--{name}=")).map(str::to_string))
        .find_map(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (commands, tasks) = (setting("commands", 3_000), setting("tasks", 64));
    let dir = tempfile::tempdir()?;
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
        let server = Server::builder(Counter::default())
            .id(*id)
            .listener(listener)
            .data_dir(dir.path().join(id.to_string()))
            .bootstrap(members.clone())
            .start()
            .await?;
        servers.push(server);
    }
    let client = Client::builder().servers(addrs).connect().await?;
    let counter = client.machine::<Api>();

    let start = Instant::now();
    let mut slowest = Duration::ZERO;
    for _ in 0..commands {
        let sent = Instant::now();
        counter.command(1).await?;
        slowest = slowest.max(sent.elapsed());
    }
    let rate = commands as f64 / start.elapsed().as_secs_f64();
    println!(
        "RESULT mode=sequential commands={commands} rate={rate:.0}/s slowest_ms={}",
        slowest.as_millis()
    );

    let start = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let counter = counter.clone();
        let per_task = commands / tasks;
        handles.push(tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            for _ in 0..per_task {
                let sent = Instant::now();
                counter.command(1).await.map_err(|e| e.to_string())?;
                slowest = slowest.max(sent.elapsed());
            }
            Ok::<_, String>(slowest)
        }));
    }
    let mut slowest = Duration::ZERO;
    for handle in handles {
        slowest = slowest.max(handle.await??);
    }
    let done = (commands / tasks) * tasks;
    let rate = done as f64 / start.elapsed().as_secs_f64();
    println!(
        "RESULT mode=shared tasks={tasks} commands={done} rate={rate:.0}/s slowest_ms={}",
        slowest.as_millis()
    );
    client.close().await;
    for server in servers {
        server.shutdown().await?;
    }
    Ok(())
}
