// The page: upload, watch the fit, view at any resolution, the gallery. Plain JS, no build step, no CDN.
"use strict";
const $ = (id) => document.getElementById(id);
const state = { key: localStorage.getItem("tuner-key") || "", file: null, job: null, view: null, cursor: null,
                renders: 0, access: { keys_required: false, signed_urls: false } };

// --- the API, with the key when there is one ---------------------------------------------------------------
async function api(path, opts = {}) {
  const headers = new Headers(opts.headers || {});
  if (state.key) headers.set("Authorization", `Bearer ${state.key}`);
  const r = await fetch(path, { ...opts, headers });
  if (r.status === 401) { askKey(); throw new Error("this service needs an API key"); }
  if (!r.ok) {
    let detail = `${r.status} ${r.statusText}`;
    try { detail = (await r.json()).detail || detail; } catch (_) { /* not a problem document */ }
    throw new Error(detail);
  }
  return r;
}

// Seconds as people say them: "45 s", "3 min 20 s", "1 h 5 min".
function humanTime(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min${s % 60 ? ` ${s % 60} s` : ""}`;
  const m = Math.round(s / 60);
  return `${Math.floor(m / 60)} h${m % 60 ? ` ${m % 60} min` : ""}`;
}

async function objectUrl(path) {
  const r = await api(path);
  return URL.createObjectURL(await r.blob());
}

// A render as an image source: a signed URL when the service signs them (the browser loads and caches it
// like any image, no key needed), else the render fetched with the key.
async function renderSrc(path) {
  if (state.access.signed_urls) {
    const [base, query] = path.split("?");
    const r = await api(`${base}-url?${query}&expires_in=3600`);
    return (await r.json()).url;
  }
  return objectUrl(path);
}

function forget(src) { if (src && src.startsWith("blob:")) URL.revokeObjectURL(src); }

function askKey() {
  const dialog = $("key-dialog");
  if (!dialog.open) { $("key-input").value = state.key; dialog.showModal(); }
}

$("key-button").addEventListener("click", askKey);
$("key-dialog").addEventListener("close", () => {
  if ($("key-dialog").returnValue !== "save") return;
  state.key = $("key-input").value.trim();
  if (state.key) localStorage.setItem("tuner-key", state.key); else localStorage.removeItem("tuner-key");
  // Ask for a key up front when the service needs one and none is kept, rather than meet a 401.
fetch("/v1/access").then((r) => r.json()).then((access) => {
  state.access = access;
  if (access.keys_required && !state.key) askKey(); else start();
}).catch(() => start());
});

// After a reload (or a key): the gallery, and a fit still running is watched again (GET /v1/jobs).
async function start() {
  loadGallery(true);
  try {
    const jobs = (await (await api("/v1/jobs?status=active&limit=1")).json()).items;
    if (jobs.length && !state.watching) watch(jobs[0]);
  } catch (_) { /* nothing to resume */ }
}

// --- upload ------------------------------------------------------------------------------------------------
const isBlob = (file) => /\.tnr$/i.test(file.name);
async function choose(file) {
  if (!file) return;
  state.file = file;
  state.dims = null;
  $("drop-text").textContent = `${file.name} (${Math.round(file.size / 1024)} KiB)`;
  $("encode").disabled = false;
  $("encode").textContent = isBlob(file) ? "Upload the blob" : "Encode";
  $("estimate").textContent = isBlob(file) ? "a blob is stored as it is: no fitting" : "";
  if (isBlob(file)) return;
  try {
    const bitmap = await createImageBitmap(file);
    state.dims = { width: bitmap.width, height: bitmap.height };
    bitmap.close();
  } catch (_) { return; }  // the service will say what is wrong with it
  estimate();
}

// The service's own estimate of the fit (GET /v1/estimate), before anything is sent.
let estimateTimer = null;
function estimate() {
  clearTimeout(estimateTimer);
  estimateTimer = setTimeout(async () => {
    if (!state.dims || !state.file || isBlob(state.file)) return;
    const target = document.querySelector('input[name="target"]:checked').value;
    const query = new URLSearchParams({ ...state.dims, [target]: $("target-value").value, effort: $("effort").value });
    try {
      const e = await (await api(`/v1/estimate?${query}`)).json();
      $("estimate").textContent = e.admitted
        ? `${state.dims.width}×${state.dims.height}: about ${humanTime(e.seconds)} on the service's workers`
        : `would be refused: ${e.detail}`;
      $("estimate").dataset.seconds = String(e.seconds);
    } catch (err) {
      $("estimate").textContent = err.message;
    }
  }, 150);
}
$("target-value").addEventListener("input", estimate);
$("effort").addEventListener("input", estimate);
$("file").addEventListener("change", (e) => choose(e.target.files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); choose(e.dataTransfer.files[0]); });
drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("file").click(); } });
$("effort").addEventListener("input", (e) => { $("effort-out").textContent = e.target.value; });
// The defaults and bounds are the service's own (GET /v1/limits, from its code and settings), not the page's.
let limits = null;
function targetInput() {
  const psnr = document.querySelector('input[name="target"]:checked').value === "psnr";
  if (!limits) return;
  const e = limits.encode;
  Object.assign($("target-value"), psnr ? { min: e.psnr_min, max: e.psnr_max, step: 0.5, value: 32 }
                                        : { min: e.bpp_min, max: e.bpp_max, step: 0.05, value: e.default_bpp });
}
document.querySelectorAll('input[name="target"]').forEach((r) => r.addEventListener("change", () => {
  targetInput();
  estimate();
}));
fetch("/v1/limits").then((r) => r.json()).then((l) => {
  limits = l;
  targetInput();
  Object.assign($("effort"), { min: l.encode.effort_min, max: l.encode.effort_max, value: l.encode.default_effort });
  $("effort-out").textContent = String(l.encode.default_effort);
  $("png-width").max = String(l.render.max_width);
  document.body.dataset.limits = "loaded";
}).catch(() => {});

