"use strict";
(function () {
  header("/devices");
  const main = document.getElementById("main");
  let rows = [];
  const filter = el("input", { type: "search", id: "filter", placeholder: "Filter: id, type, link, state, error…", autocomplete: "off" });
  const count = el("span", { class: "muted", id: "count" });
  const body = el("tbody", { id: "rows" });
  const columns = ["device", "type", "link", "state", "last seen", "last error", "transactions",
    "failures", "timeouts", "reconnects", "cycle ms", "overruns"];
  main.replaceChildren(el("h1", {}, "Devices"), el("div", { class: "toolbar" }, filter, count),
    el("table", { id: "devices" }, el("thead", {}, el("tr", {}, columns.map((c, i) =>
      el("th", { class: i >= 6 ? "num" : null }, c)))), body));
  filter.value = new URLSearchParams(location.search).get("q") || "";
  filter.addEventListener("input", draw);

  function matches(r, words) {
    const text = [r.id, r.type, r.profile, r.link, r.state, errorText(r.lastError)].join(" ").toLowerCase();
    return words.every((w) => text.includes(w));
  }

  function row(r) {
    const c = r.counters || {};
    return el("tr", { "data-device": r.id, "data-state": r.state },
      el("td", {}, el("a", { href: "/device/" + encodeURIComponent(r.id) }, r.id)),
      el("td", {}, r.type), el("td", { class: "muted" }, r.link || "—"),
      el("td", { class: "state" }, badge(r.state)),
      el("td", { title: r.lastSeen ? new Date(r.lastSeen * 1000).toISOString() : "" }, age(r.lastSeen)),
      el("td", { class: r.lastError ? "err" : "muted" }, errorText(r.lastError) || "—"),
      el("td", { class: "num" }, c.transactions ?? "—"), el("td", { class: "num" }, c.failures ?? "—"),
      el("td", { class: "num" }, c.timeouts ?? "—"), el("td", { class: "num" }, c.reconnects ?? "—"),
      el("td", { class: "num" }, r.cycleMs ?? "—"), el("td", { class: "num" }, r.overruns ?? "—"));
  }

  function draw() {
    const words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    const shown = sortRows(rows.slice()).filter((r) => matches(r, words));
    body.replaceChildren(...shown.map(row));
    const broken = rows.filter((r) => r.state === "offline").length;
    count.textContent = `${shown.length} of ${rows.length} shown · ${broken} offline`;
  }

  async function load() {
    const [o, list] = await Promise.all([api("/api/overview"), api("/api/devices")]);
    syncClock(o.now);
    setEdge(o.edge);
    rows = list;
    draw();
  }
  load().catch((e) => main.append(el("p", { class: "err" }, String(e))));
  live(["devices", "changes"], {
    devices: (list) => { rows = list; draw(); },
    changes: (list) => {
      let changed = false;
      for (const c of list) {
        const r = c.what === "device" && rows.find((x) => x.id === c.id);
        if (r) { r.state = c.state; changed = true; }
      }
      if (changed) draw();
    },
    reconnected: load,
  });
})();
