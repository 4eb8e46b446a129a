// meshfleet live page: polls the JSON status API (/api/...) and draws the
// groups, a device grid (one cell per device, ImageData), a hand-drawn chart,
// the image table and recent events. Vanilla JS, no build step.
"use strict";

const POLL_MS = 1500;
const HIDDEN_POLL_MS = 5000;
const MAX_EVENTS = 200;
const GRID_MAX_HEIGHT = 540;
const CELL_SIZES = [16, 14, 12, 10, 8, 6, 5, 4, 3, 2, 1];

// Colours of the upload states; names not listed get one by keyword, then
// from a fallback palette.
// Keys are normalised names (upper case, letters and digits only), so both
// "RELOAD_SCHEDULED" and "reloadScheduled" find their colour.
const STATE_COLOURS = {
  IDLE: "#d5d9df",
  NOTSTARTED: "#d5d9df",
  DOWN: "#59626d",
  UNREACHABLE: "#59626d",
  PENDING: "#b5cde8",
  ACCEPTED: "#8fb3dc",
  UPLOADING: "#4f8fd0",
  INPROGRESS: "#4f8fd0",
  PARTIAL: "#7b9cc0",
  UPLOADED: "#4fae7f",
  COMPLETE: "#4fae7f",
  REFUSED: "#e39a4c",
  FAILED: "#cf4f3c",
  STOPPED: "#d8b54a",
  BACKUPSET: "#6fbfb5",
  RELOADSCHEDULED: "#a58bd6",
  RELOADING: "#7c55c0",
  RUNNING: "#23715a",
};
const KEYWORD_COLOURS = [
  [/FAIL|ERROR|BAD/, "#cf4f3c"],
  [/REFUS|REJECT|INCOMPAT/, "#e39a4c"],
  [/DOWN|UNREACH|OFFLINE|LOST/, "#59626d"],
  [/RELOAD|REBOOT|LOAD/, "#7c55c0"],
  [/COMPLETE|UPLOADED|DONE/, "#4fae7f"],
  [/UPLOAD|PARTIAL|PROGRESS|TRANSFER/, "#4f8fd0"],
  [/PEND|WAIT|QUEUE/, "#b5cde8"],
  [/STOP|CANCEL|ABORT/, "#d8b54a"],
];
const FALLBACK_COLOURS = ["#8fa9c2", "#c29f8f", "#9fc28f", "#c28fb9", "#8fc2bd", "#b9b28a"];
const ACTION_COLOURS = {
  IDLE: ["#e8ebef", "#3d4852"],
  UPLOADING: ["#dde9f6", "#27507d"],
  UPLOADED: ["#dcefe4", "#24613f"],
  STOPPED: ["#f6ecd0", "#705813"],
  SETTING_BACKUP: ["#dcefed", "#25605a"],
  RELOAD_SCHEDULED: ["#e9e1f5", "#553a86"],
  RELOADING: ["#e4dbf3", "#4b2d82"],
};
const SERIES_COLOURS = { multicast: "#3b6ea8", unicast: "#d9822b" };
const GROUP_LINE_COLOURS = ["#2f8f6a", "#8a5cc2", "#c25d7a", "#5a8f2f", "#b08a2a", "#3a8fa0"];
// CSMP response codes (TransferResponse and friends), for refusal events.
const CSMP_CODES = {
  0: "OK", 1: "incompatible hardware", 2: "incomplete", 3: "unknown hash",
  4: "file too big", 5: "image check failed", 6: "invalid request",
  7: "invalid block size", 8: "pending reboot", 9: "image running",
  10: "no volume", 11: "duplicate transfer", 12: "matches RUN image",
  13: "matches BACKUP image",
};

const $ = (id) => document.getElementById(id);

const state = {
  groups: [],
  scope: "",            // grid scope: "" for all devices, else a group name
  imagesGroup: null,    // group of the image table
  serverOffset: 0,      // server time minus local time, seconds
  serverNow: null,
  grid: {
    key: null, version: null, eui: "", codes: new Uint8Array(0), legend: [],
    statesText: null, cols: 1, cell: 1, gap: 0, image: null, palette: [],
    pinnedFor: null, pinnedIn: null, pinnedAt: -1,
  },
  hover: -1,
  pinned: null,         // pinned EUI-64
  detailFor: null,
  detailTimer: 0,
  series: new Map(),    // second -> [multicast, unicast]
  completion: new Map(), // group -> Map(second -> fraction)
  seriesSince: 0,
  seriesLatest: null,
  eventsLast: 0,
};

