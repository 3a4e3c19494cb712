#!/usr/bin/env python3
"""Benchmark data for N services, the same for every server.

    gen.py zone DIR N            write DIR/trading-dc.zone (for knot and nsd) and DIR/queries/*.txt
    gen.py register HOST:PORT N  register the same instances with sextant over its HTTP API

Service `orders` has 3 instances (10.0.0.1-3:8080); svc-1 .. svc-(N-1) have one instance each.
In the zone they are written exactly as sextant answers them: A records under the service name,
SRV records whose targets are Consul's <hex-ip>.addr.trading-dc names, and those names' A records.
Deterministic (fixed seed), so every run sees the same data and the same queries.
"""
import http.client
import json
import os
import random
import sys

SOA = """$ORIGIN trading-dc.
$TTL 3600
@       IN SOA  ns1.trading-dc. hostmaster.trading-dc. 1 3600 600 86400 0
@       IN NS   ns1.trading-dc.
ns1     IN A    127.0.0.1
"""


def instances(n_services):
    """(service, id, ip, port) for every instance."""
    out = [("orders", f"orders-{i}", f"10.0.0.{i}", 8080) for i in (1, 2, 3)]
    for i in range(1, n_services):
        ip = f"10.{1 + i // 65536}.{(i // 256) % 256}.{i % 256}"
        out.append((f"svc-{i}", f"svc-{i}", ip, 80))
    return out


def hex_ip(ip):
    return "".join(f"{int(o):02x}" for o in ip.split("."))


def write_zone(directory, n):
    os.makedirs(os.path.join(directory, "queries"), exist_ok=True)
    with open(os.path.join(directory, "trading-dc.zone"), "w") as z:
        z.write(SOA)
        for service, _id, ip, port in instances(n):
            z.write(f"{service}.service 0 IN A {ip}\n")
            z.write(f"{service}.service 0 IN SRV 1 1 {port} {hex_ip(ip)}.addr.trading-dc.\n")
            z.write(f"{hex_ip(ip)}.addr 0 IN A {ip}\n")
    rng = random.Random(20261123)
    svc = lambda: f"svc-{rng.randrange(1, max(n, 2))}.service.trading-dc A" if n > 1 else "orders.service.trading-dc A"
    nx = lambda: f"nosuch-{rng.randrange(1_000_000)}.service.trading-dc A"
    files = {
        "a-only": ["orders.service.trading-dc A"],
        "srv-only": ["orders.service.trading-dc SRV"],
        "nx-only": [nx() for _ in range(20000)],
        "svc-only": [svc() for _ in range(20000)],
    }
    mixed = []
    for _ in range(100000):
        r = rng.random()
        if r < 0.4:
            mixed.append(svc())
        elif r < 0.7:
            mixed.append("orders.service.trading-dc SRV")
        elif r < 0.9:
            mixed.append("orders.service.trading-dc A")
        else:
            mixed.append(nx())
    files["mixed"] = mixed
    for name, lines in files.items():
        with open(os.path.join(directory, "queries", f"{name}.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")


def register(address, n):
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    for service, id_, ip, port_ in instances(n):
        body = json.dumps({"Name": service, "ID": id_, "Address": ip, "Port": port_})
        conn.request("PUT", "/v1/agent/service/register", body)
        resp = conn.getresponse()
        text = resp.read()
        if resp.status != 200:
            sys.exit(f"registration of {id_} failed: {resp.status} {text!r}")


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ("zone", "register"):
        sys.exit(__doc__)
    if sys.argv[1] == "zone":
        write_zone(sys.argv[2], int(sys.argv[3]))
    else:
        register(sys.argv[2], int(sys.argv[3]))
