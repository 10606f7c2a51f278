//! The settings of `copycat server`: every key can come from a TOML file
//! (`--config FILE`), a `COPYCAT_*` environment variable or a command-line
//! flag; a flag wins over the environment, which wins over the file, which
//! wins over the default. Values are checked before anything starts, and an
//! error names the key, the value, the rule and where the value came from.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Every key: its name (in the file and as `--NAME`), its default as
/// written in a file or on the command line, and what it means. The
/// environment variable is `COPYCAT_` and the name in capitals with `_`.
pub const KEYS: &[(&str, &str, &str)] = &[
    (
        "id",
        "1",
        "this server's id: a positive number, unique in the cluster",
    ),
    (
        "listen",
        "127.0.0.1:5700",
        "address for peers and clients (HOST:PORT)",
    ),
    (
        "advertise",
        "the listen address",
        "address peers and clients reach this server at (HOST:PORT), recorded in the cluster configuration: set it when they reach it through a proxy or NAT",
    ),
    (
        "http-listen",
        "the listen host, port + 1000",
        "address of /metrics, /health and /ready (HOST:PORT), or \"off\"",
    ),
    (
        "data-dir",
        "./copycat-data",
        "directory of the log, snapshots and term/vote",
    ),
    (
        "members",
        "this server alone",
        "the initial voters as ID=ADDR,ID=ADDR (read only when the data directory is new)",
    ),
    (
        "join",
        "none",
        "join the running cluster of this member (HOST:PORT) when the data directory is new, instead of bootstrapping one",
    ),
    (
        "fsync",
        "true",
        "sync the disk before acknowledging (false: UNSAFE, tests only)",
    ),
    (
        "session-timeout-ms",
        "5000",
        "session timeout for clients that ask for the server's default",
    ),
    ("election-timeout-ms", "750", "Raft election timeout"),
    (
        "heartbeat-ms",
        "150",
        "interval between the leader's heartbeats",
    ),
    (
        "snapshot-every-entries",
        "10000",
        "take a snapshot after this many entries",
    ),
    (
        "snapshot-every-bytes",
        "67108864",
        "or after this many bytes of commands (suffixes KiB, MiB, GiB)",
    ),
    (
        "max-connections",
        "1024",
        "connections (peers and clients) kept open at once",
    ),
    (
        "log-level",
        "info",
        "trace, debug, info, warn, error, off, or a filter like RUST_LOG's",
    ),
    ("log-format", "text", "text or json (one object a line)"),
    (
        "tls-cert",
        "none (no TLS)",
        "PEM file of this server's certificate chain (TLS on peer and client connections; with tls-key and tls-ca)",
    ),
    ("tls-key", "none", "PEM file of the private key of tls-cert"),
    (
        "tls-ca",
        "none",
        "PEM file of the CA bundle that peers' (and clients') certificates must chain to",
    ),
    (
        "tls-client-auth",
        "false",
        "require clients (and admin calls) to present a certificate signed by tls-ca too",
    ),
];

/// The environment variable of `key`.
pub fn env_name(key: &str) -> String {
    format!("COPYCAT_{}", key.replace('-', "_").to_uppercase())
}

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A command-line flag.
    Flag,
    /// An environment variable.
    Env,
    /// The configuration file.
    File(PathBuf),
    /// The default.
    Default,
}

/// A value that breaks its key's rule, or a file that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// `key = value: rule`.
    Invalid {
        /// The key.
        key: String,
        /// The value as given.
        value: String,
        /// The rule it breaks.
        rule: String,
        /// Where it came from.
        origin: Origin,
    },
    /// The file could not be read or parsed, or has an unknown key.
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Invalid {
                key,
                value,
                rule,
                origin,
            } => {
                write!(f, "{key} = {value}: {rule}")?;
                match origin {
                    Origin::Flag => write!(f, " (from --{key})"),
                    Origin::Env => write!(f, " (from {})", env_name(key)),
                    Origin::File(path) => write!(f, " (from {})", path.display()),
                    Origin::Default => write!(f, " (the default)"),
                }
            }
            ConfigError::File { path, reason } => write!(f, "{}: {reason}", path.display()),
        }
    }
}

