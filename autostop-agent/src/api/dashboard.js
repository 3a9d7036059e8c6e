// The dashboard's table, actions and live updates. It reads /api/services
// and /api/history (drawn by charts.js), follows /api/events to refresh
// at once when something happens, and sends the actions after an inline
// confirmation, showing each one's result. With a token configured, the
// token is asked once and kept in localStorage.
"use strict";
const rows = document.getElementById("rows");
const fmtBytes = (b) => b == null ? "–" : b >= 1e9 ? (b / 1e9).toFixed(1) + " GB" : (b / 1e6).toFixed(0) + " MB";
const fmtSecs = (s) => s == null ? "–" : s >= 3600 ? Math.floor(s / 3600) + " h " + Math.floor(s % 3600 / 60) + " m"
  : s >= 60 ? Math.floor(s / 60) + " m " + (s % 60) + " s" : s + " s";
// Small savings (a fresh install, a small app) read in MB·h or kB·h, not 0.0 GB·h.
const fmtGbh = Charts.gbh;
// Why a failed service is not started by its next visitor.
const blockNote = (s) => s.start_block === "crash_loop" ? " (crash loop: start it by hand)"
  : s.start_block === "backoff" ? (s.retry_in_s > 0 ? " (retry in " + fmtSecs(s.retry_in_s) + ")" : " (retry at the next request)") : "";
// What keeps it awake besides traffic, else when a keep_warm window or a
// pre-warm will start it next (in the browser's time zone).
const when = (t) => new Date(t).toLocaleString([], { weekday: "short", hour: "2-digit", minute: "2-digit" });
const awakeNote = (s) => (s.keep_awake || []).length ? " — " + s.keep_awake.join("; ")
  : s.next_keep_warm ? " — warm from " + when(s.next_keep_warm)
  : s.next_prewarm ? " — pre-warm " + when(s.next_prewarm.at) : "";

// What the page shows and what the operator is doing.
const view = {
  services: [], history: null, span: 86400000,
  pending: null,        // { service, action, value }: waiting for "confirm"
  results: {},          // service → { text, ok }: the last action's outcome
  timeouts: {},         // service → the idle timeout being typed
};

function token() { return localStorage.getItem("autostop-token"); }
function authHeaders(extra) {
  const headers = Object.assign({}, extra);
  if (token()) headers["Authorization"] = "Bearer " + token();
  return headers;
}
// An agent with a token file shows nothing without it: ask once, keep it.
function askToken() {
  const t = prompt("This agent requires its API token:");
  if (t) localStorage.setItem("autostop-token", t);
  return Boolean(t);
}
function cell(text, cls) { const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; return td; }
function button(text, data, onclick) {
  const b = document.createElement("button");
  b.textContent = text; Object.assign(b.dataset, data); b.onclick = onclick;
  return b;
}

// Sends a confirmed action; its outcome shows in the row and below the table.
async function send(name, action, value) {
  view.pending = null;
  const path = `/api/services/${encodeURIComponent(name)}/${action}`;
  // Same origin, JSON or no body: what the API's cross-site checks let through.
  const init = action === "idle-timeout"
    ? { method: "PUT", headers: authHeaders({ "Content-Type": "application/json" }), body: JSON.stringify({ idle_timeout: value }) }
    : { method: "POST", headers: authHeaders() };
  const said = action === "idle-timeout" ? `idle timeout ${value}` : action;
  let result;
  try {
    const r = await fetch(path, init);
    if (r.status === 401 && askToken()) return send(name, action, value);
    const body = await r.json().catch(() => ({}));
    result = r.ok ? { text: `${said} ${name}: done`, ok: true } : { text: `${said} ${name}: ${body.detail || r.status}`, ok: false };
  } catch (e) {
    result = { text: `${said} ${name}: ${e}`, ok: false };
  }
  if (result.ok) delete view.timeouts[name];
  view.results[name] = result;
  const message = document.getElementById("message");
  message.textContent = result.text;
  message.className = "result " + (result.ok ? "ok" : "bad");
  refresh();
}

// Opens the confirmation of `pending`; one left open for 30 s closes.
function ask(pending) {
  view.pending = pending;
  render(true);
  setTimeout(() => { if (view.pending === pending) { view.pending = null; render(true); } }, 30000);
}

function actionsCell(s) {
  const td = document.createElement("td");
  td.className = "actions";
  const p = view.pending;
  if (p && p.service === s.name) {
    const what = p.action === "idle-timeout" ? `set the idle timeout to ${p.value}` : p.action;
    td.append(document.createTextNode(`${what} ${s.name}? `),
      button("confirm", { confirm: p.action }, () => send(s.name, p.action, p.value)),
      button("cancel", { cancel: "" }, () => { view.pending = null; render(true); }));
  } else {
    for (const a of ["start", "stop", s.hold ? "release" : "hold"]) {
      td.append(button(a, { action: a }, () => ask({ service: s.name, action: a })));
    }
    const input = document.createElement("input");
    input.className = "timeout"; input.placeholder = fmtSecs(s.idle_timeout_s).replace(/ /g, "");
    input.value = view.timeouts[s.name] || "";
    input.oninput = () => { view.timeouts[s.name] = input.value; };
    td.append(input, button("set timeout", { action: "idle-timeout" }, () => {
      if (!input.value.trim()) return;
      ask({ service: s.name, action: "idle-timeout", value: input.value.trim() });
    }));
  }
  const result = view.results[s.name];
  if (result) {
    const d = document.createElement("div");
    d.className = "result " + (result.ok ? "ok" : "bad"); d.textContent = result.text;
    td.append(d);
  }
  if (s.last_error) { const e = document.createElement("div"); e.className = "err"; e.textContent = s.last_error; td.append(e); }
  return td;
}

