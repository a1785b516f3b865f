// crossfeed live dashboard: pipeline health (SSE), search, standing queries (SSE), trends.
// Plain DOM + SVG, no third-party code; everything comes from this API's origin.
"use strict";

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c != null) node.append(c);
  return node;
};
const SVG = "http://www.w3.org/2000/svg";

function sparkline(values, width = 150, height = 26) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const base = document.createElementNS(SVG, "line");
  base.setAttribute("x1", 0); base.setAttribute("x2", width);
  base.setAttribute("y1", height - 1); base.setAttribute("y2", height - 1);
  svg.append(base);
  const n = values.length;
  if (n > 1) {
    const max = Math.max(1, ...values);
    const pts = values.map((v, i) =>
      `${((i / (n - 1)) * (width - 2) + 1).toFixed(1)},${(height - 2 - (v / max) * (height - 4)).toFixed(1)}`);
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", pts.join(" "));
    svg.append(line);
  }
  return svg;
}

const fmtTime = (iso) => (iso ? new Date(iso).toLocaleString() : "–");
const fmtSpan = (s) => `${Math.floor(s / 60)}:${String(Math.floor(s % 60)).padStart(2, "0")}`;

// ------------------------------------------------------------------ health

let features = null;

function renderStats(s) {
  $("#model-version").textContent = s.model_version;
  const engines = $("#engines");
  engines.replaceChildren(...Object.entries(s.engines).map(([name, e]) =>
    el("span", { class: `engine ${e.ok ? "ok" : "bad"}`, title: e.detail || "ok", text: name })));
  const lags = Object.fromEntries((s.freshness.consumer_lag || []).map((l) => [l.stage, l]));
  $("#stage-rows").replaceChildren(...s.stages.map((st) => {
    const lag = lags[st.stage];
    const lagCell = el("td", { title: lag && lag.reason ? lag.reason : "",
      text: lag && lag.lag != null ? String(lag.lag) : "n/a" });
    return el("tr", { "data-stage": st.stage },
      el("td", { text: st.stage }), el("td", { text: st.in_per_s.toFixed(1) }),
      el("td", { text: st.out_per_s.toFixed(1) }), el("td", {}, sparkline(st.series)), lagCell);
  }));
  const unknown = (s.freshness.consumer_lag || []).find((l) => l.lag == null && l.reason);
  $("#lag-note").textContent = unknown ? `consumer lag n/a: ${unknown.reason}` : "";
  const f = s.freshness;
  $("#indexed-through").textContent = fmtTime(f.indexed_through);
  $("#index-lag").textContent = f.index_lag_s != null ? `${f.index_lag_s.toFixed(2)} s` : "–";
  const subs = s.subscriptions;
  $("#subs-count").textContent =
    `${subs.stored ?? "?"} stored, ${subs.active ?? "?"} matched by the index stage`;
  $("#collections").textContent = s.collections.length
    ? s.collections.map((c) => `${c.name}${c.serving ? "*" : ""}: ${c.rows ?? "?"} rows`).join(", ")
    : "–";
  const dead = s.deadletters;
  $("#dead-rows").replaceChildren(...(dead.length ? dead.map((d) =>
    el("tr", {}, el("td", { text: d.stage }), el("td", { text: d.reason }), el("td", { text: String(d.count) })))
    : [el("tr", {}, el("td", { class: "muted", text: "none" }))]));
  const hasTrends = s.features.includes("trends");
  if (features === null || features.includes("trends") !== hasTrends) {
    $("#trends").hidden = !hasTrends;
    if (hasTrends) loadTrends();
  }
  features = s.features;
}

function startStats() {
  const source = new EventSource("/v1/stats/stream?every_s=2");
  source.addEventListener("stats", (e) => renderStats(JSON.parse(e.data)));
}

// ------------------------------------------------------------------ trends (optional)

const TRENDS_REFRESH_MS = 10000;
let trendsTimer = null;

