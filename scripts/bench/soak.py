"""The soak test's driver (scripts/soak.sh starts the server and dnsperf, then this): for the
given minutes, 100 registrations a second with as many deregistrations once 500 churning
instances are up, 50 instances with HTTP checks that flap every few seconds, 200 blocking
queries always waiting, and answers sampled every second and checked (a stable service's
answer is exact; an instance acknowledged a moment ago is answered). Prints the server's RSS
every 30 s; at the end, checks every acknowledged write against the registry (the last write
acknowledged for each instance must be what is there) and exits non-zero on any discrepancy.

The last write acknowledged for each instance is written to ACKED (JSON), for soak.sh to check
again after it kills the server (SIGKILL) and starts it on the same data.

Usage: soak.py HTTP_PORT DNS_PORT SERVER_PID MINUTES ACKED"""

import http.client
import http.server
import json
import sys
import threading
import time

import dns.exception
import dns.message
import dns.query
import dns.rdatatype

HTTP, DNS, PID, MINUTES = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
ACKED = sys.argv[5]
DOMAIN = "trading-dc"
deadline = time.monotonic() + MINUTES * 60
stop = threading.Event()
failures = []
lock = threading.Lock()


def fail(text):
    with lock:
        failures.append(text)
    print(f"FAIL {text}", flush=True)


class Api:
    """One keep-alive connection to the HTTP API."""

    def __init__(self):
        self.conn = http.client.HTTPConnection("127.0.0.1", HTTP, timeout=30)

    def call(self, method, path, body=None):
        """Status, body and index; a call whose connection broke is made again once, and a
        deregistration made again that finds nothing (404) had its first attempt applied."""
        for attempt in range(2):
            try:
                self.conn.request(method, path, json.dumps(body) if body is not None else None)
                response = self.conn.getresponse()
                status = response.status
                if attempt and status == 404 and "/deregister/" in path:
                    status = 200
                return status, response.read(), response.getheader("X-Consul-Index")
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", HTTP, timeout=30)
                if attempt:
                    raise


def guarded(name, body):
    """A thread's body whose exception is a failure, not a thread that silently stops."""

    def run(*args):
        try:
            body(*args)
        except Exception as error:  # noqa: BLE001: any of them ends the thread
            fail(f"{name} stopped: {error!r}")

    return run


def ask(name, rdtype):
    query = dns.message.make_query(f"{name}.service.{DOMAIN}.", rdtype)
    for _ in range(3):  # dnsperf fills the socket queue: a query may be dropped
        try:
            return dns.query.udp(query, "127.0.0.1", port=DNS, timeout=1)
        except dns.exception.Timeout:
            continue
    return None


def addresses(reply):
    return sorted(rr.address for rrset in reply.answer if rrset.rdtype == dns.rdatatype.A for rr in rrset)


# --- flapping HTTP checks: /flap/<n> answers 200 or 500, each path changing every 2-6 s ---
class Flapping(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        n = int(self.path.rsplit("/", 1)[-1])
        period = 2 + n % 5
        healthy = int(time.monotonic() / period) % 2 == 0
        self.send_response(200 if healthy else 500)
        self.end_headers()

    def log_message(self, *args):
        pass


endpoint = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Flapping)
threading.Thread(target=endpoint.serve_forever, daemon=True).start()

api = Api()
# Stable services: their answer never changes.
for i in range(20):
    body = {"Name": "stable", "ID": f"stable-{i}", "Address": f"10.7.0.{i + 1}", "Port": 80}
    assert api.call("PUT", "/v1/agent/service/register", body)[0] == 200
STABLE = sorted(f"10.7.0.{i + 1}" for i in range(20))
for n in range(50):
    body = {"Name": "flapping", "ID": f"flap-{n}", "Address": f"10.6.0.{n + 1}", "Port": 80,
            "Check": {"HTTP": f"http://127.0.0.1:{endpoint.server_port}/flap/{n}", "Interval": "1s", "Timeout": "1s"}}
    assert api.call("PUT", "/v1/agent/service/register", body)[0] == 200

# --- churn: 100 registrations a second (10 clients, 10 each: a client's write waits for the
# fsync of its group commit, so writes from several clients share one; 4 clients reached only
# 82/s on two loaded cores), each instance deregistered 5 s later ---
CHURNERS = 10
acked = {}  # instance id -> the last acknowledged write ("register" or "deregister")
counts = {"register": 0, "deregister": 0, "refused": 0}
recent = []  # (id, address) acknowledged registrations, for the DNS sampler


