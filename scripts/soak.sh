#!/usr/bin/env bash
# The soak test (minutes, not part of the tests): the release server under dnsperf at full load,
# 100 registrations a second with as many deregistrations, 50 flapping HTTP checks and 200
# blocking queries always waiting, for 10 minutes (scripts/soak.sh [minutes]). Prints the
# server's RSS every 30 s; fails on a crash, a wrong answer, or an acknowledged write that the
# registry does not hold at the end, then again once the server is killed (SIGKILL) and started
# on the same data (scripts/bench/soak.py drives and checks).
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-10}
command -v dnsperf >/dev/null || scripts/apt-install.sh dnsperf
venv=target/client-venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet -r tests/clients/requirements.txt
fi
cargo build --release --quiet
work=$(mktemp -d)
cleanup() {
    kill "${perf:-}" "${server:-}" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
read -r dns http < <(python3 -c 'import socket
ports = []
for _ in range(2):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); ports.append(s.getsockname()[1]); s.close()
print(*ports)')
start_server() {
    target/release/sextant serve --dns "127.0.0.1:$dns" --http "127.0.0.1:$http" --data-dir "$work/data" \
        --zones zones --node-name soak >>"$work/server.log" 2>&1 &
    server=$!
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$http/v1/status/leader" >/dev/null && return
        sleep 0.1
    done
    echo "the server did not start; its log:" >&2
    tail -20 "$work/server.log" >&2
    exit 1
}
start_server
for s in stable flapping $(seq -f 'churn-%g' 0 49); do
    printf '%s.service.trading-dc A\n%s.service.trading-dc SRV\n' "$s" "$s"
done >"$work/queries"
echo "nonexistent.service.trading-dc A" >>"$work/queries"
dnsperf -s 127.0.0.1 -p "$dns" -d "$work/queries" -l $((minutes * 60 + 60)) -c 4 -q 200 >"$work/dnsperf.log" 2>&1 &
perf=$!
status=0
"$venv/bin/python" scripts/bench/soak.py "$http" "$dns" "$server" "$minutes" "$work/acked.json" || status=$?
kill -INT "$perf" 2>/dev/null || true
wait "$perf" 2>/dev/null || true
grep -E "Queries (sent|completed|lost)|Queries per second" "$work/dnsperf.log" || true
if ! kill -0 "$server" 2>/dev/null; then
    echo "the server is gone; its log:" >&2
    tail -20 "$work/server.log" >&2
    exit 1
fi
errors=$(grep -c " ERROR " "$work/server.log" || true)
echo "server log: $errors ERROR lines"
[ "$errors" = 0 ] || status=1
# Killed, then started on the same data: every acknowledged write is still as acknowledged.
kill -9 "$server"
wait "$server" 2>/dev/null || true
start_server
python3 - "$http" "$work/acked.json" <<'EOF' || status=1
import json, sys, urllib.request
http, acked = sys.argv[1], json.load(open(sys.argv[2]))
held = set(json.load(urllib.request.urlopen(f"http://127.0.0.1:{http}/v1/agent/services")))
lost = [i for i, op in acked.items() if (op == "register") != (i in held)]
print(f"after SIGKILL and a restart: {len(acked)} acknowledged writes checked, {len(lost)} not as acknowledged")
sys.exit(1 if lost else 0)
EOF
exit $status
