"use strict";
(function () {
  header("/logs");
  const main = document.getElementById("main");
  const MAX_ROWS = 1000;
  const body = el("tbody", { id: "lines" });
  const filter = el("input", { type: "search", id: "filter", placeholder: "Filter log lines…", autocomplete: "off" });
  const note = el("span", { class: "muted", id: "count" });
  let lines = [];
  main.replaceChildren(el("h1", {}, "Logs"),
    el("p", { class: "muted" }, "The last log lines at WARNING and above, newest first (kept in memory by the daemon)."),
    el("div", { class: "toolbar" }, filter, note),
    el("table", { class: "logs" }, el("thead", {}, el("tr", {}, ["time", "level", "logger", "device / ref", "message"].map((h) => el("th", {}, h)))), body));
  filter.addEventListener("input", draw);

  function draw() {
    const word = filter.value.toLowerCase();
    const shown = lines.filter((l) => !word || JSON.stringify(l).toLowerCase().includes(word)).slice(-MAX_ROWS).reverse();
    body.replaceChildren(...shown.map((l) => el("tr", { "data-level": l.level },
      el("td", {}, clock(l.at)), el("td", { class: "level-" + l.level }, l.level),
      el("td", { class: "muted" }, l.logger),
      el("td", {}, l.device ? el("a", { href: "/device/" + encodeURIComponent(l.device) }, l.device) : "", l.ref ? " " + l.ref : ""),
      el("td", { class: "msg" }, l.message))));
    note.textContent = shown.length ? `${shown.length} line(s)` : "";
    if (!shown.length) body.replaceChildren(el("tr", {}, el("td", { colspan: 5, class: "empty" }, "No warnings or errors logged.")));
  }

  async function load() {
    const [o, got] = await Promise.all([api("/api/overview"), api("/api/logs")]);
    setEdge(o.edge);
    lines = got.lines;
    draw();
  }
  load().catch((e) => main.append(el("p", { class: "err" }, String(e))));
  live(["logs"], {
    logs: (more) => {
      const last = lines.length ? lines[lines.length - 1].seq : 0;
      lines = lines.concat(more.filter((l) => l.seq > last)).slice(-MAX_ROWS);
      draw();
    },
    reconnected: load,
  });
})();