impl std::error::Error for ConfigError {}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line.
    Json,
}

/// The settings of one server, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Its id.
    pub id: u64,
    /// Where it listens for peers and clients.
    pub listen: String,
    /// The address it is reached at, when not `listen` (recorded in the
    /// cluster configuration; peers dial it).
    pub advertise: Option<String>,
    /// Where it serves HTTP (`None`: off).
    pub http_listen: Option<String>,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// The initial voters given (this server is added with its listen
    /// address if missing).
    pub members: BTreeMap<u64, String>,
    /// Join the cluster of this member instead of bootstrapping one.
    pub join: Option<String>,
    /// Sync the disk.
    pub fsync: bool,
    /// The default session timeout.
    pub session_timeout_ms: u64,
    /// The election timeout.
    pub election_timeout_ms: u64,
    /// The heartbeat interval.
    pub heartbeat_ms: u64,
    /// Snapshot after this many entries.
    pub snapshot_every_entries: u64,
    /// Or this many bytes.
    pub snapshot_every_bytes: u64,
    /// Connections kept open at once.
    pub max_connections: usize,
    /// The log filter (a level or RUST_LOG-style directives).
    pub log_level: String,
    /// The log format.
    pub log_format: LogFormat,
    /// TLS on every connection, when the certificate, key and CA bundle
    /// are given.
    pub tls: Option<TlsFiles>,
}

/// The files of a server's TLS (read when the server starts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The CA bundle peers' and clients' certificates must chain to (PEM).
    pub ca: PathBuf,
    /// Whether clients must present a certificate too.
    pub client_auth: bool,
}

/// The raw values of every source, before they are layered and checked.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    /// From flags, by key.
    pub flags: BTreeMap<String, String>,
    /// From the environment, by key (see [`Sources::read_env`]).
    pub env: BTreeMap<String, String>,
    /// From the file, by key, with the file's path.
    pub file: Option<(PathBuf, BTreeMap<String, String>)>,
}

impl Sources {
    /// Take every `COPYCAT_*` variable that names a key from `vars`.
    pub fn read_env(&mut self, vars: impl IntoIterator<Item = (String, String)>) {
        let names: BTreeMap<String, &str> = KEYS
            .iter()
            .map(|(key, _, _)| (env_name(key), *key))
            .collect();
        for (name, value) in vars {
            if let Some(key) = names.get(&name) {
                self.env.insert(key.to_string(), value);
            }
        }
    }