// -- helpers ---------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined) continue;
    if (key === "class") node.className = value;
    else if (key === "style") node.setAttribute("style", value);
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function api(path, params) {
  const url = new URL(path, location.origin);
  for (const [key, value] of Object.entries(params || {})) {
    if (value !== null && value !== undefined && value !== "") {
      url.searchParams.set(key, value);
    }
  }
  const response = await fetch(url, { cache: "no-store", credentials: "same-origin" });
  if (!response.ok) {
    const error = new Error(`${response.status} ${response.statusText} for ${path}`);
    error.status = response.status;
    throw error;
  }
  return response.json();
}

function hashString(text) {
  let h = 0;
  for (let i = 0; i < text.length; i++) h = (h * 31 + text.charCodeAt(i)) | 0;
  return Math.abs(h);
}

function normState(name) {
  return String(name).toUpperCase().replace(/[^A-Z0-9]/g, "");
}

function stateLabel(name) {
  return String(name).replace(/([a-z])([A-Z])/g, "$1 $2").replace(/_/g, " ").toLowerCase();
}

function stateColour(name) {
  const upper = normState(name);
  if (STATE_COLOURS[upper]) return STATE_COLOURS[upper];
  for (const [pattern, colour] of KEYWORD_COLOURS) if (pattern.test(upper)) return colour;
  return FALLBACK_COLOURS[hashString(upper) % FALLBACK_COLOURS.length];
}

function rgb(hex) {
  const v = parseInt(hex.slice(1), 16);
  return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
}

function fmt(n) {
  return Number(n).toLocaleString("en-US");
}

function clock(seconds) {
  const d = new Date(seconds * 1000);
  return d.toLocaleTimeString("en-GB", { hour12: false });
}

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "never";
  const now = state.serverNow ?? Date.now() / 1000 + state.serverOffset;
  const s = Math.max(0, Math.round(now - seconds));
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  return `${(s / 3600).toFixed(1)} h ago`;
}

function utcText(iso) {
  if (!iso) return "";
  return iso.replace("T", " ").replace("Z", " UTC");
}

function pill(text, colours, extraClass) {
  const node = el("span", { class: "pill" + (extraClass ? " " + extraClass : "") }, text);
  if (colours) {
    node.style.background = colours[0];
    node.style.color = colours[1];
  }
  return node;
}

// -- groups ----------------------------------------------------------------

function renderGroups(groups) {
  state.groups = groups;
  const body = $("groups").querySelector("tbody");
  $("groups-empty").hidden = groups.length > 0;
  const rows = groups.map((g) => {
    const members = Math.max(g.members, 0);
    const pct = members ? (100 * g.complete) / members : 0;
    const bar = el("div", { class: "progress", title: "members by upload state" });
    const order = Object.keys(g.upload_states).sort(
      (a, b) => statePriority(a) - statePriority(b),
    );
    for (const name of order) {
      const count = g.upload_states[name];
      if (!count || !members) continue;
      bar.append(el("span", {
        style: `width:${(100 * count) / members}%;background:${stateColour(name)}`,
        title: `${name}: ${fmt(count)}`,
      }));
    }
    const progress = el("td", { "data-pct": pct.toFixed(1) });
    progress.append(bar, el("div", { class: "progress-text" },
      `${fmt(g.complete)} / ${fmt(members)} complete · ${pct.toFixed(1)} %`));
    const row = el("tr", { "data-group": g.name, "data-pct": pct.toFixed(1) },
      el("td", {},
        el("div", { class: "gname" }, g.name),
        el("div", { class: "gmeta" }, `#${g.group_id} · ${g.address}`)),
      el("td", { class: "num" }, fmt(members)),
      el("td", {}, pill(g.action_status, ACTION_COLOURS[g.action_status])),
      progress,
      el("td", { class: "small" }, g.image || "—"),
      el("td", { class: "small" }, utcText(g.scheduled_reload) || "—"),
    );
    if (g.name === state.scope) row.classList.add("selected");
    row.addEventListener("click", () => selectGroup(g.name));
    return row;
  });
  body.replaceChildren(...rows);

  const select = $("scope");
  const wanted = ["", ...groups.map((g) => g.name)];
  const have = Array.from(select.options).map((o) => o.value);
  if (wanted.join("\n") !== have.join("\n")) {
    select.replaceChildren(
      el("option", { value: "" }, "all devices"),
      ...groups.map((g) => el("option", { value: g.name }, `group ${g.name}`)),
    );
    select.value = state.scope;
  }
  if (!state.imagesGroup || !groups.some((g) => g.name === state.imagesGroup)) {
    state.imagesGroup = groups.length ? groups[0].name : null;
  }
}

