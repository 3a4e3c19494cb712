#!/usr/bin/env bash
# Instructions per DNS query, counted by callgrind: the server's own cost, without the noise of a
# shared machine (bench-dns.sh measures CPU time, which drifts by tens of percent from run to run
# here). For each size, the services are registered with the binary running natively, which then
# stops; the binary starts again under callgrind on the same data directory, its counters are
# zeroed once it answers, dnsperf sends each query set at a modest rate, and the instructions
# counted are divided by the queries answered. Two figures: the whole process (user space only:
# the kernel's share is the same system calls whatever sextant build answers; how many queries a
# system call takes moves it a little), and the answer function alone (inclusive), which
# batching does not move.
#
# Usage: scripts/bench-dns-instructions.sh [--no-install] [--baseline PATH] [--baseline-fn NAME] [--etcd]
#                                          [--sizes "10 100000"] [--queries N] [--rate QPS]
#
#   --baseline     another sextant binary (an earlier build), measured the same way: a before/after table
#   --baseline-fn  the baseline's answer function, if not this build's (builds before the one answer
#                  path: sextant::dns::fast::FastPath::answer)
#   --etcd         also measure this build with its registry in etcd (one member the script starts on
#                  127.0.0.1:15323; etcd's own instructions are not counted, the etcd client's are)
#   --queries      queries per set (default 10000)
#   --rate         queries per second dnsperf sends (default 1000: one query per system call)
#
# Results: target/bench-dns-instructions/<timestamp>/ (summary.md); the table goes to stdout.
# Only 127.0.0.1 is used (ports 15321-15322).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
B=$ROOT/scripts/bench

INSTALL=1
SIZES="10 100000"
QUERIES=10000
RATE=1000
BASELINE=""
ANSWER_FN=sextant::dns::engine::DnsEngine::answer_from_registry
BASELINE_FN=$ANSWER_FN
ETCD=0
ETCD_URL=http://127.0.0.1:15323
while [ $# -gt 0 ]; do
    case "$1" in
        --no-install) INSTALL=0; shift ;;
        --baseline) BASELINE=$(realpath "$2"); shift 2 ;;
        --sizes) SIZES=$2; shift 2 ;;
        --queries) QUERIES=$2; shift 2 ;;
        --rate) RATE=$2; shift 2 ;;
        --baseline-fn) BASELINE_FN=$2; shift 2 ;;
        --etcd) ETCD=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ $INSTALL = 1 ]; then
    missing=()
    command -v dnsperf >/dev/null || missing+=(dnsperf)
    command -v valgrind >/dev/null || missing+=(valgrind)
    command -v dig >/dev/null || missing+=(bind9-dnsutils)
    [ $ETCD = 0 ] || command -v etcd >/dev/null || missing+=(etcd-server)
    scripts/apt-install.sh --no-install-recommends "${missing[@]}"
fi
for tool in dnsperf valgrind callgrind_control callgrind_annotate dig python3; do
    command -v $tool >/dev/null || { echo "missing $tool: run without --no-install, or apt-get install dnsperf valgrind bind9-dnsutils" >&2; exit 1; }
done

cargo build --release --quiet
declare -A BINARY=([sextant]=$ROOT/target/release/sextant [sextant-etcd]=$ROOT/target/release/sextant)
declare -A FUNCTION=([sextant]=$ANSWER_FN [baseline]=$BASELINE_FN [sextant-etcd]=$ANSWER_FN)
BUILDS=(sextant)
[ $ETCD = 0 ] || BUILDS+=(sextant-etcd)
if [ -n "$BASELINE" ]; then
    [ -x "$BASELINE" ] || { echo "--baseline $BASELINE is not an executable" >&2; exit 1; }
    BINARY[baseline]=$BASELINE
    BUILDS+=(baseline)
fi
DNS_PORT=15321
HTTP_PORT=15322
RES=$ROOT/target/bench-dns-instructions/$(date +%Y%m%d-%H%M%S)
mkdir -p "$RES"
PID=""
stop() {
    [ -n "$PID" ] || return 0
    kill -TERM "$PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    PID=""
}
source "$B/etcd.sh"
trap 'stop; stop_bench_etcd' EXIT
[ $ETCD = 0 ] || start_bench_etcd 15323 15324 "$RES/etcd"

start() {  # build data-dir log [valgrind args…]
    local build=$1 data=$2 log=$3 store=()
    shift 3
    [ "$build" != sextant-etcd ] || store=(--etcd "$ETCD_URL" --etcd-prefix "/instructions-$(basename "$(dirname "$data")")/")
    "$@" "${BINARY[$build]}" serve --dns "127.0.0.1:$DNS_PORT" --http "127.0.0.1:$HTTP_PORT" --zones "$ROOT/zones" \
        --data-dir "$data" --dns-workers 1 "${store[@]}" > "$log" 2>&1 &
    PID=$!
    for _ in $(seq 600); do
        kill -0 "$PID" 2>/dev/null || { echo "the server exited; log:" >&2; tail -5 "$log" >&2; exit 1; }
        [ "$(dig +time=1 +tries=1 +short @127.0.0.1 -p $DNS_PORT trading-dc SOA 2>/dev/null | wc -l)" = 1 ] && return 0
        sleep 0.5
    done
    echo "the server does not answer on port $DNS_PORT" >&2; exit 1
}

