// petloop viewer: CT with PET fused, three planes and a PET MIP; clicks and scribbles (strokes
// drawn on a slice) go to the server, the mask comes back as gzip-packed bits. Arrays are flat,
// x (i) fastest, then j, then k.

const $ = (id) => document.getElementById(id);
const api = (path) => `/api${path}`;

const state = {
  session: null,      // the server's SessionState
  shape: null,        // [ni, nj, nk]
  spacing: null,
  ct: null,           // Int16Array
  pet: null,          // Float32Array
  mask: null,         // Uint8Array (0/1)
  maskVersion: -1,
  mipPet: null,       // Float32Array ni*nk (max over j), argmax j in mipArg
  mipArg: null,
  mipMask: null,
  pos: [0, 0, 0],     // crosshair (i, j, k)
  flips: { i: false, j: false, k: true },
  pending: [],        // clicks sent, not yet answered
  scribble: false,    // drag to draw a stroke instead of clicking
  drawing: null,      // the stroke being drawn: {view, kind, points}
  pendingStrokes: [], // strokes sent, not yet answered
  inflight: 0,        // changes sent, not yet drawn
  lastRoundTrip: null,
};
window.petloop = state;  // for tests and the console

// ---------------------------------------------------------------------------------------------
async function gunzip(response) {
  const stream = response.body.pipeThrough(new DecompressionStream("gzip"));
  return new Response(stream).arrayBuffer();
}

async function request(path, options = {}) {
  // a busy session answers 429 (its queue of changes is full) with Retry-After: the change was
  // not applied, so it is sent again after the pause, a few times at most
  let res = await fetch(api(path), options);
  for (let attempt = 0; res.status === 429 && attempt < 5; attempt += 1) {
    const wait = Math.min(Number(res.headers.get("Retry-After")) || 1, 10);
    status(`Busy: sending again in ${wait} s...`, "busy");
    await new Promise((resolve) => setTimeout(resolve, wait * 1000));
    res = await fetch(api(path), options);
  }
  if (!res.ok) {
    let detail = res.statusText;
    try { const body = await res.json(); detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail); } catch (e) { /* not JSON */ }
    throw new Error(`${res.status}: ${detail}`);
  }
  return res;
}

function status(text, kind = "") {
  const el = $("status");
  el.textContent = text;
  el.className = kind;
}

// ---------------------------------------------------------------------------------------------
async function loadCases() {
  const res = await request("/cases");
  const cases = await res.json();
  const sel = $("case-select");
  sel.innerHTML = "";
  for (const c of cases) {
    const opt = document.createElement("option");
    opt.value = c.name;
    opt.textContent = c.tracer ? `${c.name} (${c.tracer.toUpperCase()})` : c.name;
    sel.appendChild(opt);
  }
  if (!cases.length) {
    sel.innerHTML = "<option value=''>no cases (upload)</option>";
  }
}

