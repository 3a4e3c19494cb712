#!/usr/bin/env bash
# Side-by-side DNS benchmark: sextant against knot and nsd, the same services in each, measured
# with dnsperf in one run, interleaved, several repetitions.
#
# Usage: scripts/bench-dns.sh [--no-install] [--quick] [--sizes "10 1000 100000"] [--modes "1core 2core"]
#                             [--tests "udp-a udp-srv ..."] [--limit SECONDS] [--reps N] [--servers "sextant knot nsd"]
#                             [--baseline PATH]
#
#   --no-install  do not apt-get install dnsperf, knot, nsd and dig
#   --quick       3 s runs, one repetition, sizes 10 and 100000, mode 1core
#   sizes         registered services (each with its A, SRV and target records)
#   modes         1core: every server with one worker, pinned to the last CPU, dnsperf on CPU 0;
#                 2core: every server with its default workers (one per CPU), nothing pinned
#   --baseline    another sextant binary (an earlier build) measured beside this one as server
#                 "baseline", in the same run: before/after comparisons without the drift between runs
#   servers       sextant, knot, nsd, baseline, and sextant-etcd: sextant with its registry in etcd (one
#                 member the script starts on 127.0.0.1:15320; etcd's own CPU is not counted), to show
#                 that answers cost the same whichever store the registry is kept in
#   tests         udp-a (A, hot service), udp-srv (SRV, 3 instances), udp-nx (NXDOMAIN), udp-svc (A, random
#                 service), udp-mixed (40% random A, 30% SRV, 20% hot A, 10% NXDOMAIN), tcp-a, tcp-mixed,
#                 lat-mixed (mixed at a fixed 20k qps: p50/p99 latency); udp-a-qN, udp-mixed-qN: a fixed N qps
#                 (CPU per query of servers doing the same work, e.g. udp-a-q60000 in mode 1core)
#
# Server CPU per query comes from /proc (utime+stime of the server process and its children) over the
# dnsperf run. Results: target/bench-dns/<timestamp>/ (runs.csv, raw logs, summary.md); the table goes
# to stdout. Only 127.0.0.1 is used (ports 15311-15314); every process started is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
B=$ROOT/scripts/bench

INSTALL=1
SIZES=${SIZES:-"10 1000 100000"}
MODES=${MODES:-"1core 2core"}
TESTS=${TESTS:-"udp-a udp-srv udp-nx udp-svc udp-mixed tcp-a tcp-mixed lat-mixed"}
SERVERS=${SERVERS:-"sextant knot nsd"}
LIMIT=${LIMIT:-5}
REPS=${REPS:-3}
BASELINE=${BASELINE:-}
QRATE=20000
CLIENTS=4
while [ $# -gt 0 ]; do
    case "$1" in
        --no-install) INSTALL=0; shift ;;
        --quick) LIMIT=3; REPS=1; SIZES="10 100000"; MODES=1core; shift ;;
        --sizes) SIZES=$2; shift 2 ;;
        --modes) MODES=$2; shift 2 ;;
        --tests) TESTS=$2; shift 2 ;;
        --servers) SERVERS=$2; shift 2 ;;
        --limit) LIMIT=$2; shift 2 ;;
        --reps) REPS=$2; shift 2 ;;
        --baseline) BASELINE=$(realpath "$2"); shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

if [ $INSTALL = 1 ]; then
    missing=()
    command -v dnsperf >/dev/null || missing+=(dnsperf)
    command -v knotd >/dev/null || missing+=(knot)
    command -v nsd >/dev/null || missing+=(nsd)
    command -v dig >/dev/null || missing+=(bind9-dnsutils)
    command -v taskset >/dev/null || missing+=(util-linux)
    scripts/apt-install.sh --no-install-recommends "${missing[@]}"
fi
for tool in dnsperf knotd nsd dig taskset python3; do
    command -v $tool >/dev/null || { echo "missing $tool: run without --no-install, or apt-get install dnsperf knot nsd bind9-dnsutils" >&2; exit 1; }
done

