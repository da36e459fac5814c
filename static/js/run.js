/* The run page, live: load the run's events over REST, then follow them over a WebSocket.
 *
 * Events are numbered (seq) and applied strictly in order; anything at or below the last seq
 * seen is ignored. A gap (a lost message) or a reconnect resyncs from REST with ?after=<last
 * seq>. Everything that comes from events is untrusted: it goes into the page as textContent
 * only, never as HTML. The cell list carries data-last-seq, data-syncing and data-socket, for
 * anyone (or any test) wanting to know where the page stands.
 */
(function () {
  "use strict";

  const config = JSON.parse(document.getElementById("run-config").textContent);
  const FINAL = new Set(config.final_states);
  const MAX_TEXT = 200000; // characters kept per output block; the notebook has the rest
  const NOT_FOUND_CLOSE_CODE = 4404;
  const MAX_GPUS = 64; // GPUs shown from one resources sample

  const $ = (id) => document.getElementById(id);
  const el = {
    state: $("run-state"),
    stateText: $("run-state-text"),
    node: $("run-node"),
    attempt: $("run-attempt"),
    started: $("run-started"),
    finished: $("run-finished"),
    elapsed: $("run-elapsed"),
    resources: $("run-resources"),
    gpus: $("run-gpus"),
    gpusLabel: $("run-gpus-label"),
    gpuList: $("run-gpu-list"),
    error: $("run-error"),
    output: $("output-link"),
    executedCard: $("executed-card"),
    executedFrame: $("executed-frame"),
    cancel: $("cancel-form"),
    cells: $("cells"),
    cellsEmpty: $("cells-empty"),
    cellsSummary: $("cells-summary"),
    attemptNote: $("attempt-note"),
    log: $("run-log"),
    logCard: $("log-card"),
    live: $("live-status"),
  };

  // Server time minus browser time, so elapsed times do not depend on the browser's clock.
  const skew = Date.parse(config.server_now) - Date.now();
  const now = () => Date.now() + skew;

  let lastSeq = 0;
  let attempt = 0;
  let state = config.state;
  let startedAt = config.started_at ? Date.parse(config.started_at) : null;
  let finishedAt = config.finished_at ? Date.parse(config.finished_at) : null;
  let cells = new Map();
  let syncing = false;
  let syncAgain = false;
  let pending = [];
  let socket = null;
  let retries = 0;
  let reconnectTimer = null;

  // --- formatting -------------------------------------------------------------------------------
  function formatTime(ms) {
    if (ms === null || Number.isNaN(ms)) return "—";
    return new Date(ms).toISOString().slice(0, 19).replace("T", " ") + " UTC";
  }

  function formatDuration(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    const h = Math.floor(seconds / 3600);
    const m = Math.floor((seconds % 3600) / 60);
    const s = seconds % 60;
    const pad = (n) => String(n).padStart(2, "0");
    return h ? `${h}:${pad(m)}:${pad(s)}` : `${m}:${pad(s)}`;
  }

  // A reported number, or null when it is not one (missing, text, NaN, negative).
  function reported(value) {
    const n = typeof value === "number" ? value : Number.NaN;
    return Number.isFinite(n) && n >= 0 ? n : null;
  }

  function formatMiB(mb) {
    return mb >= 1024 ? `${(mb / 1024).toFixed(1)} GiB` : `${Math.round(mb)} MiB`;
  }

  function setLive(text) {
    if (!el.live) return;
    el.live.textContent = text || "";
    el.live.hidden = !text;
  }

  // --- the run's summary --------------------------------------------------------------------------
  function setState(next) {
    if (!next) return;
    state = String(next);
    el.state.textContent = state;
    el.state.className = `badge state state-${state.replace(/[^a-z]/g, "")}`;
    el.state.dataset.state = state;
    if (el.stateText) el.stateText.textContent = state.charAt(0).toUpperCase() + state.slice(1);
    if (FINAL.has(state)) {
      if (el.cancel) el.cancel.hidden = true;
      if (el.cellsEmpty && cells.size === 0) el.cellsEmpty.textContent = `The run ended (${state}).`;
    } else if (state === "queued" && el.cellsEmpty && cells.size === 0) {
      el.cellsEmpty.textContent = "Waiting for a compute node to take this run…";
    } else if (el.cellsEmpty && cells.size === 0) {
      el.cellsEmpty.textContent = "Starting the kernel…";
    }
    tick();
  }

  function setNode(name) {
    // Keep the server-rendered link to the node (shown to its owner) when the name is the same.
    if (name && el.node.textContent.trim() !== String(name)) el.node.textContent = String(name);
  }

  function tick() {
    let text = "—";
    if (state === "queued") {
      el.elapsed.textContent = text;
      return;
    }
    if (startedAt !== null && finishedAt !== null) text = formatDuration((finishedAt - startedAt) / 1000);
    else if (startedAt !== null && !FINAL.has(state)) text = formatDuration((now() - startedAt) / 1000);
    el.elapsed.textContent = text;
  }

  function showExecuted() {
    // The executed notebook, rendered in its sandboxed frame once the run has an output.
    if (el.output) el.output.hidden = false;
    if (!el.executedFrame || el.executedFrame.getAttribute("src")) return;
    el.executedFrame.src = el.executedFrame.dataset.src;
    el.executedCard.hidden = false;
  }

  let refreshTimer = null;
  function refreshSummary() {
    // The events say what changed; the run's own record says the details (node, times, output).
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(async () => {
      try {
        const response = await fetch(config.run_url, { credentials: "same-origin", headers: { Accept: "application/json" } });
        if (!response.ok) return;
        const run = await response.json();
        setNode(run.node);
        if (run.attempt) el.attempt.textContent = String(run.attempt);
        startedAt = run.started_at ? Date.parse(run.started_at) : startedAt;
        finishedAt = run.finished_at ? Date.parse(run.finished_at) : finishedAt;
        el.started.textContent = formatTime(startedAt);
        el.finished.textContent = formatTime(finishedAt);
        if (run.error) {
          el.error.textContent = run.error;
          el.error.hidden = false;
        }
        if (run.output) showExecuted();
        if (run.state && run.state !== state && FINAL.has(run.state)) setState(run.state);
        tick();
      } catch (e) {
        /* the page stays as it is; the next event refreshes it again */
      }
    }, 150);
  }

  // --- cells ---------------------------------------------------------------------------------------
  function updateCellsSummary() {
    let ok = 0, failed = 0;
    cells.forEach((cell) => {
      if (cell.li.classList.contains("ok")) ok += 1;
      if (cell.li.classList.contains("error")) failed += 1;
    });
    const parts = [`${cells.size} cell${cells.size === 1 ? "" : "s"} started`, `${ok} done`];
    if (failed) parts.push(`${failed} failed`);
    el.cellsSummary.textContent = cells.size ? parts.join(" · ") : "";
  }

  function ensureCell(index) {
    const key = index === null || index === undefined ? "run" : String(index);
    let cell = cells.get(key);
    if (cell) return cell;
    const li = document.createElement("li");
    li.className = "cell pending";
    li.dataset.cellIndex = key;
    const head = document.createElement("div");
    head.className = "cell-head";
    const label = document.createElement("span");
    label.className = "cell-label mono";
    label.textContent = key === "run" ? "Outside cells" : `Cell ${key}`;
    const tag = document.createElement("span");
    tag.className = "cell-tag";
    tag.hidden = true;
    const status = document.createElement("span");
    status.className = "cell-status";
    status.textContent = "";
    head.append(label, tag, status);
    const source = document.createElement("pre");
    source.className = "cell-source";
    source.hidden = true;
    const outputs = document.createElement("div");
    outputs.className = "cell-outputs";
    li.append(head, source, outputs);
    // Keep cells in notebook order even if their events arrive out of it.
    const position = key === "run" ? -1 : Number(key);
    li.dataset.position = String(position);
    const after = Array.from(el.cells.children).find((other) => Number(other.dataset.position) > position);
    el.cells.insertBefore(li, after || null);
    cell = { li, tag, status, source, outputs, lastStream: null };
    cells.set(key, cell);
    if (el.cellsEmpty) el.cellsEmpty.hidden = true;
    return cell;
  }

  function appendText(pre, text) {
    const current = pre.textContent;
    if (current.length >= MAX_TEXT) return;
    let next = current + text;
    if (next.length > MAX_TEXT) next = next.slice(0, MAX_TEXT) + "\n… (cut here; download the executed notebook for the rest)";
    pre.textContent = next;
  }

  function cellStarted(event) {
    const cell = ensureCell(event.cell_index);
    const payload = event.payload || {};
    cell.li.classList.remove("pending", "ok", "error");
    cell.li.classList.add("running");
    cell.status.textContent = "running…";
    if (payload.injected) {
      cell.tag.textContent = "injected parameters";
      cell.tag.hidden = false;
    }
    if (typeof payload.source === "string" && payload.source) {
      cell.source.textContent = payload.source;
      cell.source.hidden = false;
    }
    updateCellsSummary();
  }

  function cellExecuted(event) {
    const cell = ensureCell(event.cell_index);
    const payload = event.payload || {};
    const ok = payload.status !== "error";
    cell.li.classList.remove("pending", "running");
    cell.li.classList.add(ok ? "ok" : "error");
    const duration = Number(payload.duration);
    cell.status.textContent = (ok ? "ok" : "error") + (Number.isFinite(duration) ? ` · ${duration.toFixed(2)} s` : "");
    updateCellsSummary();
  }

  function stream(event) {
    const cell = ensureCell(event.cell_index);
    const payload = event.payload || {};
    const name = payload.name === "stderr" ? "stderr" : "stdout";
    let pre = cell.lastStream;
    if (!pre || pre.dataset.stream !== name || pre !== cell.outputs.lastElementChild) {
      pre = document.createElement("pre");
      pre.className = `stream ${name}`;
      pre.dataset.stream = name;
      cell.outputs.append(pre);
      cell.lastStream = pre;
    }
    appendText(pre, String(payload.text ?? ""));
  }

  function output(event) {
    const cell = ensureCell(event.cell_index);
    const out = (event.payload || {}).output || {};
    const pre = document.createElement("pre");
    if (out.type === "error") {
      pre.className = "output error";
      appendText(pre, `${out.ename ?? "Error"}: ${out.evalue ?? ""}`);
    } else {
      pre.className = "output";
      const text = String(out.text ?? "");
      if (text) appendText(pre, text);
      else appendText(pre, `[${(out.mime_types || []).join(", ") || "output"}]`);
    }
    cell.outputs.append(pre);
    cell.lastStream = null;
  }

  function log(text, kind) {
    const li = document.createElement("li");
    if (kind) li.className = kind;
    li.textContent = text;
    el.log.append(li);
    el.logCard.hidden = false;
  }

  // --- resources: CPU, memory and (when the node has NVML) GPUs -------------------------------------
  function gpuMeter(label, value, max, text) {
    const row = document.createElement("div");
    row.className = "gpu-meter";
    const name = document.createElement("span");
    name.className = "muted";
    name.textContent = label;
    const meter = document.createElement("meter");
    meter.min = 0;
    meter.max = max;
    meter.value = Math.min(value ?? 0, max);
    meter.hidden = value === null;
    const figure = document.createElement("span");
    figure.className = "mono";
    figure.textContent = text;
    row.append(name, meter, figure);
    return row;
  }

  function gpuItem(gpu, position) {
    const index = Number.isInteger(gpu.index) && gpu.index >= 0 ? gpu.index : position;
    const name = typeof gpu.name === "string" && gpu.name.trim() ? gpu.name.slice(0, 200) : "GPU";
    const busy = reported(gpu.utilization_percent);
    const used = reported(gpu.memory_used_mb);
    const total = reported(gpu.memory_total_mb);
    const li = document.createElement("li");
    li.dataset.gpuIndex = String(index);
    const title = document.createElement("div");
    title.className = "gpu-name";
    title.textContent = `#${index} ${name}`;
    let memory = "—";
    if (used !== null && total >= 1024) memory = `${(used / 1024).toFixed(1)} / ${formatMiB(total)}`;
    else if (used !== null && total) memory = `${formatMiB(used)} / ${formatMiB(total)}`;
    else if (used !== null) memory = `${formatMiB(used)} used`;
    else if (total) memory = `? / ${formatMiB(total)}`;
    li.append(
      title,
      gpuMeter("busy", busy, 100, busy === null ? "—" : `${Math.round(busy)}%`),
      gpuMeter("memory", used !== null && total ? used : null, total || 1, memory),
    );
    return li;
  }

  function showGpus(list) {
    // No list, or an empty one (NVML missing, or failing for one sample): keep what is shown,
    // so a page whose run never reported a GPU never shows the section at all.
    if (!el.gpus || !Array.isArray(list)) return;
    const gpus = list.filter((gpu) => gpu && typeof gpu === "object" && !Array.isArray(gpu)).slice(0, MAX_GPUS);
    if (!gpus.length) return;
    el.gpuList.replaceChildren(...gpus.map(gpuItem));
    el.gpus.hidden = false;
    el.gpusLabel.hidden = false;
  }

  function showResources(payload) {
    if (el.resources) {
      const cpu = reported(payload.cpu_percent) ?? 0;
      const parts = [`${Math.round(cpu * 10) / 10}% CPU`, formatMiB(reported(payload.rss_mb) ?? 0)];
      const processes = reported(payload.processes);
      if (processes) parts.push(`${processes} process${processes === 1 ? "" : "es"}`);
      el.resources.textContent = parts.join(" · ");
    }
    showGpus(payload.gpus);
  }

  function clearResources() {
    // A new attempt may run on another node (one without GPUs): show only what it reports.
    if (el.resources) el.resources.textContent = "—";
    if (!el.gpus) return;
    el.gpuList.replaceChildren();
    el.gpus.hidden = true;
    el.gpusLabel.hidden = true;
  }

  function newAttempt(number, reason) {
    attempt = number;
    el.attempt.textContent = String(number);
    if (number <= 1) return;
    cells.forEach((cell) => cell.li.remove());
    cells = new Map();
    clearResources();
    updateCellsSummary();
    if (el.cellsEmpty) el.cellsEmpty.hidden = false;
    el.attemptNote.textContent = `Attempt ${number}` + (reason ? ` (${reason})` : "") + ": the cells of the earlier attempt are cleared.";
    el.attemptNote.hidden = false;
    startedAt = null;
    finishedAt = null;
  }

  // --- events ----------------------------------------------------------------------------------------
  function apply(event) {
    if (typeof event.seq !== "number" || event.seq <= lastSeq) return;
    lastSeq = event.seq;
    el.cells.dataset.lastSeq = String(lastSeq);
    const payload = event.payload || {};
    if (typeof event.attempt === "number" && event.attempt > attempt) newAttempt(event.attempt, payload.reason);
    switch (event.kind) {
      case "state": {
        const next = String(payload.state || "");
        if (next === "leased") setNode(payload.node);
        if (next === "running" && startedAt === null) startedAt = Date.parse(event.created_at) || now();
        if (FINAL.has(next)) {
          finishedAt = Date.parse(event.created_at) || now();
          if (payload.error) {
            el.error.textContent = String(payload.error);
            el.error.hidden = false;
          }
        }
        if (next === "queued" && payload.reason) log(`requeued: ${payload.reason}`, "warn");
        setState(next);
        refreshSummary();
        break;
      }
      case "cell_started":
        cellStarted(event);
        break;
      case "cell_executed":
        cellExecuted(event);
        break;
      case "stream":
        stream(event);
        break;
      case "output":
        output(event);
        break;
      case "log":
        if (payload.message) log(String(payload.message));
        break;
      case "resources":
        showResources(payload);
        break;
      case "cancel_requested":
        log("cancel requested: the node stops the run at its next heartbeat", "warn");
        if (el.cancel) {
          const button = el.cancel.querySelector("button");
          if (button) {
            button.disabled = true;
            button.textContent = "Cancel requested";
          }
        }
        break;
      default:
        break; // kinds this page does not know
    }
  }

  function receive(event) {
    if (syncing) {
      pending.push(event);
    } else if (event.seq <= lastSeq) {
      // already seen
    } else if (event.seq === lastSeq + 1) {
      apply(event);
    } else {
      pending.push(event); // a gap: some message was lost; fetch what is missing first
      sync();
    }
  }

  function relative(url) {
    // `next` is absolute as the server saw it (maybe http behind a proxy): keep our origin.
    const parsed = new URL(url, location.href);
    return parsed.pathname + parsed.search;
  }

  async function sync() {
    if (syncing) {
      syncAgain = true;
      return;
    }
    syncing = true;
    el.cells.dataset.syncing = "true";
    try {
      do {
        syncAgain = false;
        let url = `${config.events_url}?after=${lastSeq}&page_size=200`;
        while (url) {
          const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
          if (!response.ok) throw new Error(`HTTP ${response.status}`);
          const page = await response.json();
          (page.results || []).forEach(apply);
          url = page.next ? relative(page.next) : null;
        }
      } while (syncAgain);
    } catch (e) {
      setLive("Could not load the run's progress; retrying…");
      setTimeout(sync, 3000);
    } finally {
      syncing = false;
      el.cells.dataset.syncing = "false";
      const queued = pending.sort((a, b) => a.seq - b.seq);
      pending = [];
      // After a sync the store has everything up to what was announced: apply in order, and
      // accept a gap that persists rather than loop.
      queued.forEach(apply);
    }
  }

  // --- the socket ---------------------------------------------------------------------------------------
  function connect() {
    if (!("WebSocket" in window)) return;
    const proto = location.protocol === "https:" ? "wss" : "ws";
    try {
      socket = new WebSocket(`${proto}://${location.host}${config.ws_path}`);
    } catch (e) {
      scheduleReconnect();
      return;
    }
    socket.onopen = () => {
      retries = 0;
      el.cells.dataset.socket = "open";
      setLive("");
      sync(); // catch up on whatever happened while the socket was down
    };
    socket.onmessage = (message) => {
      let event;
      try {
        event = JSON.parse(message.data);
      } catch (e) {
        return;
      }
      if (event && typeof event.seq === "number") receive(event);
    };
    socket.onclose = (close) => {
      socket = null;
      el.cells.dataset.socket = "closed";
      if (close.code === NOT_FOUND_CLOSE_CODE) {
        setLive("Live updates are not available for this run.");
        return;
      }
      if (FINAL.has(state)) return; // nothing more will happen
      scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    clearTimeout(reconnectTimer);
    const delay = Math.min(30000, 1000 * 2 ** retries) * (0.75 + Math.random() * 0.5);
    retries += 1;
    setLive(`Live updates interrupted; reconnecting in ${Math.round(delay / 1000)} s…`);
    reconnectTimer = setTimeout(connect, delay);
  }

  setState(state);
  setInterval(tick, 1000);
  sync();
  connect();
})();
