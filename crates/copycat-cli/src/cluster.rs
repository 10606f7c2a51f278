//! `copycat cluster ...`: inspect and change a cluster's membership over
//! the admin protocol of any member.

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use copycat_net::ClientTls;
use copycat_proto::{
    AdminFailure, AdminRequest, AdminResponse, MemberInfo, MemberKind, ServerState, ServerStatus,
};
use serde::Serialize;

/// One row of `copycat cluster status`.
#[derive(Clone, Debug, Serialize)]
pub struct MemberRow {
    /// Server id.
    pub id: u64,
    /// Its address in the configuration.
    pub address: Option<String>,
    /// Its role in the configuration.
    pub kind: String,
    /// Whether it answered.
    pub reachable: bool,
    /// Its Raft state, if it answered.
    pub state: Option<String>,
    /// Its term.
    pub term: Option<u64>,
    /// Its commit index.
    pub commit: Option<u64>,
    /// Its applied index.
    pub applied: Option<u64>,
    /// How far its commit index is behind the highest one seen.
    pub lag: Option<u64>,
    /// Why it did not answer.
    pub error: Option<String>,
}

/// Ask `address` for its status (over TLS when `tls` is given).
pub async fn status_of(
    address: &str,
    limit: Duration,
    tls: Option<&ClientTls>,
) -> Result<ServerStatus> {
    match copycat_net::admin_call_tls(address, &AdminRequest::Status, limit, tls).await? {
        AdminResponse::Status(status) => Ok(status),
        AdminResponse::Failed(failure) => Err(anyhow!("{address}: {failure}")),
        other => Err(anyhow!("{address}: unexpected answer {other:?}")),
    }
}

/// Send `request` to the leader, starting at `address` and following the
/// redirects of servers that do not lead (waiting while no leader is
/// known), until `limit` has passed.
pub async fn leader_call(
    address: &str,
    request: &AdminRequest,
    limit: Duration,
    tls: Option<&ClientTls>,
) -> Result<AdminResponse> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut target = address.to_string();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            bail!("no leader answered within {limit:?}");
        }
        match copycat_net::admin_call_tls(&target, request, left, tls).await? {
            AdminResponse::Failed(AdminFailure::NotLeader {
                address: Some(leader),
                ..
            }) if leader != target => target = leader,
            AdminResponse::Failed(AdminFailure::NotLeader { .. }) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            answer => return Ok(answer),
        }
    }
}

fn kind_name(kind: MemberKind) -> &'static str {
    match kind {
        MemberKind::Voter => "voter",
        MemberKind::Learner => "learner",
        MemberKind::Passive => "passive",
        MemberKind::Reserve => "reserve",
    }
}

fn state_name(state: ServerState) -> &'static str {
    match state {
        ServerState::Follower => "follower",
        ServerState::PreCandidate => "pre-candidate",
        ServerState::Candidate => "candidate",
        ServerState::Leader => "leader",
    }
}

/// Every member of the cluster `address` belongs to, each asked for its
/// own status.
pub async fn cluster_status(
    address: &str,
    limit: Duration,
    tls: Option<&ClientTls>,
) -> Result<Vec<MemberRow>> {
    let first = status_of(address, limit, tls).await?;
    let asks = first.members.iter().map(|member| {
        let member = member.clone();
        async move {
            let answer = match &member.address {
                Some(address) => status_of(address, limit, tls).await,
                None => Err(anyhow!("no address in the configuration")),
            };
            (member, answer)
        }
    });
    let answers: Vec<(MemberInfo, Result<ServerStatus>)> =
        futures_util::future::join_all(asks).await;
    let highest = answers
        .iter()
        .filter_map(|(_, a)| a.as_ref().ok().map(|s| s.commit))
        .max()
        .unwrap_or(0);
    Ok(answers
        .into_iter()
        .map(|(member, answer)| match answer {
            Ok(status) => MemberRow {
                id: member.id,
                address: member.address,
                kind: kind_name(member.kind).to_string(),
                reachable: true,
                state: Some(state_name(status.state).to_string()),
                term: Some(status.term),
                commit: Some(status.commit),
                applied: Some(status.applied),
                lag: Some(highest.saturating_sub(status.commit)),
                error: None,
            },
            Err(error) => MemberRow {
                id: member.id,
                address: member.address,
                kind: kind_name(member.kind).to_string(),
                reachable: false,
                state: None,
                term: None,
                commit: None,
                applied: None,
                lag: None,
                error: Some(format!("{error:#}")),
            },
        })
        .collect())
}

/// The rows as an aligned table.
pub fn status_table(rows: &[MemberRow]) -> String {
    let dash = || "-".to_string();
    let mut lines = vec![vec![
        "ID".to_string(),
        "ADDRESS".into(),
        "ROLE".into(),
        "STATE".into(),
        "TERM".into(),
        "COMMIT".into(),
        "APPLIED".into(),
        "LAG".into(),
        "REACHABLE".into(),
    ]];
    for row in rows {
        lines.push(vec![
            row.id.to_string(),
            row.address.clone().unwrap_or_else(dash),
            row.kind.clone(),
            row.state.clone().unwrap_or_else(dash),
            row.term.map_or_else(dash, |t| t.to_string()),
            row.commit.map_or_else(dash, |c| c.to_string()),
            row.applied.map_or_else(dash, |a| a.to_string()),
            row.lag.map_or_else(dash, |l| l.to_string()),
            match &row.error {
                None => "yes".to_string(),
                Some(error) => format!("no ({error})"),
            },
        ]);
    }
    table(&lines)
}

/// The members as an aligned table.
pub fn members_table(members: &[MemberInfo]) -> String {
    let mut lines = vec![vec!["ID".to_string(), "ADDRESS".into(), "ROLE".into()]];
    for member in members {
        lines.push(vec![
            member.id.to_string(),
            member.address.clone().unwrap_or_else(|| "-".into()),
            kind_name(member.kind).to_string(),
        ]);
    }
    table(&lines)
}

fn table(lines: &[Vec<String>]) -> String {
    let columns = lines.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| lines.iter().map(|l| l[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for line in lines {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Turn an admin answer to a change into a result.
pub fn expect_done(answer: AdminResponse) -> Result<()> {
    match answer {
        AdminResponse::Done | AdminResponse::Joined { .. } => Ok(()),
        AdminResponse::Failed(failure) => Err(anyhow!("{failure}")),
        other => Err(anyhow!("unexpected answer {other:?}")),
    }
}