async function loadTrends() {
  const r = await fetch("/v1/trends?limit=20");
  if (!r.ok) { $("#trends").hidden = true; return; }
  const body = await r.json();
  const items = body.trends || body.hashtags || body.items || [];
  const clusters = body.clusters || [];
  const shown = [...items, ...clusters].slice(0, 20);
  if (!shown.length) {
    $("#trend-list").replaceChildren(el("li", { class: "muted", text: "nothing bursting right now" }));
  } else {
    $("#trend-list").replaceChildren(...shown.map((t) => {
      const label = t.tag || t.hashtag || t.label || t.name || t.id || "?";
      const series = t.series || t.counts || t.sparkline || [];
      const name = t.kind === "cluster" ? String(label) : `#${label}`;
      const li = el("li", { class: "trend" }, el("span", { text: name }),
        sparkline(series.map(Number), 100, 18),
        el("span", { class: "muted", text: t.score != null ? Number(t.score).toFixed(2) : "" }));
      if (t.rate != null && t.baseline != null) {
        li.title = `${t.kind || "trend"}: ${t.rate} authors this window vs ${Number(t.baseline).toFixed(1)} usual`;
      }
      li.addEventListener("click", () => {
        $("#q").value = String(label);
        runSearch(t.id != null ? { trend: String(t.id) } : {});
      });
      return li;
    }));
  }
  // Trends move by the window: refresh while the panel is shown.
  if (trendsTimer === null) {
    trendsTimer = setInterval(() => { if (!$("#trends").hidden) loadTrends(); }, TRENDS_REFRESH_MS);
  }
}

// ------------------------------------------------------------------ search

let droppedFile = null;

function currentFilters() {
  const filters = {};
  const since = $("#since").value, until = $("#until").value;
  if (since) filters.since = new Date(since).toISOString();
  if (until) filters.until = new Date(until).toISOString();
  const mods = [...document.querySelectorAll("input[name=modality]:checked")].map((x) => x.value);
  if (mods.length) filters.modalities = mods;
  const tags = $("#tags").value.split(",").map((t) => t.trim()).filter(Boolean);
  if (tags.length) filters.tags = tags;
  const lang = $("#lang").value.trim();
  if (lang) filters.lang = lang;
  return filters;
}

function card(hit, { fresh = false } = {}) {
  const moment = hit.moment
    ? el("div", { class: "moment", text: `▶ ${fmtSpan(hit.moment.start_s)}–${fmtSpan(hit.moment.end_s)}` })
    : null;
  const media = hit.thumbnail
    ? el("img", { src: hit.thumbnail, alt: hit.text ? hit.text.slice(0, 80) : `post ${hit.id || hit.post_id}`,
      loading: "lazy" })
    : el("div", { class: "textonly", text: hit.text || "(no text)" });
  const tags = el("div", {}, ...(hit.tags || []).map((t) => el("span", { class: "tag", text: `#${t}` })),
    ...(hit.suggested_tags || []).map((t) => el("span", { class: "tag suggested", title: "suggested", text: t })));
  return el("div", { class: `card${fresh ? " fresh" : ""}`, "data-post": hit.id || hit.post_id },
    media,
    el("div", { class: "meta" },
      el("span", { class: "score", text: Number(hit.score).toFixed(3) }),
      el("span", { class: "muted", text: `${hit.modality} · ${fmtTime(hit.created_at)}` }),
      moment, el("div", { class: "text", text: hit.text || "" }), tags));
}

function status(target, text, isError = false) {
  const node = $(target);
  node.textContent = text;
  node.classList.toggle("error", isError);
}

async function errorText(r) {
  try {
    const body = await r.json();
    return body.error ? body.error.message : `HTTP ${r.status}`;
  } catch (_) {
    return `HTTP ${r.status}`;
  }
}