async function openSession(makeRequest, label) {
  // the server answers once the case is set up; the images are drawn while it makes the first
  // mask, which is fetched when the session's version reaches 0
  status(`Opening ${label}: reading, tracer...`, "busy");
  const t0 = performance.now();
  try {
    if (state.session) {
      fetch(api(`/sessions/${state.session.id}`), { method: "DELETE" }).catch(() => {});
    }
    const res = await makeRequest();
    const s = await res.json();
    state.session = s;
    state.shape = s.shape;
    state.spacing = s.spacing;
    state.mask = null;
    state.mipMask = null;
    state.report = null;
    state.maskVersion = -1;
    const d = s.direction;
    state.flips = { i: d[0] < 0, j: d[4] < 0, k: d[8] > 0 };
    const [ctRes, petRes] = await Promise.all([
      request(`/sessions/${s.id}/volume/ct`), request(`/sessions/${s.id}/volume/pet`)]);
    const scale = Number(petRes.headers.get("X-Scale")) || 1;
    const [ctBuf, petBuf] = await Promise.all([gunzip(ctRes), gunzip(petRes)]);
    state.ct = new Int16Array(ctBuf);
    const packed = new Uint16Array(petBuf);
    const pet = new Float32Array(packed.length);
    for (let n = 0; n < packed.length; n++) pet[n] = packed[n] * scale;
    state.pet = pet;
    computePetMip();
    centreOnHottest();
    state.openSeconds = (performance.now() - t0) / 1000;
    showSession(s);
    status(`${s.case} open (${state.openSeconds.toFixed(1)} s); first mask...`, "busy");
    let now = s;
    while (now.version < 0 && !now.error && state.session?.id === s.id) {
      await new Promise((resolve) => setTimeout(resolve, 300));
      now = await (await request(`/sessions/${s.id}`)).json();
    }
    if (now.error) throw new Error(now.error);
    if (state.session?.id !== s.id) return;
    if (now.version > (state.session.version ?? -1)) state.session = now;
    await refreshMask(state.session);
    if (state.report?.lesions?.[0]) centreOnHottest();
    status(`${s.case} open (${state.openSeconds.toFixed(1)} s, first mask after ` +
      `${((performance.now() - t0) / 1000).toFixed(1)} s).`);
  } catch (err) {
    status(`Could not open ${label}: ${err.message}`, "error");
  }
}

function centreOnHottest() {
  const [ni, , nk] = state.shape;
  let best = -Infinity, at = 0;
  for (let n = 0; n < ni * nk; n++) if (state.mipPet[n] > best) { best = state.mipPet[n]; at = n; }
  const i = at % ni, k = Math.floor(at / ni);
  state.pos = [i, state.mipArg[at], k];
  // where a lesion was found, start at the largest one instead (not at the brain or bladder)
  const les = state.report?.lesions?.[0];
  if (les) state.pos = les.hottest_voxel.slice();
  state.pos = state.pos.map((v, a) => Math.max(0, Math.min(state.shape[a] - 1, v)));
  drawAll();
}

// ---------------------------------------------------------------------------------------------
function computePetMip() {
  const [ni, nj, nk] = state.shape;
  const mip = new Float32Array(ni * nk), arg = new Int32Array(ni * nk);
  for (let k = 0; k < nk; k++) for (let j = 0; j < nj; j++) {
    const row = ni * (j + nj * k);
    for (let i = 0; i < ni; i++) {
      const v = state.pet[row + i];
      if (j === 0 || v > mip[i + ni * k]) { mip[i + ni * k] = v; arg[i + ni * k] = j; }
    }
  }
  state.mipPet = mip;
  state.mipArg = arg;
}

function computeMaskMip(box) {
  // the MIP columns (i, k) of ``box`` [i0, i1, j0, j1, k0, k1] (all of them without one)
  const [ni, nj, nk] = state.shape;
  const [i0, i1, , , k0, k1] = box || [0, ni, 0, nj, 0, nk];
  const mip = state.mipMask && box ? state.mipMask : new Uint8Array(ni * nk);
  for (let k = k0; k < k1; k++) {
    for (let i = i0; i < i1; i++) mip[i + ni * k] = 0;
    for (let j = 0; j < nj; j++) {
      const row = ni * (j + nj * k);
      for (let i = i0; i < i1; i++) if (state.mask[row + i]) mip[i + ni * k] = 1;
    }
  }
  state.mipMask = mip;
}

