// The operator page: renders each snapshot the service pushes (server-sent events). Read-only, no libraries.
"use strict";
const SVG = "http://www.w3.org/2000/svg";
const token = new URLSearchParams(location.search).get("token");
const cards = new Map(); // card key -> {root, img, svg, body, seq}
let updates = 0;

function el(tag, attrs, ...children) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}
const fmt = (v, d = 1) => (v === null || v === undefined ? "–" :
  typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toFixed(d)) : String(v));
const age = (s) => (s === null || s === undefined ? "never" : s < 60 ? `${s.toFixed(1)} s ago` : `${(s / 60).toFixed(1)} min ago`);

function fillTable(table, rows) {
  const body = table.querySelector("tbody");
  body.replaceChildren(...rows.map(([attrs, cells]) =>
    el("tr", attrs, ...cells.map((c) => (c instanceof Node && c.tagName === "TD" ? c : el("td", {}, c))))));
}

function path(values, w, h, lo, hi) {
  if (!values.length) return "";
  const min = lo ?? Math.min(...values), max = hi ?? Math.max(...values), span = max - min || 1;
  const dx = values.length > 1 ? w / (values.length - 1) : 0;
  return values.map((v, i) => `${i ? "L" : "M"}${(i * dx).toFixed(1)},${(h - ((v - min) / span) * h).toFixed(1)}`).join("");
}

function card(section, key) {
  let c = cards.get(key);
  if (!c) {
    const img = el("img", { alt: key });
    const svg = el("svg:svg", { preserveAspectRatio: "none" });
    const body = el("div", { class: "body" });
    const root = el("div", { class: "card", "data-key": key }, el("h3", {}, key), el("div", { class: "frame" }, img, svg), body);
    document.querySelector(`#${section} .cards`).append(root);
    c = { root, img, svg, body, seq: null };
    cards.set(key, c);
  }
  return c;
}

function showFrame(c, item, shapes) {
  c.root.dataset.seq = item.seq;
  if (item.frame) c.img.src = item.frame;
  c.svg.setAttribute("viewBox", `0 0 ${item.width || 1} ${item.height || 1}`);
  c.svg.replaceChildren(...shapes);
}

// a result computed outside its calibrated range (a missing or out-of-range temperature) says so
const quality = (item) => (item.quality && item.quality !== "good" ?
  el("span", { class: `quality q-${item.quality}`, title: "an input or a compensation was outside its calibrated range" },
     ` · ${item.quality}`) : "");

function rice(item) {
  const c = card("rice", item.pipeline);
  showFrame(c, item, item.grains.map((g) =>
    el("svg:rect", { class: g.eject ? "grain eject" : "grain", x: g.x, y: g.y, width: g.w, height: g.h },
       el("svg:title", {}, `${g.variety}${g.broken ? " broken" : ""}${g.eject ? " — ejected" : ""}`))));
  const ejected = item.grains.filter((g) => g.eject).length;
  const lens = item.lens_transmission === null || item.lens_transmission === undefined ? [] :
    [" · lens transmission ", el("b", { class: "lens" }, fmt(item.lens_transmission * 100, 0) + " %"),
     item.lens_fog ? el("span", { class: "d-alarm" }, " fogged") : ""];
  c.body.replaceChildren(
    el("p", { class: "figures" }, "frame ", el("b", { class: "grains" }, item.grains.length), " grains, ",
       el("b", { class: "ejected" }, ejected), " ejected · ",
       el("span", { class: `decision d-${item.decision}` }, item.decision), " · seq ", item.seq),
    el("p", { class: "figures" }, `running purity (${item.declared}) `,
       el("b", { class: "purity" }, item.purity === null ? "–" : fmt(item.purity * 100, 1) + " %"),
       ` over ${item.frames} frames`, ...lens, quality(item)),
    el("table", { class: "varieties" }, el("thead", {}, el("tr", {}, el("th", {}, "variety"), el("th", {}, "grains"), el("th", {}, "ejected"))),
       el("tbody", {}, ...item.varieties.map((v) => el("tr", {}, el("td", {}, v.variety), el("td", {}, v.grains), el("td", {}, v.ejected))))));
}

function weld(item) {
  const c = card("weld", item.pipeline);
  showFrame(c, item, item.boxes.flatMap((b) => [
    el("svg:rect", { class: `box ${b.label}`, x: b.x, y: b.y, width: b.w, height: b.h }),
    el("svg:text", { class: "boxlabel", x: b.x + 3, y: b.y + 14 }, `${b.label} ${fmt(b.score, 2)}`)]));
  c.body.replaceChildren(
    el("p", { class: "figures" }, el("b", { class: `decision d-${item.decision}` }, item.decision),
       item.reasons.length ? ` because ${item.reasons.join(", ")}` : "",
       item.score === null ? "" : ` · reject score ${fmt(item.score, 2)}`, ` · ${item.boxes.length} regions · seq ${item.seq}`,
       quality(item)),
    el("div", { class: "strip", title: "recent decisions, newest right" },
       ...item.strip.map((r) => el("span", { class: r.decision, title: `seq ${r.seq}: ${r.decision} ${r.reasons.join(", ")}` }))));
}

