// llmhub console: reads the same endpoints API clients use and redraws every 5 s.
"use strict";

const KEY = "llmhub-key";
const COLORS = ["#3b5bdb", "#12b886", "#f59f00", "#e64980", "#7048e8", "#15aabf", "#82c91e", "#fd7e14", "#868e96"];
const $ = (sel, root = document) => root.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return node;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function money(v) {
  return v == null ? "—" : `$${Number(v).toFixed(v >= 1 ? 2 : 4)}`;
}

function ago(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 90) return `${s}s`;
  if (s < 5400) return `${Math.floor(s / 60)}m`;
  if (s < 172800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  const key = sessionStorage.getItem(KEY);
  if (key) headers["Authorization"] = `Bearer ${key}`;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) throw new Unauthorized(body.error?.message || "a key is needed");
  if (!response.ok) throw new Error(body.error?.message || `HTTP ${response.status}`);
  return body;
}

function showLogin(message) {
  $("#app").hidden = true;
  $("#logout").hidden = true;
  $("#login").hidden = false;
  $("#login-message").textContent = message || "";
  for (const tbody of document.querySelectorAll("tbody")) tbody.replaceChildren();
}

function renderOverview(h) {
  const status = $("#status");
  status.textContent = h.status;
  status.className = `badge ${h.status}`;
  $("#version").textContent = `v${h.version}`;
  const c = h.config || {};
  $("#generation").textContent = c.generation ?? "";
  $("#loaded-at").textContent = c.loaded_at ? new Date(c.loaded_at * 1000).toLocaleString() : "";
  $("#uptime").textContent = ago(h.uptime_s);
  const r = c.reloads || {};
  $("#reloads").textContent = `${r.applied ?? 0} applied, ${r.unchanged ?? 0} unchanged, ${r.failed ?? 0} rejected`;
  const l = h.ledger;
  $("#ledger").textContent = l ? `${l.state} · ${l.database} · ${l.written} written, ${l.queued} queued, ${l.dropped} dropped` : "off";
  const lim = h.limits;
  $("#limits").textContent = lim ? `${lim.store}, ${lim.state}${lim.last_error ? " — " + lim.last_error : ""}` : "";
  $("#pending").textContent = (c.pending_restart || []).join("; ") || "none";
  const err = $("#reload-error");
  if (c.last_reload_error) {
    err.hidden = false;
    err.textContent = `Last reload rejected (${new Date(c.last_reload_error.at * 1000).toLocaleTimeString()}); still serving generation ${c.generation}:\n` +
      c.last_reload_error.errors.join("\n");
  } else {
    err.hidden = true;
    err.textContent = "";
  }
}

function renderProviders(h, models) {
  const rows = Object.entries(h.providers || {}).map(([name, p]) => {
    const circuit = p.circuit?.state || "closed";
    return el("tr", {},
      el("td", {}, name),
      el("td", {}, p.adapter),
      el("td", { class: p.active ? "state-on" : "state-off" }, p.active ? "active" : `inactive: ${p.reason || ""}`),
      el("td", { class: circuit === "closed" ? "" : "state-warn" }, circuit),
      el("td", {}, p.fallback_to || "—"),
      el("td", { class: "num" }, String(p.models)));
  });
  fill($("#providers tbody"), rows);
  $("#chains").replaceChildren(...Object.entries(h.chains || {}).map(([g, chain]) =>
    el("li", {}, el("b", {}, g), ": ", chain.join(" → ") || "(empty)")));
  const priced = (models.data || []).filter((m) => m.owned_by !== "llmhub-group");
  fill($("#models tbody"), priced.map((m) => el("tr", {},
    el("td", {}, m.id),
    el("td", { class: "num" }, m.context_window ? String(m.context_window) : "—"),
    el("td", { class: "num" }, m.pricing?.input_per_1m ?? "—"),
    el("td", { class: "num" }, m.pricing?.cached_input_per_1m ?? "—"),
    el("td", { class: "num" }, m.pricing?.output_per_1m ?? "—"))));
}

