# A one-member etcd for a DNS benchmark's etcd-backed server, sourced by bench-dns.sh and
# bench-dns-instructions.sh: start_bench_etcd CLIENT_PORT PEER_PORT DIR starts it (ETCD_PID),
# stop_bench_etcd stops it.
ETCD_PID=
start_bench_etcd() {  # client-port peer-port data-dir
    command -v etcd >/dev/null || { echo "missing etcd: apt-get install etcd-server" >&2; exit 1; }
    local client=http://127.0.0.1:$1 peer=http://127.0.0.1:$2
    ETCD_UNSUPPORTED_ARCH=$(uname -m) etcd --name bench --data-dir "$3" --listen-client-urls "$client" \
        --advertise-client-urls "$client" --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
        --initial-cluster "bench=$peer" > "$3.log" 2>&1 &
    ETCD_PID=$!
}
stop_bench_etcd() {
    [ -z "$ETCD_PID" ] || { kill -TERM "$ETCD_PID" 2>/dev/null || true; wait "$ETCD_PID" 2>/dev/null || true; }
}
