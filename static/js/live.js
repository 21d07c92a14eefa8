/* The live views of the panel: a sandbox's output, its resource use and processes, its
   terminal, and the dashboard's usage cells. Everything a socket sends is data: it is put in
   the page with textContent (or written to the terminal), never parsed as HTML, so a line that
   looks like markup or like an htmx attribute stays text. */
(function () {
  "use strict";

  function wsUrl(path) {
    if (/^wss?:\/\//.test(path)) return path;
    return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;
  }

  /* A socket that comes back after a drop (Redis or the panel restarting), waiting longer each
     time; not after the server closed it on purpose (4401 signed out, 4403 no access, 4429 too slow). */
  function reconnecting(path, onMessage, onState, binary) {
    let socket = null, delay = 1000, stopped = false;
    const final = new Set([4401, 4403, 4408]);
    function open() {
      socket = new WebSocket(wsUrl(path));
      if (binary) socket.binaryType = "arraybuffer";
      socket.onopen = function () { delay = 1000; onState && onState("open"); };
      socket.onmessage = onMessage;
      socket.onclose = function (event) {
        onState && onState("closed", event.code);
        if (stopped || final.has(event.code)) return;
        setTimeout(open, delay);
        delay = Math.min(delay * 2, 15000);
      };
    }
    open();
    return {
      send: function (data) { if (socket && socket.readyState === 1) socket.send(data); },
      close: function () { stopped = true; if (socket) socket.close(); },
    };
  }

  function formatBytes(n) {
    if (n === null || n === undefined) return "–";
    const units = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(Math.round(n))) + " " + units[i];
  }

  /* --- the output ------------------------------------------------------------------------ */
  function logView(card) {
    const box = card.querySelector("#log");
    const pauseButton = card.querySelector("#log-pause");
    const filter = card.querySelector("#log-filter");
    const keep = card.querySelector("#log-keep");
    const state = card.querySelector("#log-state");
    let paused = false, held = [], received = 0, acked = 0, dropped = 0;

    function limit() { return parseInt(keep.value, 10) || 2000; }
    function matches(text) { return !filter.value || text.indexOf(filter.value) !== -1; }
    function lineElement(kind, stamp, text) {
      const div = document.createElement("div");
      div.className = kind;
      div.title = stamp || "";
      div.textContent = text;  // text, never markup
      if (!matches(text)) div.hidden = true;
      return div;
    }
    function trim() {
      while (box.childElementCount > limit()) box.firstElementChild.remove();
    }
    function show(elements) {
      const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
      const fragment = document.createDocumentFragment();
      elements.forEach(function (el) { fragment.appendChild(el); });
      box.appendChild(fragment);
      trim();
      if (atBottom) box.scrollTop = box.scrollHeight;
    }
    function add(elements) {
      if (paused) {
        held = held.concat(elements);
        if (held.length > limit()) { dropped += held.length - limit(); held = held.slice(-limit()); }
        state.textContent = "Paused: " + held.length + " new lines held" + (dropped ? " (" + dropped + " older ones dropped)" : "") + ".";
      } else {
        show(elements);
      }
    }
    pauseButton.addEventListener("click", function () {
      paused = !paused;
      pauseButton.textContent = paused ? "Resume" : "Pause";
      if (!paused) { show(held); held = []; dropped = 0; state.textContent = ""; }
    });
    filter.addEventListener("input", function () {
      box.querySelectorAll("div").forEach(function (div) { div.hidden = !matches(div.textContent); });
    });
    keep.addEventListener("change", trim);

    reconnecting(card.dataset.ws + "?tail=" + limit(), function (event) {
      received += event.data.length;
      const message = JSON.parse(event.data);
      if (message.t === "lines") {
        add(message.l.map(function (l) { return lineElement(l[0] ? "err" : "out", l[1], l[2]); }));
      } else {
        add([lineElement("note", "", "— " + message.text)]);
      }
      if (received - acked > 65536) {  // tell the server what was read: it skips what a page far behind cannot show
        acked = received;
        this.send(JSON.stringify({ ack: received }));
      }
    });
  }

  /* --- resources and processes ---------------------------------------------------------- */
  function statsView(card) {
    const now = card.querySelector("#stats-now");
    const processes = card.querySelector("#processes");
    const width = Math.max(280, Math.floor((card.clientWidth - 60) / 3));
    const data = { t: [], cpu: [], mem: [], rx: [], tx: [] };
    const charts = [];

    function chart(id, title, series, yLabel) {
      if (!window.uPlot) return null;
      const opts = {
        title: title, width: width, height: 160,
        series: [{}].concat(series.map(function (s) { return { label: s[0], stroke: s[1], width: 1.5 }; })),
        axes: [{}, { label: yLabel, size: 60 }],
        scales: { x: { time: true } },
      };
      const plot = new uPlot(opts, [[]].concat(series.map(function () { return []; })), document.getElementById(id));
      charts.push(plot);
      return plot;
    }
    const cpuChart = chart("chart-cpu", "CPU %", [["CPU %", "#3454d1"]], "%");
    const memChart = chart("chart-mem", "Memory (MB)", [["used", "#1f7a3d"]], "MB");
    const netChart = chart("chart-net", "Network (KB/s)", [["in", "#9a6400"], ["out", "#b42318"]], "KB/s");

    function push(s) {
      data.t.push(s.t); data.cpu.push(s.cpu); data.mem.push(s.mem / 1048576);
      data.rx.push(s.rx_rate === null ? null : s.rx_rate / 1024); data.tx.push(s.tx_rate === null ? null : s.tx_rate / 1024);
      Object.keys(data).forEach(function (k) { if (data[k].length > 300) data[k].shift(); });
    }
    function draw(latest) {
      if (cpuChart) cpuChart.setData([data.t, data.cpu]);
      if (memChart) memChart.setData([data.t, data.mem]);
      if (netChart) netChart.setData([data.t, data.rx, data.tx]);
      if (latest) {
        now.textContent = "CPU " + (latest.cpu === null ? "–" : latest.cpu.toFixed(1) + " %") +
          " · memory " + formatBytes(latest.mem) + " of " + formatBytes(latest.mem_limit) +
          " · network in " + formatBytes(latest.rx) + ", out " + formatBytes(latest.tx) +
          " · disk read " + formatBytes(latest.blk_read) + ", written " + formatBytes(latest.blk_write) +
          " · " + latest.pids + " processes";
        card.dataset.samples = String(data.t.length);
      }
    }
    function showProcesses(list) {
      processes.textContent = "";
      if (!list.length) {
        const row = processes.insertRow(); const cell = row.insertCell();
        cell.colSpan = 6; cell.className = "empty"; cell.textContent = "Not running.";
        return;
      }
      list.forEach(function (p) {
        const row = processes.insertRow();
        [p.pid, p.uid || "", p["%cpu"], formatBytes(parseInt(p.rss, 10) * 1024), p.elapsed, p.command].forEach(function (v, i) {
          const cell = row.insertCell();
          cell.textContent = v === undefined ? "" : String(v);
          if (i === 5) cell.className = "command";
        });
      });
    }
    reconnecting(card.dataset.ws, function (event) {
      const message = JSON.parse(event.data);
      if (message.t === "history") { message.s.forEach(push); draw(message.s[message.s.length - 1]); }
      else if (message.t === "stats") { push(message.s); draw(message.s); }
      else if (message.t === "processes") showProcesses(message.p);
    });
  }

  /* --- the terminal --------------------------------------------------------------------- */
  function terminalView(card) {
    const openButton = card.querySelector("#terminal-open");
    const closeButton = card.querySelector("#terminal-close");
    const box = card.querySelector("#terminal");
    let term = null, socket = null, fit = null, written = 0, acked = 0;
    const encoder = new TextEncoder();

    function sendSize() {
      if (socket && socket.readyState === 1 && term) socket.send(JSON.stringify({ t: "resize", cols: term.cols, rows: term.rows }));
    }
    openButton.addEventListener("click", function () {
      box.hidden = false; openButton.hidden = true; closeButton.hidden = false;
      if (!term) {
        term = new Terminal({ cursorBlink: true, fontSize: 13, scrollback: 5000, convertEol: false });
        fit = new FitAddon.FitAddon();
        term.loadAddon(fit);
        term.open(box);
        term.onData(function (d) { if (socket && socket.readyState === 1) socket.send(encoder.encode(d)); });
        window.addEventListener("resize", function () { if (fit) { fit.fit(); sendSize(); } });
      }
      term.reset();
      fit.fit();
      socket = new WebSocket(wsUrl(card.dataset.ws));
      socket.binaryType = "arraybuffer";
      written = 0; acked = 0;
      socket.onopen = function () { sendSize(); term.focus(); card.dataset.state = "open"; };
      socket.onmessage = function (event) {
        if (typeof event.data === "string") {
          const message = JSON.parse(event.data);
          term.writeln("\r\n\x1b[2m" + String(message.text).replace(/[\x00-\x1f]/g, " ") + "\x1b[0m");
        } else {
          const size = event.data.byteLength, own = socket;
          // Acknowledge output once xterm has drawn it: the server reads the shell only while
          // little is unacknowledged, so a page that falls behind pauses the shell.
          term.write(new Uint8Array(event.data), function () {
            written += size;
            if (written - acked >= 65536 && own.readyState === 1) { acked = written; own.send(JSON.stringify({ t: "ack", n: written })); }
          });
        }
      };
      socket.onclose = function () {
        openButton.hidden = false; closeButton.hidden = true; card.dataset.state = "closed";
      };
    });
    closeButton.addEventListener("click", function () { if (socket) socket.close(); });
  }

  /* --- the dashboard's usage cells ------------------------------------------------------- */
  function usageCells(table) {
    const history = {};
    function draw(cell, points) {
      let canvas = cell.querySelector("canvas");
      let label = cell.querySelector("span");
      if (!canvas) {
        cell.textContent = "";
        label = document.createElement("span");
        canvas = document.createElement("canvas");
        canvas.width = 60; canvas.height = 16;
        cell.appendChild(canvas); cell.appendChild(label);
      }
      const ctx = canvas.getContext("2d");
      ctx.clearRect(0, 0, 60, 16);
      ctx.strokeStyle = "#3454d1"; ctx.beginPath();
      const max = Math.max(100, Math.max.apply(null, points.map(function (p) { return p || 0; })));
      points.forEach(function (p, i) {
        const x = 60 - (points.length - 1 - i) * 2, y = 15 - ((p || 0) / max) * 14;
        if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
      });
      ctx.stroke();
      return label;
    }
    reconnecting(table.dataset.statsWs, function (event) {
      const message = JSON.parse(event.data);
      if (message.t !== "stats") return;
      Object.keys(message.s).forEach(function (pk) {
        const s = message.s[pk];
        const points = (history[pk] = (history[pk] || []).concat([s.cpu]).slice(-30));
        const cell = document.querySelector('td[data-usage="' + pk + '"]');
        if (!cell) return;
        const label = draw(cell, points);
        label.textContent = (s.cpu === null ? "–" : s.cpu.toFixed(0) + "%") + " · " + formatBytes(s.mem) +
          (s.disk_limit ? " · disk " + Math.round((100 * s.disk) / s.disk_limit) + "%" : "");
        cell.dataset.disk = s.disk_limit ? String(s.disk) : "";
        cell.dataset.cpu = s.cpu === null ? "" : String(s.cpu);
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    const log = document.getElementById("log-card");
    if (log) logView(log);
    const stats = document.getElementById("stats-card");
    if (stats) statsView(stats);
    const terminal = document.getElementById("terminal-card");
    if (terminal) terminalView(terminal);
    const table = document.querySelector("[data-stats-ws]");
    if (table) usageCells(table);
  });
})();
