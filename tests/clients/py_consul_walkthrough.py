"""py-consul (https://pypi.org/project/py-consul/) against sextant, unchanged: the calls a service
makes over its life, each followed by what DNS must answer. Usage: python py_consul_walkthrough.py
HTTP_ADDR DNS_ADDR. Exits non-zero on the first thing that is not as Consul would have it."""

import os
import sys
import threading
import time

import consul
from consul.exceptions import ACLPermissionDenied, BadRequest

from harness import Dns, health_endpoint

http_addr, dns_addr = sys.argv[1], sys.argv[2]
host, port = http_addr.rsplit(":", 1)
# Over HTTPS as Consul's own tools are told: CONSUL_HTTP_SSL, CONSUL_CACERT, CONSUL_CLIENT_CERT/KEY.
tls = {}
if os.environ.get("CONSUL_CACERT"):
    tls["verify"] = os.environ["CONSUL_CACERT"]
if os.environ.get("CONSUL_CLIENT_CERT"):
    tls["cert"] = (os.environ["CONSUL_CLIENT_CERT"], os.environ["CONSUL_CLIENT_KEY"])
c = consul.Consul(host=host, port=int(port), **tls)
assert c.http.base_uri.startswith("https://") == (os.environ.get("CONSUL_HTTP_SSL") == "true"), c.http.base_uri
dns = Dns(dns_addr)


def step(text):
    print(f"- {text}", flush=True)


step("agent.self() names the datacenter and the node; catalog.nodes() lists that node")
_, nodes = c.catalog.nodes()
if os.environ.get("CONSUL_HTTP_TOKEN"):
    # py-consul sends no token with agent.self() (unlike every other call used here), so a server
    # that requires one refuses it, as Consul with default-deny ACLs does.
    try:
        c.agent.self()
        raise AssertionError("agent.self() without a token was served")
    except ACLPermissionDenied:
        print("  agent.self(): refused, as py-consul sends it without the token", flush=True)
else:
    me = c.agent.self()
    assert me["Config"]["Datacenter"] == "trading-dc", me["Config"]
    assert [n["Node"] for n in nodes] == [me["Config"]["NodeName"]], (nodes, me["Config"])
assert [n["Datacenter"] for n in nodes] == ["trading-dc"], nodes

step("register two instances with TTL checks: critical, so not in DNS, until their first heartbeat")
for n in (1, 2):
    ok = c.agent.service.register(
        "pay", service_id=f"pay-{n}", address=f"10.7.0.{n}", port=8080 + n,
        tags=["v1", f"rack{n}"], meta={"team": "payments"}, check=consul.Check.ttl("10s"),
    )
    assert ok is True, ok
assert dns.addresses("pay") == [], dns.addresses("pay")
index, nodes = c.health.service("pay")
assert sorted(n["Service"]["ID"] for n in nodes) == ["pay-1", "pay-2"], nodes
assert {n["Checks"][-1]["Status"] for n in nodes} == {"critical"}, nodes

step("ttl_pass: in DNS the moment the call returns")
assert c.agent.check.ttl_pass("service:pay-1", notes="up") is True
assert dns.addresses("pay") == ["10.7.0.1"], dns.addresses("pay")
assert c.agent.check.ttl_pass("service:pay-2") is True
assert dns.addresses("pay") == ["10.7.0.1", "10.7.0.2"], dns.addresses("pay")
assert dns.ports("pay") == [8081, 8082], dns.ports("pay")

step("ttl_warn: still answered in DNS, but not passing")
assert c.agent.check.ttl_warn("service:pay-2", notes="slow") is True
_, passing = c.health.service("pay", passing=True)
assert [n["Service"]["ID"] for n in passing] == ["pay-1"], passing
assert dns.addresses("pay") == ["10.7.0.1", "10.7.0.2"]
_, checks = c.health.checks("pay")
assert {(ch["ServiceID"], ch["Status"], ch["Output"]) for ch in checks} == {
    ("pay-1", "passing", "up"), ("pay-2", "warning", "slow")}, checks

step("a blocking health.service(passing=True, index, wait='30s') returns as soon as pay-1 fails")
index, passing = c.health.service("pay", passing=True)
failing = threading.Timer(0.5, lambda: c.agent.check.ttl_fail("service:pay-1", notes="down"))
started = time.monotonic()
failing.start()
new_index, passing = c.health.service("pay", passing=True, index=index, wait="30s")
waited = time.monotonic() - started
print(f"  woke after {waited:.3f}s (fail sent at 0.5s), index {index} -> {new_index}", flush=True)
assert 0.4 < waited < 5, waited
assert int(new_index) > int(index), (index, new_index)
assert passing == [], passing
assert dns.addresses("pay") == ["10.7.0.2"], dns.addresses("pay")