cargo build --release --quiet
SEXTANT=$ROOT/target/release/sextant
if [ -n "$BASELINE" ]; then
    [ -x "$BASELINE" ] || { echo "--baseline $BASELINE is not an executable" >&2; exit 1; }
    [[ " $SERVERS " == *" baseline "* ]] || SERVERS="$SERVERS baseline"
fi

NCPU=$(nproc)
SRV_CPU=$((NCPU - 1))
declare -A PORT=([sextant]=15311 [knot]=15312 [nsd]=15313 [baseline]=15315 [sextant-etcd]=15317)
declare -A HTTP_PORT=([sextant]=15314 [baseline]=15316 [sextant-etcd]=15318)
ETCD_URL=http://127.0.0.1:15320
declare -A PIDS=()
RES=$ROOT/target/bench-dns/$(date +%Y%m%d-%H%M%S)
mkdir -p "$RES"
CSV=$RES/runs.csv
echo "size,mode,test,server,rep,qps,lost,cpu_s,cpu_us_per_q,p50_us,p99_us" > "$CSV"

stop_all() {
    local name pid
    for name in "${!PIDS[@]}"; do
        pid=${PIDS[$name]}
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        unset "PIDS[$name]"
    done
}
source "$B/etcd.sh"
trap 'stop_all; stop_bench_etcd' EXIT
if [[ " $SERVERS " == *" sextant-etcd "* ]]; then
    [ $INSTALL = 0 ] || command -v etcd >/dev/null || scripts/apt-install.sh --no-install-recommends etcd-server
    start_bench_etcd 15320 15321 "$RES/etcd"
fi

write_configs() {  # data-dir mode
    local data=$1 mode=$2 knot_workers="" nsd_workers="    server-count: 1"
    if [ "$mode" = 1core ]; then
        knot_workers=$'    udp-workers: 1\n    tcp-workers: 1\n    background-workers: 1'
    else
        nsd_workers=$'    server-count: '"$NCPU"$'\n    reuseport: yes'
    fi
    mkdir -p "$data/knot" "$data/nsd"
    cat > "$data/knot/knot.conf" <<CONF
server:
    rundir: "$data/knot"
    listen: 127.0.0.1@${PORT[knot]}
$knot_workers
log:
  - target: stderr
    any: warning
database:
    storage: "$data/knot/db"
template:
  - id: default
    storage: "$data"
    file: "%s.zone"
zone:
  - domain: trading-dc.
CONF
    cat > "$data/nsd/nsd.conf" <<CONF
server:
    ip-address: 127.0.0.1@${PORT[nsd]}
    do-ip6: no
$nsd_workers
    username: ""
    chroot: ""
    database: ""
    zonesdir: "$data"
    pidfile: "$data/nsd/nsd.pid"
    xfrdfile: "$data/nsd/xfrd.state"
    zonelistfile: "$data/nsd/zone.list"
    xfrdir: "$data/nsd"
    logfile: "$data/nsd/nsd.log"
    verbosity: 1
    # NSD rate-limits 200 qps per /24 by default: a one-source benchmark would be throttled.
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
remote-control:
    control-enable: no
zone:
    name: trading-dc.
    zonefile: "trading-dc.zone"
CONF
}

start_server() {  # name data mode
    local name=$1 data=$2 mode=$3 pin=() cmd=() workers=$NCPU
    if [ "$mode" = 1core ] && [ "$NCPU" -gt 1 ]; then pin=(taskset -c "$SRV_CPU"); workers=1; fi
    case $name in
        sextant|baseline|sextant-etcd)
            local binary=$SEXTANT store=()
            [ "$name" = baseline ] && binary=$BASELINE
            # A prefix of this run's own: etcd keeps what earlier sizes and modes registered.
            [ "$name" = sextant-etcd ] && store=(--etcd "$ETCD_URL" --etcd-prefix "/bench-$(basename "$data")-$mode/")
            cmd=("$binary" serve --dns "127.0.0.1:${PORT[$name]}" --http "127.0.0.1:${HTTP_PORT[$name]}"
                 --zones "$ROOT/zones" --data-dir "$data/$name" --dns-workers "$workers" "${store[@]}") ;;
        knot) rm -rf "$data/knot/db"; cmd=(knotd -c "$data/knot/knot.conf") ;;
        nsd) cmd=(nsd -d -c "$data/nsd/nsd.conf") ;;
    esac
    RUST_LOG=warn "${pin[@]}" "${cmd[@]}" > "$data/$name.log" 2>&1 &
    PIDS[$name]=$!
}

