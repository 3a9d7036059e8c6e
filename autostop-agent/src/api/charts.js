// The dashboard's SVG charts, drawn from /api/services and /api/history
// (see dashboard.js, which fetches them). Every mark carries its raw
// figures in data-* attributes (Unix milliseconds, bytes, GB·h), so what
// is drawn can be checked against the API.
"use strict";
const Charts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const LABEL = 130, WIDTH = 1000, ROW = 22, HALF = 560, HALF_LABEL = 80;
  // The band a state is drawn as.
  const BAND = { stopped: "asleep", hibernated: "asleep", starting: "starting", ready: "awake",
    stopping: "awake", hibernating: "awake", failed: "failed", unknown: "unknown" };
  function el(name, attrs, text) {
    const e = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text != null) e.textContent = text;
    return e;
  }
  function title(parent, text) { parent.append(el("title", {}, text)); return parent; }
  // Times for tooltips (to the second) and axis ticks (minutes, unless
  // the span is so short that minutes would repeat).
  const clock = (ms) => new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  const tickTime = (ms, spanMs) => new Date(ms).toLocaleTimeString([],
    spanMs >= 10 * 60000 ? { hour: "2-digit", minute: "2-digit" } : { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  const bytes = (b) => b >= 1e9 ? (b / 1e9).toFixed(1) + " GB" : (b / 1e6).toFixed(0) + " MB";
  // GB·h in the unit that keeps two or three digits: B·h, kB·h, MB·h,
  // GB·h, TB·h (a fresh install saves kB·h, never "0.0 kB·h").
  function gbh(g) {
    if (!(g > 0)) return "0 GB·h";
    const units = ["B·h", "kB·h", "MB·h", "GB·h", "TB·h"];
    let v = g * 1e9, u = 0;
    while (v >= 1000 && u < units.length - 1) { v /= 1000; u++; }
    return (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)) + " " + units[u];
  }

  // The bands of one service: from the window's start (in the state then)
  // through each transition to now.
  function bands(service, history) {
    const out = [];
    let from = history.window_start_ms, state = service.state_at_start, cause = null;
    for (const t of service.transitions) {
      out.push({ from, to: t.at_ms, state, cause });
      from = t.at_ms; state = t.state; cause = t.cause || null;
    }
    out.push({ from, to: history.now_ms, state, cause });
    return out;
  }

  function timeline(svg, history, spanMs) {
    const now = history.now_ms, viewFrom = now - spanMs, plot = WIDTH - LABEL - 10;
    const x = (t) => LABEL + Math.max(0, Math.min(1, (t - viewFrom) / spanMs)) * plot;
    const rows = history.services;
    const height = rows.length * ROW + 20;
    svg.setAttribute("viewBox", `0 0 ${WIDTH} ${height}`);
    svg.replaceChildren();
    rows.forEach((s, i) => {
      const g = el("g", { class: "timeline-row", "data-service": s.name, transform: `translate(0 ${i * ROW})` });
      g.append(el("text", { x: 0, y: 14 }, s.name));
      for (const b of bands(s, history)) {
        const r = el("rect", { class: "band band-" + (BAND[b.state] || "unknown"), x: x(b.from), y: 3,
          width: Math.max(0, x(b.to) - x(b.from)), height: ROW - 6,
          "data-state": b.state, "data-from": b.from, "data-to": b.to });
        g.append(title(r, `${b.state}${b.cause ? " (" + b.cause + ")" : ""}: ${clock(b.from)} – ${clock(b.to)}`));
      }
      for (const t of s.transitions) {
        const start = t.state === "starting", stop = t.state === "stopping" || t.state === "hibernating";
        if (!start && !stop) continue;
        const m = el("line", { class: "marker " + (start ? "start" : "stop"), x1: x(t.at_ms), x2: x(t.at_ms),
          y1: 0, y2: ROW - 1, "data-at": t.at_ms, "data-cause": t.cause || "" });
        g.append(title(m, `${start ? "start" : "stop"} at ${clock(t.at_ms)}: ${t.cause || "?"}`));
      }
      svg.append(g);
    });
    // Time axis: five ticks across the shown span.
    const axisY = rows.length * ROW + 2;
    svg.append(el("line", { class: "axis", x1: LABEL, x2: LABEL + plot, y1: axisY, y2: axisY }));
    for (let k = 0; k <= 4; k++) {
      const t = viewFrom + spanMs * k / 4;
      svg.append(el("text", { class: "tick", x: x(t), y: axisY + 14, "text-anchor": k === 0 ? "start" : k === 4 ? "end" : "middle" },
        k === 4 ? "now" : tickTime(t, spanMs)));
    }
  }

  // One horizontal bar: `parts` are [value, class, data] stacked from 0,
  // drawn against `full` (outlined).
  function bar(g, y, full, parts, label) {
    const w = HALF - HALF_LABEL - 10, scale = (v) => full > 0 ? Math.min(1, v / full) * w : 0;
    g.append(el("rect", { class: "bar-limit", x: HALF_LABEL, y, width: w, height: 14 }));
    let at = 0;
    for (const [value, cls] of parts) {
      g.append(el("rect", { class: cls, x: HALF_LABEL + scale(at), y, width: scale(value), height: 14 }));
      at += value;
    }
    g.append(el("text", { x: HALF_LABEL, y: y + 28 }, label));
  }

  function ram(svg, services, history) {
    svg.replaceChildren();
    const awake = services.filter((s) => s.state === "ready" && s.memory_bytes != null);
    const rows = awake.length + 1, RAM_ROW = 36;
    svg.setAttribute("viewBox", `0 0 ${HALF} ${rows * RAM_ROW + 6}`);
    awake.forEach((s, i) => {
      const g = el("g", { class: "ram-row", "data-service": s.name, "data-used": s.memory_bytes,
        "data-limit": s.memory_limit_bytes });
      g.append(el("text", { x: 0, y: i * RAM_ROW + 14 }, s.name));
      bar(g, i * RAM_ROW + 3, s.memory_limit_bytes, [[s.memory_bytes, "bar-used"]],
        `${bytes(s.memory_bytes)} / ${bytes(s.memory_limit_bytes)}`);
      svg.append(g);
    });
    const h = history.host, y = awake.length * RAM_ROW;
    const g = el("g", { id: "host-ram", "data-used": h.used_bytes, "data-total": h.total_bytes, "data-saved": h.saved_bytes });
    g.append(el("text", { x: 0, y: y + 14, "font-weight": 600 }, "host"));
    bar(g, y + 3, h.total_bytes, [[h.used_bytes, "bar-used"], [h.saved_bytes, "bar-saved"]],
      `${bytes(h.used_bytes)} in use of ${bytes(h.total_bytes)}, ${bytes(h.saved_bytes)} saved`);
    svg.append(title(g, "in use (green) and what the sleeping services would add awake (blue)"));
  }

  function saved(svg, history) {
    svg.replaceChildren();
    const totals = history.days.map((_, i) => history.services.reduce((a, s) => a + (s.saved_gb_h_by_day[i] || 0), 0));
    const top = Math.max(...totals, 1e-9), H = 120, slot = (HALF - 60) / totals.length;
    svg.setAttribute("viewBox", `0 0 ${HALF} ${H + 24}`);
    svg.append(el("line", { class: "axis", x1: 50, x2: HALF, y1: H, y2: H }));
    svg.append(el("text", { x: 0, y: 12 }, gbh(top)));
    // A day label ("12-07") is about DAY_LABEL units wide in the chart's
    // own units, which scale with it: labelling every `step`-th day back
    // from the last keeps them apart at any screen width.
    const DAY_LABEL = 44, step = Math.max(1, Math.ceil(DAY_LABEL / slot)), last = totals.length - 1;
    totals.forEach((v, i) => {
      const h = v / top * (H - 10), x = 55 + i * slot;
      const r = el("rect", { class: "day-bar", x, y: H - h, width: slot * 0.7, height: h,
        "data-day": history.days[i], "data-gbh": v });
      svg.append(title(r, `${history.days[i]}: ${gbh(v)}`));
      if ((last - i) % step === 0)
        svg.append(el("text", { class: "tick", x: x + slot * 0.35, y: H + 16, "text-anchor": "middle" }, history.days[i].slice(5)));
    });
  }

  // Per service: each start's duration (dot: ready, red: failed) in order,
  // with the estimate it was measured against (a tick) and the estimate
  // now (dashed).
  function starts(box, history) {
    box.replaceChildren();
    for (const s of history.services) {
      const W = 420, H = 110, n = s.starts.length;
      const svg = el("svg", { class: "starts-chart", "data-service": s.name, viewBox: `0 0 ${W} ${H}` });
      const top = Math.max(1, ...s.starts.map((r) => Math.max(r.took_ms, r.estimate_ms || 0)), s.estimate_ms || 0);
      const x = (i) => 70 + (n <= 1 ? (W - 90) / 2 : i * (W - 90) / (n - 1)), y = (ms) => H - 20 - ms / top * (H - 35);
      svg.append(el("text", { x: 0, y: 12, "font-weight": 600 }, s.name));
      svg.append(el("text", { x: 0, y: 26 }, (top / 1000).toFixed(1) + " s"));
      svg.append(el("line", { class: "axis", x1: 38, x2: W, y1: H - 20, y2: H - 20 }));
      if (n === 0) svg.append(el("text", { x: 70, y: H / 2 }, "no start recorded yet"));
      if (s.estimate_ms != null) {
        svg.append(title(el("line", { class: "estimate now", x1: 60, x2: W - 10, y1: y(s.estimate_ms), y2: y(s.estimate_ms) }),
          "learned estimate now"));
      }
      // The estimate each start was measured against: a tick across its dot.
      s.starts.forEach((r, i) => {
        if (r.estimate_ms == null) return;
        svg.append(title(el("line", { class: "estimate at", x1: x(i) - 9, x2: x(i) + 9, y1: y(r.estimate_ms), y2: y(r.estimate_ms) }),
          `estimate then: ${(r.estimate_ms / 1000).toFixed(2)} s`));
      });
      s.starts.forEach((r, i) => {
        const c = el("circle", { class: "dot " + (r.ok ? "ok" : "failed"), cx: x(i), cy: y(r.took_ms), r: 4,
          "data-took-ms": r.took_ms, "data-estimate-ms": r.estimate_ms ?? "", "data-at": r.at_ms });
        svg.append(title(c, `${clock(r.at_ms)} ${r.trigger}: ${(r.took_ms / 1000).toFixed(2)} s`
          + (r.estimate_ms == null ? "" : ` (estimate ${(r.estimate_ms / 1000).toFixed(2)} s)`) + (r.ok ? "" : ", failed")));
      });
      svg.append(el("text", { x: W - 2, y: H - 4, "text-anchor": "end" },
        s.estimate_ms == null ? "no estimate yet" : `learned now: ${(s.estimate_ms / 1000).toFixed(2)} s`));
      box.append(svg);
    }
  }

  // The span that shows the recorded activity: from a little before the
  // oldest transition in the window to now (at least a minute).
  function fitSpan(history) {
    const first = Math.min(history.now_ms, ...history.services.flatMap((s) => s.transitions.map((t) => t.at_ms)));
    return Math.min(history.now_ms - history.window_start_ms, Math.max(60000, (history.now_ms - first) * 1.1));
  }

  return {
    bands, fitSpan, gbh,
    // `span`: milliseconds shown, or "fit".
    render(services, history, span) {
      timeline(document.getElementById("timeline"), history, span === "fit" ? fitSpan(history) : span);
      ram(document.getElementById("ram"), services, history);
      saved(document.getElementById("saved"), history);
      starts(document.getElementById("starts"), history);
    },
  };
})();