step("a blocking query with nothing changing waits its wait out")
started = time.monotonic()
same_index, _ = c.health.service("pay", passing=True, index=new_index, wait="1s")
waited = time.monotonic() - started
assert same_index == new_index, (new_index, same_index)
assert 1.0 <= waited < 3, waited

step("catalog.services() lists the service with its tags")
_, services = c.catalog.services()
assert sorted(services["pay"]) == ["rack1", "rack2", "v1"], services

step("an HTTP check (Check.http) is probed by sextant and turns passing; a watcher sees it")
endpoint = health_endpoint()
url = f"http://127.0.0.1:{endpoint.server_port}/health"
index, _ = c.health.service("web", passing=True)
assert c.agent.service.register(
    "web", service_id="web-1", address="127.0.0.1", port=endpoint.server_port,
    check=consul.Check.http(url, "1s", timeout="1s", deregister="1m"),
) is True
deadline = time.monotonic() + 10
passing = []
while not passing and time.monotonic() < deadline:
    index, passing = c.health.service("web", passing=True, index=index, wait="5s")
assert [n["Service"]["ID"] for n in passing] == ["web-1"], passing
assert dns.addresses("web") == ["127.0.0.1"], dns.addresses("web")

step("agent.check.register adds a check to an instance; agent.service.maintenance takes it out of DNS and back")
assert c.agent.check.ttl_pass("service:pay-1", notes="up again") is True
assert dns.addresses("pay") == ["10.7.0.1", "10.7.0.2"], dns.addresses("pay")
assert c.agent.check.register(
    "disk", check=consul.Check.ttl("1h"), check_id="pay-1-disk", notes="free space", service_id="pay-1",
) is True
disk = c.agent.checks()["pay-1-disk"]
assert (disk["ServiceID"], disk["Status"], disk["Notes"]) == ("pay-1", "critical", "free space"), disk
assert dns.addresses("pay") == ["10.7.0.2"], dns.addresses("pay")
assert c.agent.check.ttl_pass("pay-1-disk", notes="80% free") is True
assert dns.addresses("pay") == ["10.7.0.1", "10.7.0.2"], dns.addresses("pay")
assert c.agent.service.maintenance("pay-1", True, reason="kernel upgrade") is True
assert dns.addresses("pay") == ["10.7.0.2"], dns.addresses("pay")
maintenance = c.agent.checks()["_service_maintenance:pay-1"]
assert (maintenance["Status"], maintenance["Notes"]) == ("critical", "kernel upgrade"), maintenance
_, passing = c.health.service("pay", passing=True)
assert passing == [], passing
assert c.agent.service.maintenance("pay-1", False) is True
assert dns.addresses("pay") == ["10.7.0.1", "10.7.0.2"], dns.addresses("pay")
assert c.agent.check.deregister("pay-1-disk") is True
assert "pay-1-disk" not in c.agent.checks()
assert c.agent.check.deregister("pay-1-disk") is False

step("catalog.register/deregister an external node; catalog.node, health.node; DNS follows its registrar")
assert c.catalog.register(
    "ext-db", "10.8.0.1",
    service={"Service": "ledger", "ID": "ledger-1", "Port": 5432, "Tags": ["primary"]},
    check={"Node": "ext-db", "CheckID": "ext-db-alive", "Name": "alive", "Status": "passing"},
) is True
assert c.catalog.register(
    "ext-db", "10.8.0.1",
    check={"CheckID": "ledger-1-sql", "Name": "sql", "Status": "passing", "ServiceID": "ledger-1"},
) is True
_, node = c.catalog.node("ext-db")
assert node["Node"]["Address"] == "10.8.0.1" and list(node["Services"]) == ["ledger-1"], node
_, checks = c.health.node("ext-db")
assert [(k["CheckID"], k["ServiceID"]) for k in checks] == [("ext-db-alive", ""), ("ledger-1-sql", "ledger-1")], checks
assert "ext-db" in [n["Node"] for n in c.catalog.nodes()[1]]
_, entries = c.health.service("ledger", passing=True)
assert [(e["Node"]["Node"], e["Node"]["Address"]) for e in entries] == [("ext-db", "10.8.0.1")], entries
assert dns.addresses("ledger") == ["10.8.0.1"], dns.addresses("ledger")
assert dns.ports("ledger") == [5432], dns.ports("ledger")
assert c.catalog.register(
    "ext-db", "10.8.0.1", check={"CheckID": "ext-db-alive", "Name": "alive", "Status": "critical", "Output": "no ping"},
) is True
assert dns.addresses("ledger") == [], "a critical node check takes the node's services out"
assert c.health.service("ledger", passing=True)[1] == []
assert c.catalog.register(
    "ext-db", "10.8.0.1", check={"CheckID": "ext-db-alive", "Name": "alive", "Status": "passing"},
) is True
assert dns.addresses("ledger") == ["10.8.0.1"], dns.addresses("ledger")
assert c.catalog.deregister("ext-db", check_id="ledger-1-sql") is True
assert [k["CheckID"] for k in c.health.node("ext-db")[1]] == ["ext-db-alive"]
assert c.catalog.deregister("ext-db", service_id="ledger-1") is True
assert dns.rcode("ledger") == "NXDOMAIN", dns.rcode("ledger")
assert c.catalog.deregister("ext-db") is True
assert c.catalog.node("ext-db")[1] is None
assert "ext-db" not in [n["Node"] for n in c.catalog.nodes()[1]]

