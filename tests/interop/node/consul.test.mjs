// Unmodified npm `consul` (2.x) against `wharf registry`: registration with checks, TTL
// updates, catalog and health queries with tags, and a watch that wakes on change and does
// not spin. Run with `node --test` after `npm ci`; WHARF_BIN names the binary.

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
