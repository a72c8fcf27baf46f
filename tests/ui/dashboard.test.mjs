// Wharf's dashboard in a real headless Chromium (Debian's /usr/bin/chromium), driven by
// playwright-core, against a real `wharf up`: the demo's shape with mTLS on (frontend calls
// hello, api and notes through sidecars), traffic sent through the gateway, and a service the
// test registers over the API. It checks what a person would look at: the services with their
// health and traffic, a health change shown without a reload, sorting, a service's page with
// its instances and edges, the topology with mTLS edges; and takes screenshots (laptop and
// phone) into $ARTIFACTS (default target/artifacts), kept by CI.
//
// Run with `bash tests/ui/run.sh`; WHARF_BIN names the binary, its examples beside it.

import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const WHARF = process.env.WHARF_BIN ?? join(root, "target", "debug", "wharf");
const EXAMPLES = join(dirname(WHARF), "examples");
const ARTIFACTS = process.env.ARTIFACTS ?? join(root, "target", "artifacts");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";

const cleanups = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

async function eventually(what, condition, deadlineMs = 30000) {
  const end = Date.now() + deadlineMs;
  for (;;) {
    if (await condition()) return;
    if (Date.now() > end) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// One HTTP request on loopback: { status, body }.
function http(address, { method = "GET", path = "/", host, body } = {}) {
  const [hostname, port] = address.split(":");
  return new Promise((resolve, reject) => {
    const req = request({ hostname, port: Number(port), method, path, headers: host ? { Host: host } : {} }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (chunk) => (text += chunk));
      res.on("end", () => resolve({ status: res.statusCode, body: text }));
    });
    req.on("error", reject);
    req.setTimeout(10000, () => req.destroy(new Error(`${method} ${path}: timed out`)));
    req.end(body);
  });
}

// `wharf up` on a manifest of the demo's shape; resolves once it printed its addresses.
async function startMesh() {
  const dir = mkdtempSync(join(tmpdir(), "wharf-ui-"));
  const service = (name, replicas, extra = "") =>
    `[services.${name}]\ncommand = ["${join(EXAMPLES, name)}"]\nreplicas = ${replicas}\n` +
    `check = { http = "/healthz", interval = "1s", timeout = "1s" }\n${extra}`;
  const manifest = [
    `[registry]\nhttp = "127.0.0.1:0"\ndns = "127.0.0.1:0"\n`,
    `[gateway]\nlisten = "127.0.0.1:0"\nadmin = "127.0.0.1:0"\n`,
    `[mesh]\nmtls = true\ndefault_intention = "deny"\n`,
    `[intentions]\n"gateway -> frontend" = "allow"\n"frontend -> *" = "allow"\n`,
    service("hello", 3, `autoscale = { min = 3, max = 6, target_concurrency = 50 }\n`),
    service("api", 2),
    service("notes", 1),
    service("frontend", 2, `meta = { wharf-routes = "on" }\n`),
  ].join("\n");
  writeFileSync(join(dir, "wharf.toml"), manifest);
  const child = spawn(WHARF, ["up", "-f", join(dir, "wharf.toml")], {
    cwd: dir,
    env: { ...process.env, WHARF_LOG: "warn" },
    stdio: ["ignore", "pipe", "inherit"],
    detached: true, // its own process group, so that every instance goes with it
  });
  const stop = async () => {
    if (child.exitCode === null) {
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGINT"); // wharf up stops its instances on Ctrl-C
      const killed = setTimeout(() => {
        try {
          process.kill(-child.pid, "SIGKILL");
        } catch {}
      }, 10000);
      await exited;
      clearTimeout(killed);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  cleanups.push(stop);
  const found = {};
  const lines = createInterface({ input: child.stdout });
  await new Promise((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`wharf up exited with ${code}`)));
    lines.on("line", (line) => {
      process.stderr.write(`${line}\n`);
      const match = line.match(/^wharf up: (registry|gateway|dashboard) on (?:https?:\/\/)?(\S+)$/);
      if (match) found[match[1]] = match[2];
      if (found.registry && found.gateway && found.dashboard) resolve();
    });
  });
  return { registry: found.registry, gateway: found.gateway, dashboard: `http://${found.dashboard}` };
}

async function launch() {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} (Debian's chromium) is installed`);
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    // Nothing of Chromium's own reaches out: this machine's network is closed.
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
  cleanups.push(() => browser.close());
  return browser;
}