step("agent.check.register without a service: a check of the node, which holds every service here")
assert c.agent.check.register("uplink", check=consul.Check.ttl("1h"), check_id="node-uplink") is True
assert dns.addresses("pay") == [], dns.addresses("pay")
assert c.agent.check.ttl_pass("node-uplink") is True
assert dns.addresses("pay") == ["10.7.0.1", "10.7.0.2"], dns.addresses("pay")
assert c.agent.check.deregister("node-uplink") is True
assert "node-uplink" not in c.agent.checks()

step("agent.maintenance puts this node into maintenance: its services leave DNS, and come back")
assert c.agent.maintenance(True, reason="rack move") is True
assert dns.addresses("pay") == [], dns.addresses("pay")
node_maintenance = c.agent.checks()["_node_maintenance"]
assert (node_maintenance["Status"], node_maintenance["Notes"]) == ("critical", "rack move"), node_maintenance
assert c.agent.maintenance(False) is True
assert dns.addresses("pay") == ["10.7.0.1", "10.7.0.2"], dns.addresses("pay")

step("kv.put/get/delete: values, flags, recurse, keys, cas, and a blocking get that wakes on a change")
assert c.kv.put("app/config/db", "postgres://db:5432", flags=7) is True
assert c.kv.put("app/config/port", "8080") is True
index, entry = c.kv.get("app/config/db")
assert (entry["Value"], entry["Flags"]) == (b"postgres://db:5432", 7), entry
_, entries = c.kv.get("app/", recurse=True)
assert [e["Key"] for e in entries] == ["app/config/db", "app/config/port"], entries
_, keys = c.kv.get("app/", keys=True, separator="/")
assert keys == ["app/config/"], keys
assert c.kv.get("app/missing")[1] is None
modify = entry["ModifyIndex"]
assert c.kv.put("app/config/db", "stale", cas=modify + 1000) is False
assert c.kv.put("app/config/db", "postgres://db2:5432", cas=modify) is True
prefix_index, _ = c.kv.get("app/", recurse=True)
changer = threading.Timer(0.5, lambda: c.kv.put("app/config/port", "9090"))
started = time.monotonic()
changer.start()
woke_index, entries = c.kv.get("app/", recurse=True, index=prefix_index, wait="30s")
waited = time.monotonic() - started
print(f"  kv blocking get woke after {waited:.3f}s (put sent at 0.5s)", flush=True)
assert 0.4 < waited < 5, waited
assert int(woke_index) > int(prefix_index)
assert {e["Key"]: e["Value"] for e in entries}["app/config/port"] == b"9090", entries
_, entry = c.kv.get("app/config/port")
assert c.kv.delete("app/config/port", cas=entry["ModifyIndex"] - 1) is False
assert c.kv.delete("app/config/port", cas=entry["ModifyIndex"]) is True
assert c.kv.delete("app/", recurse=True) is True
assert c.kv.get("app/", recurse=True)[1] is None

step("bad input is a BadRequest that says what is wrong, and stores nothing")
try:
    c.agent.service.register("bad", service_id="bad-1", check=consul.Check.ttl("soon"))
    raise AssertionError("a TTL of 'soon' was accepted")
except BadRequest as error:
    print(f"  {error}", flush=True)
    assert "TTL" in str(error), error
assert "bad" not in c.catalog.services()[1]

step("deregister: gone from the API and from DNS; an unknown ID is refused")
for service_id in ("pay-1", "pay-2", "web-1"):
    assert c.agent.service.deregister(service_id) is True
assert c.health.service("pay")[1] == []
assert dns.rcode("pay") == "NXDOMAIN", dns.rcode("pay")
assert c.agent.service.deregister("pay-1") is False
assert "pay" not in c.catalog.services()[1]
endpoint.shutdown()
print("py-consul: all calls answered as Consul would", flush=True)
