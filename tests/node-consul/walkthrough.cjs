// The npm `consul` client (https://www.npmjs.com/package/consul, pinned in package-lock.json and
// installed by scripts/test.sh into target/node-consul) against sextant, unchanged: registration,
// TTL heartbeats, health, a watch, the key/value store, an external node through the catalog and
// maintenance, each followed by what DNS answers (Node's own resolver, pointed at sextant).
// Usage: node walkthrough.cjs HTTP_ADDR DNS_ADDR, with SEXTANT_NODE_MODULES naming the folder the
// package is installed in. Exits non-zero on the first thing that is not as Consul would have it.

"use strict";

const assert = require("node:assert/strict");
const path = require("node:path");
const { Resolver } = require("node:dns").promises;

const Consul = require(path.join(process.env.SEXTANT_NODE_MODULES, "consul"));

const [httpAddr, dnsAddr] = process.argv.slice(2);
const [host, port] = [httpAddr.slice(0, httpAddr.lastIndexOf(":")), httpAddr.slice(httpAddr.lastIndexOf(":") + 1)];
const consul = new Consul({ host, port: Number(port) });
const resolver = new Resolver({ timeout: 2000, tries: 1 });
resolver.setServers([dnsAddr]);

function step(text) {
  console.log(`- ${text}`);
}

/** The A records of <service>.service.trading-dc, sorted; [] when the name does not exist. */
async function addresses(service) {
  try {
    return (await resolver.resolve4(`${service}.service.trading-dc`)).sort();
  } catch (error) {
    if (error.code === "ENOTFOUND" || error.code === "ENODATA") return [];
    throw error;
  }
}

async function within(what, probe, ms = 10000) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await probe()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