test("the dashboard shows the mesh live: services, health, traffic, edges", async () => {
  const mesh = await startMesh();
  const browser = await launch();
  mkdirSync(ARTIFACTS, { recursive: true });

  // Every service passing, and frontend answering through the gateway (over its sidecars).
  await eventually("frontend answers through the gateway", async () => {
    const answer = await http(mesh.gateway, { host: "frontend", path: "/?data=x" }).catch(() => ({ status: 0 }));
    return answer.status === 200;
  }, 60000);
  // A service the test registers itself, with a TTL check it passes now and fails later.
  const ledger = { ID: "ledger-1", Name: "ledger", Address: "127.0.0.1", Port: 9, Check: { CheckID: "ledger-ttl", TTL: "10m" } };
  assert.equal((await http(mesh.registry, { method: "PUT", path: "/v1/agent/service/register", body: JSON.stringify(ledger) })).status, 200);
  assert.equal((await http(mesh.registry, { method: "PUT", path: "/v1/agent/check/pass/ledger-ttl?note=books+balanced" })).status, 200);
  // Traffic: 200 requests to frontend (each calls hello, api and notes), bounded in count.
  for (let i = 0; i < 200; i++) {
    const answer = await http(mesh.gateway, { host: "frontend", path: `/?data=${i}` });
    assert.equal(answer.status, 200, answer.body);
  }

  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
  const response = await page.goto(mesh.dashboard);
  assert.equal(response.status(), 200);
  assert.match(response.headers()["content-security-policy"], /default-src 'self'/);

  // The services, with their health and the traffic the proxies reported.
  const row = (name) => page.locator(`#services tr[data-service="${name}"]`);
  for (const [name, passing] of [["hello", 3], ["api", 2], ["notes", 1], ["frontend", 2], ["ledger", 1]]) {
    await row(name).locator('[data-col="health"]', { hasText: `${passing} passing` }).waitFor();
  }
  await eventually("frontend's traffic on the page", async () => {
    const rps = await row("frontend").locator('[data-col="rps"]').textContent();
    return Number(rps) > 0;
  });
  // The page shows the registry's own figures (the warm-up's refusals count too).
  await eventually("frontend's success rate as /v1/wharf/stats has it", async () => {
    const stats = JSON.parse((await http(mesh.registry, { path: "/v1/wharf/stats" })).body);
    const frontend = stats.services.find((s) => s.name === "frontend");
    const shown = await row("frontend").locator('[data-col="success"]').textContent();
    return frontend.minute.requests >= 200 && shown === `${(frontend.minute.success_rate * 100).toFixed(2)}%`;
  });
  assert.notEqual(await row("hello").locator('[data-col="p99"]').textContent(), "—");

  // A health change shows without a reload: the page is the same document throughout.
  await page.evaluate(() => (window.__samePage = true));
  assert.equal((await http(mesh.registry, { method: "PUT", path: "/v1/agent/check/fail/ledger-ttl?note=books+do+not+balance" })).status, 200);
  await row("ledger").locator('[data-col="health"]', { hasText: "1 critical" }).waitFor({ timeout: 10000 });
  assert.equal(await page.evaluate(() => window.__samePage), true);

  // Sorting: by RPS, busiest first (hello is called once per frontend request, like api).
  await page.locator('th[data-sort="rps"]').click();
  const rps = await page.locator('#services tbody [data-col="rps"]').allTextContents();
  const numbers = rps.map((x) => (x === "—" ? -1 : Number(x)));
  assert.deepEqual(numbers, [...numbers].sort((a, b) => b - a));
  await page.screenshot({ path: join(ARTIFACTS, "dashboard.png") });

  // A service's page: its instances with health and load, its callers and callees.
  await row("frontend").locator("a").click();
  await page.locator("#instances tbody tr").nth(1).waitFor();
  assert.equal(await page.locator("#instances tbody tr").count(), 2);
  await page.locator('#callers tr[data-edge="gateway>frontend"]').waitFor();
  for (const callee of ["hello", "api", "notes"]) {
    const edge = page.locator(`#callees tr[data-edge="frontend>${callee}"]`);
    await edge.waitFor();
    assert.match(await edge.textContent(), /mTLS/);
  }
  // Its route classes (on by its meta): every request was `GET /`.
  await page.locator('#routes tr[data-route="GET /"]').waitFor();
  // Desired beside current: frontend is scaled by hand.
  assert.match(await page.locator("#scaling").textContent(), /Desired\s*2.*Autoscale\s*manual/s);
  await page.screenshot({ path: join(ARTIFACTS, "dashboard-service.png"), fullPage: true });

  // An autoscaled service shows its bounds.
  await page.goto(`${mesh.dashboard}#/service/hello`);
  await page.locator("#scaling", { hasText: "3–6" }).waitFor();
  assert.match(await page.locator("#scaling").textContent(), /Current\s*3.*Desired\s*3/s);

  // The check's output is on the page of the service the test failed.
  await page.goto(`${mesh.dashboard}#/service/ledger`);
  await page.locator("#instances", { hasText: "books do not balance" }).waitFor();

  // The topology: the edges the traffic made, over mTLS.
  await page.locator('nav a[data-nav="topology"]').click();
  for (const edge of ["gateway>frontend", "frontend>hello", "frontend>api", "frontend>notes"]) {
    await page.locator(`#topology g.edge.mtls[data-edge="${edge}"]`).waitFor();
  }
  await page.screenshot({ path: join(ARTIFACTS, "dashboard-topology.png") });

  // Readable on a phone: no sideways scrolling of the page itself.
  const phone = await browser.newPage({ viewport: { width: 390, height: 844 }, isMobile: true });
  await phone.goto(mesh.dashboard);
  await phone.locator('#services tr[data-service="frontend"]').waitFor();
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page is ${overflow} px wider than the phone`);
  await phone.screenshot({ path: join(ARTIFACTS, "dashboard-phone.png") });

  assert.deepEqual(errors, []);
});
