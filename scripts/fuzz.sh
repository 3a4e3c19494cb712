#!/usr/bin/env bash
# Runs one fuzz target under libFuzzer (cargo-fuzz, nightly Rust, AddressSanitizer) for a
# number of seconds: scripts/fuzz.sh <target> <seconds>. Targets: dns_query, forward_relay,
# consul_json, go_duration, zone_file (fuzz/fuzz_targets/). It starts from the committed corpus
# (fuzz/corpus/<target>/) in a working copy under target/fuzz-corpus/, so what libFuzzer adds
# stays out of the tree; a finding is written to fuzz/artifacts/<target>/: add it to the
# corpus (it then runs in every test run, tests/it/fuzz_corpus.rs) once fixed.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: scripts/fuzz.sh <target> <seconds>}
seconds=${2:?usage: scripts/fuzz.sh <target> <seconds>}
[ -f "fuzz/fuzz_targets/$target.rs" ] || { echo "no fuzz target $target (see fuzz/fuzz_targets/)" >&2; exit 2; }
if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
work="target/fuzz-corpus/$target"
mkdir -p "$work"
cp -n "fuzz/corpus/$target"/* "$work"/ 2>/dev/null || true
# One job, RSS bounded: the machine is shared.
exec cargo +nightly fuzz run "$target" "$work" "fuzz/corpus/$target" -- \
  -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1