async function main() {
  step("agent.service.register with a TTL check: critical, so not in DNS, until its first heartbeat");
  await consul.agent.service.register({
    name: "cart", id: "cart-1", address: "10.6.0.1", port: 9001, tags: ["v1"], check: { ttl: "10s" },
  });
  assert.deepEqual(await addresses("cart"), []);
  let entries = await consul.health.service({ service: "cart" });
  assert.deepEqual(entries.map((e) => e.Service.ID), ["cart-1"]);
  assert.equal(entries[0].Checks.at(-1).Status, "critical");

  step("agent.check.pass: in DNS the moment the call returns");
  await consul.agent.check.pass({ id: "service:cart-1", note: "up" });
  assert.deepEqual(await addresses("cart"), ["10.6.0.1"]);

  step("a watch on health.service (passing) sees a second instance arrive");
  const seen = [];
  const watch = consul.watch({ method: consul.health.service, options: { service: "cart", passing: true } });
  watch.on("change", (data) => seen.push(data.map((e) => e.Service.ID).sort()));
  watch.on("error", (error) => seen.push(`error: ${error.message}`));
  await within("the watch's first answer", async () => seen.length > 0);
  await consul.agent.service.register({
    name: "cart", id: "cart-2", address: "10.6.0.2", port: 9002, check: { ttl: "10s", status: "passing" },
  });
  const started = Date.now();
  await within("the watch to see cart-2", async () => seen.some((ids) => Array.isArray(ids) && ids.length === 2));
  console.log(`  watch woke ${Date.now() - started} ms after the registration returned`);
  watch.end();
  assert.ok(!seen.some((s) => typeof s === "string"), seen);
  assert.deepEqual(await addresses("cart"), ["10.6.0.1", "10.6.0.2"]);

  step("agent.service.maintenance and agent.maintenance take instances out of DNS and back");
  await consul.agent.service.maintenance({ id: "cart-1", enable: true, reason: "deploy" });
  assert.deepEqual(await addresses("cart"), ["10.6.0.2"]);
  await consul.agent.service.maintenance({ id: "cart-1", enable: false });
  await consul.agent.maintenance({ enable: true, reason: "rack move" });
  assert.deepEqual(await addresses("cart"), []);
  const checks = await consul.agent.check.list();
  assert.equal(checks._node_maintenance.Notes, "rack move");
  await consul.agent.maintenance({ enable: false });
  assert.deepEqual(await addresses("cart"), ["10.6.0.1", "10.6.0.2"]);

  step("kv.set/get/keys/del, check-and-set, and a watch on a key");
  assert.equal(await consul.kv.set({ key: "shop/config/currency", value: "EUR", flags: 3 }), true);
  assert.equal(await consul.kv.set("shop/config/tax", "0.2"), true);
  let entry = await consul.kv.get("shop/config/currency");
  assert.equal(entry.Value, "EUR");
  assert.equal(entry.Flags, 3);
  assert.deepEqual(await consul.kv.keys("shop/"), ["shop/config/currency", "shop/config/tax"]);
  assert.deepEqual(await consul.kv.keys({ key: "shop/", separator: "/" }), ["shop/config/"]);
  assert.equal(await consul.kv.get("shop/missing"), undefined);
  // A failed check-and-set answers `false`, which this client returns as a falsy value.
  assert.ok(!(await consul.kv.set({ key: "shop/config/currency", value: "USD", cas: String(entry.ModifyIndex + 1000) })));
  assert.equal((await consul.kv.get("shop/config/currency")).Value, "EUR");
  assert.equal(await consul.kv.set({ key: "shop/config/currency", value: "GBP", cas: String(entry.ModifyIndex) }), true);
  const values = [];
  const kvWatch = consul.watch({ method: consul.kv.get, options: { key: "shop/config/tax" } });
  kvWatch.on("change", (data) => values.push(data && data.Value));
  kvWatch.on("error", (error) => values.push(`error: ${error.message}`));
  await within("the key watch's first answer", async () => values.length > 0);
  await consul.kv.set("shop/config/tax", "0.21");
  await within("the key watch to see the new value", async () => values.includes("0.21"));
  kvWatch.end();
  assert.deepEqual(values, ["0.2", "0.21"]);
  const all = await consul.kv.get({ key: "shop/", recurse: true });
  assert.deepEqual(all.map((e) => [e.Key, e.Value]), [["shop/config/currency", "GBP"], ["shop/config/tax", "0.21"]]);
  assert.equal(await consul.kv.del({ key: "shop/", recurse: true }), true);
  assert.equal(await consul.kv.get({ key: "shop/", recurse: true }), undefined);

  step("catalog.register an external node with a probed service check; health.node; catalog.deregister");
  await consul.catalog.register({
    node: "ext-web", address: "127.0.0.1", nodemeta: { "external-node": "true" },
    service: { id: "legacy-1", service: "legacy", port: Number(port) },
    checks: [
      { node: "ext-web", checkid: "ext-web-alive", name: "alive", status: "passing" },
      {
        node: "ext-web", checkid: "legacy-1-http", name: "legacy http", serviceid: "legacy-1", status: "critical",
        definition: { http: `http://${httpAddr}/v1/status/leader`, intervalduration: "1s", timeoutduration: "1s" },
      },
    ],
  });
  const services = await consul.catalog.node.services("ext-web");
  assert.equal(services.Node.Meta["external-node"], "true");
  assert.deepEqual(Object.keys(services.Services), ["legacy-1"]);
  await within("the catalog check's probe to pass", async () => (await addresses("legacy")).length === 1);
  assert.deepEqual(await addresses("legacy"), ["127.0.0.1"]);
  const nodeChecks = await consul.health.node("ext-web");
  assert.deepEqual(nodeChecks.map((c) => [c.CheckID, c.Status, c.Type]), [
    ["ext-web-alive", "passing", ""], ["legacy-1-http", "passing", "http"],
  ]);
  const nodes = await consul.catalog.node.list();
  assert.ok(nodes.some((n) => n.Node === "ext-web"), nodes);
  await consul.catalog.register({
    node: "ext-web", address: "127.0.0.1", check: { checkid: "ext-web-alive", name: "alive", status: "critical" },
  });
  assert.deepEqual(await addresses("legacy"), [], "a critical node check takes the node's services out");
  await consul.catalog.deregister({ node: "ext-web" });
  assert.deepEqual(await addresses("legacy"), []);
  assert.equal((await consul.catalog.node.list()).some((n) => n.Node === "ext-web"), false);

  step("bad input is an error that says what is wrong");
  await assert.rejects(
    consul.agent.service.register({ name: "bad", id: "bad-1", check: { ttl: "soon" } }),
    (error) => error.statusCode === 400 && /TTL/.test(error.message),
  );

  step("agent.service.deregister: gone from the API and from DNS");
  await consul.agent.service.deregister("cart-1");
  await consul.agent.service.deregister("cart-2");
  assert.deepEqual(await consul.health.service("cart"), []);
  assert.deepEqual(await addresses("cart"), []);
  console.log("npm consul: all calls answered as Consul would");
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