$("encode").addEventListener("click", async () => {
  $("upload-error").textContent = "";
  const target = document.querySelector('input[name="target"]:checked').value;
  const query = new URLSearchParams({ [target]: $("target-value").value, effort: $("effort").value,
                                     name: state.file.name });
  $("encode").disabled = true;
  if (isBlob(state.file)) {  // a .tnr made elsewhere: stored as it is, ready to view
    try {
      const named = new URLSearchParams({ name: state.file.name });
      const r = await api(`/v1/blobs?${named}`, { method: "POST", body: state.file,
                                         headers: { "Content-Type": "application/octet-stream" } });
      const img = await r.json();
      openImage(img.image_id);
      loadGallery(true);
    } catch (e) {
      $("upload-error").textContent = e.message;
    }
    $("encode").disabled = false;
    return;
  }
  try {
    const r = await api(`/v1/images?${query}`, { method: "POST", body: state.file,
                                                headers: { "Content-Type": state.file.type || "image/png" } });
    watch(await r.json());
  } catch (e) {
    $("upload-error").textContent = e.message;
  } finally {
    $("encode").disabled = false;
  }
});

// --- progress: Server-Sent Events read through fetch (so the key can be sent), polling as the fallback ------
function showJob(job) {
  state.job = job;
  const pct = Math.round((job.progress || 0) * 100);
  $("bar-fill").style.width = `${pct}%`;
  $("bar").setAttribute("aria-valuenow", String(pct));
  const parts = [job.status, `${pct}%`];
  if (job.steps) parts.push(`step ${job.step} of ${job.steps}`);
  if (job.psnr != null) parts.push(`PSNR ${job.psnr.toFixed(2)} dB`);
  if (job.eta_s != null && job.status === "running") parts.push(`about ${humanTime(job.eta_s)} left`);
  if (job.error) parts.push(job.error);
  $("job-text").textContent = parts.join(" · ");
  // The live region speaks on a change of state and at each quarter, not at every tick.
  const said = `${job.status} ${Math.floor(pct / 25)}`;
  if (said !== state.said) {
    state.said = said;
    $("job-status").textContent = job.status === "running" ? `fit ${pct}% done` : `fit ${job.status}`;
  }
  $("cancel").hidden = !["queued", "running"].includes(job.status);
  if (job.status === "succeeded") { openImage(job.image_id); loadGallery(true); }
}

async function watch(accepted) {
  state.watching = accepted.job_id;
  $("job").hidden = false;
  showJob({ ...accepted, progress: accepted.status === "succeeded" ? 1 : 0, step: 0 });
  if (accepted.status === "succeeded") return;
  try {
    await streamEvents(accepted.job_id);
  } catch (_) {
    await poll(accepted.job_id);
  }
}

async function streamEvents(jobId) {
  const r = await api(`/v1/jobs/${jobId}/events`);
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
      if (data) showJob(JSON.parse(data));
    }
  }
  if (state.job && ["queued", "running"].includes(state.job.status)) throw new Error("stream ended early");
}