wait_ready() {  # name
    for _ in $(seq 120); do
        kill -0 "${PIDS[$1]}" 2>/dev/null || { echo "$1 exited; log:" >&2; tail -5 "$RES"/*/"$1.log" >&2; exit 1; }
        [ "$(dig +time=1 +tries=1 +short @127.0.0.1 -p "${PORT[$1]}" trading-dc SOA 2>/dev/null | wc -l)" = 1 ] && return 0
        sleep 0.25
    done
    echo "$1 does not answer on port ${PORT[$1]}" >&2; exit 1
}

pin_threads() {  # name mode: in mode 1core, every thread of the server on the server's CPU
    [ "$2" = 1core ] && [ "$NCPU" -gt 1 ] || return 0
    # knot pins its UDP worker n to CPU n itself, whatever CPUs it was started on: its one worker
    # would share CPU 0 with dnsperf, where waking dnsperf costs no inter-processor interrupt.
    taskset -a -p -c "$SRV_CPU" "${PIDS[$1]}" > /dev/null
    local t
    for t in /proc/"${PIDS[$1]}"/task/*; do
        [ "$(awk '/Cpus_allowed_list/ {print $2}' "$t/status")" = "$SRV_CPU" ] ||
            { echo "$1: thread $(basename "$t") is not on CPU $SRV_CPU" >&2; exit 1; }
    done
}

answers() {  # port: a fingerprint of the answers to compare between servers
    local p=$1 n=$2 last=$(( $2 > 1 ? $2 - 1 : 1 ))
    # nsd adds the NS record's glue to every answer; that is not part of the service data.
    d() { dig +time=2 +tries=1 +nocookie +noall +answer +additional @127.0.0.1 -p "$p" "$@" 2>/dev/null |
          awk '$1 != "ns1.trading-dc." {print $1, $4, $5, $6, $7, $8}' | sort; }
    d orders.service.trading-dc A; d orders.service.trading-dc SRV; d "svc-$last.service.trading-dc" A
    dig +time=2 +tries=1 +nocookie @127.0.0.1 -p "$p" nosuch.service.trading-dc A | grep -o 'status: [A-Z]*'
}

run_one() {  # size mode test server rep data
    local size=$1 mode=$2 test=$3 s=$4 rep=$5 data=$6 args=() lg=()
    case $test in
        udp-a) args=(-m udp -d "$data/queries/a-only.txt") ;;
        udp-srv) args=(-m udp -d "$data/queries/srv-only.txt") ;;
        udp-nx) args=(-m udp -d "$data/queries/nx-only.txt") ;;
        udp-svc) args=(-m udp -d "$data/queries/svc-only.txt") ;;
        udp-mixed) args=(-m udp -d "$data/queries/mixed.txt") ;;
        tcp-a) args=(-m tcp -d "$data/queries/a-only.txt") ;;
        tcp-mixed) args=(-m tcp -d "$data/queries/mixed.txt") ;;
        lat-mixed) args=(-m udp -d "$data/queries/mixed.txt" -Q "$QRATE" -v) ;;
        udp-a-q*) args=(-m udp -d "$data/queries/a-only.txt" -Q "${test##*-q}") ;;
        udp-mixed-q*) args=(-m udp -d "$data/queries/mixed.txt" -Q "${test##*-q}") ;;
        *) echo "unknown test $test" >&2; exit 2 ;;
    esac
    [ "$mode" = 1core ] && [ "$NCPU" -gt 1 ] && lg=(taskset -c 0)
    local raw=$RES/$size-$mode-$test-$s-r$rep.log pid=${PIDS[$s]} c0 c1
    c0=$(python3 "$B/lib.py" cpu "$pid")
    timeout $((LIMIT + 10)) "${lg[@]}" dnsperf -s 127.0.0.1 -p "${PORT[$s]}" "${args[@]}" -l "$LIMIT" -c "$CLIENTS" -t 2 > "$raw" 2>&1 || true
    c1=$(python3 "$B/lib.py" cpu "$pid")
    local qps completed lost lat=("-" "-")
    qps=$(awk '/Queries per second:/ {print $4}' "$raw")
    completed=$(awk '/Queries completed:/ {print $3}' "$raw")
    lost=$(awk '/Queries lost:/ {print $3}' "$raw")
    [ "$test" = lat-mixed ] && read -r -a lat <<< "$(python3 "$B/lib.py" lat "$raw")" && gzip -f "$raw"
    local cpu_s per_q
    cpu_s=$(python3 -c "print(f'{$c1 - $c0:.2f}')")
    per_q=$(python3 -c "c=${completed:-0}; print(f'{($c1 - $c0) / c * 1e6:.3f}' if c else '')")
    echo "$size,$mode,$test,$s,$rep,${qps:-},${lost:-},$cpu_s,$per_q,${lat[0]},${lat[1]}" >> "$CSV"
    printf '%7s %-5s %-9s %-7s r%s %10s qps  lost %-6s cpu %5ss  %6s µs/q  %s\n' "$size" "$mode" "$test" "$s" "$rep" \
        "${qps:-?}" "${lost:-?}" "$cpu_s" "${per_q:-?}" "$( [ "$test" = lat-mixed ] && echo "p50/p99 ${lat[0]}/${lat[1]} µs")"
}

{
    echo "date: $(date -u +%FT%TZ)"
    echo "host: $(uname -sr), $NCPU CPUs:$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), $(free -g | awk '/Mem:/ {print $2}') GiB"
    echo "dnsperf: $(dnsperf -h 2>&1 | grep -m1 -i version || true)"
    echo "knot: $(knotd -V 2>&1 | head -1)"
    echo "nsd: $(nsd -v 2>&1 | head -1)"
    echo "sextant: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)"
    [ -z "$BASELINE" ] || echo "baseline: $BASELINE"
    echo "settings: LIMIT=$LIMIT s REPS=$REPS SIZES='$SIZES' MODES='$MODES' CLIENTS=$CLIENTS"
} | tee "$RES/versions.txt"

ALL=($SERVERS)
for size in $SIZES; do
    data=$RES/data-$size
    mkdir -p "$data"
    python3 "$B/gen.py" zone "$data" "$size"
    for mode in $MODES; do
        write_configs "$data" "$mode"
        for s in "${ALL[@]}"; do start_server "$s" "$data" "$mode"; done
        for s in "${ALL[@]}"; do wait_ready "$s"; pin_threads "$s" "$mode"; done
        for s in "${ALL[@]}"; do
            [ -n "${HTTP_PORT[$s]:-}" ] || continue
            t0=$(date +%s.%N)
            python3 "$B/gen.py" register "127.0.0.1:${HTTP_PORT[$s]}" "$size"
            echo "registered $size services with $s in $(python3 -c "print(f'{$(date +%s.%N) - $t0:.1f}')") s;" \
                 "$s resident memory: $(awk '/VmRSS/ {print $2, $3}' "/proc/${PIDS[$s]}/status")" | tee -a "$RES/versions.txt"
        done
        reference=$(answers "${PORT[${ALL[0]}]}" "$size")
        for s in "${ALL[@]}"; do
            if [ "$(answers "${PORT[$s]}" "$size")" != "$reference" ]; then
                echo "answers differ between ${ALL[0]} and $s ($size services):" >&2
                diff <(echo "$reference") <(answers "${PORT[$s]}" "$size") >&2 || true
                exit 1
            fi
        done
        echo "same answers from ${ALL[*]} ($size services, $mode)"
        n=${#ALL[@]}
        for rep in $(seq "$REPS"); do
            for test in $TESTS; do
                for i in $(seq 0 $((n - 1))); do
                    run_one "$size" "$mode" "$test" "${ALL[$(((i + rep - 1) % n))]}" "$rep" "$data"
                    sleep 0.3
                done
            done
        done
        stop_all
    done
    rm -rf "$data/knot/db"
done

python3 "$B/lib.py" table "$CSV" | tee "$RES/summary.md"
echo "(results in $RES)"
