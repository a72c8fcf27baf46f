// Unmodified npm `consul` (2.x) against `wharf registry`: registration with checks, TTL
// updates, catalog and health queries with tags, a watch that wakes on change and does not
// spin, KV with sessions, locks and transactions, external services, members and events. Run with `node --test` after `npm ci`; WHARF_BIN names the binary.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import Consul from "consul";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const WHARF = process.env.WHARF_BIN ?? join(root, "target", "debug", "wharf");

async function eventually(what, condition, deadlineMs = 20000) {
  const end = Date.now() + deadlineMs;
  for (;;) {
    if (await condition()) return;
    if (Date.now() > end) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// Starts a registry on a free port; the returned stop() kills it and removes its data.
async function startRegistry() {
  const dataDir = mkdtempSync(join(tmpdir(), "wharf-node-"));
  const child = spawn(WHARF, ["registry", "--http", "127.0.0.1:0", "--dns", "127.0.0.1:0", "--data-dir", dataDir], {
    env: { ...process.env, WHARF_LOG: "warn" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const lines = createInterface({ input: child.stdout });
  const line = await new Promise((resolve, reject) => {
    lines.once("line", resolve);
    child.once("exit", (code) => reject(new Error(`registry exited with ${code}`)));
  });
  const url = new URL(line.trim().split(" ").pop());
  const stop = () => {
    child.kill("SIGKILL");
    rmSync(dataDir, { recursive: true, force: true });
  };
  return { host: url.hostname, port: Number(url.port), stop };
}

async function withRegistry(fn) {
  const registry = await startRegistry();
  try {
    await fn(new Consul({ host: registry.host, port: registry.port }), registry);
  } finally {
    registry.stop();
  }
}

async function passingIds(consul, service, extra = {}) {
  const entries = await consul.health.service({ service, passing: true, ...extra });
  return entries.map((e) => e.Service.ID).sort();
}

test("register with an HTTP check and follow its health", async () => {
  let code = 200;
  const target = createServer((req, res) => {
    res.writeHead(code);
    res.end(code === 200 ? "ok" : "failing");
  });
  await new Promise((r) => target.listen(0, "127.0.0.1", r));
  const port = target.address().port;
  try {
    await withRegistry(async (consul) => {
      await consul.agent.service.register({
        name: "web",
        id: "web-1",
        port,
        tags: ["v1"],
        check: { http: `http://127.0.0.1:${port}/health`, interval: "1s", timeout: "1s" },
      });
      await eventually("web-1 passing", async () => (await passingIds(consul, "web")).join() === "web-1");
      code = 503;
      await eventually("web-1 dropped", async () => (await passingIds(consul, "web")).length === 0);
      const checks = await consul.health.checks("web");
      assert.equal(checks[0].Status, "critical");
    });
  } finally {
    target.close();
  }
});

test("TTL checks pass, warn and fail", async () => {
  await withRegistry(async (consul) => {
    await consul.agent.service.register({ name: "worker", id: "worker-1", check: { ttl: "30s" } });
    assert.deepEqual(await passingIds(consul, "worker"), []);
    // npm consul percent-encodes the ':' of the check id.
    await consul.agent.check.pass({ id: "service:worker-1", note: "fine" });
    let checks = await consul.agent.check.list();
    assert.equal(checks["service:worker-1"].Status, "passing");
    assert.equal(checks["service:worker-1"].Output, "fine");
    await consul.agent.check.warn("service:worker-1");
    checks = await consul.agent.check.list();
    assert.equal(checks["service:worker-1"].Status, "warning");
    await consul.agent.check.fail("service:worker-1");
    checks = await consul.agent.check.list();
    assert.equal(checks["service:worker-1"].Status, "critical");
  });
});

test("catalog lists and tag filters", async () => {
  await withRegistry(async (consul) => {
    await consul.agent.service.register({ name: "api", id: "api-1", port: 9001, tags: ["v1"] });
    await consul.agent.service.register({ name: "api", id: "api-2", port: 9002, tags: ["v2"] });
    const services = await consul.catalog.service.list();
    assert.deepEqual(Object.keys(services), ["api"]);
    assert.deepEqual([...services.api].sort(), ["v1", "v2"]);
    const nodes = await consul.catalog.service.nodes({ service: "api", tag: "v2" });
    assert.deepEqual(nodes.map((n) => n.ServiceID), ["api-2"]);
    const entries = await consul.health.service({ service: "api", tag: "v1" });
    assert.deepEqual(entries.map((e) => e.Service.Port), [9001]);
    await consul.agent.service.deregister("api-1");
    const left = await consul.catalog.service.nodes("api");
    assert.deepEqual(left.map((n) => n.ServiceID), ["api-2"]);
    await assert.rejects(consul.agent.service.deregister("api-1"), (err) => err.response?.statusCode === 404);
    await assert.rejects(
      consul.agent.service.register({ name: "bad", check: { http: "http://127.0.0.1:1/", interval: "sometimes" } }),
      (err) => err.response?.statusCode === 400 && String(err.response.body).includes("invalid duration"),
    );
    assert.ok(!("bad" in (await consul.agent.service.list())), "a refused registration leaves nothing");
  });
});

test("a watch wakes on change and does not spin", async () => {
  await withRegistry(async (consul, registry) => {
    await consul.agent.service.register({ name: "queue", id: "queue-1", check: { ttl: "1h" } });
    const watch = consul.watch({ method: consul.health.service, options: { service: "queue", wait: "5s" } });
    const changes = [];
    watch.on("change", (data) => changes.push(data));
    watch.on("error", (err) => changes.push(err));
    try {
      await eventually("first answer", () => changes.length >= 1);
      await consul.agent.check.pass("service:queue-1");
      await eventually("change seen", () =>
        changes.some((d) => Array.isArray(d) && d[0]?.Checks?.[0]?.Status === "passing"));

      // Nothing changes now: over two seconds a held watch makes at most a couple of requests.
      const count = async () => {
        const res = await fetch(`http://${registry.host}:${registry.port}/metrics`);
        const line = (await res.text()).split("\n")
          .find((l) => l.startsWith('wharf_registry_http_requests_total{endpoint="/v1/health/service/{name}",code="200"}'));
        return Number(line.split(" ").pop());
      };
      const before = await count();
      await new Promise((r) => setTimeout(r, 2000));
      const after = await count();
      assert.ok(after - before <= 2, `watch made ${after - before} requests in 2 s while nothing changed`);
      assert.ok(changes.every((c) => !(c instanceof Error)), `watch errors: ${changes.filter((c) => c instanceof Error)}`);
    } finally {
      watch.end();
    }
  });
});

// KV with every flag, CAS, sessions holding locks (release vs delete) and a transaction that
// fails one check and changes nothing, as the npm client's README uses them.
test("KV, sessions, locks and transactions", async () => {
  await withRegistry(async (consul) => {
    assert.equal(await consul.kv.set({ key: "app/config/limit", value: "10", flags: 42 }), true);
    const entry = await consul.kv.get("app/config/limit");
    assert.equal(entry.Value, "10");
    assert.equal(entry.Flags, 42);
    assert.equal(await consul.kv.get("app/missing"), undefined);
    // CAS: the old index loses once the key moved on.
    assert.equal(await consul.kv.set({ key: "app/config/limit", value: "11", cas: entry.ModifyIndex }), true);
    // Consul's `false` reaches the caller as a falsy value (this client resolves it `undefined`).
    assert.ok(!(await consul.kv.set({ key: "app/config/limit", value: "12", cas: entry.ModifyIndex })));
    assert.equal((await consul.kv.get("app/config/limit")).Value, "11");
    await consul.kv.set("app/config/name", "demo");
    await consul.kv.set("app/other", "x");
    assert.deepEqual(await consul.kv.keys({ key: "app/", separator: "/" }), ["app/config/", "app/other"]);
    const tree = await consul.kv.get({ key: "app/config/", recurse: true });
    assert.deepEqual(tree.map((e) => [e.Key, e.Value]), [["app/config/limit", "11"], ["app/config/name", "demo"]]);

    // A lock held by one session is refused to another, and released with its session.
    const first = await consul.session.create({ name: "first", ttl: "15s", lockdelay: "0s" });
    const second = await consul.session.create({ name: "second", ttl: "15s", lockdelay: "0s" });
    assert.equal(await consul.kv.set({ key: "locks/job", value: "first", acquire: first.ID }), true);
    assert.ok(!(await consul.kv.set({ key: "locks/job", value: "second", acquire: second.ID })));
    assert.equal((await consul.kv.get("locks/job")).Session, first.ID);
    await consul.session.destroy(first.ID);
    const released = await consul.kv.get("locks/job");
    assert.equal(released.Session, undefined);
    assert.equal(released.Value, "first");
    assert.equal(await consul.kv.set({ key: "locks/job", value: "second", acquire: second.ID }), true);
    // Behavior delete: the held key goes with the session.
    const ephemeral = await consul.session.create({ name: "ephemeral", ttl: "15s", behavior: "delete", lockdelay: "0s" });
    assert.equal(await consul.kv.set({ key: "locks/ephemeral", value: "x", acquire: ephemeral.ID }), true);
    await consul.session.destroy(ephemeral.ID);
    assert.equal(await consul.kv.get("locks/ephemeral"), undefined);
    const info = await consul.session.info(second.ID);
    assert.equal(info.Name, "second");

    // A transaction whose check fails changes nothing.
    const limit = await consul.kv.get("app/config/limit");
    await assert.rejects(
      consul.transaction.create([
        { KV: { Verb: "set", Key: "app/config/name", Value: Buffer.from("changed").toString("base64") } },
        { KV: { Verb: "check-index", Key: "app/config/limit", Index: limit.ModifyIndex + 1 } },
      ]),
      (error) => error.response?.statusCode === 409,
    );
    assert.equal((await consul.kv.get("app/config/name")).Value, "demo");
    const done = await consul.transaction.create([
      { KV: { Verb: "set", Key: "app/config/name", Value: Buffer.from("changed").toString("base64") } },
      { KV: { Verb: "check-index", Key: "app/config/limit", Index: limit.ModifyIndex } },
    ]);
    assert.equal(done.Results.length, 2);
    assert.equal((await consul.kv.get("app/config/name")).Value, "changed");
    assert.equal(await consul.kv.del({ key: "app/", recurse: true }), true);
    assert.deepEqual(await consul.kv.keys({ key: "app/" }).catch((e) => e.response?.statusCode), 404);
  });
});

// External services through the catalog, members, a filtered health query, and user events.
test("catalog register, members and events", async () => {
  await withRegistry(async (consul) => {
    await consul.catalog.register({
      node: "db-host",
      address: "10.1.2.3",
      service: { id: "pg-1", service: "postgres", port: 5432, tags: ["primary"] },
      check: {
        checkid: "pg-1-up",
        name: "postgres up",
        status: "passing",
        serviceid: "pg-1",
        definition: { tcp: "10.1.2.3:5432", intervalduration: "10s" },
      },
    });
    assert.deepEqual(await passingIds(consul, "postgres"), ["pg-1"]);
    const [entry] = await consul.catalog.service.nodes("postgres");
    assert.equal(entry.Node, "db-host");
    assert.equal(entry.Address, "10.1.2.3");
    const members = await consul.agent.members();
    assert.equal(members.length, 1);
    assert.equal(members[0].Status, 1);
    assert.ok(members.every((m) => m.Name !== "db-host"));
    await consul.catalog.deregister({ node: "db-host", serviceid: "pg-1" });
    assert.deepEqual(await consul.catalog.service.nodes("postgres"), []);
    await consul.catalog.deregister("db-host");
    assert.ok((await consul.catalog.node.list()).every((n) => n.Node !== "db-host"));

    // A filtered health query, in Consul's expression language.
    for (const [id, version] of [["api-1", "v1"], ["api-2", "v2"]]) {
      await consul.agent.service.register({ name: "api", id, port: 9000, meta: { version } });
    }
    const v2 = await consul.health.service({ service: "api", filter: 'Service.Meta.version == "v2"' });
    assert.deepEqual(v2.map((e) => e.Service.ID), ["api-2"]);
    await assert.rejects(
      consul.health.service({ service: "api", filter: "Service.Meta.version ==" }),
      (error) => error.response?.statusCode === 400,
    );

    const fired = await consul.event.fire("deploy", "v2");
    assert.equal(fired.Name, "deploy");
    assert.equal(fired.Payload, "v2");
    const events = await consul.event.list("deploy");
    assert.deepEqual(events.map((e) => [e.Name, e.Payload, e.LTime]), [["deploy", "v2", 1]]);
  });
});

// Every family Wharf does not answer yet must make the client throw, never resolve to
// something that reads as "absent" (kv.get resolved `undefined` on the old 404) or success.
test("every endpoint family not answered yet throws with its reason", async () => {
  await withRegistry(async (consul) => {
    const calls = [
      ["/v1/acl", "acl.replication", () => consul.acl.replication()],
      ["/v1/agent/reload", "agent.reload", () => consul.agent.reload()],
      ["/v1/agent/join", "agent.join", () => consul.agent.join("127.0.0.1")],
      ["/v1/agent/join", "agent.forceLeave", () => consul.agent.forceLeave("other")],
      ["/v1/query", "query.list", () => consul.query.list()],
      ["/v1/query", "query.create", () => consul.query.create({ name: "db", service: { service: "db" } })],
      ["/v1/query", "query.execute", () => consul.query.execute("db")],
    ];
    for (const [family, name, call] of calls) {
      let outcome;
      try {
        outcome = { returned: await call() };
      } catch (error) {
        outcome = { error };
      }
      assert.ok(outcome.error, `${name} resolved instead of throwing: ${JSON.stringify(outcome.returned)}`);
      assert.equal(outcome.error.response?.statusCode, 501, `${name}: ${outcome.error}`);
      // The reason is the message where the client passes the body on, and always the body.
      const body = String(outcome.error.response?.body ?? "");
      assert.match(body, /does not implement/, `${name}: ${body}`);
      assert.ok(body.includes(family), `${name}: ${body}`);
    }
  });
});