async function poll(jobId) {
  for (;;) {
    const job = await (await api(`/v1/jobs/${jobId}`)).json();
    showJob(job);
    if (!["queued", "running"].includes(job.status)) return;
    await new Promise((ok) => setTimeout(ok, 1000));
  }
}

$("cancel").addEventListener("click", async () => {
  if (state.job) showJob(await (await api(`/v1/jobs/${state.job.job_id}`, { method: "DELETE" })).json());
});

// --- the viewer: every view is a render of the visible region at the screen's resolution ----------------------
const viewer = $("viewer"), view = $("view");
let pending = null, drag = null, pointers = new Map();

async function openImage(imageId) {
  const info = await (await api(`/v1/images/${imageId}`)).json();
  state.view = { id: imageId, w: info.width, h: info.height, crop: [0, 0, 1, 1], info, shown: null };
  $("viewer-section").hidden = false;
  const blobUrl = await objectUrl(`/v1/images/${imageId}/weights`);
  Object.assign($("download-blob"), { href: blobUrl, download: `${imageId}.tnr` });
  $("png-width").value = info.width * 2;
  $("compare-codec").value = "";
  $("compare-wrap").hidden = true;
  loadComparisons(imageId);
  render();
  viewer.focus();
}

function layout() {
  const v = state.view, [l, t, r, b] = v.crop;
  const rw = (r - l) * v.w, rh = (b - t) * v.h;
  const cw = viewer.clientWidth, ch = viewer.clientHeight;
  const s = Math.min(cw / rw, ch / rh);
  const dw = Math.max(1, Math.round(rw * s)), dh = Math.max(1, Math.round(rh * s));
  return { dw, dh, x: (cw - dw) / 2, y: (ch - dh) / 2 };
}

async function render() {
  const v = state.view;
  if (!v) return;
  const { dw, dh, x, y } = layout();
  const dpr = window.devicePixelRatio || 1;
  const width = Math.min(4096, Math.round(dw * dpr)), height = Math.min(4096, Math.round(dh * dpr));
  const crop = v.crop.map((c) => c.toFixed(6)).join(",");
  const url = `/v1/images/${v.id}/render?width=${width}&height=${height}&fit=fill&crop=${crop}`;
  const ticket = {};
  pending = ticket;
  try {
    const src = await renderSrc(url);
    if (pending !== ticket) { forget(src); return; }
    const old = view.src;
    await new Promise((ok, fail) => { view.onload = ok; view.onerror = () => fail(new Error("render failed")); view.src = src; });
    forget(old);
    Object.assign(view.style, { width: `${dw}px`, height: `${dh}px`, transform: `translate(${x}px, ${y}px)` });
    v.shown = { crop: [...crop.split(",").map(Number)], dw };
    placeCompare();
    state.renders += 1;
    Object.assign(view.dataset, { renderWidth: width, renderHeight: height, renders: state.renders });
    const zoom = 1 / (v.crop[2] - v.crop[0]);
    $("view-info").textContent = `${v.info.width}×${v.info.height} · ${v.info.bytes} bytes · ` +
      `${v.info.bpp.toFixed(3)} bpp · PSNR ${v.info.psnr != null ? v.info.psnr.toFixed(2) : "?"} dB · ` +
      `zoom ${zoom.toFixed(1)}× · rendered ${width}×${height}`;
  } catch (e) {
    $("view-info").textContent = e.message;
  }
}

let timer = null;
function rerender() { clearTimeout(timer); timer = setTimeout(render, 120); }

// Preview a change at once by moving and scaling the picture on screen (it shows `shown`), then render the
// new view sharp.
function setCrop(next) {
  const v = state.view;
  v.crop = next;
  if (!v.shown) { rerender(); return; }
  const after = layout(), old = v.shown.crop, nw = next[2] - next[0], nh = next[3] - next[1];
  const scale = ((old[2] - old[0]) / nw) * (after.dw / v.shown.dw);
  const px = after.x + ((old[0] - next[0]) / nw) * after.dw;
  const py = after.y + ((old[1] - next[1]) / nh) * after.dh;
  view.style.transform = `translate(${px}px, ${py}px) scale(${scale})`;
  placeCompare();
  rerender();
}