    /// Read the TOML file at `path`.
    pub fn read_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let fail = |reason: String| ConfigError::File {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| fail(format!("cannot read the configuration file: {e}")))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| fail(format!("not valid TOML: {}", e.message())))?;
        let mut values = BTreeMap::new();
        for (key, value) in table {
            if !KEYS.iter().any(|(k, _, _)| *k == key) {
                let known: Vec<&str> = KEYS.iter().map(|(k, _, _)| *k).collect();
                return Err(fail(format!(
                    "unknown key {key:?} (the keys are {})",
                    known.join(", ")
                )));
            }
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Array(items) => {
                    let mut parts = Vec::new();
                    for item in items {
                        match item {
                            toml::Value::String(s) => parts.push(s),
                            other => {
                                return Err(fail(format!(
                                    "{key}: expected strings like \"1=127.0.0.1:5700\", got {other}"
                                )))
                            }
                        }
                    }
                    parts.join(",")
                }
                toml::Value::Table(members) => {
                    let mut parts = Vec::new();
                    for (id, addr) in members {
                        match addr {
                            toml::Value::String(addr) => parts.push(format!("{id}={addr}")),
                            other => {
                                return Err(fail(format!(
                                    "{key}.{id}: expected an address string, got {other}"
                                )))
                            }
                        }
                    }
                    parts.join(",")
                }
                other => {
                    return Err(fail(format!(
                        "{key}: expected a string, a number or a boolean, got {other}"
                    )))
                }
            };
            values.insert(key, text);
        }
        self.file = Some((path.to_path_buf(), values));
        Ok(())
    }

    /// The value of `key` by precedence, and where it came from.
    fn get(&self, key: &str) -> Option<(String, Origin)> {
        if let Some(value) = self.flags.get(key) {
            return Some((value.clone(), Origin::Flag));
        }
        if let Some(value) = self.env.get(key) {
            return Some((value.clone(), Origin::Env));
        }
        if let Some((path, values)) = &self.file {
            if let Some(value) = values.get(key) {
                return Some((value.clone(), Origin::File(path.clone())));
            }
        }
        None
    }

    /// Layer the sources over the defaults and check every value.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let mut r = Reader { sources: self };
        let id = r.number("id", 1, 1, u64::MAX)?;
        let (listen, listen_origin) = r.raw("listen", "127.0.0.1:5700");
        let (listen_host, listen_port) = split_address(&listen)
            .map_err(|rule| invalid("listen", &listen, rule, &listen_origin))?;
        let (advertise_text, advertise_origin) = r.raw("advertise", "");
        let advertise = if advertise_text.is_empty() {
            None
        } else {
            split_address(&advertise_text)
                .map_err(|rule| invalid("advertise", &advertise_text, rule, &advertise_origin))?;
            Some(advertise_text)
        };
        let http_listen = match self.get("http-listen") {
            Some((value, origin)) => {
                if value.eq_ignore_ascii_case("off") || value.is_empty() {
                    None
                } else {
                    split_address(&value)
                        .map_err(|rule| invalid("http-listen", &value, rule, &origin))?;
                    Some(value)
                }
            }
            None => {
                let port = if listen_port == 0 {
                    0
                } else {
                    listen_port.checked_add(1000).ok_or_else(|| {
                        invalid(
                            "listen",
                            &listen,
                            "the port is too high for the default http-listen (port + 1000); set http-listen".into(),
                            &listen_origin,
                        )
                    })?
                };
                Some(format!("{listen_host}:{port}"))
            }
        };
        let (data_dir, origin) = r.raw("data-dir", "./copycat-data");
        if data_dir.is_empty() {
            return Err(invalid(
                "data-dir",
                &data_dir,
                "must not be empty".into(),
                &origin,
            ));
        }
        let (members_text, origin) = r.raw("members", "");
        let mut members = BTreeMap::new();
        for part in members_text
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let bad = |rule: String| invalid("members", &members_text, rule, &origin);
            let (member, addr) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("{part:?} is not ID=HOST:PORT")))?;
            let member: u64 = member
                .trim()
                .parse()
                .ok()
                .filter(|m| *m > 0)
                .ok_or_else(|| bad(format!("{member:?} is not a positive id")))?;
            let addr = addr.trim();
            split_address(addr).map_err(|rule| bad(format!("{addr:?}: {rule}")))?;
            if members.insert(member, addr.to_string()).is_some() {
                return Err(bad(format!("member {member} is listed twice")));
            }
        }
        if !members.is_empty() {
            if let Some(own) = members.get(&id) {
                match &advertise {
                    Some(advertised) if own != advertised => {
                        return Err(invalid(
                            "members",
                            &members_text,
                            format!(
                                "lists this server (id {id}) at {own}, but advertise is {advertised}"
                            ),
                            &origin,
                        ));
                    }
                    None if *own != listen && listen_port != 0 => {
                        return Err(invalid(
                            "members",
                            &members_text,
                            format!(
                                "lists this server (id {id}) at {own}, but listen is {listen} (set advertise if it is reached at another address)"
                            ),
                            &origin,
                        ));
                    }
                    _ => {}
                }
            }
        }
        let (join_text, origin) = r.raw("join", "");
        let join = (!join_text.is_empty()).then(|| join_text.clone());
        if join.is_some() && !members.is_empty() {
            return Err(invalid(
                "join",
                &join_text,
                "cannot be combined with members: a server bootstraps a new cluster or joins one"
                    .into(),
                &origin,
            ));
        }
        let fsync = r.boolean("fsync", true)?;
        let election_timeout_ms = r.number("election-timeout-ms", 750, 50, 60_000)?;
        let (heartbeat_text, origin) = r.raw("heartbeat-ms", "150");
        let heartbeat_ms = parse_number(&heartbeat_text)
            .map_err(|rule| invalid("heartbeat-ms", &heartbeat_text, rule, &origin))?;
        if heartbeat_ms == 0 || heartbeat_ms * 2 > election_timeout_ms {
            return Err(invalid(
                "heartbeat-ms",
                &heartbeat_text,
                format!(
                    "must be positive and at most half of election-timeout-ms ({election_timeout_ms})"
                ),
                &origin,
            ));
        }
        let (session_text, origin) = r.raw("session-timeout-ms", "5000");
        let session_timeout_ms = parse_number(&session_text)
            .map_err(|rule| invalid("session-timeout-ms", &session_text, rule, &origin))?;
        if !(100..=600_000).contains(&session_timeout_ms)
            || session_timeout_ms <= election_timeout_ms
        {
            return Err(invalid(
                "session-timeout-ms",
                &session_text,
                format!(
                    "must be between 100 and 600000 and more than election-timeout-ms ({election_timeout_ms}), so sessions outlive an election"
                ),
                &origin,
            ));
        }
        let snapshot_every_entries = r.number("snapshot-every-entries", 10_000, 1, u64::MAX)?;
        let (bytes_text, origin) = r.raw("snapshot-every-bytes", "67108864");
        let snapshot_every_bytes =
            parse_bytes(&bytes_text).filter(|b| *b > 0).ok_or_else(|| {
                invalid(
                    "snapshot-every-bytes",
                    &bytes_text,
                    "must be a positive number of bytes (suffixes KiB, MiB, GiB)".into(),
                    &origin,
                )
            })?;
        let max_connections = r.number("max-connections", 1024, 1, 1 << 20)? as usize;
        let (log_level, origin) = r.raw("log-level", "info");
        crate::logging::filter(&log_level)
            .map_err(|rule| invalid("log-level", &log_level, rule, &origin))?;
        let (format_text, origin) = r.raw("log-format", "text");
        let log_format = match format_text.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            _ => {
                return Err(invalid(
                    "log-format",
                    &format_text,
                    "must be text or json".into(),
                    &origin,
                ))
            }
        };
        let tls = tls_files(&mut r)?;
        Ok(Settings {
            id,
            listen,
            advertise,
            http_listen,
            data_dir: PathBuf::from(data_dir),
            members,
            join,
            fsync,
            session_timeout_ms,
            election_timeout_ms,
            heartbeat_ms,
            snapshot_every_entries,
            snapshot_every_bytes,
            max_connections,
            log_level,
            log_format,
            tls,
        })
    }
}

