// Wharf's dashboard: one page, no build step, no dependency, served from the binary.
//
// It follows `GET /v1/wharf/stats` as a blocking query (the index moves with every proxy
// report and every health change), so the figures update the moment something changes, and
// renders one of three views from the hash: the services (#/), one service (#/service/NAME,
// which also reads its instances' health from /v1/health/service/NAME), or the topology of
// edges (#/topology). The numbers are the registry's own, the same as `wharf stat --json`.
"use strict";

const state = {
  stats: null,
  index: 0,
  sort: { key: "name", dir: 1 },
  filter: "",
  health: new Map(), // service -> its /v1/health/service entries
  healthPending: new Set(),
  rest: [], // services rows still to draw, after the first screenful
  generation: 0, // bumped by every render, so that a stale deferred draw is dropped
  renderMs: 0, // how long the last render's script took
};

const TOKEN_KEY = "wharf-token";
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function headers() {
  const token = localStorage.getItem(TOKEN_KEY);
  return token ? { "X-Consul-Token": token } : {};
}

async function api(path) {
  const response = await fetch(path, { headers: headers(), cache: "no-store" });
  if (!response.ok) {
    const reason = (await response.text()).trim();
    throw new Error(`${response.status}: ${reason}`);
  }
  const index = Number(response.headers.get("X-Consul-Index") || 0);
  return { body: await response.json(), index };
}

// ---- formatting ----------------------------------------------------------------------------

const escapeMap = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => escapeMap[c]);

function fmtRps(x) {
  if (x == null) return "—";
  return x >= 100 ? x.toFixed(0) : x.toFixed(1);
}

function fmtMs(x) {
  if (x == null) return "—";
  if (x < 10) return `${x.toFixed(2)} ms`;
  if (x < 1000) return `${x.toFixed(1)} ms`;
  return `${(x / 1000).toFixed(2)} s`;
}

function fmtRate(window) {
  if (!window || window.requests === 0) return "—";
  return `${(window.success_rate * 100).toFixed(2)}%`;
}