function zoomAt(factor, fx, fy) {  // fx, fy: the fixed point, as fractions of the shown picture
  const [l, t, r, b] = state.view.crop;
  const w = Math.min(1, Math.max(1 / 512, (r - l) / factor)), h = Math.min(1, Math.max(1 / 512, (b - t) / factor));
  const ux = l + fx * (r - l), uy = t + fy * (b - t);
  const nl = Math.min(Math.max(0, ux - fx * w), 1 - w), nt = Math.min(Math.max(0, uy - fy * h), 1 - h);
  setCrop([nl, nt, nl + w, nt + h]);
}

function panBy(dx, dy) {  // in fractions of the shown picture
  const [l, t, r, b] = state.view.crop, w = r - l, h = b - t;
  const nl = Math.min(Math.max(0, l - dx * w), 1 - w), nt = Math.min(Math.max(0, t - dy * h), 1 - h);
  setCrop([nl, nt, nl + w, nt + h]);
}

function fractions(e) {
  const { dw, dh, x, y } = layout(), box = viewer.getBoundingClientRect();
  return [Math.min(1, Math.max(0, (e.clientX - box.left - x) / dw)), Math.min(1, Math.max(0, (e.clientY - box.top - y) / dh))];
}

viewer.addEventListener("wheel", (e) => {
  if (!state.view) return;
  e.preventDefault();
  const [fx, fy] = fractions(e);
  zoomAt(Math.exp(-e.deltaY * 0.002), fx, fy);
}, { passive: false });
viewer.addEventListener("pointerdown", (e) => {
  pointers.set(e.pointerId, e);
  viewer.setPointerCapture(e.pointerId);
  drag = { x: e.clientX, y: e.clientY, spread: null };
});
viewer.addEventListener("pointermove", (e) => {
  if (!drag || !state.view) return;
  pointers.set(e.pointerId, e);
  const { dw, dh } = layout();
  if (pointers.size === 2) {  // pinch
    const [a, b] = [...pointers.values()];
    const spread = Math.hypot(a.clientX - b.clientX, a.clientY - b.clientY);
    if (drag.spread) zoomAt(spread / drag.spread, 0.5, 0.5);
    drag.spread = spread;
    return;
  }
  panBy((e.clientX - drag.x) / dw, (e.clientY - drag.y) / dh);
  drag.x = e.clientX; drag.y = e.clientY;
});
for (const end of ["pointerup", "pointercancel"]) {
  viewer.addEventListener(end, (e) => { pointers.delete(e.pointerId); if (!pointers.size) drag = null; });
}
viewer.addEventListener("keydown", (e) => {
  if (!state.view) return;
  const moves = { ArrowLeft: [0.1, 0], ArrowRight: [-0.1, 0], ArrowUp: [0, 0.1], ArrowDown: [0, -0.1] };
  if (e.key === "+" || e.key === "=") zoomAt(2, 0.5, 0.5);
  else if (e.key === "-") zoomAt(0.5, 0.5, 0.5);
  else if (e.key === "0") setCrop([0, 0, 1, 1]);
  else if (moves[e.key]) panBy(...moves[e.key]);
  else return;
  e.preventDefault();
});
window.addEventListener("resize", rerender);

$("download-png").addEventListener("click", async () => {
  const v = state.view;
  const most = parseInt($("png-width").max, 10) || 8192;
  const width = Math.max(1, Math.min(most, parseInt($("png-width").value, 10) || v.w));
  const format = $("download-format").value;
  const a = document.createElement("a");
  a.href = await objectUrl(`/v1/images/${v.id}/render?width=${width}&format=${format}`);
  a.download = `${v.id}-${width}.${format}`;
  $("download-png").dataset.last = a.download;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
});

// --- the classical codecs at the blob's bytes, right of a split over the same view ----------------------------
async function loadComparisons(imageId) {
  const list = $("compare-list");
  list.replaceChildren();
  const data = await (await api(`/v1/images/${imageId}/comparisons`)).json();
  const rows = [{ codec: "tuner", label: "TUNER blob", bytes: data.bytes, psnr: data.psnr },
                ...data.items.map((c) => ({ ...c, label: c.codec.toUpperCase() }))];
  for (const r of rows) {
    const li = document.createElement("li");
    Object.assign(li.dataset, { codec: r.codec, bytes: r.bytes, psnr: r.psnr });
    li.innerHTML = `<b></b> `;
    li.firstChild.textContent = r.label;
    li.append(`${r.bytes} bytes, ${r.psnr != null ? r.psnr.toFixed(2) : "?"} dB`);
    list.append(li);
  }
  state.view.comparisons = Object.fromEntries(data.items.map((c) => [c.codec, c]));
  // The original is offered only while the service keeps it.
  for (const o of $("compare-codec").options) {
    o.disabled = o.value === "original" ? !data.original : o.value !== "" && !state.view.comparisons[o.value];
  }
}

