#!/usr/bin/env bash
# Overload: DNS queries at more than the machine can answer, and registrations at the same time.
# Shows that answered queries keep a bounded latency (a full socket queue drops, it does not
# grow) and that registrations keep being acknowledged. Not part of the tests (it needs the
# machine to itself): scripts/overload.sh [seconds, default 15].
#
# The server runs on the last CPU with one DNS worker, the load (dnsperf, the registering client)
# on the others, so that it is the server that is saturated and the latencies measured are its.
# Phases, on the release build with 100 services of 3 instances:
#   idle       300 registrations one after another, nothing else running: their latency;
#   moderate   dnsperf at 20,000 queries/s: answered latency (p50/p99);
#   saturated  dnsperf with 4 clients and 20,000 queries outstanding (far past what the cores
#              serve), and the same 300 registrations during it: queries answered and lost,
#              answered latency, and the registrations' latency.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-15}
command -v dnsperf >/dev/null || scripts/apt-install.sh dnsperf
cargo build --release --quiet
work=$(mktemp -d)
trap 'kill ${server:-} 2>/dev/null; wait ${server:-} 2>/dev/null; rm -rf "$work"' EXIT
read -r dns http < <(python3 -c 'import socket
ports = []
for _ in range(2):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); ports.append(s.getsockname()[1]); s.close()
print(*ports)')
last=$(($(nproc) - 1))
server_cpu=(taskset -c "$last")
load_cpu=(taskset -c "0-$((last > 0 ? last - 1 : 0))")
"${server_cpu[@]}" target/release/sextant serve --dns "127.0.0.1:$dns" --http "127.0.0.1:$http" \
    --data-dir "$work/data" --zones zones --node-name overload --dns-workers 1 >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$http/v1/status/leader" >/dev/null && break
    sleep 0.1
done

python3 - "$http" "$work/queries" <<'EOF'
import json, sys, urllib.request
http, queries = sys.argv[1], sys.argv[2]
with open(queries, "w") as q:
    for s in range(100):
        for i in range(3):
            body = {"Name": f"svc-{s}", "ID": f"svc-{s}-{i}", "Address": f"10.1.{s}.{i + 1}", "Port": 80}
            req = urllib.request.Request(f"http://127.0.0.1:{http}/v1/agent/service/register",
                                         data=json.dumps(body).encode(), method="PUT")
            urllib.request.urlopen(req).read()
        q.write(f"svc-{s}.service.trading-dc A\nsvc-{s}.service.trading-dc SRV\n")
EOF

# 300 registrations (each its own instance, with a TTL check), one after another on one
# connection: p50/p99/max of the time to the 200.
registrations() {
    "${load_cpu[@]}" python3 - "$http" "$1" <<'EOF'
import http.client, json, sys, time
port, tag = sys.argv[1], sys.argv[2]
conn = http.client.HTTPConnection("127.0.0.1", int(port))
took = []
for i in range(300):
    body = json.dumps({"Name": f"reg-{tag}", "ID": f"reg-{tag}-{i}", "Address": "10.9.0.1", "Port": 80,
                       "Check": {"TTL": "1h", "Status": "passing"}})
    start = time.perf_counter()
    conn.request("PUT", "/v1/agent/service/register", body)
    response = conn.getresponse()
    response.read()
    took.append((time.perf_counter() - start) * 1e3)
    assert response.status == 200, response.status
    time.sleep(0.01)
took.sort()
pick = lambda p: took[min(len(took) - 1, int(round(p / 100 * (len(took) - 1))))]
print(f"registrations ({tag}): 300 acknowledged, p50 {pick(50):.2f} ms, p99 {pick(99):.2f} ms, max {took[-1]:.2f} ms")
EOF
}

dnsperf_run() {  # log, dnsperf args…
    local log=$1
    shift
    timeout $((secs + 15)) "${load_cpu[@]}" dnsperf -s 127.0.0.1 -p "$dns" -d "$work/queries" -l "$secs" -v "$@" >"$log" 2>&1 || true
    local qps lost latency
    qps=$(awk '/Queries per second:/ {print $4}' "$log")
    lost=$(awk '/Queries lost:/ {print $3, $4}' "$log")
    latency=$(python3 scripts/bench/lib.py lat "$log")
    echo "answered ${qps:-?} queries/s, lost ${lost:-?}, answered latency p50/p99 ${latency/ //} µs"
}

echo "== idle"
registrations idle
echo "== moderate: dnsperf at 20,000 queries/s"
echo "dns: $(dnsperf_run "$work/moderate.log" -Q 20000 -c 2)"
echo "== saturated: dnsperf with 4 clients, 20,000 queries outstanding, as fast as it can send"
dnsperf_run "$work/saturated.log" -c 4 -q 20000 >"$work/saturated.txt" &
perf=$!
sleep 2
registrations saturated
wait $perf
echo "dns: $(cat "$work/saturated.txt")"