/// Stacked bars per day; `value` picks the number out of a usage row.
function chart(target, days, series, value, format) {
  const names = [...new Set(series.map((r) => r.split || "(none)"))];
  const byDay = new Map(days.map((d) => [d, new Map()]));
  for (const r of series) {
    const m = byDay.get(r.day);
    if (m) m.set(r.split || "(none)", (m.get(r.split || "(none)") || 0) + value(r));
  }
  const totals = days.map((d) => [...byDay.get(d).values()].reduce((a, b) => a + b, 0));
  const max = Math.max(...totals, 0);
  const W = 600, H = 180, pad = 18, bw = (W - pad) / days.length;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.dataset.total = String(totals.reduce((a, b) => a + b, 0));
  days.forEach((day, i) => {
    let y = H - pad;
    names.forEach((name, j) => {
      const v = byDay.get(day).get(name) || 0;
      if (!v || !max) return;
      const h = (v / max) * (H - 2 * pad);
      y -= h;
      const rect = document.createElementNS(ns, "rect");
      rect.setAttribute("class", "bar");
      rect.setAttribute("x", String(pad + i * bw + 1));
      rect.setAttribute("y", String(y));
      rect.setAttribute("width", String(Math.max(bw - 2, 1)));
      rect.setAttribute("height", String(h));
      rect.setAttribute("fill", COLORS[j % COLORS.length]);
      const title = document.createElementNS(ns, "title");
      title.textContent = `${day} · ${name}: ${format(v)}`;
      rect.append(title);
      svg.append(rect);
    });
  });
  const label = document.createElementNS(ns, "text");
  label.setAttribute("x", "2");
  label.setAttribute("y", "12");
  label.setAttribute("font-size", "11");
  label.setAttribute("fill", "#667085");
  label.textContent = `max ${format(max)}`;
  svg.append(label);
  target.replaceChildren(svg);
  return names;
}

function renderUsage(daily, totals) {
  const split = $("#split").value;
  const days = [];
  for (let i = 29; i >= 0; i--) days.push(new Date(Date.now() - i * 86400000).toISOString().slice(0, 10));
  const series = (daily.data || []).map((r) => Object.assign({}, r, { split: r[split] }));
  const names = chart($("#chart-cost"), days, series, (r) => r.cost_usd, (v) => money(v));
  chart($("#chart-tokens"), days, series, (r) => r.input_tokens + r.output_tokens, (v) => `${Math.round(v)}`);
  $("#legend").replaceChildren(...names.map((n, j) => {
    // CSSOM, not a style attribute: the page's CSP allows no inline styles.
    const swatch = el("i");
    swatch.style.background = COLORS[j % COLORS.length];
    return el("span", {}, swatch, n);
  }));
  const cards = [["today", totals.day], ["last 7 days", totals.week], ["this month", totals.month]].map(([name, t]) => {
    const s = t.total || {};
    return el("div", { class: "card" }, el("span", { class: "muted" }, name), el("b", {}, money(s.cost_usd || 0)),
      `${s.requests || 0} requests · ${(s.input_tokens || 0) + (s.output_tokens || 0)} tokens`,
      el("div", { class: "muted" }, `${s.unpriced || 0} unpriced, ${s.failed || 0} failed`));
  });
  $("#totals").replaceChildren(...cards);
}

let recentRows = [];

function renderRequests() {
  const project = $("#filter-project").value.trim();
  const model = $("#filter-model").value.trim();
  const status = $("#filter-status").value;
  const rows = recentRows.filter((r) =>
    (!project || r.project.includes(project)) &&
    (!model || `${r.provider}/${r.model}`.includes(model) || r.requested.includes(model)) &&
    (!status || (status === "ok") === (r.status >= 200 && r.status < 300)));
  fill($("#requests tbody"), rows.map((r) => el("tr", {},
    el("td", {}, new Date(r.at_ms).toLocaleTimeString()),
    el("td", {}, r.project), el("td", {}, r.agent || ""), el("td", {}, r.key || ""), el("td", {}, r.surface),
    el("td", {}, r.provider ? `${r.provider}/${r.model}` : r.requested),
    el("td", { class: r.status < 300 ? "state-on" : "state-off" }, String(r.status)),
    el("td", { class: "num" }, String(r.attempts)),
    el("td", { class: "num" }, `${r.latency_ms} ms`),
    el("td", { class: "num" }, `${r.input_tokens}/${r.output_tokens}`),
    el("td", { class: "num" }, r.cost_usd == null ? "unpriced" : money(r.cost_usd)))));
}

let toolList = [];

function renderMcp(tools, h) {
  toolList = tools.data || [];
  const builtin = (tools.builtin || []).map((n) => el("tr", {}, el("td", {}, n), el("td", {}, "built-in"), el("td", { class: "muted" }, "MCP only")));
  fill($("#tools tbody"), [...builtin, ...toolList.map((t) => el("tr", {}, el("td", {}, t.name), el("td", {}, t.kind || "prompt"), el("td", {}, t.description)))]);
  fill($("#backends tbody"), Object.entries(h.backends || {}).map(([name, b]) => el("tr", {},
    el("td", {}, name), el("td", { class: b.status === "connected" ? "state-on" : "state-off" }, b.status),
    el("td", {}, b.transport), el("td", { class: "num" }, String(b.tools)), el("td", {}, b.reason || ""))));
  const select = $("#tool-select");
  const current = select.value;
  const names = toolList.map((t) => t.name);
  if (names.join() !== [...select.options].map((o) => o.value).join()) {
    select.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
    if (names.includes(current)) select.value = current;
    buildForm();
  }
}

