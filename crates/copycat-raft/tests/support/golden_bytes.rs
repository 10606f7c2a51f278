//! Golden byte files: the exact encoding of every on-disk and wire type,
//! pinned in `testdata/formats/<type>.txt` of the crate that owns it.
//!
//! Shared by the format tests of several crates (each includes this file
//! with `#[path]`); it is a thin layer over the golden-script runner
//! [`copycat_raft::testing::run_golden_files`], so the files are ordinary
//! golden scripts and `REWRITE=1` rewrites them:
//!
//! ```text
//! entry command
//! ----
//! 02 07 01 03 61 62 63
//! ```
//!
//! The command line is `<type> <sample name>`; the output is the sample's
//! bytes in hex, 32 to a line. Every sample a test declares must appear in
//! its type's file (a missing file or line is an error; with `REWRITE=1` the
//! missing lines are added before the outputs are rewritten), so a new
//! variant cannot go unpinned. A reordered enum variant or field changes
//! the bytes and fails the comparison: change a format only deliberately,
//! with a version bump, then `REWRITE=1`.

use std::collections::BTreeMap;
use std::path::Path;

/// One named encoding of one type.
pub struct Sample {
    /// The type's file stem, e.g. `entry`.
    pub kind: &'static str,
    /// The sample's name within the type, one word.
    pub name: &'static str,
    /// The encoded bytes.
    pub bytes: Vec<u8>,
}

/// Shorthand for a [`Sample`].
pub fn sample(kind: &'static str, name: &'static str, bytes: impl Into<Vec<u8>>) -> Sample {
    Sample {
        kind,
        name,
        bytes: bytes.into(),
    }
}

/// Bytes as lowercase hex pairs, 32 to a line.
pub fn hex(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "(empty)".into();
    }
    bytes
        .chunks(32)
        .map(|line| {
            line.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The command lines of a golden script (lines followed by `----`).
fn commands(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    lines
        .windows(2)
        .filter(|pair| pair[1] == "----")
        .map(|pair| pair[0].to_string())
        .collect()
}

/// Compare every sample with `dir/<kind>.txt`; see the module docs.
/// `describe` names each kind in the header comment of a new file.
pub fn check(dir: &Path, describe: &[(&str, &str)], samples: Vec<Sample>) {
    let rewrite = std::env::var_os("REWRITE").is_some();
    let mut by_kind: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut table: BTreeMap<String, String> = BTreeMap::new();
    for sample in &samples {
        assert!(
            !sample.name.contains(char::is_whitespace),
            "sample names are one word: {:?}",
            sample.name
        );
        let command = format!("{} {}", sample.kind, sample.name);
        let previous = table.insert(command.clone(), hex(&sample.bytes));
        assert!(previous.is_none(), "duplicate sample `{command}`");
        by_kind.entry(sample.kind).or_default().push(command);
    }
    let mut missing = Vec::new();
    for (kind, wanted) in &by_kind {
        let path = dir.join(format!("{kind}.txt"));
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let present = commands(&text);
        let absent: Vec<&String> = wanted.iter().filter(|c| !present.contains(c)).collect();
        if absent.is_empty() {
            continue;
        }
        if rewrite {
            let mut text = text;
            if text.is_empty() {
                let what = describe
                    .iter()
                    .find(|(k, _)| k == kind)
                    .map_or("", |(_, what)| *what);
                text.push_str(&format!(
                    "# Golden bytes of {what}.\n# A change here is a format change: bump the \
                     version, then REWRITE=1.\n\n"
                ));
            } else if !text.ends_with("\n\n") {
                text.push('\n');
            }
            for command in absent {
                text.push_str(&format!("{command}\n----\n\n"));
            }
            std::fs::create_dir_all(dir).expect("create testdata/formats");
            std::fs::write(&path, text).expect("write golden file");
        } else {
            missing.extend(absent.iter().map(|c| format!("{}: `{c}`", path.display())));
        }
    }
    assert!(
        missing.is_empty(),
        "samples missing from the golden files (REWRITE=1 to add them):\n{}",
        missing.join("\n")
    );
    copycat_raft::testing::run_golden_files(dir, || {
        let table = &table;
        move |command: &str| match table.get(command) {
            Some(hex) => hex.clone(),
            None => panic!("`{command}` is no sample of this test: remove it from its file"),
        }
    });
}