function placeCompare() {
  const v = state.view, wrap = $("compare-wrap"), img = $("compare");
  if (!v || wrap.hidden) return;
  const { dw, dh, x, y } = layout(), [l, t, r, b] = v.crop;
  const fw = dw / (r - l), fh = dh / (b - t);
  Object.assign(img.style, { width: `${fw}px`, height: `${fh}px`,
                             transform: `translate(${x - l * fw}px, ${y - t * fh}px)` });
  // Only over the picture: the codec's file holds the whole image, the view only the visible region.
  const cw = viewer.clientWidth, ch = viewer.clientHeight, split = x + (dw * $("split").value) / 100;
  wrap.style.clipPath = `inset(${y}px ${cw - x - dw}px ${ch - y - dh}px ${split}px)`;
}

$("compare-codec").addEventListener("change", async (e) => {
  const codec = e.target.value, v = state.view;
  if (!codec || !v) { $("compare-wrap").hidden = true; return; }
  const old = $("compare").src;
  const path = codec === "original" ? `/v1/images/${v.id}/original` : `/v1/images/${v.id}/comparisons/${codec}`;
  try {
    $("compare").src = await objectUrl(path);
  } catch (err) {
    $("view-info").textContent = err.message;
    return;
  }
  if (old.startsWith("blob:")) URL.revokeObjectURL(old);
  $("compare-wrap").hidden = false;
  $("compare-wrap").dataset.codec = codec;
  placeCompare();
});
$("split").addEventListener("input", placeCompare);

// --- the gallery ---------------------------------------------------------------------------------------------
async function loadGallery(reset) {
  if (reset) { state.cursor = null; $("gallery").replaceChildren(); }
  try {
    const query = new URLSearchParams({ limit: "24", ...(state.cursor ? { cursor: state.cursor } : {}) });
    const page = await (await api(`/v1/images?${query}`)).json();
    for (const img of page.items) $("gallery").append(galleryItem(img));
    state.cursor = page.next;
    $("more").hidden = !page.next;
  } catch (e) {
    $("gallery").replaceChildren(Object.assign(document.createElement("li"), { textContent: e.message }));
  }
}

function galleryItem(img) {
  const li = document.createElement("li");
  li.dataset.imageId = img.image_id;
  const title = img.name || `untitled ${img.width}×${img.height}`;
  const thumb = document.createElement("img");
  thumb.alt = title;
  renderSrc(`/v1/images/${img.image_id}/render?width=320&format=webp`).then((u) => { thumb.src = u; }).catch(() => {});
  const meta = Object.assign(document.createElement("div"), { className: "meta",
    textContent: `${img.width}×${img.height} · ${img.bytes} B · ${img.psnr != null ? img.psnr.toFixed(1) + " dB" : ""}` });
  const when = new Date(img.created_at);
  const time = Object.assign(document.createElement("time"), { dateTime: img.created_at,
    textContent: when.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" }) });
  const name = Object.assign(document.createElement("b"), { className: "name", textContent: title });
  meta.prepend(name, document.createElement("br"));
  meta.append(document.createElement("br"), time);
  const open = Object.assign(document.createElement("button"), { type: "button", textContent: "Open" });
  open.addEventListener("click", () => openImage(img.image_id));
  const del = Object.assign(document.createElement("button"), { type: "button", textContent: "Delete",
                                                                 className: "delete" });
  del.setAttribute("aria-label", `delete ${title}`);
  del.addEventListener("click", async () => {
    if (!window.confirm(`Delete ${title} (${when.toLocaleString()})? Its blob and renders go too.`)) return;
    await api(`/v1/images/${img.image_id}`, { method: "DELETE" });
    li.remove();
    if (state.view && state.view.id === img.image_id) { state.view = null; $("viewer-section").hidden = true; }
  });
  const actions = Object.assign(document.createElement("div"), { className: "actions" });
  actions.append(open, del);
  li.append(thumb, meta, actions);
  return li;
}
$("more").addEventListener("click", () => loadGallery(false));

// Ask for a key up front when the service needs one and none is kept, rather than meet a 401.
fetch("/v1/access").then((r) => r.json()).then((access) => {
  state.access = access;
  if (access.keys_required && !state.key) askKey(); else start();
}).catch(() => start());