/// The TLS keys: all of `tls-cert`, `tls-key` and `tls-ca`, or none.
fn tls_files(r: &mut Reader<'_>) -> Result<Option<TlsFiles>, ConfigError> {
    let mut given = BTreeMap::new();
    for key in ["tls-cert", "tls-key", "tls-ca"] {
        let (value, origin) = r.raw(key, "");
        if !value.is_empty() {
            given.insert(key, (value, origin));
        }
    }
    let client_auth = r.boolean("tls-client-auth", false)?;
    if given.is_empty() {
        if client_auth {
            let (value, origin) = r.raw("tls-client-auth", "false");
            return Err(invalid(
                "tls-client-auth",
                &value,
                "needs TLS: set tls-cert, tls-key and tls-ca".into(),
                &origin,
            ));
        }
        return Ok(None);
    }
    if let Some(missing) = ["tls-cert", "tls-key", "tls-ca"]
        .into_iter()
        .find(|key| !given.contains_key(key))
    {
        let (key, (value, origin)) = given.iter().next().expect("one is given");
        return Err(invalid(
            key,
            value,
            format!("TLS needs tls-cert, tls-key and tls-ca together; {missing} is not set"),
            origin,
        ));
    }
    let path = |key: &str| PathBuf::from(&given[key].0);
    Ok(Some(TlsFiles {
        cert: path("tls-cert"),
        key: path("tls-key"),
        ca: path("tls-ca"),
        client_auth,
    }))
}