function vibration(item) {
  const key = `${item.pipeline} ${item.stream}`;
  let c = cards.get(key);
  if (!c) {
    const body = el("div", { class: "body" });
    const root = el("div", { class: "card", "data-key": key, "data-stream": item.stream }, el("h3", {}, item.stream), body);
    document.querySelector("#vibration .cards").append(root);
    c = { root, body };
    cards.set(key, c);
  }
  c.root.dataset.seq = item.seq;
  const spec = item.spectrum || [];
  const hist = item.anomaly_history.map((p) => p[1]);
  const hi = Math.max(item.threshold ?? 0, ...hist, 1);
  const thr = item.threshold === null ? [] : [el("svg:line", { class: "threshold", x1: 0, x2: 300, y1: 90 - (item.threshold / hi) * 90, y2: 90 - (item.threshold / hi) * 90 })];
  const severity = item.velocity_rms_mm_s === null || item.velocity_rms_mm_s === undefined ? [] :
    [" · severity ", el("b", { class: "severity" }, `${fmt(item.velocity_rms_mm_s, 2)} mm/s`), item.zone ? ` zone ${item.zone}` : ""];
  c.body.replaceChildren(
    el("p", { class: "figures" }, el("b", { class: "label" }, item.label ?? "–"), " p=", el("span", { class: "probability" }, fmt(item.probability, 2)),
       " · anomaly ", el("span", { class: "anomaly" }, fmt(item.anomaly_score, 2)), " · ",
       el("span", { class: `decision d-${item.decision}` }, item.decision), ...severity, quality(item)),
    el("div", { class: "dim" }, `spectrum 0–${fmt((item.max_hz || 0) / 1000, 1)} kHz (dB)`),
    el("svg:svg", { class: "chart spectrum", viewBox: "0 0 300 90", preserveAspectRatio: "none", "data-points": spec.length },
       el("svg:path", { d: path(spec, 300, 90) })),
    el("div", { class: "dim" }, `anomaly score, last ${fmt(-(item.anomaly_history[0]?.[0] ?? 0) / 60, 1)} min`),
    el("svg:svg", { class: "chart anomaly-history", viewBox: "0 0 300 90", preserveAspectRatio: "none", "data-points": hist.length },
       el("svg:path", { d: path(hist, 300, 90, 0, hi) }), ...thr));
}

function render(s) {
  document.getElementById("service").textContent = s.service;
  fillTable(document.getElementById("devices"), s.devices.map((d) => [{ "data-id": d.id }, [
    d.id, d.kind, el("td", { class: `state-${d.state}` }, d.state), age(d.age_s),
    Object.entries(d.errors).filter(([, v]) => v).map(([k, v]) => `${k} ${v}`).join(", ") || "0"]]));
  fillTable(document.getElementById("pipelines"), s.pipelines.map((p) => [{ "data-id": p.id }, [
    p.id, fmt(p.inputs_per_s), fmt(p.results_per_s), `${p.queue}/${p.queue_max}`,
    `${fmt(p.p50_ms)} ms`, `${fmt(p.p99_ms)} ms`, p.drops, p.errors]]));
  fillTable(document.getElementById("sinks"), s.sinks.map((k) => [{ "data-id": k.id }, [
    k.id, k.kind, k.pending, k.oldest_s === null ? "none" : `${fmt(k.oldest_s)} s`, k.acknowledged, k.failures]]));
  const o = s.outbox;
  document.getElementById("outbox").textContent =
    `Outbox: ${o.pending} undelivered rows of at most ${o.max_rows} (when full: ${o.when_full}), ${o.dropped} dropped`;
  for (const [name, fn] of [["rice", rice], ["weld", weld], ["vibration", vibration]]) {
    document.getElementById(name).hidden = !s[name].length;
    s[name].forEach(fn);
  }
  fillTable(document.querySelector("#machines table"), s.machines.map((m) => [{ "data-stream": m.stream }, [
    m.stream, el("td", { class: "value" }, m.value === null ? "–" : typeof m.value === "number" ? `${fmt(m.value, 2)} ${m.unit}` : `${m.value} ${m.unit}`),
    el("td", { class: `q-${m.quality}` }, m.quality), age(m.age_s),
    el("td", {}, el("svg:svg", { class: "spark", viewBox: "0 0 120 22", preserveAspectRatio: "none" }, el("svg:path", { d: path(m.spark, 120, 22) })))]]));
}

function connect() {
  const status = document.getElementById("status");
  const events = new EventSource("events" + (token ? `?token=${encodeURIComponent(token)}` : ""));
  events.onmessage = (e) => {
    const s = JSON.parse(e.data);
    if (s.error) { status.textContent = `snapshot failed: ${s.error}`; return; }
    render(s);
    updates += 1;
    status.dataset.updates = updates;
    status.className = "status live";
    status.textContent = `live · ${new Date(s.t_ns / 1e6).toLocaleTimeString()}`;
  };
  events.onerror = () => { status.className = "status lost"; status.textContent = "reconnecting…"; };
}
connect();