function buildForm() {
  const tool = toolList.find((t) => t.name === $("#tool-select").value);
  const form = $("#tool-form");
  form.replaceChildren();
  if (!tool) return;
  const schema = tool.input_schema || {};
  const required = new Set(schema.required || []);
  for (const [name, p] of Object.entries(schema.properties || {})) {
    let input;
    if (Array.isArray(p.enum)) input = el("select", {}, el("option", { value: "" }, ""), ...p.enum.map((v) => el("option", { value: String(v) }, String(v))));
    else if (p.type === "boolean") input = el("input", { type: "checkbox" });
    else if (p.type === "integer" || p.type === "number") input = el("input", { type: "number", step: p.type === "integer" ? "1" : "any" });
    else if (p.type === "string" && !p.maxLength) input = el("textarea", { rows: "2" });
    else input = el("input", { type: "text" });
    input.name = name;
    input.dataset.type = p.type || "string";
    if (required.has(name)) input.required = true;
    form.append(el("label", {}, el("span", {}, `${name}${required.has(name) ? " *" : ""}${p.description ? " — " + p.description : ""}`), input));
  }
}

async function runTool() {
  const name = $("#tool-select").value;
  const args = {};
  for (const input of $("#tool-form").querySelectorAll("[name]")) {
    const type = input.dataset.type;
    if (type === "boolean") args[input.name] = input.checked;
    else if (input.value === "") continue;
    else if (type === "integer" || type === "number") args[input.name] = Number(input.value);
    else if (type === "array" || type === "object") {
      try { args[input.name] = JSON.parse(input.value); } catch { args[input.name] = input.value; }
    } else args[input.name] = input.value;
  }
  const out = $("#tool-result");
  out.textContent = "running…";
  try {
    const r = await api(`/v1/tools/${encodeURIComponent(name)}`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(args) });
    out.textContent = r.structured ? `${r.content}\n\n${JSON.stringify(r.structured, null, 2)}` : r.content;
  } catch (e) {
    out.textContent = `Error: ${e.message}`;
  }
}

function renderKeys(keys) {
  const data = keys.data || [];
  $("#keys-section").hidden = data.length === 0;
  $("#keys-link").hidden = data.length === 0;
  const spend = (spent, cap) => cap == null ? money(spent) : `${money(spent)} of ${money(cap)}`;
  fill($("#keys tbody"), data.map((k) => el("tr", {},
    el("td", {}, k.name), el("td", {}, k.project),
    el("td", { class: "num" }, k.rpm ?? "—"), el("td", { class: "num" }, k.tpm ?? "—"), el("td", { class: "num" }, k.max_parallel ?? "—"),
    el("td", { class: "num" }, spend(k.spent_usd.day, k.budget_usd.day)),
    el("td", { class: "num" }, spend(k.spent_usd.month, k.budget_usd.month)),
    el("td", {}, k.expires || "—"))));
}

let refreshing = false;

async function refresh() {
  if (refreshing) return;
  refreshing = true;
  try {
    const split = $("#split").value;
    const [models, health, daily, day, week, month, recent, tools, keys] = await Promise.all([
      api("/v1/models"), api("/health"),
      api(`/v1/usage?period=30d&group_by=day,${split}`).catch(() => ({ data: [] })),
      api("/v1/usage?period=day").catch(() => ({})), api("/v1/usage?period=week").catch(() => ({})),
      api("/v1/usage?period=month").catch(() => ({})),
      api("/v1/usage/requests?limit=100").catch(() => ({ data: [] })),
      api("/v1/tools"), api("/v1/keys").catch(() => ({ data: [] })),
    ]);
    $("#login").hidden = true;
    $("#app").hidden = false;
    $("#logout").hidden = !sessionStorage.getItem(KEY);
    renderOverview(health);
    renderProviders(health, models);
    renderUsage(daily, { day, week, month });
    recentRows = recent.data || [];
    renderRequests();
    renderMcp(tools, health);
    renderKeys(keys);
    $("#refreshed").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    if (e instanceof Unauthorized) showLogin(sessionStorage.getItem(KEY) ? `That key was refused: ${e.message}` : "");
    else $("#refreshed").textContent = `refresh failed: ${e.message}`;
  } finally {
    refreshing = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("#login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY, $("#login-key").value.trim());
    $("#login-key").value = "";
    refresh();
  });
  $("#logout").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    showLogin("");
  });
  $("#split").addEventListener("change", refresh);
  for (const id of ["#filter-project", "#filter-model", "#filter-status"]) $(id).addEventListener("input", renderRequests);
  $("#tool-select").addEventListener("change", buildForm);
  $("#tool-run").addEventListener("click", runTool);
  refresh();
  setInterval(refresh, 5000);
});