impl Settings {
    /// These settings as a configuration file.
    pub fn to_toml(&self) -> String {
        let members: Vec<String> = self
            .members
            .iter()
            .map(|(id, addr)| format!("{:?}", format!("{id}={addr}")))
            .collect();
        let mut text = String::new();
        text.push_str(&format!("id = {}\n", self.id));
        text.push_str(&format!("listen = {:?}\n", self.listen));
        if let Some(advertise) = &self.advertise {
            text.push_str(&format!("advertise = {advertise:?}\n"));
        }
        text.push_str(&format!(
            "http-listen = {:?}\n",
            self.http_listen.as_deref().unwrap_or("off")
        ));
        text.push_str(&format!(
            "data-dir = {:?}\n",
            self.data_dir.display().to_string()
        ));
        text.push_str(&format!("members = [{}]\n", members.join(", ")));
        if let Some(join) = &self.join {
            text.push_str(&format!("join = {join:?}\n"));
        }
        text.push_str(&format!("fsync = {}\n", self.fsync));
        text.push_str(&format!(
            "session-timeout-ms = {}\n",
            self.session_timeout_ms
        ));
        text.push_str(&format!(
            "election-timeout-ms = {}\n",
            self.election_timeout_ms
        ));
        text.push_str(&format!("heartbeat-ms = {}\n", self.heartbeat_ms));
        text.push_str(&format!(
            "snapshot-every-entries = {}\n",
            self.snapshot_every_entries
        ));
        text.push_str(&format!(
            "snapshot-every-bytes = {}\n",
            self.snapshot_every_bytes
        ));
        text.push_str(&format!("max-connections = {}\n", self.max_connections));
        text.push_str(&format!("log-level = {:?}\n", self.log_level));
        let format = match self.log_format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        };
        text.push_str(&format!("log-format = {format:?}\n"));
        if let Some(tls) = &self.tls {
            for (key, path) in [
                ("tls-cert", &tls.cert),
                ("tls-key", &tls.key),
                ("tls-ca", &tls.ca),
            ] {
                text.push_str(&format!("{key} = {:?}\n", path.display().to_string()));
            }
            text.push_str(&format!("tls-client-auth = {}\n", tls.client_auth));
        }
        text
    }
}

fn invalid(key: &str, value: &str, rule: String, origin: &Origin) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        value: value.to_string(),
        rule,
        origin: origin.clone(),
    }
}

struct Reader<'a> {
    sources: &'a Sources,
}

impl Reader<'_> {
    fn raw(&mut self, key: &str, default: &str) -> (String, Origin) {
        self.sources
            .get(key)
            .unwrap_or_else(|| (default.to_string(), Origin::Default))
    }

    fn number(&mut self, key: &str, default: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
        let (text, origin) = self.raw(key, &default.to_string());
        let value = parse_number(&text).map_err(|rule| invalid(key, &text, rule, &origin))?;
        if value < min {
            return Err(invalid(
                key,
                &text,
                format!("must be at least {min}"),
                &origin,
            ));
        }
        if value > max {
            return Err(invalid(
                key,
                &text,
                format!("must be at most {max}"),
                &origin,
            ));
        }
        Ok(value)
    }

    fn boolean(&mut self, key: &str, default: bool) -> Result<bool, ConfigError> {
        let (text, origin) = self.raw(key, &default.to_string());
        match text.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Ok(true),
            "false" | "no" | "off" | "0" => Ok(false),
            _ => Err(invalid(key, &text, "must be true or false".into(), &origin)),
        }
    }
}