async function refreshMask(s) {
  // only the box that changed since the version held comes back (X-Box), bits x fastest
  if (s.version <= state.maskVersion) return;
  const held = state.mask ? state.maskVersion : -1;
  const res = await request(`/sessions/${s.id}/mask${held >= 0 ? `?since=${held}` : ""}`);
  const version = Number(res.headers.get("X-Mask-Version"));
  const header = res.headers.get("X-Box") || "none";
  const bits = new Uint8Array(await gunzip(res));
  if (version <= state.maskVersion || (state.mask ? state.maskVersion : -1) !== held) return;
  const [ni, nj, nk] = state.shape;
  if (header !== "none") {
    const [i0, i1, j0, j1, k0, k1] = header.split(",").map(Number);
    const whole = i0 === 0 && j0 === 0 && k0 === 0 && i1 === ni && j1 === nj && k1 === nk;
    const mask = state.mask && !whole ? state.mask : new Uint8Array(ni * nj * nk);
    const bi = i1 - i0, bj = j1 - j0;
    for (let k = k0; k < k1; k++) for (let j = j0; j < j1; j++) {
      const row = i0 + ni * (j + nj * k), at = bi * ((j - j0) + bj * (k - k0));
      for (let i = 0; i < bi; i++) {
        const n = at + i;
        mask[row + i] = (bits[n >> 3] >> (n & 7)) & 1;
      }
    }
    state.mask = mask;
    computeMaskMip(whole ? null : [i0, i1, j0, j1, k0, k1]);
  }
  state.maskVersion = version;
  const rep = await (await request(`/sessions/${s.id}/report`)).json();
  state.report = rep;
  showSession(s);
  showReport(rep);
  drawAll();
}

// ---------------------------------------------------------------------------------------------
// views: each maps screen pixels to voxels through (h axis, v axis, fixed axis)
const VIEWS = {
  axial: { h: 0, v: 1, fixed: 2 },
  coronal: { h: 0, v: 2, fixed: 1 },
  sagittal: { h: 1, v: 2, fixed: 0 },
  mip: { h: 0, v: 2, fixed: 1 },
};
const AXIS = ["i", "j", "k"];

function flipped(axis) {
  return state.flips[AXIS[axis]];
}

function layout(canvas, view) {
  const { h, v } = VIEWS[view];
  const nh = state.shape[h], nv = state.shape[v];
  const wmm = nh * state.spacing[h], hmm = nv * state.spacing[v];
  const W = canvas.width, H = canvas.height;
  const scale = Math.min(W / wmm, H / hmm);
  const dw = wmm * scale, dh = hmm * scale;
  return { h, v, nh, nv, x0: (W - dw) / 2, y0: (H - dh) / 2, dw, dh };
}

function voxelAt(canvas, view, ev) {
  const r = canvas.getBoundingClientRect();
  const px = (ev.clientX - r.left) * canvas.width / r.width;
  const py = (ev.clientY - r.top) * canvas.height / r.height;
  const L = layout(canvas, view);
  let a = Math.floor((px - L.x0) / L.dw * L.nh), b = Math.floor((py - L.y0) / L.dh * L.nv);
  if (a < 0 || b < 0 || a >= L.nh || b >= L.nv) return null;
  if (flipped(L.h)) a = L.nh - 1 - a;
  if (flipped(L.v)) b = L.nv - 1 - b;
  const p = state.pos.slice();
  p[L.h] = a;
  p[L.v] = b;
  if (view === "mip") p[1] = state.mipArg[a + state.shape[0] * b];
  return p;
}

function screenOf(L, p) {
  let a = p[L.h], b = p[L.v];
  if (flipped(L.h)) a = L.nh - 1 - a;
  if (flipped(L.v)) b = L.nv - 1 - b;
  return [L.x0 + (a + 0.5) / L.nh * L.dw, L.y0 + (b + 0.5) / L.nv * L.dh];
}

function hot(t) {  // a black-red-yellow-white colour map
  return [Math.min(1, t * 3) * 255, Math.min(1, Math.max(0, t * 3 - 1)) * 255,
    Math.min(1, Math.max(0, t * 3 - 2)) * 255];
}

