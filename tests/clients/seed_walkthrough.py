"""The design documents' aiohttp client (seed_registry.py, unchanged) against sextant: register
with its HTTP check, discover, read health, list, deregister; DNS checked after each step.
Usage: python seed_walkthrough.py HTTP_ADDR DNS_ADDR. Exits non-zero on the first difference."""

import asyncio
import logging
import sys
import time

from harness import Dns, health_endpoint
from seed_registry import ConsulServiceRegistry, ServiceDiscoveryClient

http_addr, dns_addr = sys.argv[1], sys.argv[2]
dns = Dns(dns_addr)
# The client logs its failures and returns False/[]/None: show them, they explain a failed assert.
logging.basicConfig(level=logging.WARNING, format="  client log: %(message)s")


def step(text):
    print(f"- {text}", flush=True)


async def until(what, predicate, seconds=10):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def main():
    # The instance's own /health, which the client's registration asks sextant to probe.
    endpoint = health_endpoint()
    port = endpoint.server_port

    step("initialize(): /v1/status/leader answers")
    registry = ConsulServiceRegistry(f"http://{http_addr}")
    await registry.initialize()
    client = ServiceDiscoveryClient(registry)

    step("register_service(): its HTTP check (Interval 10s) is probed at once and the instance enters DNS")
    assert await client.register_service("orders", "orders-1", "127.0.0.1", port, ["v1"], {"team": "trading"})
    # ID equal to the name: the one case where the client's get_service_health(service_id) finds a
    # check, since /v1/health/checks/<x> takes a service name (in Consul as here).
    assert await client.register_service("ledger", "ledger", "127.0.0.1", port)
    await until("orders in DNS", lambda: dns.addresses("orders") == ["127.0.0.1"])
    await until("ledger in DNS", lambda: dns.addresses("ledger") == ["127.0.0.1"])
    assert dns.ports("orders") == [port]

    step("get_service_url() / get_service_urls(): the healthy instance")
    assert await client.get_service_url("orders") == f"http://127.0.0.1:{port}"
    assert await client.get_service_urls("orders") == [f"http://127.0.0.1:{port}"]
    instances = await registry.get_service_instances("orders")
    assert [(i.id, i.service_name, i.tags, i.meta, i.status) for i in instances] == [
        ("orders-1", "orders", ["v1"], {"team": "trading"}, "passing")], instances

    step("get_service_health(): counts, and LastUpdate parsed by datetime.fromisoformat")
    health = await client.get_service_health("ledger")
    assert (health["total_instances"], health["healthy_instances"]) == (1, 1), health
    details = health["instances"][0]["health_details"]
    assert details and details["status"] == "passing" and details["check_id"] == "service:ledger", health
    print(f"  ledger checked at {details['last_check'].isoformat()}: {details['output'][:60]!r}", flush=True)
    assert details["last_check"].tzinfo is not None

    step("list_all_services()")
    assert {"orders", "ledger"} <= set(await client.list_all_services())

    step("deregister_service(): gone from the list and from DNS; an unknown ID is refused")
    assert await client.deregister_service("orders-1")
    assert await client.deregister_service("ledger")
    assert dns.rcode("orders") == "NXDOMAIN" and dns.rcode("ledger") == "NXDOMAIN"
    assert not {"orders", "ledger"} & set(await client.list_all_services())
    assert await client.get_service_urls("orders") == []
    assert not await client.deregister_service("orders-1")
    await registry.close()
    endpoint.shutdown()
    print("seed client: all calls answered as the design documents expect", flush=True)


asyncio.run(main())
