//! The resources behind `copycat client` and `copycat bench`: its
//! key-value commands use the map [`KV_MAP`] and its counter the long
//! [`COUNTER`], both ordinary primitives of the cluster (so
//! `copycat map kv get K` reads what `copycat client put K V` wrote).

use copycat_primitives::{Error, ResourceError};

/// The map of `copycat client put/read/delete/cas/watch` and of
/// `copycat bench`.
pub const KV_MAP: &str = "kv";

/// The long of `copycat client add/get`.
pub const COUNTER: &str = "counter";

/// The text of a failed compare-and-set.
pub fn cas_failure(key: &str, expected: Option<&str>, found: Option<&str>) -> String {
    let want = match expected {
        Some(v) => format!("{v:?}"),
        None => "unset".to_string(),
    };
    let have = match found {
        Some(v) => format!("{v:?}"),
        None => "unset".to_string(),
    };
    format!("compare-and-set failed: {key:?} is {have}, not {want}")
}

/// A primitive's error as `copycat client` words it (a counter overflow
/// as "counter overflow"; everything else as the error says).
pub fn describe(error: &Error) -> String {
    match error {
        Error::Resource(ResourceError::Overflow { .. }) => "counter overflow".to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_cas_says_what_the_value_is() {
        assert_eq!(
            cas_failure("k", Some("a"), Some("b")),
            r#"compare-and-set failed: "k" is "b", not "a""#
        );
        assert_eq!(
            cas_failure("k", None, Some("b")),
            r#"compare-and-set failed: "k" is "b", not unset"#
        );
        assert_eq!(
            cas_failure("k", Some("a"), None),
            r#"compare-and-set failed: "k" is unset, not "a""#
        );
    }
}