// Order of states along a progress bar: done first, then in flight, then rest.
function statePriority(name) {
  const order = ["RUNNING", "RELOADING", "RELOADSCHEDULED", "BACKUPSET", "UPLOADED",
    "COMPLETE", "UPLOADING", "INPROGRESS", "PARTIAL", "ACCEPTED", "PENDING", "STOPPED",
    "REFUSED", "FAILED", "DOWN", "UNREACHABLE", "IDLE", "NOTSTARTED"];
  const i = order.indexOf(normState(name));
  return i < 0 ? order.length - 1.5 : i;
}

function selectGroup(name) {
  state.scope = name;
  $("scope").value = name;
  if (name) state.imagesGroup = name;
  for (const row of $("groups").querySelectorAll("tbody tr")) {
    row.classList.toggle("selected", row.dataset.group === name);
  }
  refreshSoon();
}

// -- device grid -------------------------------------------------------------

function decodeStates(text) {
  const raw = atob(text);
  const codes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) codes[i] = raw.charCodeAt(i);
  return codes;
}

async function pollGrid() {
  const g = state.grid;
  const key = state.scope;
  const data = await api("/api/grid", {
    group: key,
    version: g.key === key ? g.version : null,
  });
  if (state.scope !== key) return;
  let changed = g.key !== key;
  if (data.eui64 !== undefined) {
    g.eui = data.eui64;
    g.version = data.version;
    changed = true;
  }
  g.key = key;
  if (data.states !== g.statesText || changed) {
    g.statesText = data.states;
    g.codes = decodeStates(data.states);
    changed = true;
  }
  if (data.legend.join("\n") !== g.legend.join("\n")) {
    g.legend = data.legend;
    g.palette = data.legend.map((name) => rgb(stateColour(name)));
    changed = true;
  }
  $("grid-count").textContent = `${fmt(data.count)} devices`;
  if (changed) drawGrid(true);
  renderLegend();
}

function layoutGrid(count) {
  const width = Math.max(120, $("grid-wrap").clientWidth);
  let cell = 1;
  for (const size of CELL_SIZES) {
    const cols = Math.floor(width / size);
    if (Math.ceil(count / cols) * size <= GRID_MAX_HEIGHT) {
      cell = size;
      break;
    }
  }
  const cols = Math.max(1, Math.floor(width / cell));
  return { cell, cols, rows: Math.max(1, Math.ceil(count / cols)), gap: cell >= 5 ? 1 : 0 };
}

function drawGrid(rebuild) {
  const g = state.grid;
  const canvas = $("grid");
  const ctx = canvas.getContext("2d");
  const count = g.codes.length;
  if (rebuild || !g.image) {
    const { cell, cols, rows, gap } = layoutGrid(count);
    Object.assign(g, { cell, cols, gap });
    const w = cols * cell;
    const h = count ? rows * cell : 0;
    if (canvas.width !== w || canvas.height !== h) {
      canvas.width = w;
      canvas.height = h;
      canvas.style.width = `${w}px`;
      canvas.style.height = `${h}px`;
    }
    if (!w || !h) {
      g.image = null;
      return;
    }
    const image = ctx.createImageData(w, h);
    const px = new Uint32Array(image.data.buffer);
    const little = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
    const packed = g.palette.map(([r, gr, b]) =>
      little ? (255 << 24) | (b << 16) | (gr << 8) | r : (r << 24) | (gr << 16) | (b << 8) | 255);
    const unknown = little ? 0xffcccccc : 0xccccccff;
    const inner = cell - gap;
    for (let i = 0; i < count; i++) {
      const colour = packed[g.codes[i]] ?? unknown;
      const x0 = (i % cols) * cell;
      const y0 = Math.floor(i / cols) * cell;
      for (let y = 0; y < inner; y++) {
        const row = (y0 + y) * w + x0;
        for (let x = 0; x < inner; x++) px[row + x] = colour;
      }
    }
    g.image = image;
  }
  ctx.putImageData(g.image, 0, 0);
  for (const [index, colour] of [[state.hover, "#1f2933"], [pinnedIndex(), "#d0412b"]]) {
    if (index < 0 || index >= count) continue;
    const x = (index % g.cols) * g.cell;
    const y = Math.floor(index / g.cols) * g.cell;
    const size = Math.max(g.cell, 3);
    ctx.lineWidth = 2;
    ctx.strokeStyle = colour;
    ctx.strokeRect(x - 1, y - 1, size + 1, size + 1);
  }
}