async function runSearch(extraFilters = {}) {
  const text = $("#q").value.trim();
  const filters = { ...currentFilters(), ...extraFilters };
  const topK = Number($("#top-k").value) || 12;
  let r;
  if (droppedFile) {
    const form = new FormData();
    form.append("file", droppedFile);
    form.append("filters", JSON.stringify(filters));
    form.append("top_k", String(topK));
    r = await fetch("/v1/search", { method: "POST", body: form });
  } else if (text) {
    r = await fetch("/v1/search", { method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ text, top_k: topK, filters }) });
  } else {
    status("#search-status", "type a query or drop an image", true);
    return;
  }
  if (!r.ok) { status("#search-status", await errorText(r), true); return; }
  const body = await r.json();
  status("#search-status",
    `${body.results.length} results · ${body.took_ms.toFixed(0)} ms${body.cached ? " · cached" : ""}` +
    ` · index lag ${body.freshness && body.freshness.index_lag_s != null ? body.freshness.index_lag_s.toFixed(2) + " s" : "–"}`);
  $("#results").replaceChildren(...body.results.map((h) => card(h)));
}

function setupSearch() {
  $("#search-form").addEventListener("submit", (e) => { e.preventDefault(); runSearch(); });
  const drop = $("#drop");
  const take = (file) => {
    if (!file) return;
    droppedFile = file;
    drop.classList.add("has");
    drop.firstChild.textContent = `${file.name} ✕`;
  };
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault(); drop.classList.remove("over"); take(e.dataTransfer.files[0]);
  });
  $("#file").addEventListener("change", (e) => take(e.target.files[0]));
  drop.addEventListener("contextmenu", (e) => {
    e.preventDefault(); droppedFile = null; drop.classList.remove("has");
    drop.firstChild.textContent = "drop an image";
  });
  $("#q").addEventListener("input", () => {
    if (droppedFile && $("#q").value) {
      droppedFile = null; drop.classList.remove("has"); drop.firstChild.textContent = "drop an image";
    }
  });
}

// ------------------------------------------------------------------ watch

let watching = null; // { id, source }

async function loadSubscriptions() {
  const r = await fetch("/v1/subscriptions?limit=20");
  if (!r.ok) return;
  const body = await r.json();
  $("#subs").replaceChildren(...body.subscriptions.map((s) => {
    const open = el("button", { class: "small", type: "button", text: "watch" });
    open.addEventListener("click", () => watch(s));
    const del = el("button", { class: "small", type: "button", text: "delete" });
    del.addEventListener("click", async () => {
      await fetch(`/v1/subscriptions/${s.id}`, { method: "DELETE" });
      if (watching && watching.id === s.id) { watching.source.close(); watching = null; }
      loadSubscriptions();
    });
    return el("li", { class: watching && watching.id === s.id ? "current" : "", "data-sub": s.id },
      el("span", { text: `${s.name} (≥ ${s.min_score}${s.active ? "" : ", inactive"}) ` }), open, del);
  }));
}

function watch(sub) {
  if (watching) watching.source.close();
  $("#matches").replaceChildren();
  const source = new EventSource(sub.events_url);
  watching = { id: sub.id, source };
  source.onopen = () => status("#watch-status", `watching “${sub.name}” — matches appear as posts are indexed`);
  source.onmessage = (e) => {
    const m = JSON.parse(e.data);
    $("#matches").prepend(card(m, { fresh: true }));
  };
  source.addEventListener("deleted", () => { source.close(); status("#watch-status", "subscription deleted"); });
  loadSubscriptions();
}

async function createWatch() {
  const text = $("#q").value.trim();
  const minScore = Number($("#min-score").value);
  const name = $("#watch-name").value.trim();
  const filters = currentFilters();
  let r;
  if (droppedFile) {
    const form = new FormData();
    form.append("file", droppedFile);
    form.append("filters", JSON.stringify(filters));
    form.append("min_score", String(minScore));
    if (name) form.append("name", name);
    r = await fetch("/v1/subscriptions", { method: "POST", body: form });
  } else if (text) {
    const body = { text, min_score: minScore, filters };
    if (name) body.name = name;
    r = await fetch("/v1/subscriptions", { method: "POST",
      headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  } else {
    status("#watch-status", "type a query (or drop an image) in the search box first", true);
    return;
  }
  if (!r.ok) { status("#watch-status", await errorText(r), true); return; }
  watch(await r.json());
}

document.addEventListener("DOMContentLoaded", () => {
  setupSearch();
  $("#watch-btn").addEventListener("click", createWatch);
  startStats();
  loadSubscriptions();
});
