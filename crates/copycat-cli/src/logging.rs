//! Log lines on stderr through `tracing-subscriber`: a level or a filter
//! (`RUST_LOG` syntax), text or JSON, colours only on a terminal.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// The crates whose level a plain level (`info`, `debug`, ...) sets; the
/// others (the HTTP server, ...) log warnings and errors only.
const OURS: &[&str] = &[
    "copycat",
    "copycat_cli",
    "copycat_server",
    "copycat_replica",
    "copycat_raft",
    "copycat_storage",
    "copycat_net",
    "copycat_client",
    "copycat_proto",
];

/// The filter for `level`: a plain level applies to Copycat's crates
/// (others stay at `warn`); anything else is a filter in `RUST_LOG` syntax.
pub fn filter(level: &str) -> Result<EnvFilter, String> {
    let level = level.trim();
    let plain = ["trace", "debug", "info", "warn", "error", "off"];
    let directives = if plain.contains(&level.to_ascii_lowercase().as_str()) {
        let level = level.to_ascii_lowercase();
        let mut parts = vec!["warn".to_string()];
        parts.extend(OURS.iter().map(|c| format!("{c}={level}")));
        parts.join(",")
    } else {
        level.to_string()
    };
    EnvFilter::try_new(&directives).map_err(|_| {
        "must be trace, debug, info, warn, error, off, or a filter like RUST_LOG's (copycat_server=debug,info)".to_string()
    })
}

/// Install the subscriber. `level` is used unless `RUST_LOG` is set and
/// `explicit` is false (`-v` and `--log-level` win over `RUST_LOG`).
pub fn init(level: &str, explicit: bool, format: LogFormat) -> Result<(), String> {
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let filter = match from_env {
        Some(rust_log) if !explicit => {
            filter(&rust_log).map_err(|rule| format!("RUST_LOG = {rust_log}: {rule}"))?
        }
        _ => filter(level)?,
    };
    let ansi = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|e| format!("cannot install the logger: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_filters() {
        let info = filter("info").unwrap().to_string();
        assert!(info.contains("copycat_server=info"), "{info}");
        assert!(info.contains("warn"), "{info}");
        assert!(filter("copycat_raft=trace,info").is_ok());
        assert!(filter("copycat_raft=nonsense").is_err());
    }
}