function fmtBytes(n) {
  if (n == null) return "—";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

function fmtRatio(x, digits = 2) {
  return x == null ? "—" : x.toFixed(digits);
}

function fmtShare(x) {
  return x == null ? "—" : `${(x * 100).toFixed(1)}%`;
}

function successClass(window) {
  if (!window || window.requests === 0) return "quiet";
  if (window.success_rate >= 0.99) return "good";
  if (window.success_rate >= 0.95) return "fair";
  return "bad";
}

// A service's instances by health, as pills.
function healthPills(h) {
  const pills = [];
  if (h.passing) pills.push(`<span class="pill passing">${h.passing} passing</span>`);
  if (h.warning) pills.push(`<span class="pill warning">${h.warning} warning</span>`);
  if (h.critical) pills.push(`<span class="pill critical">${h.critical} critical</span>`);
  if (pills.length === 0) pills.push(`<span class="pill none">no instances</span>`);
  if (h.sidecars) pills.push(`<span class="pill mesh" title="Connect proxies: calls to it go over mTLS">${h.sidecars} sidecar${h.sidecars > 1 ? "s" : ""}</span>`);
  return pills.join(" ");
}

// The last ten minutes, 10 s per point: requests (a line) and failures (red bars, one path).
function sparkline(history, width = 120, height = 24) {
  if (!history || history.length === 0) return `<svg class="spark" width="${width}" height="${height}"></svg>`;
  let max = 1;
  for (const [r] of history) if (r > max) max = r;
  const step = width / Math.max(1, history.length - 1);
  const y = (v) => (height - 1 - (v / max) * (height - 2)).toFixed(1);
  let line = "";
  let bars = "";
  history.forEach(([r, f], i) => {
    const x = (i * step).toFixed(1);
    line += `${x},${y(r)} `;
    if (f > 0) bars += `M${x} ${height - 1}V${y(f)}`;
  });
  return `<svg class="spark" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="requests over the last ten minutes"><polyline points="${line}"/>${bars ? `<path class="fail" d="${bars}"/>` : ""}</svg>`;
}

// ---- the services view ---------------------------------------------------------------------

const COLUMNS = [
  { key: "name", label: "Service", value: (s) => s.name },
  { key: "health", label: "Health", value: (s) => -(s.health.critical * 1e6 + s.health.warning * 1e3) + s.health.passing * 1e-3 },
  { key: "rps", label: "RPS", value: (s) => s.minute.rps },
  { key: "success", label: "Success", value: (s) => (s.minute.requests ? s.minute.success_rate : null) },
  { key: "p50", label: "p50", value: (s) => s.minute.latency_ms.p50 },
  { key: "p99", label: "p99", value: (s) => s.minute.latency_ms.p99 },
  { key: "load", label: "L", title: "mean load: requests per second per instance", value: (s) => s.models.mean_load, wide: true },
  { key: "imbalance", label: "max wᵢ/L", title: "imbalance: the busiest instance's load over the mean", value: (s) => s.models.imbalance, wide: true },
  { key: "failure", label: "F", title: "mean failure rate over the instances", value: (s) => s.models.mean_failure_rate },
  { key: "history", label: "10 min", value: null, wide: true },
];

function sortedServices(services) {
  const column = COLUMNS.find((c) => c.key === state.sort.key) || COLUMNS[0];
  const { dir } = state.sort;
  const filter = state.filter.toLowerCase();
  const shown = filter ? services.filter((s) => s.name.includes(filter)) : services.slice();
  return shown.sort((a, b) => {
    const x = column.value(a);
    const y = column.value(b);
    if (x == null && y == null) return a.name < b.name ? -1 : 1;
    if (x == null) return 1; // no figure: last, whichever way
    if (y == null) return -1;
    if (x < y) return -dir;
    if (x > y) return dir;
    return a.name < b.name ? -1 : 1;
  });
}

function servicesView(stats) {
  const services = stats.services;
  const instances = services.reduce((n, s) => n + s.health.passing + s.health.warning + s.health.critical, 0);
  const passing = services.reduce((n, s) => n + s.health.passing, 0);
  const rps = services.reduce((n, s) => n + s.minute.rps, 0);
  const head = COLUMNS.map((c) => {
    const sorted = state.sort.key === c.key ? (state.sort.dir > 0 ? " ▲" : " ▼") : "";
    const sortable = c.value ? ` data-sort="${c.key}" tabindex="0"` : "";
    return `<th class="${c.wide ? "wide" : ""}"${sortable}${c.title ? ` title="${esc(c.title)}"` : ""}>${esc(c.label)}${sorted}</th>`;
  }).join("");
  const sorted = sortedServices(services);
  // A screenful is drawn at once, the rest a frame later (see render).
  state.rest = sorted.slice(FIRST_ROWS);
  const rows = sorted.slice(0, FIRST_ROWS).map(serviceRow).join("");
  return `<section class="summary">
<div><b>${services.length}</b> services</div>
<div><b>${passing}</b> of ${instances} instances passing</div>
<div><b>${fmtRps(rps)}</b> requests/s</div>
<div><b>${stats.open_connections ?? 0}</b> open connections</div>
<div><b>${stats.proxies}</b> proxy reports</div>
</section>
<div class="tools"><input id="filter" type="search" placeholder="Filter services" value="${esc(state.filter)}" aria-label="Filter services"></div>
<div class="scroll"><table id="services"><thead><tr>${head}</tr></thead><tbody>${rows}</tbody></table></div>
${services.length === 0 ? `<p class="empty">No services registered yet.</p>` : ""}`;
}

// The rows drawn at once; with a thousand services, laying out every row before the first
// paint would take most of a second.
const FIRST_ROWS = 60;

function serviceRow(s) {
      const name = esc(s.name);
      return `<tr data-service="${name}">
<td data-col="name"><a href="#/service/${encodeURIComponent(s.name)}">${name}</a></td>
<td data-col="health">${healthPills(s.health)}</td>
<td data-col="rps" class="num">${fmtRps(s.minute.rps)}</td>
<td data-col="success" class="num ${successClass(s.minute)}">${fmtRate(s.minute)}</td>
<td data-col="p50" class="num">${fmtMs(s.minute.latency_ms.p50)}</td>
<td data-col="p99" class="num">${fmtMs(s.minute.latency_ms.p99)}</td>
<td data-col="load" class="num wide">${fmtRatio(s.models.mean_load, 1)}</td>
<td data-col="imbalance" class="num wide">${fmtRatio(s.models.imbalance)}</td>
<td data-col="failure" class="num">${fmtShare(s.models.mean_failure_rate)}</td>
<td data-col="history" class="wide">${sparkline(s.history)}</td>
</tr>`;
}

// ---- one service ---------------------------------------------------------------------------

function worstStatus(checks) {
  const order = { passing: 0, warning: 1, critical: 2 };
  return (checks || []).reduce((worst, c) => (order[c.Status] > order[worst] ? c.Status : worst), "passing");
}

function windowCard(title, w) {
  return `<div class="card"><h3>${title}</h3>
<dl><dt>RPS</dt><dd>${fmtRps(w.rps)}</dd>
<dt>Success</dt><dd class="${successClass(w)}">${fmtRate(w)}</dd>
<dt>Requests</dt><dd>${w.requests} (${w.failures} failed)</dd>
<dt>p50 / p95 / p99</dt><dd>${fmtMs(w.latency_ms.p50)} / ${fmtMs(w.latency_ms.p95)} / ${fmtMs(w.latency_ms.p99)}</dd></dl></div>`;
}

function edgeRows(edges, nameOf) {
  if (edges.length === 0) return `<tr><td colspan="6" class="empty">none seen in the last minute</td></tr>`;
  return edges
    .map((e) => {
      const other = nameOf(e);
      const link = other === "gateway" || other === "unknown" ? esc(other) : `<a href="#/service/${encodeURIComponent(other)}">${esc(other)}</a>`;
      return `<tr data-edge="${esc(e.source)}>${esc(e.destination)}"><td>${link}</td>
<td class="num">${fmtRps(e.minute.rps)}</td><td class="num ${successClass(e.minute)}">${fmtRate(e.minute)}</td>
<td class="num">${fmtMs(e.minute.latency_ms.p99)}</td>
<td>${e.mtls ? `<span class="pill passing">mTLS</span>` : `<span class="pill critical">plaintext</span>`}</td>
<td><span class="pill ${e.intention === "deny" ? "critical" : "passing"}">${esc(e.intention)}</span></td></tr>`;
    })
    .join("");
}

function serviceView(stats, name) {
  const service = stats.services.find((s) => s.name === name);
  if (!service) return `<p class="empty">No service named <b>${esc(name)}</b>. <a href="#/">All services</a></p>`;
  const figures = new Map(service.instances.map((i) => [i.id, i]));
  const entries = state.health.get(name) || [];
  const ids = new Set(entries.map((e) => e.Service.ID));
  const rows = entries
    .map((e) => {
      const f = figures.get(e.Service.ID);
      const status = worstStatus(e.Checks);
      const outputs = (e.Checks || [])
        .filter((c) => c.ServiceID || c.Status !== "passing")
        .map((c) => `<div class="check ${esc(c.Status)}" title="${esc(c.Name)}">${esc(c.Output || c.Status)}</div>`)
        .join("");
      const address = `${e.Service.Address || e.Node.Address}:${e.Service.Port}`;
      const restarts = (e.Service.Meta || {})["wharf-restarts"] ?? "—";
      return `<tr data-instance="${esc(e.Service.ID)}"><td>${esc(e.Service.ID)}</td>
<td><span class="pill ${esc(status)}">${esc(status)}</span>${outputs}</td>
<td>${esc(e.Node.Node)}</td><td>${esc(address)}</td><td class="num">${esc(restarts)}</td>
<td class="num">${f ? fmtRps(f.minute.rps) : "—"}</td><td class="num">${f ? f.in_flight : "—"}</td>
<td class="num">${f ? fmtShare(f.failure_rate) : "—"}</td></tr>`;
    })
    .join("");
  // Instances the proxies still report but the catalog no longer has (just deregistered).
  const gone = service.instances
    .filter((i) => !ids.has(i.id))
    .map(
      (f) => `<tr data-instance="${esc(f.id)}" class="gone"><td>${esc(f.id)}</td><td><span class="pill none">deregistered</span></td>
<td>—</td><td>${esc(f.address)}</td><td class="num">—</td><td class="num">${fmtRps(f.minute.rps)}</td>
<td class="num">${f.in_flight}</td><td class="num">${fmtShare(f.failure_rate)}</td></tr>`,
    )
    .join("");
  const m = service.models;
  const callers = stats.edges.filter((e) => e.destination === name);
  const callees = stats.edges.filter((e) => e.source === name);
  const edgeHead = (who) => `<thead><tr><th>${who}</th><th>RPS</th><th>Success</th><th>p99</th><th>Transport</th><th>Intention</th></tr></thead>`;
  return `<p class="crumbs"><a href="#/">Services</a> / <b>${esc(name)}</b></p>
<h2>${esc(name)} ${healthPills(service.health)}</h2>
<section class="cards">
${windowCard("Last minute", service.minute)}
${windowCard("Last ten minutes", service.ten_minutes)}
<div class="card"><h3>Load and failover</h3><dl>
<dt title="bytes from and to its clients in the last minute">In / out</dt><dd>${fmtBytes(service.bytes_in)} / ${fmtBytes(service.bytes_out)}</dd>
<dt title="retries the proxies sent in the last minute">Retries</dt><dd>${service.retries ?? 0}</dd>
<dt title="instances ejected by outlier detection in the last minute">Ejections</dt><dd>${service.ejections ?? 0}</dd>
<dt title="mean requests per second per instance">L</dt><dd>${fmtRatio(m.mean_load, 2)}</dd>
<dt title="the busiest instance over the mean">max wᵢ / L</dt><dd>${fmtRatio(m.imbalance)}</dd>
<dt title="mean failure rate over the instances">F</dt><dd>${fmtShare(m.mean_failure_rate)}</dd></dl>
${sparkline(service.history, 260, 48)}</div>
${scalingCard(service)}
</section>
<h3>Instances</h3>
<div class="scroll"><table id="instances"><thead><tr><th>ID</th><th>Health</th><th>Node</th><th>Address</th><th>Restarts</th><th title="requests per second">wᵢ</th><th>In flight</th><th title="failure rate">fᵢ</th></tr></thead>
<tbody>${rows}${gone}</tbody></table></div>
${entries.length === 0 && !gone ? `<p class="empty">No instances.</p>` : ""}
<h3>Routes</h3>
<div class="scroll"><table id="routes"><thead><tr><th>Route</th><th>RPS</th><th>Success</th><th>p50</th><th>p99</th></tr></thead><tbody>
${(service.routes || []).map((r) => `<tr data-route="${esc(r.route)}"><td>${esc(r.route)}</td><td class="num">${fmtRps(r.minute.rps)}</td>
<td class="num ${successClass(r.minute)}">${fmtRate(r.minute)}</td><td class="num">${fmtMs(r.minute.latency_ms.p50)}</td>
<td class="num">${fmtMs(r.minute.latency_ms.p99)}</td></tr>`).join("") || `<tr><td colspan="5" class="empty">none in the last minute</td></tr>`}
</tbody></table></div>
<h3>Callers</h3><div class="scroll"><table id="callers">${edgeHead("From")}<tbody>${edgeRows(callers, (e) => e.source)}</tbody></table></div>
<h3>Callees</h3><div class="scroll"><table id="callees">${edgeHead("To")}<tbody>${edgeRows(callees, (e) => e.destination)}</tbody></table></div>`;
}

// Desired beside current for a service `wharf up` runs, and the autoscaler's last decision.
function scalingCard(service) {
  const d = service.desired;
  if (!d) return "";
  const bounds = d.min != null ? `${d.min}–${d.max}` : "manual";
  const last = d.last_decision;
  const decision = last
    ? `<dt title="the autoscaler's last change of count">Last change</dt><dd>${last.from} → ${last.to} (${esc(last.mode)})</dd>
<dt title="the load it was made from, per passing instance, against the target">Load / target</dt><dd>${fmtRatio(last.per_instance, 1)} / ${fmtRatio(last.target, 1)}</dd>`
    : "";
  return `<div class="card" id="scaling"><h3>Scaling</h3><dl>
<dt title="instances passing now">Current</dt><dd>${service.health.passing}</dd>
<dt title="instances the supervisor is asked to run">Desired</dt><dd>${d.replicas}</dd>
<dt title="autoscale bounds (min–max), or manual">Autoscale</dt><dd>${bounds}</dd>
${decision}</dl></div>`;
}

// The instances' health is read beside the stats, once per update, never two at a time.
async function refreshHealth(name) {
  if (state.healthPending.has(name)) return;
  state.healthPending.add(name);
  try {
    const { body } = await api(`/v1/health/service/${encodeURIComponent(name)}`);
    state.health.set(name, body);
  } catch (e) {
    state.health.set(name, []);
  } finally {
    state.healthPending.delete(name);
  }
}

// ---- topology ------------------------------------------------------------------------------

// Callers on the left, callees to their right: each node's column is its longest path from a
// node nobody calls (bounded, so a cycle cannot loop).
function layout(edges) {
  const nodes = [...new Set(edges.flatMap((e) => [e.source, e.destination]))].sort();
  const column = new Map(nodes.map((n) => [n, 0]));
  for (let round = 0; round < nodes.length; round++) {
    let moved = false;
    for (const e of edges) {
      if (e.source === e.destination) continue;
      const want = column.get(e.source) + 1;
      if (want > column.get(e.destination) && want < nodes.length) {
        column.set(e.destination, want);
        moved = true;
      }
    }
    if (!moved) break;
  }
  const columns = [];
  for (const n of nodes) (columns[column.get(n)] ||= []).push(n);
  const at = new Map();
  columns.forEach((names, c) => names.forEach((n, r) => at.set(n, { x: 90 + c * 240, y: 50 + r * 80 })));
  const height = 60 + Math.max(1, ...columns.map((c) => (c ? c.length : 0))) * 80;
  return { nodes, at, width: 180 + (columns.length - 1) * 240, height };
}

function topologyView(stats) {
  const edges = stats.edges;
  if (edges.length === 0) return `<p class="empty">No traffic between services in the last minute.</p>`;
  const health = new Map(stats.services.map((s) => [s.name, s.health]));
  const { nodes, at, width, height } = layout(edges);
  const lines = edges
    .map((e) => {
      const a = at.get(e.source);
      const b = at.get(e.destination);
      const mid = { x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 };
      const path = e.source === e.destination
        ? `M${a.x},${a.y - 18} C${a.x - 40},${a.y - 70} ${a.x + 40},${a.y - 70} ${a.x},${a.y - 18}`
        : `M${a.x + 18},${a.y} C${mid.x},${a.y} ${mid.x},${b.y} ${b.x - 18},${b.y}`;
      const classes = ["edge", successClass(e.minute), e.mtls ? "mtls" : "plaintext", e.intention === "deny" ? "denied" : ""].join(" ");
      const label = `${fmtRps(e.minute.rps)} rps · ${fmtRate(e.minute)}${e.mtls ? "" : " · plaintext"}`;
      return `<g class="${classes}" data-edge="${esc(e.source)}>${esc(e.destination)}"><path d="${path}" marker-end="url(#arrow)"/>
<text x="${e.source === e.destination ? a.x : (mid.x + b.x) / 2 - 10}" y="${e.source === e.destination ? a.y - 72 : b.y - 8}" text-anchor="middle">${esc(label)}</text><title>${esc(e.source)} → ${esc(e.destination)}: ${e.minute.requests} requests, ${e.minute.failures} failed, p99 ${fmtMs(e.minute.latency_ms.p99)}, ${e.mtls ? "mTLS" : "plaintext"}, intention ${esc(e.intention)}</title></g>`;
    })
    .join("");
  const circles = nodes
    .map((n) => {
      const { x, y } = at.get(n);
      const h = health.get(n);
      const cls = !h ? "external" : h.critical ? "critical" : h.warning ? "warning" : h.passing ? "passing" : "none";
      const label = h ? `<a href="#/service/${encodeURIComponent(n)}"><text x="${x}" y="${y + 34}" text-anchor="middle">${esc(n)}</text></a>` : `<text x="${x}" y="${y + 34}" text-anchor="middle">${esc(n)}</text>`;
      return `<g class="node ${cls}" data-node="${esc(n)}"><circle cx="${x}" cy="${y}" r="16"/>${label}</g>`;
    })
    .join("");
  return `<p class="legend"><span class="pill passing">mTLS</span> solid · <span class="pill critical">plaintext</span> dashed · edge colour: success in the last minute</p>
<div class="scroll"><svg id="topology" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">
<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"/></marker></defs>
${lines}${circles}</svg></div>`;
}

// ---- routing and the live loop -------------------------------------------------------------

function route() {
  const hash = decodeURIComponent(location.hash.replace(/^#\/?/, ""));
  if (hash.startsWith("service/")) return { view: "service", name: hash.slice("service/".length) };
  if (hash === "topology") return { view: "topology" };
  return { view: "services" };
}

function render() {
  const began = performance.now();
  const generation = ++state.generation;
  const main = document.getElementById("view");
  const here = route();
  document.querySelectorAll("[data-nav]").forEach((a) => a.classList.toggle("here", a.dataset.nav === here.view || (here.view === "service" && a.dataset.nav === "services")));
  if (!state.stats) return;
  const focused = document.activeElement && document.activeElement.id === "filter";
  const caret = focused ? document.activeElement.selectionStart : null;
  if (here.view === "service") {
    main.innerHTML = serviceView(state.stats, here.name);
    document.title = `${here.name} · Wharf`;
  } else if (here.view === "topology") {
    main.innerHTML = topologyView(state.stats);
    document.title = "Topology · Wharf";
  } else {
    main.innerHTML = servicesView(state.stats);
    document.title = "Wharf";
    if (focused) {
      const input = document.getElementById("filter");
      input.focus();
      input.setSelectionRange(caret, caret);
    }
    if (state.rest.length > 0) {
      const rest = state.rest;
      requestAnimationFrame(() =>
        setTimeout(() => {
          const body = document.querySelector("#services tbody");
          if (generation === state.generation && body) body.insertAdjacentHTML("beforeend", rest.map(serviceRow).join(""));
        }, 0),
      );
    }
  }
  main.dataset.index = String(state.index);
  state.renderMs = performance.now() - began;
}

async function update() {
  const here = route();
  if (here.view === "service") await refreshHealth(here.name);
  render();
}

function setLive(live, reason) {
  const badge = document.getElementById("live");
  badge.textContent = live ? "live" : "reconnecting…";
  badge.className = `live ${live ? "on" : "off"}`;
  badge.title = live ? "Updates as the registry's figures change" : reason || "";
}

async function follow() {
  for (;;) {
    const started = Date.now();
    try {
      const { body, index } = await api(`/v1/wharf/stats?index=${state.index}&wait=30s`);
      // An index that went backwards (a registry restarted) is taken as it is.
      state.stats = body;
      state.index = index;
      setLive(true);
      await update();
    } catch (e) {
      setLive(false, String(e.message || e));
      state.index = 0;
      await sleep(1000);
      continue;
    }
    // Every proxy report moves the index: at most two renders a second, fewer when a render
    // is costly (a thousand services), so that the page never spends most of its time on it.
    const pause = Math.max(500, 5 * state.renderMs);
    const spent = Date.now() - started;
    if (spent < pause) await sleep(pause - spent);
  }
}

document.addEventListener("click", (event) => {
  const th = event.target.closest("th[data-sort]");
  if (th) {
    const key = th.dataset.sort;
    state.sort = state.sort.key === key ? { key, dir: -state.sort.dir } : { key, dir: key === "name" ? 1 : -1 };
    render();
  }
});
document.addEventListener("keydown", (event) => {
  const th = event.target.closest && event.target.closest("th[data-sort]");
  if (th && (event.key === "Enter" || event.key === " ")) {
    event.preventDefault();
    th.click();
  }
});
document.addEventListener("input", (event) => {
  if (event.target.id === "filter") {
    state.filter = event.target.value;
    render();
  }
});
document.getElementById("token").addEventListener("click", () => {
  const token = prompt("ACL token (empty for none)", localStorage.getItem(TOKEN_KEY) || "");
  if (token === null) return;
  if (token) localStorage.setItem(TOKEN_KEY, token.trim());
  else localStorage.removeItem(TOKEN_KEY);
  location.reload();
});
window.addEventListener("hashchange", () => {
  update();
});

follow();