function ramText(s) {
  // Hibernated: what stayed resident and what went to swap.
  const h = s.hibernation;
  if (h) return fmtBytes(h.resident_bytes) + " + " + fmtBytes(h.swap_bytes) + " swap" + (h.reclaimed ? "" : " (paused only)");
  return s.memory_bytes == null ? "–" : fmtBytes(s.memory_bytes) + " / " + fmtBytes(s.memory_limit_bytes);
}

// `force`: the operator changed the table (redraw it even now).
function render(force) {
  const services = view.services;
  // The table holds still while the operator types a timeout or has a
  // confirmation open; the charts and the summary still follow.
  const typing = document.activeElement && document.activeElement.classList.contains("timeout");
  if (force || !(typing || view.pending)) rows.replaceChildren(...services.map((s) => {
    const tr = document.createElement("tr");
    tr.dataset.service = s.name;
    const ram = cell(ramText(s), "num ram");
    if (s.memory_bytes != null) ram.dataset.bytes = s.memory_bytes;
    const starts = cell(String(s.starts_24h), "num starts");
    starts.dataset.value = s.starts_24h;
    const saved = cell(fmtGbh(s.ram_saved_gb_h) + " (" + fmtGbh(s.ram_saved_gb_h_24h) + " in 24 h)", "num saved");
    saved.dataset.gbh = s.ram_saved_gb_h;
    tr.append(cell(s.name),
      cell(s.state + (s.hold ? " (hold)" : "") + blockNote(s) + awakeNote(s), "state " + s.state),
      ram, cell(fmtSecs(s.seconds_until_stop), "num"), starts,
      cell(s.average_start_duration_s == null ? "–" : s.average_start_duration_s.toFixed(1) + " s", "num"),
      saved, actionsCell(s));
    return tr;
  }));
  const ready = services.filter((s) => s.state === "ready").length;
  const total = services.reduce((a, s) => a + s.ram_saved_gb_h, 0);
  const summary = document.getElementById("summary");
  summary.dataset.gbh = total;
  summary.textContent = `${services.length} services, ${ready} running, ${fmtGbh(total)} saved, `
    + `${fmtGbh(services.reduce((a, s) => a + s.ram_saved_gb_h_24h, 0))} in the last 24 h`;
  if (view.history) Charts.render(services, view.history, view.span);
}

let asked = false;
async function get(path) {
  const r = await fetch(path, { cache: "no-store", headers: authHeaders() });
  if (r.status === 401) throw Object.assign(new Error("unauthorized"), { unauthorized: true });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}
async function refresh() {
  try {
    const [services, history] = await Promise.all([get("/api/services"), get("/api/history")]);
    view.services = services; view.history = history;
    render();
    window.autostopRefreshes = (window.autostopRefreshes || 0) + 1;
  } catch (e) {
    if (e.unauthorized) {
      document.getElementById("summary").textContent = "this agent requires its API token";
      if (!asked) { asked = true; if (askToken()) return refresh(); }
      return;
    }
    document.getElementById("summary").textContent = "agent unreachable: " + e.message;
  }
}
// Many events in a burst (a start: starting, ready, manual) make one refresh.
let soon = null;
function refreshSoon() {
  clearTimeout(soon);
  soon = setTimeout(refresh, 150);
}

// The events stream. EventSource cannot send an Authorization header, so
// the page reads the stream with fetch and parses the SSE lines itself;
// on reconnect, Last-Event-ID resumes where it left off.
// When every stream slot is taken (503), Retry-After says when to retry.
let lastEventId = null;
async function follow() {
  const live = document.getElementById("live");
  for (;;) {
    let wait = 2000;
    try {
      const headers = authHeaders({ Accept: "text/event-stream" });
      if (lastEventId != null) headers["Last-Event-ID"] = String(lastEventId);
      const r = await fetch("/api/events", { headers, cache: "no-store" });
      const after = Number(r.headers.get("Retry-After"));
      if (r.status === 503 && after > 0) wait = Math.min(after, 60) * 1000;
      if (!r.ok || !r.body) throw new Error(`HTTP ${r.status}`);
      live.textContent = "live updates: on";
      const reader = r.body.getReader(), decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          onEvent(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
      live.textContent = "live updates: reconnecting…";
    } catch (e) {
      live.textContent = "live updates: off (" + e.message + "), retrying";
    }
    await new Promise((done) => setTimeout(done, wait));
  }
}
function onEvent(block) {
  let id = null, data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue; // keep-alive comment
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "id") id = value;
    else if (field === "data") data += (data ? "\n" : "") + value;
  }
  if (id == null && !data) return;
  if (id != null) lastEventId = id;
  window.autostopEvents = (window.autostopEvents || 0) + 1;
  window.autostopLastEvent = data;
  refreshSoon();
}

for (const b of document.querySelectorAll("#zoom button")) {
  b.onclick = () => {
    view.span = b.dataset.span === "fit" ? "fit" : Number(b.dataset.span);
    for (const o of document.querySelectorAll("#zoom button")) o.setAttribute("aria-pressed", String(o === b));
    render();
  };
}
refresh();
follow();
// Counters that change without an event (idle countdown, RAM samples).
setInterval(refresh, 5000);
