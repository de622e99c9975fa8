"use strict";
(function () {
  header("/");
  const main = document.getElementById("main");
  let changes = [];

  function card(label, big, sub, id) {
    return el("div", { class: "card", id },
      el("div", { class: "label" }, label), el("div", { class: "big" }, big), el("div", { class: "sub" }, sub));
  }

  function render(o) {
    syncClock(o.now);
    setEdge(o.edge);
    const gw = o.gateway;
    const byState = Object.entries(o.devices.byState).map(([s, n]) => `${n} ${s}`).join(", ");
    const dropped = Object.entries(o.outbox.dropped).map(([t, n]) => `${t} ${n}`).join(", ");
    const cards = el("div", { class: "cards" },
      card("Edge", o.edge.id, [o.edge.name, "v" + o.edge.version].filter(Boolean).join(" · "), "card-edge"),
      el("div", { class: "card", id: "card-gateway" },
        el("div", { class: "label" }, "Gateway link"),
        el("div", { class: "big" }, badge(gw.state)),
        el("div", { class: "sub" }, "since " + clock(gw.since) + " (" + age(gw.since) + ")"),
        el("div", { class: "sub" }, gw.url),
        el("div", { class: "sub" }, `${gw.connects} connects, ${gw.failures} failures`),
        gw.lastError ? el("div", { class: "sub err" }, gw.lastError) : null),
      card("Outbox", String(o.outbox.messages), `${bytes(o.outbox.bytes)} · ${o.outbox.droppedTotal} dropped` + (dropped ? ` (${dropped})` : ""), "card-outbox"),
      card("Commands in flight", String(o.inFlight), o.allowCommands ? "console commands allowed" : "console is read-only", "card-commands"),
      el("div", { class: "card", id: "card-devices" },
        el("div", { class: "label" }, "Devices online"),
        el("div", { class: "big" }, el("span", { id: "online" }, String(o.devices.online)), " / " + o.devices.total),
        el("div", { class: "sub" }, byState),
        el("div", { class: "sub" }, el("a", { href: "/devices" }, "all devices →"))));
    changes = o.changes;
    main.replaceChildren(el("h1", {}, "Overview"), cards,
      el("div", { class: "panel" }, el("h2", {}, "Recent state changes"), changesTable()));
  }

  function changesTable() {
    if (!changes.length) return el("p", { class: "empty", id: "changes" }, "No state changes yet.");
    return el("table", { id: "changes" },
      el("thead", {}, el("tr", {}, ["time", "what", "", "change", "reason"].map((h) => el("th", {}, h)))),
      el("tbody", {}, changes.map((c) => el("tr", { "data-state": c.what === "device" ? c.state : null },
        el("td", {}, clock(c.at)), el("td", {}, c.what),
        el("td", {}, c.what === "device" ? el("a", { href: "/device/" + encodeURIComponent(c.id) }, c.id) : c.id),
        el("td", {}, c.previous ? badge(c.previous) : "—", " → ", badge(c.state)),
        el("td", { class: "muted" }, c.reason || "")))));
  }

  async function load() { render(await api("/api/overview")); }
  load().catch((e) => main.replaceChildren(el("p", { class: "err" }, String(e))));
  live(["overview", "changes"], {
    overview: render,
    changes: (list) => {
      changes = [...list.reverse(), ...changes].slice(0, 20);
      const old = document.getElementById("changes");
      if (old) old.replaceWith(changesTable());
    },
    reconnected: load,
  });
})();
