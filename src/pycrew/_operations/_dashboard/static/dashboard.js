// The pycrew dashboard page: one EventSource (/events) feeds everything.
//
//   /api/session ─► title, cancel on?, CSRF value
//   /events ─ snapshot (rings) then ticks (only what is new) ─► state ─► draw()
//
// The page keeps a bounded window (the last 2,000 task-stream bars, the last 500
// events), so that a run of any length costs the same to show. Charts redraw at
// most once a second; tables on every tick. Text from the controller (task
// names, errors, logs) is only ever set as text, never parsed as HTML.
"use strict";

(() => {
  const WINDOW = 2000;
  const EVENTS_SHOWN = 60;
  const FUNCTIONS_SHOWN = 25;
  const STATUSES = ["success", "error", "crash", "cancel", "timeout"];
  const COLORS = {
    success: "#2e9d5b", error: "#d64541", crash: "#7b2d8e", cancel: "#9aa0a6",
    timeout: "#e8912d", running: "#3b7dd8", queued: "#d5d9de",
  };
  const GREENS = ["#2e9d5b", "#5cb87f", "#1f7a45", "#86cfa0"];
  const state = {
    session: null, status: null, stream: [], events: [], history: [],
    lastChart: 0, chartPending: false, selected: null,
  };

  // -- small helpers ---------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function setText(id, value) {
    const node = document.getElementById(id);
    if (node && node.textContent !== value) node.textContent = value;
  }

  function bytes(n) {
    if (n === null || n === undefined) return "-";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return `${i ? n.toFixed(1) : n} ${units[i]}`;
  }

  function seconds(s) {
    if (s === null || s === undefined) return "";
    if (s < 60) return `${s.toFixed(1)} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${Math.floor(s % 60)} s`;
    return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  }

  function clock(t) {
    return new Date(t * 1000).toLocaleTimeString();
  }

  // -- data in ---------------------------------------------------------------

  function take(message) {
    if (message.kind === "snapshot") {
      state.stream = message.stream || [];
      state.events = message.events || [];
      state.history = message.history || [];
    } else {
      state.stream = state.stream.concat(message.stream || []);
      state.events = state.events.concat(message.events || []);
      state.history = state.history.concat(message.history || []);
    }
    if (state.stream.length > WINDOW) state.stream = state.stream.slice(-WINDOW);
    if (state.events.length > 500) state.events = state.events.slice(-500);
    if (state.history.length > 900) state.history = state.history.slice(-900);
    if (message.status) state.status = message.status;
    const banner = document.getElementById("broken");
    const problem = message.error || (state.status && state.status.broken);
    banner.hidden = !problem;
    banner.textContent = problem ? `The controller stopped: ${problem}` : "";
    draw();
  }

  // the server sends a message about every second while a page is
  // open: this long without one, the stream is stuck somewhere between, and
  // the page opens a new one (which starts from a snapshot)
  const SILENCE_MS = 10000;

  function connect() {
    const live = document.getElementById("live");
    const source = new EventSource("/events");
    let heard = Date.now();
    const watchdog = setInterval(() => {
      if (Date.now() - heard < SILENCE_MS) return;
      clearInterval(watchdog);
      source.close();
      live.textContent = "reconnecting";
      live.className = "live off";
      connect();
    }, 1000);
    source.onopen = () => { live.textContent = "live"; live.className = "live on"; };
    source.onerror = () => { live.textContent = "reconnecting"; live.className = "live off"; };
    source.onmessage = (event) => {
      heard = Date.now();
      try {
        take(JSON.parse(event.data));
      } catch (error) {
        // one message the page cannot draw must not stop the next ones
        console.error("pycrew dashboard: a message could not be shown", error);
      }
    };
  }

  // -- drawing ---------------------------------------------------------------

  function draw() {
    const s = state.status;
    if (!s) return;
    drawTiles(s);
    drawFunctions(s.functions || []);
    drawWorkers(s.worker_rows || []);
    drawErrors(s.errors || []);
    drawEvents();
    // plotly redraws cost more than the DOM: at most once a second, and not while hidden
    const wait = 1000 - (Date.now() - state.lastChart);
    if (!state.chartPending) {
      state.chartPending = true;
      setTimeout(() => requestAnimationFrame(() => {
        state.chartPending = false;
        state.lastChart = Date.now();
        drawCharts();
      }), Math.max(0, wait));
    }
  }

  function drawTiles(s) {
    const t = s.tasks || {};
    for (const key of ["pushed", "queued", "waiting", "running", ...STATUSES]) {
      setText(`tasks-${key}`, String(t[key] ?? "-"));
    }
    setText("rate", (s.rate ?? 0).toFixed(1));
    const w = s.workers || {};
    setText("workers-now", `${w.connected ?? 0} / ${w.max ?? "-"}`);
    const m = s.memory || {};
    setText("memory", m.cap ? `${bytes(m.held)} of ${bytes(m.cap)}` : bytes(m.held));
    const b = s.bytes || {};
    setText("bytes", `${bytes(b.sent)} / ${bytes(b.received)}`);
    const who = [s.controller, s.engine, s.url, s.started ? `up ${seconds(s.uptime)}` : "not started"];
    setText("identity", who.filter(Boolean).join(" · "));
    setText("workers-count", `${w.busy ?? 0} busy, ${w.idle ?? 0} idle, ${w.launching ?? 0} launching; ` +
      `${w.launched ?? 0} launched, ${w.exited ?? 0} exited, ${w.failed ?? 0} failed`);
  }

  function drawFunctions(rows) {
    const box = document.getElementById("functions");
    if (!rows.length) return;
    const total = (r) => r.queued + r.running + STATUSES.reduce((n, k) => n + (r[k] || 0), 0);
    let shown = rows.slice().sort((a, b) => total(b) - total(a));
    if (shown.length > FUNCTIONS_SHOWN) {
      // many distinct functions (e.g. code strings): the rest as one row
      const rest = { function: `(${shown.length - FUNCTIONS_SHOWN + 1} others)`, queued: 0, running: 0 };
      for (const r of shown.slice(FUNCTIONS_SHOWN - 1)) {
        for (const k of ["queued", "running", ...STATUSES]) rest[k] = (rest[k] || 0) + (r[k] || 0);
      }
      shown = shown.slice(0, FUNCTIONS_SHOWN - 1).concat([rest]);
    }
    const parts = ["success", "error", "crash", "timeout", "cancel", "running", "queued"];
    box.replaceChildren(...shown.map((r) => {
      const n = Math.max(total(r), 1);
      const ended = STATUSES.reduce((k, key) => k + (r[key] || 0), 0);
      const bar = el("div", { class: "bar" }, ...parts.filter((k) => r[k]).map((k) =>
        el("span", { style: `width:${(100 * r[k]) / n}%;background:${COLORS[k]}`, title: `${k}: ${r[k]}` })));
      return el("div", { class: "function", "data-function": r.function },
        el("span", { class: "name", title: r.function, text: r.function }),
        bar,
        el("span", { class: "count", text: `${ended} / ${total(r)}` }));
    }));
  }

  // top: a fixed ceiling (CPU %); floor: the smallest span a line is drawn over, from its
  // own minimum (memory, whose changes would vanish against its size)
  function spark(samples, index, color, top, floor) {
    const width = 80, height = 18;
    const values = samples.map((x) => x[index]).filter((v) => v !== null && v !== undefined);
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("width", width);
    svg.setAttribute("height", height);
    if (values.length > 1) {
      const low = floor ? Math.min(...values) : 0;
      const span = Math.max(top || 0, floor || 0, Math.max(...values) - low) || 1;
      const points = values.map((v, i) =>
        `${((i / (values.length - 1)) * width).toFixed(1)},${(height - 1 - ((v - low) / span) * (height - 2)).toFixed(1)}`);
      const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
      line.setAttribute("points", points.join(" "));
      line.setAttribute("stroke", color);
      svg.append(line);
    }
    return svg;
  }

  function cancelButton(task) {
    if (!state.session || !state.session.cancel || !task) return null;
    return el("button", {
      class: "cancel", type: "button", "data-task": task, title: `cancel ${task}`, text: "cancel",
      onclick: (event) => cancel([task], event.currentTarget),
    });
  }

  function drawWorkers(rows) {
    const body = document.querySelector("#workers tbody");
    const sorted = rows.slice().sort((a, b) => String(a.id).localeCompare(String(b.id), undefined, { numeric: true }));
    body.replaceChildren(...sorted.map((w) => el("tr", { "data-worker": w.id },
      el("td", { class: "mono", text: w.id }),
      el("td", {}, el("span", { class: `state ${w.state}`, text: w.state })),
      el("td", { class: "num", text: w.pid ?? "" }),
      el("td", { text: w.host ?? "" }),
      el("td", { class: "mono task", title: w.task ?? "" }, w.task ?? "", cancelButton(w.task)),
      el("td", { class: "mono", title: w.function ?? "", text: w.function ?? "" }),
      el("td", { class: "num", text: seconds(w.seconds) }),
      el("td", { class: "num", text: w.done }),
      el("td", {}, spark(w.samples || [], 1, COLORS.running, 100), ` ${w.cpu === null || w.cpu === undefined ? "" : w.cpu.toFixed(0)}`),
      el("td", {}, spark(w.samples || [], 2, COLORS.crash, 0, 1 << 20), ` ${w.rss === null || w.rss === undefined ? "" : bytes(w.rss)}`),
    )));
  }

  function drawErrors(errors) {
    const list = document.getElementById("errors");
    if (!errors.length) return;
    const key = JSON.stringify(errors.map((e) => [e.name, e.time]));
    if (list.dataset.key === key) return;  // unchanged: keep the selection and scroll
    list.dataset.key = key;
    list.replaceChildren(...errors.slice().reverse().map((e) => el("li", {
      class: `error-item${state.selected === e.name ? " selected" : ""}`, "data-name": e.name,
      onclick: () => showError(e),
    },
    el("span", { class: `s-${e.status}`, text: e.status }), " ",
    el("strong", { text: e.name }), " ",
    el("span", { class: "muted", text: `${e.function} · ${e.worker ?? "no worker"} · ${clock(e.time)}` }),
    e.error ? el("div", { text: e.error }) : null)));
  }

  async function showError(e) {
    state.selected = e.name;
    for (const li of document.querySelectorAll("#errors li")) {
      li.classList.toggle("selected", li.dataset.name === e.name);
    }
    document.getElementById("error-detail").hidden = false;
    setText("error-title", `${e.name} (${e.status}) in ${e.function}`);
    setText("error-message", e.error || "");
    setText("error-trace", e.trace || "(no traceback: the worker ended before it could send one)");
    setText("log-worker", e.worker || "");
    const log = document.getElementById("error-log");
    if (!e.worker || !state.session || !state.session.logs) {
      log.textContent = "(the controller keeps no log for this worker: set log_directory=)";
      return;
    }
    log.textContent = "loading...";
    try {
      const response = await fetch(`/api/worker/${encodeURIComponent(e.worker)}/log`);
      log.textContent = response.ok ? await response.text() : "(no log for this worker)";
    } catch (err) {
      log.textContent = `(could not read the log: ${err})`;
    }
  }

  function drawEvents() {
    const list = document.getElementById("events");
    if (!state.events.length) return;
    const last = state.events[state.events.length - 1];
    if (list.dataset.seq === String(last.seq)) return;
    list.dataset.seq = String(last.seq);
    list.replaceChildren(...state.events.slice(-EVENTS_SHOWN).reverse().map((e) => el("li", { "data-kind": e.kind },
      el("span", { class: "muted", text: clock(e.time) }), " ",
      el("strong", { text: e.kind }), " ",
      [e.worker, e.task, e.detail].filter(Boolean).join(" · "))));
  }

  // -- charts (plotly) ---------------------------------------------------------

  const LAYOUT = {
    margin: { l: 90, r: 20, t: 10, b: 40 }, showlegend: false, hovermode: "closest",
    paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)", font: { size: 11 },
  };
  const CONFIG = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["toImage"] };

  function drawCharts() {
    if (document.hidden || typeof Plotly === "undefined") return;
    drawStream();
    drawThroughput();
  }

  function drawStream() {
    // one trace per status, each a path of disconnected segments: a few SVG paths
    // however many bars, unlike one shape per bar
    // tasks still running, from the worker rows: a bar from their start until now
    const now = (state.status && state.status.time) || Date.now() / 1000;
    const running = ((state.status && state.status.worker_rows) || [])
      .filter((w) => w.task && w.seconds !== null && w.seconds !== undefined)
      .map((w) => ({ name: w.task, function: w.function || "", worker: w.id,
        start: now - w.seconds, end: now, status: "running" }));
    const bars = state.stream.concat(running);
    const workers = [...new Set(bars.map((t) => t.worker ?? "(none)"))]
      .sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
    const box = document.getElementById("stream");
    const thick = Math.max(2, Math.min(18, (box.clientHeight - 60) / Math.max(workers.length, 1) * 0.7));
    // successes in a few shades of green by function, so that neighbours stay apart
    const functions = [...new Set(state.stream.map((t) => t.function))].sort();
    const shade = (t) => (t.status === "success" ? functions.indexOf(t.function) % GREENS.length : 0);
    const kinds = [...STATUSES, "running"].flatMap((status) =>
      (status === "success" ? GREENS.map((_, i) => [status, i]) : [[status, 0]]));
    const traces = kinds.map(([status, tone]) => {
      const x = [], y = [], text = [];
      for (const t of bars) {
        if (t.status !== status || shade(t) !== tone) continue;
        const row = t.worker ?? "(none)";
        const label = `${t.name}<br>${t.function}<br>${status}, ${(t.end - t.start).toFixed(3)} s`;
        x.push(t.start * 1000, Math.max(t.end, t.start + 0.001) * 1000, null);
        y.push(row, row, null);
        text.push(label, label, null);
      }
      return {
        type: "scatter", mode: "lines", name: status, x, y, text, customdata: y.map(() => status),
        hoverinfo: "text", connectgaps: false,
        line: { color: status === "success" ? GREENS[tone] : COLORS[status], width: thick },
      };
    });
    const layout = {
      ...LAYOUT,
      xaxis: { type: "date", title: { text: "" } },
      yaxis: { type: "category", categoryorder: "array", categoryarray: workers, automargin: true },
    };
    Plotly.react(box, traces, layout, CONFIG);
    if (!box.dataset.clicks) {
      box.dataset.clicks = "1";
      box.on("plotly_click", (event) => {
        const point = event.points && event.points[0];
        if (!point) return;
        const name = String(point.text || "").split("<br>")[0];
        const error = ((state.status && state.status.errors) || []).find((e) => e.name === name);
        if (error) showError(error);
      });
    }
    setText("stream-count", `${state.stream.length} most recent tasks`);
  }

  function drawThroughput() {
    const h = state.history;
    const t = h.map((r) => r[0] * 1000);
    const rate = h.map((r, i) => (i === 0 ? null : Math.max(0, (r[3] - h[i - 1][3]) / Math.max(r[0] - h[i - 1][0], 1e-6))));
    const traces = [
      { type: "scatter", mode: "lines", name: "queued", x: t, y: h.map((r) => r[1]), line: { color: "#9aa0a6" } },
      { type: "scatter", mode: "lines", name: "running", x: t, y: h.map((r) => r[2]), line: { color: COLORS.running } },
      { type: "scatter", mode: "lines", name: "done / s", x: t, y: rate, yaxis: "y2", line: { color: COLORS.success, dash: "dot" } },
    ];
    const layout = {
      ...LAYOUT, showlegend: true, legend: { orientation: "h", y: 1.15 },
      margin: { l: 50, r: 50, t: 20, b: 40 },
      xaxis: { type: "date" },
      yaxis: { title: { text: "tasks" }, rangemode: "tozero" },
      yaxis2: { title: { text: "done / s" }, overlaying: "y", side: "right", rangemode: "tozero", showgrid: false },
    };
    Plotly.react(document.getElementById("throughput"), traces, layout, CONFIG);
  }

  // -- cancel --------------------------------------------------------------------

  async function cancel(names, button) {
    if (button) button.disabled = true;
    const headers = { "Content-Type": "application/json" };
    headers[state.session.csrf_header] = state.session.csrf;
    const response = await fetch("/api/cancel", {
      method: "POST", headers, body: JSON.stringify({ names }), credentials: "same-origin",
    });
    if (!response.ok && button) {
      button.disabled = false;
      button.title = `refused: ${response.status}`;
    }
  }

  // -- start ---------------------------------------------------------------------

  function legend() {
    const box = document.getElementById("legend");
    box.replaceChildren(...[...STATUSES, "running"].map((s) => el("span", {},
      el("i", { style: `background:${COLORS[s]}` }), s)));
  }

  async function start() {
    legend();
    const response = await fetch("/api/session", { credentials: "same-origin" });
    state.session = await response.json();
    document.title = `${state.session.title} dashboard`;
    setText("title", state.session.title);
    document.body.dataset.cancel = state.session.cancel ? "on" : "off";
    connect();
  }

  document.addEventListener("visibilitychange", () => { if (!document.hidden) drawCharts(); });
  start();
})();