fn parse_number(text: &str) -> Result<u64, String> {
    text.trim()
        .replace('_', "")
        .parse()
        .map_err(|_| "must be a whole number".to_string())
}

/// `64MiB`, `512 KiB`, `1GiB`, `1000`.
fn parse_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '_')
        .unwrap_or(text.len());
    let number: u64 = text[..split].replace('_', "").parse().ok()?;
    let factor: u64 = match text[split..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(factor)
}

/// `HOST:PORT` (`[v6]:PORT` too): the host and the port.
fn split_address(address: &str) -> Result<(String, u16), String> {
    let rule = || "must be HOST:PORT (like 127.0.0.1:5700)".to_string();
    let (host, port) = address.rsplit_once(':').ok_or_else(rule)?;
    if host.is_empty() {
        return Err(rule());
    }
    let port: u16 = port.parse().map_err(|_| rule())?;
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(flags: &[(&str, &str)], env: &[(&str, &str)]) -> Sources {
        let mut sources = Sources {
            flags: flags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Sources::default()
        };
        sources.read_env(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        sources
    }

    #[test]
    fn defaults_are_a_single_server_on_port_5700() {
        let settings = Sources::default().settings().unwrap();
        assert_eq!(settings.id, 1);
        assert_eq!(settings.listen, "127.0.0.1:5700");
        assert_eq!(settings.http_listen.as_deref(), Some("127.0.0.1:6700"));
        assert_eq!(settings.data_dir, PathBuf::from("./copycat-data"));
        assert!(settings.members.is_empty());
        assert!(settings.fsync);
        assert_eq!(settings.election_timeout_ms, 750);
        assert_eq!(settings.snapshot_every_bytes, 64 << 20);
        assert_eq!(settings.log_format, LogFormat::Text);
    }

    #[test]
    fn advertise_is_where_the_member_list_must_name_this_server() {
        let members = "1=127.0.0.1:5800,2=127.0.0.2:5800";
        let settings = sources(
            &[("advertise", "127.0.0.1:5800"), ("members", members)],
            &[],
        )
        .settings()
        .unwrap();
        assert_eq!(settings.listen, "127.0.0.1:5700");
        assert_eq!(settings.advertise.as_deref(), Some("127.0.0.1:5800"));
        assert!(settings
            .to_toml()
            .contains("advertise = \"127.0.0.1:5800\"\n"));
        let error = sources(&[("members", members)], &[])
            .settings()
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("at 127.0.0.1:5800, but listen is 127.0.0.1:5700")
                && error.contains("set advertise"),
            "{error}"
        );
        let error = sources(
            &[("advertise", "127.0.0.1:5900"), ("members", members)],
            &[],
        )
        .settings()
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("at 127.0.0.1:5800, but advertise is 127.0.0.1:5900"),
            "{error}"
        );
        let error = sources(&[("advertise", "nowhere")], &[])
            .settings()
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("advertise = nowhere: must be HOST:PORT"),
            "{error}"
        );
    }

    #[test]
    fn a_flag_wins_over_the_environment_which_wins_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "election-timeout-ms = 1000\nheartbeat-ms = 100\nid = 3\nmembers = [\"1=127.0.0.1:1\", \"2=127.0.0.1:2\"]\n",
        )
        .unwrap();
        let mut s = sources(
            &[("election-timeout-ms", "2000")],
            &[
                ("COPYCAT_ELECTION_TIMEOUT_MS", "1500"),
                ("COPYCAT_HEARTBEAT_MS", "200"),
                ("COPYCAT_NOT_A_KEY", "x"),
            ],
        );
        s.read_file(&path).unwrap();
        let settings = s.settings().unwrap();
        assert_eq!(settings.election_timeout_ms, 2000);
        assert_eq!(settings.heartbeat_ms, 200);
        assert_eq!(settings.id, 3);
        assert_eq!(settings.members.len(), 2);
    }

    #[test]
    fn errors_name_the_key_the_value_the_rule_and_the_source() {
        let error = sources(&[("election-timeout-ms", "5")], &[])
            .settings()
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "election-timeout-ms = 5: must be at least 50 (from --election-timeout-ms)"
        );
        let error = sources(&[], &[("COPYCAT_HEARTBEAT_MS", "500")])
            .settings()
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "heartbeat-ms = 500: must be positive and at most half of election-timeout-ms (750) (from COPYCAT_HEARTBEAT_MS)"
        );
        let error = sources(&[("listen", "nowhere")], &[])
            .settings()
            .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("listen = nowhere: must be HOST:PORT"),
            "{error}"
        );
        let error = sources(&[("fsync", "maybe")], &[]).settings().unwrap_err();
        assert!(
            error.to_string().contains("must be true or false"),
            "{error}"
        );
        let error = sources(&[("log-format", "xml")], &[])
            .settings()
            .unwrap_err();
        assert!(
            error.to_string().contains("must be text or json"),
            "{error}"
        );
        let error = sources(&[("members", "1=a:1,x=b:2")], &[])
            .settings()
            .unwrap_err();
        assert!(
            error.to_string().contains("\"x\" is not a positive id"),
            "{error}"
        );
    }

    #[test]
    fn a_file_with_an_unknown_key_or_bad_toml_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "electon-timeout-ms = 1000\n").unwrap();
        let error = Sources::default().read_file(&path).unwrap_err().to_string();
        assert!(error.contains(&path.display().to_string()), "{error}");
        assert!(
            error.contains("unknown key \"electon-timeout-ms\""),
            "{error}"
        );
        std::fs::write(&path, "id = = 3\n").unwrap();
        let error = Sources::default().read_file(&path).unwrap_err().to_string();
        assert!(error.contains("not valid TOML"), "{error}");
        let missing = dir.path().join("missing.toml");
        let error = Sources::default()
            .read_file(&missing)
            .unwrap_err()
            .to_string();
        assert!(error.starts_with(&missing.display().to_string()), "{error}");
    }

    #[test]
    fn sizes_take_suffixes() {
        assert_eq!(parse_bytes("64MiB"), Some(64 << 20));
        assert_eq!(parse_bytes("512 KiB"), Some(512 << 10));
        assert_eq!(parse_bytes("1000"), Some(1000));
        assert_eq!(parse_bytes("1TB"), None);
    }

    #[test]
    fn tls_keys_come_together() {
        let settings = sources(
            &[("tls-cert", "s.pem"), ("tls-key", "s.key")],
            &[
                ("COPYCAT_TLS_CA", "ca.pem"),
                ("COPYCAT_TLS_CLIENT_AUTH", "true"),
            ],
        )
        .settings()
        .unwrap();
        assert_eq!(
            settings.tls,
            Some(TlsFiles {
                cert: "s.pem".into(),
                key: "s.key".into(),
                ca: "ca.pem".into(),
                client_auth: true,
            })
        );
        let error = sources(&[("tls-cert", "s.pem")], &[])
            .settings()
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "tls-cert = s.pem: TLS needs tls-cert, tls-key and tls-ca together; tls-key is not set (from --tls-cert)"
        );
        let error = sources(&[], &[("COPYCAT_TLS_CLIENT_AUTH", "yes")])
            .settings()
            .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("tls-client-auth = yes: needs TLS"),
            "{error}"
        );
        assert_eq!(sources(&[], &[]).settings().unwrap().tls, None);
    }

    #[test]
    fn the_printed_configuration_reads_back_the_same() {
        let settings = sources(
            &[
                ("members", "1=127.0.0.1:5700,2=127.0.0.1:5701"),
                ("tls-cert", "/etc/copycat/1.pem"),
                ("tls-key", "/etc/copycat/1.key"),
                ("tls-ca", "/etc/copycat/ca.pem"),
            ],
            &[],
        )
        .settings()
        .unwrap();
        assert!(settings.tls.is_some());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, settings.to_toml()).unwrap();
        let mut again = Sources::default();
        again.read_file(&path).unwrap();
        assert_eq!(again.settings().unwrap(), settings);
    }
}
