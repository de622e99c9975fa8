"use strict";
(function () {
  const id = decodeURIComponent(location.pathname.replace(/^\/device\//, ""));
  header("/devices");
  const main = document.getElementById("main");
  let detail = null;
  let history = {};
  let historySize = 300;
  let commands = [];

  // ---------------------------------------------------------------- charts
  function spark(series) {
    const W = 180, H = 34, P = 2;
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    const good = series.filter((p) => p[1] !== null);
    if (good.length < 2) return svg;
    const t0 = series[0][0], t1 = series[series.length - 1][0];
    let lo = Math.min(...good.map((p) => p[1])), hi = Math.max(...good.map((p) => p[1]));
    if (hi === lo) { hi += 1; lo -= 1; }
    const x = (t) => P + ((t - t0) / Math.max(t1 - t0, 1e-9)) * (W - 2 * P);
    const y = (v) => H - P - ((v - lo) / (hi - lo)) * (H - 2 * P - 8);
    let d = "", pen = false;
    for (const [t, v] of series) {
      if (v === null) { pen = false; continue; }
      d += (pen ? " L" : " M") + x(t).toFixed(1) + " " + y(v).toFixed(1);
      pen = true;
    }
    const path = document.createElementNS(svg.namespaceURI, "path");
    path.setAttribute("d", d.trim());
    const label = document.createElementNS(svg.namespaceURI, "text");
    label.setAttribute("x", "2"); label.setAttribute("y", "8");
    label.textContent = `${fmtValue(lo)} … ${fmtValue(hi)} (${good.length})`;
    svg.append(path, label);
    return svg;
  }

  function addHistory(more) {
    for (const [name, points] of Object.entries(more || {})) {
      const mine = history[name] || (history[name] = []);
      const last = mine.length ? mine[mine.length - 1][0] : -Infinity;
      for (const p of points) if (p[0] > last) mine.push(p);
      if (mine.length > historySize) mine.splice(0, mine.length - historySize);
    }
  }

  // ---------------------------------------------------------------- device and points
  function metaPanel(d) {
    const c = d.counters || {};
    const groups = (d.groups || []).map((g) => `${g.group}: every ${g.interval}s, ${g.cycleMs ?? "—"} ms, ${g.skipped} overruns`).join("; ");
    return el("div", { class: "panel", id: "meta" },
      el("div", { class: "meta" },
        el("div", {}, el("span", {}, "type"), d.type), el("div", {}, el("span", {}, "profile"), d.profile),
        el("div", {}, el("span", {}, "link"), d.link || "—"),
        el("div", {}, el("span", {}, "last seen"), age(d.lastSeen)),
        el("div", { class: "wide" }, el("span", {}, "counters"), `${c.transactions} tx, ${c.failures} failures, ${c.timeouts} timeouts, ${c.reconnects} reconnects`),
        el("div", { class: "wide" }, el("span", {}, "telemetry"), groups || "no poll groups")),
      d.lastError ? el("div", { class: "err", id: "last-error" }, "last error: " + errorText(d.lastError) + " (" + clock(d.lastError.at) + ")") : null);
  }

  function pointsTable(points) {
    return el("table", { id: "points" },
      el("thead", {}, el("tr", {}, ["point", "value", "quality", "age", "recent values", "access / range"].map((h) => el("th", {}, h)))),
      el("tbody", {}, points.map((p) => el("tr", { "data-point": p.name },
        el("td", { title: p.description || "" }, p.name, el("div", { class: "muted" }, p.type)),
        el("td", { class: "num value", "data-value": p.value === null ? "" : String(p.value) }, fmtValue(p.value), p.unit ? " " + p.unit : ""),
        el("td", {}, badge(p.quality)),
        el("td", { class: "muted" }, p.age === null ? "—" : p.age.toFixed(1) + " s"),
        el("td", { class: "chart" }, p.numeric && history[p.name] ? spark(history[p.name]) : el("span", { class: "muted" }, p.numeric ? "no samples yet" : "")),
        el("td", { class: "muted" }, p.access + (p.min !== null || p.max !== null ? ` [${p.min ?? ""}..${p.max ?? ""}]` : ""))))));
  }

  function setState(state) {
    const node = document.getElementById("state");
    if (node) node.replaceWith(stateBadge(state));
    if (detail) detail.device.state = state;
  }
  function stateBadge(state) {
    const b = badge(state);
    b.id = "state";
    b.setAttribute("data-state", state);
    return b;
  }

  // ---------------------------------------------------------------- recent commands
  function commandEntry(c) {
    return el("div", { class: "cmd", "data-ref": c.ref },
      el("div", { class: "line" }, el("span", { class: "muted" }, clock(c.at)), badge(c.source, "source"),
        el("strong", {}, c.command), el("span", { class: "status" }, badge(c.status)),
        Object.keys(c.parameters || {}).length ? el("code", {}, JSON.stringify(c.parameters)) : null),
      el("details", {}, el("summary", { class: "muted" }, `${c.messages.length} message(s): ` + c.messages.map((m) => m.type + (m.status ? " " + m.status : m.code ? " " + m.code : m.progress !== undefined ? " " + m.progress + "%" : "")).join(", ")),
        el("pre", {}, c.messages.map((m) => JSON.stringify(m)).join("\n"))));
  }
  function commandsPanel() {
    return el("div", { class: "panel", id: "commands" }, el("h2", {}, "Recent commands"),
      commands.length ? commands.map(commandEntry) : el("p", { class: "empty" }, "No commands yet."));
  }
  function upsertCommand(entry) {
    const i = commands.findIndex((c) => c.ref === entry.ref);
    if (i >= 0) commands[i] = entry; else commands.unshift(entry);
    commands = commands.slice(0, 20);
    document.getElementById("commands").replaceWith(commandsPanel());
  }

  // ---------------------------------------------------------------- the tester
  function input(spec, id) {
    if (spec.choices) {
      return el("select", { id }, spec.choices.map((c) => el("option", { value: JSON.stringify(c) }, String(c))));
    }
    if (spec.type === "bool") {
      return el("select", { id }, el("option", { value: "true" }, "true"), el("option", { value: "false" }, "false"));
    }
    if (spec.type === "string") return el("input", { type: "text", id });
    const integer = spec.type === "int" || /int/.test(spec.type || "");
    return el("input", { type: "number", id, min: spec.min, max: spec.max, step: integer ? 1 : "any",
      placeholder: spec.min !== null && spec.min !== undefined ? `${spec.min} … ${spec.max ?? ""}` : "" });
  }
  function valueOf(node, spec) {
    if (node.tagName === "SELECT") return JSON.parse(node.value);
    if (node.value === "") return undefined;
    if (spec.type === "string") return node.value;
    return Number(node.value);
  }

  function tester(form) {
    const kinds = [];
    if (form.commands.length) kinds.push(["command", "Profile command"]);
    if (form.read.length) kinds.push(["read", "Read points"]);
    if (form.write.length) kinds.push(["write", "Write a point"]);
    let kind = kinds.length ? kinds[0][0] : null;
    const fields = el("div", { id: "tester-fields" });
    const result = el("div", { class: "result", id: "tester-result" });
    const timeout = el("input", { type: "number", id: "tester-timeout", value: 5000, min: 1, max: 60000, step: 1 });
    const send = el("button", { id: "tester-send", type: "submit" }, "Send");
    const kindBar = el("div", { class: "kinds" }, kinds.map(([k, label]) =>
      el("button", { type: "button", "data-kind": k, class: k === kind ? "here" : null, onclick: () => { kind = k; drawKinds(); drawFields(); } }, label)));
    function drawKinds() {
      for (const b of kindBar.children) b.className = b.dataset.kind === kind ? "here" : "";
    }
    function drawFields() {
      fields.replaceChildren();
      if (kind === "command") {
        const select = el("select", { id: "tester-code" }, form.commands.map((c) => el("option", { value: c.name }, c.name)));
        const params = el("div", { id: "tester-params" });
        const drawParams = () => {
          const cmd = form.commands.find((c) => c.name === select.value);
          params.replaceChildren(...cmd.params.map((p) => el("div", { class: "form-row" },
            el("label", { for: "param-" + p.name }, p.name + (p.required ? " *" : "") + (p.description ? " — " + p.description : "")),
            input(p, "param-" + p.name))));
          if (!cmd.params.length) params.replaceChildren(el("p", { class: "muted" }, "No parameters."));
        };
        select.addEventListener("change", drawParams);
        fields.append(el("div", { class: "form-row" }, el("label", { for: "tester-code" }, "command"), select), params);
        drawParams();
      } else if (kind === "read") {
        fields.append(el("div", { class: "checks", id: "tester-points" }, form.read.map((name) =>
          el("label", {}, el("input", { type: "checkbox", value: name, checked: true }), " " + name))));
      } else if (kind === "write") {
        const select = el("select", { id: "tester-point" }, form.write.map((p) => el("option", { value: p.name }, p.name)));
        const slot = el("div", { class: "form-row" });
        const drawValue = () => {
          const p = form.write.find((x) => x.name === select.value);
          slot.replaceChildren(el("label", { for: "tester-value" }, "value" + (p.unit ? " (" + p.unit + ")" : "") + (p.min !== null || p.max !== null ? ` [${p.min ?? ""}..${p.max ?? ""}]` : "")), input(p, "tester-value"));
        };
        select.addEventListener("change", drawValue);
        fields.append(el("div", { class: "form-row" }, el("label", { for: "tester-point" }, "point"), select), slot);
        drawValue();
      }
    }
    function request() {
      const body = { device: id, kind, timeoutMs: Number(timeout.value) || 5000 };
      if (kind === "command") {
        const cmd = form.commands.find((c) => c.name === document.getElementById("tester-code").value);
        body.code = cmd.name;
        body.params = {};
        for (const p of cmd.params) {
          const v = valueOf(document.getElementById("param-" + p.name), p);
          if (v !== undefined) body.params[p.name] = v;
        }
      } else if (kind === "read") {
        body.points = [...document.querySelectorAll("#tester-points input:checked")].map((i) => i.value);
      } else {
        const p = form.write.find((x) => x.name === document.getElementById("tester-point").value);
        body.values = { [p.name]: valueOf(document.getElementById("tester-value"), p) };
      }
      return body;
    }
    const box = el("form", { class: "panel", id: "tester" }, el("h2", {}, "Command tester"), kindBar, fields,
      el("div", { class: "form-row" }, el("label", { for: "tester-timeout" }, "timeout (ms)"), timeout), send, result);
    box.addEventListener("submit", async (event) => {
      event.preventDefault();
      send.disabled = true;
      result.replaceChildren(el("p", { class: "muted" }, "sent…"));
      try {
        const answer = await api("/api/command", {
          method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(request()),
        });
        const terminal = answer.messages[answer.messages.length - 1] || {};
        result.replaceChildren(...[
          el("div", { class: "line" }, "result: ", el("span", { id: "tester-status", "data-status": answer.status || "" }, badge(answer.status || "no answer")), " ", el("code", {}, answer.ref)),
          terminal.result ? el("pre", { id: "tester-values" }, JSON.stringify(terminal.result, null, 2)) : null,
          (terminal.error || terminal.message) ? el("p", { class: "err", id: "tester-error" }, errorText(terminal.error || terminal)) : null,
          el("details", {}, el("summary", { class: "muted" }, answer.messages.length + " message(s)"),
            el("pre", {}, answer.messages.map((m) => JSON.stringify(m)).join("\n"))),
        ].filter(Boolean));
      } catch (e) {
        result.replaceChildren(el("p", { class: "err" }, String(e.message || e)));
      } finally {
        send.disabled = false;
      }
    });
    drawFields();
    return box;
  }

  // ---------------------------------------------------------------- page
  function render() {
    const d = detail.device;
    main.replaceChildren(
      el("h1", {}, el("a", { href: "/devices" }, "Devices"), " / ", d.id, " ", stateBadge(d.state)),
      metaPanel(d),
      el("div", { class: "grid2" },
        el("div", {}, el("div", { class: "panel" }, el("h2", {}, "Points"), el("div", { id: "points-slot" }, pointsTable(detail.points)))),
        el("div", {}, detail.allowCommands && detail.form ? tester(detail.form) : null, commandsPanel())));
  }

  async function load() {
    const [o, got] = await Promise.all([api("/api/overview"), api("/api/devices/" + encodeURIComponent(id))]);
    syncClock(got.now);
    setEdge(o.edge);
    detail = got;
    historySize = got.historySize || 300;
    history = {};
    addHistory(got.history);
    commands = got.commands;
    render();
  }
  load().catch((e) => main.replaceChildren(el("p", { class: "err" }, e.status === 404 ? `No device ${id} on this edge.` : String(e))));
  live(["device:" + id, "changes"], {
    device: (tick) => {
      if (!detail) return;
      addHistory(tick.history);
      detail.device = tick.device;
      detail.points = tick.points;
      document.getElementById("meta").replaceWith(metaPanel(tick.device));
      document.getElementById("points").replaceWith(pointsTable(tick.points));
      setState(tick.device.state);
    },
    command: upsertCommand,
    changes: (list) => {
      for (const c of list) if (c.what === "device" && c.id === id) setState(c.state);
    },
    reconnected: load,
  });
})();
