// edge-proxy console: shared helpers (no framework, no build step, nothing fetched elsewhere)
"use strict";

const STATE_ORDER = { offline: 0, connecting: 1, online: 2, disabled: 3 };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function badge(text, kind) {
  return el("span", { class: "badge " + (kind || text || ""), "data-badge": text }, text ?? "—");
}

async function api(path, options) {
  const response = await fetch(path, Object.assign({ credentials: "same-origin" }, options));
  if (response.status === 401) {
    location.href = "/login?next=" + encodeURIComponent(location.pathname);
    throw new Error("unauthorized");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(body.error || response.statusText);
    error.status = response.status;
    throw error;
  }
  return body;
}

// a time from the server: epoch seconds (the devices table) or ISO-8601
function parseTime(iso) {
  if (typeof iso === "number") return iso;
  return iso ? Date.parse(iso) / 1000 : null;
}

// the server's clock: ages are shown against it, not the browser's
let clockSkew = 0;
function syncClock(nowIso) {
  const server = parseTime(nowIso);
  if (server) clockSkew = server - Date.now() / 1000;
}
function serverNow() {
  return Date.now() / 1000 + clockSkew;
}

function age(iso) {
  const t = parseTime(iso);
  if (t === null) return "never";
  const s = Math.max(0, serverNow() - t);
  if (s < 60) return s.toFixed(1) + " s ago";
  if (s < 3600) return (s / 60).toFixed(1) + " min ago";
  if (s < 86400) return (s / 3600).toFixed(1) + " h ago";
  return (s / 86400).toFixed(1) + " d ago";
}

function clock(iso) {
  if (!iso) return "—";
  const d = new Date(typeof iso === "number" ? iso * 1000 : iso);
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

function bytes(n) {
  if (n < 1024) return n + " B";
  if (n < 1024 * 1024) return (n / 1024).toFixed(1) + " KiB";
  return (n / 1024 / 1024).toFixed(1) + " MiB";
}

function fmtValue(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "number" && !Number.isInteger(value)) return String(Math.round(value * 1000) / 1000);
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function errorText(err) {
  if (!err) return "";
  return (err.code ? err.code + ": " : "") + (err.message || "");
}

// A live stream (Server-Sent Events). Reconnects by itself; onopen again after a drop.
function live(topics, handlers) {
  const dot = document.getElementById("live");
  let source = null;
  let opened = 0;
  function connect() {
    source = new EventSource("/api/events?topics=" + encodeURIComponent(topics.join(",")));
    source.addEventListener("hello", () => {
      if (dot) { dot.className = "on"; dot.textContent = "live"; }
      opened += 1;
      if (opened > 1 && handlers.reconnected) handlers.reconnected();
    });
    for (const [event, fn] of Object.entries(handlers)) {
      if (event === "reconnected") continue;
      source.addEventListener(event, (e) => fn(JSON.parse(e.data)));
    }
    source.onerror = () => {
      if (dot) { dot.className = "off"; dot.textContent = "reconnecting"; }
      if (source.readyState === EventSource.CLOSED) setTimeout(connect, 2000);
    };
  }
  connect();
  return () => source && source.close();
}

function header(here) {
  const links = [["/", "Overview"], ["/devices", "Devices"], ["/logs", "Logs"], ["/config", "Config"]];
  const nav = el("nav", {}, links.map(([href, name]) =>
    el("a", { href, class: href === here ? "here" : null }, name)));
  const top = el("header", { class: "top" },
    el("div", { class: "brand" }, "edge-proxy", el("small", { id: "edge-id" }, "")),
    nav, el("div", { class: "spacer" }), el("span", { id: "live" }, "connecting"));
  document.body.prepend(top);
}

function setEdge(edge) {
  const node = document.getElementById("edge-id");
  if (node && edge) node.textContent = edge.id;
  if (edge) document.title = edge.id + " · " + document.title.split(" · ").pop();
}

function sortRows(rows) {
  rows.sort((a, b) => (STATE_ORDER[a.state] ?? 9) - (STATE_ORDER[b.state] ?? 9) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return rows;
}