function drawView(view) {
  const canvas = $(`view-${view}`);
  const size = Math.round(canvas.clientWidth * (window.devicePixelRatio || 1)) || 400;
  if (canvas.width !== size) { canvas.width = size; canvas.height = size; }
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  if (!state.pet) return;
  const L = layout(canvas, view);
  const [ni, nj] = state.shape;
  const img = new ImageData(L.nh, L.nv);
  const [win, lev] = $("ct-preset").value.split(",").map(Number);
  const opacity = Number($("pet-opacity").value), suvMax = Number($("suv-max").value);
  const outline = $("mask-mode").value === "outline", showMask = $("mask-mode").value !== "off";
  const p = state.pos.slice();
  const idx = (q) => q[0] + ni * (q[1] + nj * q[2]);
  const inMask = (a, b) => {
    if (a < 0 || b < 0 || a >= L.nh || b >= L.nv) return 0;
    if (view === "mip") return state.mipMask ? state.mipMask[a + ni * b] : 0;
    const q = p.slice(); q[L.h] = a; q[L.v] = b;
    return state.mask ? state.mask[idx(q)] : 0;
  };
  for (let b = 0; b < L.nv; b++) {
    for (let a = 0; a < L.nh; a++) {
      let r, g, bl;
      if (view === "mip") {
        const t = Math.min(1, state.mipPet[a + ni * b] / suvMax);
        r = g = bl = 255 * (1 - t);  // black on white, as readers look at MIPs
      } else {
        const q = p.slice(); q[L.h] = a; q[L.v] = b;
        const n = idx(q);
        const c = Math.min(1, Math.max(0, (state.ct[n] - (lev - win / 2)) / win)) * 255;
        const t = Math.min(1, Math.max(0, state.pet[n] / suvMax));
        const [hr, hg, hb] = hot(t);
        const w = opacity * Math.min(1, t * 2);
        r = c * (1 - w) + hr * w; g = c * (1 - w) + hg * w; bl = c * (1 - w) + hb * w;
      }
      if (showMask && inMask(a, b)) {
        const edge = !(inMask(a - 1, b) && inMask(a + 1, b) && inMask(a, b - 1) && inMask(a, b + 1));
        if (!outline || edge) {
          const w = outline ? 1 : 0.45;
          r = r * (1 - w) + 61 * w; g = g * (1 - w) + 220 * w; bl = bl * (1 - w) + 132 * w;
        }
      }
      const x = flipped(L.h) ? L.nh - 1 - a : a;
      const y = flipped(L.v) ? L.nv - 1 - b : b;
      const o = 4 * (x + L.nh * y);
      img.data[o] = r; img.data[o + 1] = g; img.data[o + 2] = bl; img.data[o + 3] = 255;
    }
  }
  const off = new OffscreenCanvas(L.nh, L.nv);
  off.getContext("2d").putImageData(img, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(off, L.x0, L.y0, L.dw, L.dh);
  // crosshair
  const [cx, cy] = screenOf(L, state.pos);
  ctx.strokeStyle = "rgba(80, 160, 255, 0.5)";
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.moveTo(cx, L.y0); ctx.lineTo(cx, L.y0 + L.dh);
  ctx.moveTo(L.x0, cy); ctx.lineTo(L.x0 + L.dw, cy);
  ctx.stroke();
  // clicks: those on this slice (all of them on the MIP), pending ones dashed
  const fixed = VIEWS[view].fixed;
  const all = state.session?.clicks || [];
  drawStrokes(ctx, L, view, all.filter((c) => c.stroke));
  const clicks = all.filter((c) => !c.stroke).map((c) => ({ ...c, pending: false }))
    .concat(state.pending.map((c) => ({ ...c, pending: true })));
  for (const c of clicks) {
    if (view !== "mip" && Math.abs(c.point[fixed] - state.pos[fixed]) > 1) continue;
    const [x, y] = screenOf(L, c.point);
    const rad = Math.max(5, canvas.width / 70);
    ctx.lineWidth = 2;
    ctx.setLineDash(c.pending ? [3, 3] : []);
    ctx.strokeStyle = c.kind === "tumor" ? "#ffd400" : "#35c8ff";
    ctx.beginPath();
    if (c.kind === "tumor") ctx.arc(x, y, rad, 0, 2 * Math.PI);
    else { ctx.moveTo(x - rad, y - rad); ctx.lineTo(x + rad, y + rad); ctx.moveTo(x + rad, y - rad); ctx.lineTo(x - rad, y + rad); }
    ctx.stroke();
    ctx.setLineDash([]);
  }
  if (view !== "mip") {
    $(`pos-${view}`).textContent = `${AXIS[fixed]} = ${state.pos[fixed] + 1} / ${state.shape[fixed]}`;
  }
}

const KIND_COLOUR = { tumor: "#ffd400", background: "#35c8ff" };

function drawStrokes(ctx, L, view, voxels) {
  // a stroke's voxels on this slice (all of them on the MIP) as filled voxels; the stroke being
  // drawn and those sent but not answered as lines through their points
  const fixed = VIEWS[view].fixed;
  const size = Math.max(2, L.dw / L.nh);
  for (const c of voxels) {
    if (view !== "mip" && c.point[fixed] !== state.pos[fixed]) continue;
    const [x, y] = screenOf(L, c.point);
    ctx.fillStyle = KIND_COLOUR[c.kind];
    ctx.globalAlpha = 0.85;
    ctx.fillRect(x - size / 2, y - size / 2, size, size);
  }
  ctx.globalAlpha = 1;
  const lines = state.pendingStrokes.slice();
  if (state.drawing && state.drawing.view === view) lines.push(state.drawing);
  for (const s of lines) {
    if (view !== "mip" && s.view !== view) continue;
    ctx.strokeStyle = KIND_COLOUR[s.kind];
    ctx.lineWidth = 2;
    ctx.setLineDash(s === state.drawing ? [] : [4, 3]);
    ctx.beginPath();
    s.points.forEach((p, n) => {
      const [x, y] = screenOf(L, p);
      if (n === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    if (s.points.length === 1) { const [x, y] = screenOf(L, s.points[0]); ctx.lineTo(x + 0.5, y); }
    ctx.stroke();
    ctx.setLineDash([]);
  }
}

function drawAll() {
  for (const v of Object.keys(VIEWS)) drawView(v);
}

// ---------------------------------------------------------------------------------------------
function showSession(s) {
  $("info-case").textContent = s.case;
  $("info-tracer").textContent = `${s.tracer.toUpperCase()} (p = ${s.tracer_probability.toFixed(2)})`;
  $("info-model").textContent = s.model ? `${s.model}; ${s.tta}` : "first mask being made";
  const single = s.clicks.filter((c) => !c.stroke);
  const nt = single.filter((c) => c.kind === "tumor").length;
  $("click-count").textContent = single.length;
  $("click-tumor").textContent = nt;
  $("click-background").textContent = single.length - nt;
  const strokes = new Map();  // stroke number -> its voxels, in order
  for (const c of s.clicks) {
    if (c.stroke) strokes.set(c.stroke, [...(strokes.get(c.stroke) || []), c]);
  }
  $("stroke-count").textContent = strokes.size;
  const list = $("click-list");
  list.innerHTML = "";
  const listed = new Set();
  for (const c of s.clicks) {
    if (c.stroke) {
      if (listed.has(c.stroke)) continue;
      listed.add(c.stroke);
      const voxels = strokes.get(c.stroke);
      const li = document.createElement("li");
      li.className = `${c.kind} stroke`;
      li.textContent = `${c.kind} stroke, ${voxels.length} voxel${voxels.length > 1 ? "s" : ""} ` +
        `from [${c.point.join(", ")}]`;
      const go = document.createElement("button");
      go.textContent = "go";
      go.onclick = () => { state.pos = c.point.slice(); drawAll(); };
      const rm = document.createElement("button");
      rm.textContent = "remove";
      rm.onclick = () => change(`/sessions/${s.id}/strokes/${c.stroke}`, { method: "DELETE" }, "Removing a stroke");
      li.append(go, rm);
      list.appendChild(li);
      continue;
    }
    const li = document.createElement("li");
    li.className = c.kind;
    li.textContent = `${c.kind} [${c.point.join(", ")}]`;
    const go = document.createElement("button");
    go.textContent = "go";
    go.onclick = () => { state.pos = c.point.slice(); drawAll(); };
    const rm = document.createElement("button");
    rm.textContent = "remove";
    rm.onclick = () => change(`/sessions/${s.id}/clicks/${c.index}`, { method: "DELETE" }, "Removing a click");
    li.append(go, rm);
    list.appendChild(li);
  }
  $("export-mask").href = api(`/sessions/${s.id}/mask.nii.gz`);
  $("export-csv").href = api(`/sessions/${s.id}/report.csv`);
}

function showReport(rep) {
  $("report-totals").textContent = `${rep.lesion_count} lesions, TMTV ${rep.tmtv_ml.toFixed(1)} ml, ` +
    `TLG ${rep.total_tlg.toFixed(1)}, SUVmax ${rep.suv_max.toFixed(1)}`;
  const body = $("report-table").querySelector("tbody");
  body.innerHTML = "";
  for (const les of rep.lesions) {
    const tr = document.createElement("tr");
    for (const v of [les.id, les.volume_ml.toFixed(2), les.suv_max.toFixed(1), les.suv_mean.toFixed(1), les.tlg.toFixed(1)]) {
      const td = document.createElement("td");
      td.textContent = v;
      tr.appendChild(td);
    }
    tr.onclick = () => { state.pos = les.hottest_voxel.slice(); drawAll(); };
    body.appendChild(tr);
  }
  const blob = new Blob([JSON.stringify(rep, null, 2)], { type: "application/json" });
  const a = $("export-json");
  if (a.href.startsWith("blob:")) URL.revokeObjectURL(a.href);
  a.href = URL.createObjectURL(blob);
  a.download = `${state.session.case.replace(/[^\w.-]/g, "_")}_report.json`;
}

async function change(path, options, what, pendingClick = null) {
  if (!state.session) return;
  const t0 = performance.now();
  state.inflight += 1;
  if (pendingClick) state.pending.push(pendingClick);
  drawAll();
  status(`${what}...`, "busy");
  try {
    const res = await request(path, options);
    const s = await res.json();
    if (s.version > (state.session?.version ?? -1)) state.session = s;
    await refreshMask(state.session);
    const ms = performance.now() - t0;
    state.lastRoundTrip = ms;
    $("info-latency").textContent = `${(ms / 1000).toFixed(2)} s round trip (network ${s.seconds.network.toFixed(2)} s)`;
    status(`${what}: done.`);
  } catch (err) {
    status(`${what} failed: ${err.message}`, "error");
  } finally {
    if (pendingClick) state.pending.splice(state.pending.indexOf(pendingClick), 1);
    drawAll();
    state.inflight -= 1;
  }
}

function addClick(kind, point) {
  const click = { kind, point };
  return change(`/sessions/${state.session.id}/clicks`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(click),
  }, `Adding a ${kind} click`, click);
}

async function addStroke(stroke) {
  // the vertices go to the server, which draws the digital lines between them
  state.pendingStrokes.push(stroke);
  try {
    await change(`/sessions/${state.session.id}/strokes`, {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ kind: stroke.kind, points: stroke.points }),
    }, `Adding a ${stroke.kind} stroke`);
  } finally {
    state.pendingStrokes.splice(state.pendingStrokes.indexOf(stroke), 1);
    drawAll();
  }
}

function setScribble(on) {
  state.scribble = on;
  $("scribble").setAttribute("aria-pressed", String(on));
  $("scribble").textContent = on ? "Scribble: on" : "Scribble: off";
  for (const v of Object.keys(VIEWS)) $(`view-${v}`).classList.toggle("scribbling", on && v !== "mip");
}

function endStroke() {
  const s = state.drawing;
  state.drawing = null;
  if (s && state.session) addStroke(s);
}

// ---------------------------------------------------------------------------------------------
let hoverView = "axial";
function bindView(view) {
  const canvas = $(`view-${view}`);
  canvas.addEventListener("contextmenu", (ev) => ev.preventDefault());
  canvas.addEventListener("mouseenter", () => { hoverView = view; });
  canvas.addEventListener("mousedown", (ev) => {
    if (!state.pet) return;
    const p = voxelAt(canvas, view, ev);
    if (!p) return;
    ev.preventDefault();
    state.pos = p;
    if (view === "mip" || ev.altKey || ev.button === 1) { drawAll(); return; }
    const kind = ev.button === 2 || ev.shiftKey ? "background" : "tumor";
    if (state.scribble && state.session) {
      state.drawing = { view, kind, points: [p] };
      drawAll();
      return;
    }
    addClick(kind, p);
  });
  canvas.addEventListener("mousemove", (ev) => {
    const s = state.drawing;
    if (!s || s.view !== view) return;
    const p = voxelAt(canvas, view, ev);
    if (!p) return;
    const last = s.points[s.points.length - 1];
    if (p.every((v, n) => v === last[n])) return;
    s.points.push(p);
    drawView(view);
  });
  canvas.addEventListener("wheel", (ev) => {
    if (!state.pet || view === "mip") return;
    ev.preventDefault();
    scroll(view, ev.deltaY > 0 ? 1 : -1);
  }, { passive: false });
}

function scroll(view, delta) {
  const a = VIEWS[view].fixed;
  state.pos[a] = Math.max(0, Math.min(state.shape[a] - 1, state.pos[a] + delta));
  drawAll();
}

function bindControls() {
  for (const v of Object.keys(VIEWS)) bindView(v);
  for (const id of ["ct-preset", "pet-opacity", "suv-max", "mask-mode"]) {
    $(id).addEventListener("input", () => { $("suv-max-out").textContent = $("suv-max").value; drawAll(); });
  }
  $("case-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const name = $("case-select").value;
    if (!name) return;
    openSession(() => request("/sessions", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ case: name, tracer: $("tracer-select").value, wait: false }),
    }), name);
  });
  $("upload-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const ct = $("upload-ct").files[0], pet = $("upload-pet").files[0];
    if (!ct || !pet) { status("Choose a CT and a PET file to upload.", "error"); return; }
    const form = new FormData();
    form.append("ct", ct);
    form.append("pet", pet);
    form.append("tracer", $("tracer-select").value);
    form.append("wait", "false");
    openSession(() => request("/sessions/upload", { method: "POST", body: form }), pet.name);
  });
  window.addEventListener("mouseup", () => { if (state.drawing) endStroke(); });
  $("scribble").onclick = () => setScribble(!state.scribble);
  $("undo").onclick = () => state.session && change(`/sessions/${state.session.id}/undo`, { method: "POST" }, "Undo");
  $("reset").onclick = () => state.session && change(`/sessions/${state.session.id}/reset`, { method: "POST" }, "Reset");
  document.addEventListener("keydown", (ev) => {
    if (ev.target.tagName === "INPUT" || ev.target.tagName === "SELECT") return;
    if (ev.key === "u" || (ev.key === "z" && (ev.ctrlKey || ev.metaKey))) { ev.preventDefault(); $("undo").click(); }
    else if (ev.key === "r") $("reset").click();
    else if (ev.key === "s") $("scribble").click();
    else if (ev.key === "o") {
      const m = $("mask-mode");
      m.value = m.value === "outline" ? "overlay" : "outline";
      drawAll();
    } else if (["1", "2", "3", "4"].includes(ev.key)) {
      $("ct-preset").selectedIndex = Number(ev.key) - 1;
      drawAll();
    } else if (ev.key === "ArrowUp" || ev.key === "ArrowDown") {
      if (!state.pet || hoverView === "mip") return;
      ev.preventDefault();
      scroll(hoverView, ev.key === "ArrowUp" ? 1 : -1);
    }
  });
  window.addEventListener("resize", drawAll);
}

// a small handle for scripts and tests: move the crosshair, find a voxel on the screen
window.petloopViewer = {
  state,
  goTo(p) { state.pos = p.slice(); drawAll(); },
  screenPoint(view, p) {
    const canvas = $(`view-${view}`);
    const [x, y] = screenOf(layout(canvas, view), p);
    const r = canvas.getBoundingClientRect();
    return [r.left + x * r.width / canvas.width, r.top + y * r.height / canvas.height];
  },
};

bindControls();
loadCases().then(() => status("Pick a case and press Open, or upload CT and PET.")).catch((err) => status(`Cannot list cases: ${err.message}`, "error"));
drawAll();