{
    echo "date: $(date -u +%FT%TZ)"
    echo "host: $(uname -sr), $(nproc) CPUs:$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)"
    echo "valgrind: $(valgrind --version); dnsperf: $(dnsperf -h 2>&1 | grep -m1 -i version || true)"
    echo "sextant: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)"
    [ -z "$BASELINE" ] || echo "baseline: $BASELINE"
    echo "queries per set: $QUERIES, at $RATE per second; answer functions: ${FUNCTION[*]}"
} | tee "$RES/versions.txt"

CSV=$RES/runs.csv
echo "size,test,build,queries,instructions,per_query,answer_per_query" > "$CSV"
for size in $SIZES; do
    data=$RES/data-$size
    mkdir -p "$data"
    python3 "$B/gen.py" zone "$data" "$size"
    # Every set holds QUERIES queries: a one-line file is sent QUERIES times, a longer one cut.
    for set in a-only srv-only nx-only svc-only mixed; do
        python3 - "$data/queries/$set.txt" "$QUERIES" > "$data/$set.q" <<'PY'
import itertools, sys
lines = open(sys.argv[1]).read().split("\n")
lines = [l for l in lines if l]
print("\n".join(itertools.islice(itertools.cycle(lines), int(sys.argv[2]))))
PY
    done
    for build in "${BUILDS[@]}"; do
        dir=$data/$build
        start "$build" "$dir" "$data/$build-register.log"
        python3 "$B/gen.py" register "127.0.0.1:$HTTP_PORT" "$size"
        stop
        start "$build" "$dir" "$data/$build-callgrind.log" \
            valgrind --tool=callgrind --callgrind-out-file="$data/$build.%p.out"
        for test in udp-a udp-srv udp-nx udp-svc udp-mixed tcp-a tcp-mixed; do
            case $test in
                udp-a) args=(-m udp -d "$data/a-only.q") ;;
                udp-srv) args=(-m udp -d "$data/srv-only.q") ;;
                udp-nx) args=(-m udp -d "$data/nx-only.q") ;;
                udp-svc) args=(-m udp -d "$data/svc-only.q") ;;
                udp-mixed) args=(-m udp -d "$data/mixed.q") ;;
                tcp-a) args=(-m tcp -d "$data/a-only.q") ;;
                tcp-mixed) args=(-m tcp -d "$data/mixed.q") ;;
            esac
            callgrind_control -z "$PID" > /dev/null
            rm -f "$data/$build".*.out*
            dnsperf -s 127.0.0.1 -p $DNS_PORT "${args[@]}" -n 1 -c 1 -Q "$RATE" -t 5 > "$data/$build-$test.log" 2>&1 || true
            callgrind_control -d "$PID" > /dev/null
            completed=$(awk '/Queries completed:/ {print $3}' "$data/$build-$test.log")
            # One part per dump: its "summary:" line (or "totals:") holds its instruction count.
            total=$(cat "$data/$build".*.out* | awk '/^summary:/ {s += $2; seen = 1} /^totals:/ {t += $2}
                                                      END {print seen ? s : t + 0}')
            # The answer function's inclusive count, from every part dumped.
            answer=0
            for part in "$data/$build".*.out*; do
                n=$(callgrind_annotate --inclusive=yes --threshold=100 "$part" 2>/dev/null |
                    awk -v fn="???:${FUNCTION[$build]} " '!found && index($0, fn) {gsub(",", "", $1); print $1; found = 1}')
                answer=$((answer + ${n:-0}))
            done
            per_q=$(python3 -c "print(f'{$total / ${completed:-0}:.0f}' if ${completed:-0} else '')")
            answer_q=$(python3 -c "print(f'{$answer / ${completed:-0}:.0f}' if ${completed:-0} else '')")
            echo "$size,$test,$build,${completed:-0},$total,$per_q,$answer_q" >> "$CSV"
            printf '%7s %-9s %-8s %7s queries  %8s per query  %8s in the answer function\n' \
                "$size" "$test" "$build" "${completed:-?}" "${per_q:-?}" "${answer_q:-?}"
        done
        stop
    done
done

python3 - "$CSV" <<'PY' | tee "$RES/summary.md"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
builds = list(dict.fromkeys(r["build"] for r in rows))
cell = {(r["size"], r["test"], r["build"]): r for r in rows}
keys = list(dict.fromkeys((r["size"], r["test"]) for r in rows))
# This build against an earlier one (sextant/baseline), and with its registry in etcd against the
# embedded store (sextant-etcd/sextant).
pairs = [("sextant", "baseline")] if "baseline" in builds else []
pairs += [("sextant-etcd", "sextant")] if "sextant-etcd" in builds else []
cols = [f"{b} per query (answer function)" for b in builds] + [f"{n}/{d} (answer function)" for n, d in pairs]
print("| services | test | " + " | ".join(cols) + " |")
print("|---|---|" + "---:|" * len(cols))
for size, test in keys:
    got = [cell.get((size, test, b)) for b in builds]
    line = [f"{r['per_query']} ({r['answer_per_query']})" if r else "" for r in got]
    for n, d in pairs:
        num, den = cell.get((size, test, n)), cell.get((size, test, d))
        if num and den and all(r["per_query"] and r["answer_per_query"] for r in (num, den)):
            whole = float(num["per_query"]) / float(den["per_query"])
            answer = float(num["answer_per_query"]) / float(den["answer_per_query"])
            line.append(f"{whole:.3f} ({answer:.3f})")
        else:
            line.append("")
    print(f"| {size} | {test} | " + " | ".join(line) + " |")
PY
echo "(results in $RES)"
