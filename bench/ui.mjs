// The dashboard's first paint with many services: registers SERVICES services (one instance
// each), pushes a proxy's report of a minute of traffic to each (as bench/stats.py does), then
// loads /ui/ ROUNDS times in a fresh headless Chromium page and times, from the navigation's
// start, the first frame painted with services in the table (the first screenful), and the
// first painted with every row.
//
//     node bench/ui.mjs URL [SERVICES] [ROUNDS]
import { chromium } from "../tests/ui/node_modules/playwright-core/index.mjs";

const [url, services = 1000, rounds = 10] = process.argv.slice(2).map((a, i) => (i ? Number(a) : a));

async function call(method, path, body) {
  const answer = await fetch(url + path, { method, body: body === undefined ? undefined : JSON.stringify(body) });
  if (!answer.ok) throw new Error(`${method} ${path}: ${answer.status} ${await answer.text()}`);
}

for (let i = 0; i < services; i++) {
  await call("PUT", "/v1/agent/service/register", { Name: `svc-${i}`, ID: `svc-${i}-1`, Port: 10000 + i });
}
const window = (requests) => {
  const counts = Array(40).fill(Math.floor(requests / 40));
  return { requests, failures: Math.floor(requests / 100), seconds: 60,
    latency: { indexes: [...Array(40).keys()].map((k) => 150 + k), counts, total: counts.reduce((a, b) => a + b) } };
};
const report = [...Array(services).keys()].map((i) => ({
  name: `svc-${i}`, minute: window(6000), ten_minutes: window(60000), history: Array(60).fill([100, 1]),
  instances: [1, 2].map((j) => ({ id: `svc-${i}-${j}`, address: "127.0.0.1:1", in_flight: 1, minute: window(3000) })),
}));
// Reports go stale after 5 s: pushed again before every round.
async function push() {
  for (let first = 0, part = 0; first < services; first += 200, part++) {
    await call("PUT", "/v1/wharf/stats/report", { proxy: `bench#${part}`, caller: "gateway", services: report.slice(first, first + 200) });
  }
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const first = [];
const times = [];
try {
  for (let round = 0; round < rounds; round++) {
    await push();
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    await page.goto(`${url}/ui/`);
    // The frame after rows are in the document is the one that shows them: timed in the
    // page, from a callback at every frame until the table is whole.
    const [shown, whole] = await page.evaluate((n) => new Promise((resolve) => {
      let shown = null;
      const tick = () => {
        const rows = document.querySelectorAll("#services tbody tr").length;
        if (rows > 0 && shown === null) shown = -1; // rows in: the next frame paints them
        else if (shown === -1) shown = performance.now();
        if (rows >= n && shown > 0) requestAnimationFrame(() => resolve([shown, performance.now()]));
        else requestAnimationFrame(tick);
      };
      requestAnimationFrame(tick);
    }), services);
    first.push(shown);
    times.push(whole);
    await page.close();
  }
} finally {
  await browser.close();
}
const summary = (xs) => {
  xs.sort((a, b) => a - b);
  return `median ${xs[Math.floor(xs.length / 2)].toFixed(0)} ms, min ${xs[0].toFixed(0)} ms, max ${xs[xs.length - 1].toFixed(0)} ms`;
};
console.log(`ui: ${services} services over ${rounds} loads; first paint with services: ${summary(first)}; ` +
  `the whole table painted: ${summary(times)}`);
