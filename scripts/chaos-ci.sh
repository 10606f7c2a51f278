#!/usr/bin/env bash
# The chaos runs CI makes (a few minutes): every workload for a short time
# under every nemesis combined, then each planted bug the harness must
# catch, each expected to make a check fail. Usage: scripts/chaos-ci.sh
# [SECONDS] (default 15 per run). Results go to target/chaos-ci.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-15}"
cargo build -q -p copycat-cli --features sync-tracking,planted-bugs
cargo build -q -p copycat-chaos
chaos=(target/debug/copycat-chaos --copycat target/debug/copycat --dir target/chaos-ci)

"${chaos[@]}" --time "$secs" --workload all --nemesis all --seed 1

# Each planted bug must be caught: --expect-failure succeeds only when a
# check fails.
"${chaos[@]}" --time 20 --workload counter --nemesis partition,kill \
    --planted-bug SkipDuplicateCheck --expect-failure --seed 2