def churn(first):
    api = Api()
    n = first
    next_at = time.monotonic()
    while not stop.is_set():
        iid = f"churn-{n}"
        address = f"10.{8 + n // 65536 % 8}.{n // 256 % 256}.{n % 256}"
        body = {"Name": f"churn-{n % 50}", "ID": iid, "Address": address, "Port": 80,
                "Check": {"TTL": "1h", "Status": "passing"}}
        status, _, _ = api.call("PUT", "/v1/agent/service/register", body)
        if status == 200:
            with lock:
                acked[iid] = "register"
                counts["register"] += 1
                recent.append((f"churn-{n % 50}", address))
                del recent[:-50]
        else:
            with lock:
                counts["refused"] += 1
            fail(f"registration of {iid}: {status}")
        old = n - 500
        if old >= 0:
            status, _, _ = api.call("PUT", f"/v1/agent/service/deregister/churn-{old}")
            if status == 200:
                with lock:
                    acked[f"churn-{old}"] = "deregister"
                    counts["deregister"] += 1
            else:
                fail(f"deregistration of churn-{old}: {status}")
        n += CHURNERS
        next_at += CHURNERS / 100
        time.sleep(max(0.0, next_at - time.monotonic()))


# --- 200 blocking queries, always waiting ---
woken = [0]


def watcher(k):
    api = Api()
    index = 0
    while not stop.is_set():
        status, _, header = api.call("GET", f"/v1/health/service/churn-{k % 50}?index={index}&wait=10s")
        if status != 200:
            fail(f"blocking query: {status}")
            time.sleep(1)
            continue
        index = int(header or 0)
        woken[0] += 1


# --- answers sampled every second ---
sampled = [0]


def sampler():
    while not stop.is_set():
        reply = ask("stable", "A")
        if reply is not None:
            sampled[0] += 1
            if addresses(reply) != STABLE:
                fail(f"stable answered {addresses(reply)}")
        with lock:
            pick = recent[-1] if recent else None
        if pick is not None:
            service, address = pick
            # Acknowledged a moment ago and deregistered only 5 s later: it must be answered.
            reply = ask(service, "A")
            if reply is not None:
                sampled[0] += 1
                if address not in addresses(reply):
                    fail(f"{address} acknowledged for {service}, not answered: {addresses(reply)}")
        time.sleep(1)


def rss_mib():
    with open(f"/proc/{PID}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024


churners = [threading.Thread(target=guarded("churn", churn), args=(k,), daemon=True) for k in range(CHURNERS)]
threads = churners + [threading.Thread(target=guarded("sampler", sampler), daemon=True)]
threads += [threading.Thread(target=guarded("watcher", watcher), args=(k,), daemon=True) for k in range(200)]
for t in threads:
    t.start()
started = time.monotonic()
print(f"{'minute':>6} {'RSS MiB':>8} {'registered':>10} {'deregistered':>12} {'watches woken':>13} {'answers checked':>15}", flush=True)
while time.monotonic() < deadline:
    time.sleep(min(30, max(0, deadline - time.monotonic())))
    print(f"{(time.monotonic() - started) / 60:6.1f} {rss_mib():8.1f} {counts['register']:10} "
          f"{counts['deregister']:12} {woken[0]:13} {sampled[0]:15}", flush=True)
stop.set()
for t in churners:  # every write made is acknowledged (or failed) before the check
    t.join()

# Every acknowledged write, against what the registry holds.
status, body, _ = Api().call("GET", "/v1/agent/services")
assert status == 200, status
held = set(json.loads(body))
with lock:
    lost = [i for i, op in acked.items() if (op == "register") != (i in held)]
    with open(ACKED, "w") as f:
        json.dump(acked, f)
for iid in lost[:10]:
    fail(f"{iid}: last acknowledged {acked[iid]}, yet {'held' if iid in held else 'missing'}")
print(f"acknowledged writes checked: {len(acked)} instances, {len(lost)} not as acknowledged; "
      f"{counts['register']} registrations, {counts['deregister']} deregistrations, {counts['refused']} refused; "
      f"{sampled[0]} answers checked", flush=True)
if failures:
    print(f"{len(failures)} failures", flush=True)
    sys.exit(1)
print("soak: no failure", flush=True)