function pinnedIndex() {
  const g = state.grid;
  if (!state.pinned) return -1;
  if (g.pinnedFor !== state.pinned || g.pinnedIn !== g.eui) {
    g.pinnedFor = state.pinned;
    g.pinnedIn = g.eui;
    g.pinnedAt = -1;
    const wanted = state.pinned.toUpperCase();
    for (let i = 0; i < g.eui.length; i += 16) {
      if (g.eui.substr(i, 16).toUpperCase() === wanted) {
        g.pinnedAt = i / 16;
        break;
      }
    }
  }
  return g.pinnedAt;
}

function renderLegend() {
  const g = state.grid;
  const counts = new Array(g.legend.length).fill(0);
  for (let i = 0; i < g.codes.length; i++) counts[g.codes[i]]++;
  const items = g.legend.map((name, code) => el("li", {
    "data-state": name, class: counts[code] ? null : "zero" },
    el("span", { class: "sw", style: `background:${stateColour(name)}` }),
    stateLabel(name),
    el("span", { class: "count" }, fmt(counts[code] || 0)),
  ));
  $("legend").replaceChildren(...items);
}

function cellAt(event) {
  const g = state.grid;
  const rect = $("grid").getBoundingClientRect();
  const x = Math.floor((event.clientX - rect.left) / g.cell);
  const y = Math.floor((event.clientY - rect.top) / g.cell);
  if (x < 0 || x >= g.cols || y < 0) return -1;
  const index = y * g.cols + x;
  return index < g.codes.length ? index : -1;
}

function euiAt(index) {
  return state.grid.eui.substr(index * 16, 16);
}

function onGridMove(event) {
  const index = cellAt(event);
  const tip = $("tip");
  if (index !== state.hover) {
    state.hover = index;
    drawGrid(false);
  }
  if (index < 0) {
    tip.hidden = true;
    return;
  }
  const g = state.grid;
  const name = g.legend[g.codes[index]] ?? "?";
  tip.textContent = `${euiAt(index)} · ${name}`;
  tip.hidden = false;
  const wrap = $("grid-wrap").getBoundingClientRect();
  tip.style.left = `${Math.min(event.clientX - wrap.left + 12, wrap.width - 200)}px`;
  tip.style.top = `${event.clientY - wrap.top + 14}px`;
  if (!state.pinned) {
    clearTimeout(state.detailTimer);
    state.detailTimer = setTimeout(() => showDevice(euiAt(index), false), 120);
  }
}

function onGridLeave() {
  $("tip").hidden = true;
  state.hover = -1;
  drawGrid(false);
}

function onGridClick(event) {
  const index = cellAt(event);
  if (index < 0) return;
  const eui = euiAt(index);
  pin(state.pinned === eui ? null : eui);
}

function pin(eui) {
  state.pinned = eui;
  drawGrid(false);
  if (eui) showDevice(eui, true);
}

async function showDevice(eui, pinned) {
  state.detailFor = eui;
  try {
    const d = await api(`/api/devices/${encodeURIComponent(eui)}`);
    if (state.detailFor !== eui) return;
    renderDevice(d, pinned);
  } catch (error) {
    if (state.detailFor === eui) {
      $("device").replaceChildren(el("p", { class: "muted" }, `${eui}: ${error.message}`));
    }
  }
}

