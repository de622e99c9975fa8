"use strict";
(function () {
  header("/config");
  const main = document.getElementById("main");
  Promise.all([api("/api/overview"), api("/api/config")]).then(([o, config]) => {
    setEdge(o.edge);
    main.replaceChildren(el("h1", {}, "Configuration"),
      el("p", { class: "muted" }, "The configuration the daemon loaded, with every secret redacted."),
      el("pre", { class: "json", id: "config" }, JSON.stringify(config, null, 2)));
  }).catch((e) => main.replaceChildren(el("p", { class: "err" }, String(e))));
  const dot = document.getElementById("live");
  if (dot) dot.hidden = true;
})();