function renderDevice(d, pinned) {
  const slots = el("table", {},
    el("thead", {}, el("tr", {},
      el("th", {}, "Slot"), el("th", {}, "Image"), el("th", { class: "num" }, "Blocks"))),
    el("tbody", {}, ...d.slots.map((s) => {
      const share = s.total_blocks ? (100 * s.blocks) / s.total_blocks : 0;
      return el("tr", {},
        el("td", {}, s.role),
        el("td", { class: "image" }, s.name ? `${s.name}` : "empty",
          s.version ? el("div", { class: "muted" }, s.version) : null),
        el("td", { class: "num" }, s.total_blocks ? `${fmt(s.blocks)} / ${fmt(s.total_blocks)}` : "—",
          el("div", { class: "mini" }, el("span", { style: `width:${share}%` }))),
      );
    })),
  );
  $("device").replaceChildren(
    el("h3", {}, d.eui64),
    pill(d.upload_state, [stateColour(d.upload_state), "#fff"]),
    " ",
    pill(d.up ? "up" : "down", d.up ? ["#dcefe4", "#24613f"] : ["#e3e5e8", "#3d4852"]),
    el("dl", {},
      el("dt", {}, "address"), el("dd", {}, d.address),
      el("dt", {}, "hardware"), el("dd", {}, d.hardware_id),
      el("dt", {}, "running"), el("dd", {}, d.running_version ?? "—"),
      el("dt", {}, "group"), el("dd", {}, d.group ?? "—"),
      el("dt", {}, "last heard"),
      el("dd", { title: d.last_heard ? clock(d.last_heard) : "" }, ago(d.last_heard)),
    ),
    slots,
    el("p", { class: "pinned-note" },
      pinned ? "Kept here; click the cell again to release." : "Click the cell to keep it here."),
  );
}

// -- chart -------------------------------------------------------------------

async function pollSeries() {
  const data = await api("/api/series", { since: state.seriesSince || null });
  for (let i = 0; i < data.t.length; i++) {
    state.series.set(data.t[i], [data.multicast[i], data.unicast[i]]);
  }
  for (const [group, points] of Object.entries(data.completion)) {
    if (!state.completion.has(group)) state.completion.set(group, new Map());
    const line = state.completion.get(group);
    for (const [t, done, total] of points) line.set(t, total ? done / total : 0);
  }
  if (data.latest !== null) {
    state.seriesLatest = data.latest;
    state.seriesSince = data.latest;
    const horizon = data.latest - data.window;
    for (const t of state.series.keys()) if (t <= horizon) state.series.delete(t);
    for (const line of state.completion.values()) {
      for (const t of line.keys()) if (t <= horizon) line.delete(t);
    }
  }
  drawChart();
}

function niceMax(value) {
  if (value <= 5) return 5;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (value <= step * magnitude) return step * magnitude;
  }
  return 10 * magnitude;
}

function drawChart() {
  const canvas = $("chart");
  const dpr = window.devicePixelRatio || 1;
  const cssW = canvas.clientWidth;
  const cssH = canvas.clientHeight;
  if (!cssW || !cssH) return;
  if (canvas.width !== Math.round(cssW * dpr) || canvas.height !== Math.round(cssH * dpr)) {
    canvas.width = Math.round(cssW * dpr);
    canvas.height = Math.round(cssH * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, cssW, cssH);
  const pad = { l: 60, r: 44, t: 10, b: 26 };
  const w = cssW - pad.l - pad.r;
  const h = cssH - pad.t - pad.b;
  const nowSecond = Math.floor(state.serverNow ?? Date.now() / 1000);
  const seconds = Array.from(state.series.keys());
  const end = Math.max(state.seriesLatest ?? nowSecond, nowSecond);
  const first = seconds.length ? Math.min(...seconds) : end - 60;
  const span = Math.min(900, Math.max(60, end - first));
  const start = end - span;
  // The current second is still filling: draw rates up to the one before.
  const rateEnd = end - 1;
  let peak = 0;
  for (const [t, [mc, uc]] of state.series) if (t >= start) peak = Math.max(peak, mc, uc);
  const top = niceMax(peak);
  const xAt = (t) => pad.l + ((t - start) / span) * w;
  const yRate = (v) => pad.t + h - (v / top) * h;
  const yPct = (f) => pad.t + h - f * h;

  ctx.font = "11px system-ui, sans-serif";
  ctx.strokeStyle = "#eceef1";
  ctx.fillStyle = "#6b7580";
  ctx.lineWidth = 1;
  ctx.textBaseline = "middle";
  for (let i = 0; i <= 4; i++) {
    const y = Math.round(pad.t + (h * i) / 4) + 0.5;
    ctx.beginPath();
    ctx.moveTo(pad.l, y);
    ctx.lineTo(pad.l + w, y);
    ctx.stroke();
    ctx.textAlign = "right";
    ctx.fillText(fmt(Math.round((top * (4 - i)) / 4)), pad.l - 6, y);
    ctx.textAlign = "left";
    ctx.fillText(`${(4 - i) * 25}%`, pad.l + w + 6, y);
  }
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  const tickStep = [15, 30, 60, 120, 300].find((s) => span / s <= 6) || 300;
  for (let t = Math.ceil(start / tickStep) * tickStep; t <= end; t += tickStep) {
    const x = Math.round(xAt(t)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(x, pad.t + h);
    ctx.lineTo(x, pad.t + h + 4);
    ctx.strokeStyle = "#c9ced4";
    ctx.stroke();
    ctx.fillText(clock(t).slice(0, tickStep >= 60 ? 5 : 8), x, pad.t + h + 7);
  }
  ctx.save();
  ctx.translate(10, pad.t + h / 2);
  ctx.rotate(-Math.PI / 2);
  ctx.textAlign = "center";
  ctx.textBaseline = "middle";
  ctx.fillText("blocks / s", 0, 0);
  ctx.restore();

  ctx.save();
  ctx.beginPath();
  ctx.rect(pad.l, pad.t - 2, w, h + 4);
  ctx.clip();
  // Completion: one dashed step line per group, right axis.
  let index = 0;
  const chartLegend = [];
  for (const [group, line] of state.completion) {
    const colour = GROUP_LINE_COLOURS[index++ % GROUP_LINE_COLOURS.length];
    chartLegend.push([`${group} complete`, colour, true]);
    const points = Array.from(line.entries()).filter(([t]) => t >= start - 60)
      .sort((a, b) => a[0] - b[0]);
    if (!points.length) continue;
    ctx.setLineDash([5, 4]);
    ctx.strokeStyle = colour;
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    points.forEach(([t, f], i) => {
      const x = xAt(t);
      if (i === 0) ctx.moveTo(x, yPct(f));
      else ctx.lineTo(x, yPct(f));
      const next = points[i + 1];
      ctx.lineTo(next ? xAt(next[0]) : xAt(Math.min(end, t + 5)), yPct(f));
    });
    ctx.stroke();
  }
  ctx.setLineDash([]);
  // Rates: filled multicast, unicast line, a point per second (gaps are zero).
  for (const [which, colour] of [[0, SERIES_COLOURS.multicast], [1, SERIES_COLOURS.unicast]]) {
    ctx.beginPath();
    for (let t = start; t <= rateEnd; t++) {
      const v = (state.series.get(t) || [0, 0])[which];
      if (t === start) ctx.moveTo(xAt(t), yRate(v));
      else ctx.lineTo(xAt(t), yRate(v));
    }
    ctx.strokeStyle = colour;
    ctx.lineWidth = 1.6;
    ctx.stroke();
    if (which === 0) {
      ctx.lineTo(xAt(rateEnd), yRate(0));
      ctx.lineTo(xAt(start), yRate(0));
      ctx.closePath();
      ctx.fillStyle = "rgba(59, 110, 168, 0.12)";
      ctx.fill();
    }
  }
  ctx.restore();
  ctx.strokeStyle = "#c9ced4";
  ctx.beginPath();
  ctx.moveTo(pad.l + 0.5, pad.t);
  ctx.lineTo(pad.l + 0.5, pad.t + h + 0.5);
  ctx.lineTo(pad.l + w, pad.t + h + 0.5);
  ctx.stroke();

  const items = [["multicast blocks/s", SERIES_COLOURS.multicast, false],
    ["unicast blocks/s", SERIES_COLOURS.unicast, false], ...chartLegend];
  $("chart-legend").replaceChildren(...items.map(([label, colour, dashed]) =>
    el("li", {}, el("span", { class: "line" + (dashed ? " dashed" : ""),
      style: `border-color:${colour}` }), label)));
}

// -- images and events ---------------------------------------------------------

async function pollImages() {
  const group = state.imagesGroup;
  if (!group) {
    $("images").querySelector("tbody").replaceChildren();
    $("images-group").textContent = "";
    $("images-status").textContent = "";
    return;
  }
  const data = await api("/api/images", { group });
  if (state.imagesGroup !== group) return;
  $("images-group").textContent = `· group ${group}`;
  $("images-status").textContent = `action status ${data.action_status}` +
    (data.scheduled_reload ? ` · reload at ${utcText(data.scheduled_reload)}` : "");
  const rows = data.images.map((image) => el("tr", {},
    el("td", {}, image.name),
    el("td", {}, image.version),
    el("td", { class: "num" }, fmt(image.running)),
    el("td", { class: "num" }, fmt(image.uploaded)),
    el("td", { class: "num" }, fmt(image.backup)),
  ));
  if (!rows.length) {
    rows.push(el("tr", {}, el("td", { colSpan: 5, class: "muted" }, "no images reported")));
  }
  $("images").querySelector("tbody").replaceChildren(...rows);
}

async function pollEvents(last) {
  if (last === state.eventsLast) return;
  const data = await api("/api/events", { since: state.eventsLast, limit: MAX_EVENTS });
  state.eventsLast = data.last;
  const list = $("events");
  for (const e of data.events) list.prepend(renderEvent(e));
  while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
  $("events-empty").hidden = list.children.length > 0;
}

function renderEvent(e) {
  const meta = [];
  if (e.group) meta.push(`group ${e.group}`);
  if (e.code !== null && e.code !== undefined) {
    const meaning = e.kind === "refusal" || e.kind === "failure" ? CSMP_CODES[e.code] : null;
    meta.push(meaning ? `code ${e.code} (${meaning})` : `code ${e.code}`);
  }
  const text = el("div", {}, e.text, " ");
  if (e.eui64) {
    const link = el("a", { href: "#", title: "show this device" }, e.eui64);
    link.addEventListener("click", (event) => {
      event.preventDefault();
      if (e.group && state.scope && state.scope !== e.group) selectGroup(e.group);
      pin(e.eui64);
    });
    text.append(link);
  }
  if (meta.length) text.append(el("div", { class: "meta" }, meta.join(" · ")));
  return el("li", { "data-seq": e.seq },
    el("time", {}, clock(e.t)),
    el("div", {}, pill(e.kind, null, `kind-${e.kind}`)),
    text,
  );
}

// -- polling -------------------------------------------------------------------

function setConnection(ok, text) {
  $("conn").dataset.state = ok ? "live" : "offline";
  $("conn-text").textContent = text;
}

let pollTimer = 0;
let polling = false;

async function poll() {
  clearTimeout(pollTimer);
  if (polling) return;
  polling = true;
  try {
    const status = await api("/api/status");
    state.serverNow = status.time;
    state.serverOffset = status.time - Date.now() / 1000;
    renderGroups(status.groups);
    const jobs = [pollGrid(), pollSeries(), pollEvents(status.events_last), pollImages()];
    if (state.pinned) jobs.push(showDevice(state.pinned, true));
    await Promise.all(jobs);
    setConnection(true, `live · ${clock(status.time)}`);
  } catch (error) {
    const text = error.status === 401 ? "not authorised" : "offline, retrying";
    setConnection(false, text);
    console.warn("poll failed", error);
  } finally {
    polling = false;
    pollTimer = setTimeout(poll, document.hidden ? HIDDEN_POLL_MS : POLL_MS);
  }
}

function refreshSoon() {
  clearTimeout(pollTimer);
  pollTimer = setTimeout(poll, 0);
}

function init() {
  const grid = $("grid");
  grid.addEventListener("mousemove", onGridMove);
  grid.addEventListener("mouseleave", onGridLeave);
  grid.addEventListener("click", onGridClick);
  $("scope").addEventListener("change", (event) => selectGroup(event.target.value));
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") pin(null);
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) refreshSoon();
  });
  let resizeTimer = 0;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      drawGrid(true);
      drawChart();
    }, 150);
  });
  poll();
}

init();
