// The page's behaviour, served as /static/page.js: its Content-Security-Policy runs no inline script.
"use strict";
const $ = (id) => document.getElementById(id);
let chosen = null;
// The in-browser mode (GET /model -> browser): a module worker running the model with
// onnxruntime-web. window.segflow holds its state and the last result, for scripts.
const inBrowser = { worker: null, loading: null, calls: 0, pending: new Map() };
window.segflow = { mode: "server", load: null, last: null };
const query = new URLSearchParams(location.search);

function percent(x) { return (100 * x).toFixed(1) + "%"; }

async function showModel() {
  try {
    const response = await fetch("/model");
    const m = await response.json();
    const miou = m.metrics && m.metrics.test_miou != null ? percent(m.metrics.test_miou) : "n/a";
    $("model-info").textContent =
      `${m.name} version ${m.version ?? "?"}${m.alias ? " (@" + m.alias + ")" : ""} · ${m.runtime} · test mIoU ${miou}`;
    offerBrowser(m.browser);
  } catch (err) {
    $("model-info").textContent = "model information unavailable";
  }
}

function supported(browser) {
  if (!browser || !browser.available) return (browser && browser.reason) || "the service does not offer it";
  if (typeof WebAssembly !== "object" || typeof Worker !== "function" || typeof OffscreenCanvas !== "function") {
    return "this browser lacks WebAssembly, module workers or OffscreenCanvas";
  }
  return null;
}

// Offer the in-browser mode; it is the default where it works (?mode=server overrides).
function offerBrowser(browser) {
  const why = supported(browser);
  if (why) {
    $("mode-note").textContent = `In-browser mode unavailable: ${why}.`;
    setMode("server");
    return;
  }
  inBrowser.browser = browser;
  $("mode-browser").disabled = false;
  setMode(query.get("mode") === "server" ? "server" : "browser");
}

function setMode(mode) {
  window.segflow.mode = mode;
  $("mode-" + mode).checked = true;
  const note = $("mode-note");
  note.classList.toggle("server", mode === "server");
  if (mode === "browser") {
    note.textContent = "The photo is not sent: it is segmented in this browser.";
    loadInBrowser().catch(() => {});
  } else if (!$("mode-browser").disabled) {
    note.textContent = "The photo is sent to the service, which segments it.";
  }
}

function call(message) {
  return new Promise((resolve, reject) => {
    const id = ++inBrowser.calls;
    inBrowser.pending.set(id, { resolve, reject });
    inBrowser.worker.postMessage({ ...message, id });
  });
}

function loadInBrowser() {
  if (inBrowser.loading) return inBrowser.loading;
  const browser = inBrowser.browser;
  inBrowser.worker = new Worker(browser.worker_url, { type: "module" });
  inBrowser.worker.onmessage = (event) => {
    const { id, ok, result, error } = event.data;
    const waiting = inBrowser.pending.get(id);
    inBrowser.pending.delete(id);
    if (ok) waiting.resolve(result);
    else waiting.reject(new Error(error));
  };
  const kb = (browser.model_bytes / 1e6).toFixed(1);
  $("status").textContent = `loading the model (${kb} MB) into this browser…`;
  inBrowser.loading = call({ kind: "load", browser, threads: Number(query.get("threads")) || 0 }).then(
    (load) => {
      window.segflow.load = load;
      const threads = load.threads > 1 ? `${load.threads} threads` : "one thread";
      $("status").textContent = `model version ${browser.version} loaded in ${load.seconds.toFixed(1)} s (${threads})`;
      document.body.dataset.browser = "ready";
      return load;
    },
    (err) => {
      $("error").textContent = `the in-browser mode failed to start: ${err.message}`;
      document.body.dataset.browser = "failed";
      throw err;
    },
  );
  return inBrowser.loading;
}

function maskImage(mask, width, height, palette) {
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d");
  const image = context.createImageData(width, height);
  for (let i = 0; i < mask.length; i++) {
    const colour = palette[mask[i]] || [0, 0, 0];
    image.data[4 * i] = colour[0];
    image.data[4 * i + 1] = colour[1];
    image.data[4 * i + 2] = colour[2];
    image.data[4 * i + 3] = 255;
  }
  context.putImageData(image, 0, 0);
  return new Promise((resolve) => canvas.toBlob((blob) => resolve(URL.createObjectURL(blob)), "image/png"));
}

// The photo goes to the worker only: nothing is sent over the network.
async function segmentInBrowser(file) {
  await loadInBrowser();
  const result = await call({ kind: "segment", file });
  window.segflow.last = result;
  const src = await maskImage(result.mask, result.width, result.height, inBrowser.browser.recipe.palette);
  return {
    mask_png: src,
    classes: result.classes,
    width: result.width,
    height: result.height,
    where: `in this browser, model version ${inBrowser.browser.version} (onnxruntime-web, ${window.segflow.load.threads} thread(s))`,
    ms: result.ms,
  };
}

async function segmentOnServer(file) {
  const form = new FormData();
  form.append("file", file, file.name);
  const response = await fetch("/predict?format=json&mask=true", { method: "POST", body: form });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.detail || `the server answered ${response.status}`);
  body.where = `on the server, model version ${body.model.version} (${body.model.runtime})`;
  return body;
}

function choose(file) {
  if (!file) return;
  chosen = file;
  $("error").textContent = "";
  $("status").textContent = `${file.name} (${(file.size / 1024).toFixed(0)} KB): press Segment`;
  $("segment").disabled = false;
}

function loaded(img, src) {
  return new Promise((resolve, reject) => {
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("the browser cannot display this image"));
    img.src = src;
  });
}

function drawOverlay() {
  const image = $("image"), mask = $("mask"), canvas = $("overlay");
  if (!image.naturalWidth || !mask.naturalWidth) return;
  canvas.width = image.naturalWidth;
  canvas.height = image.naturalHeight;
  const ctx = canvas.getContext("2d");
  ctx.globalAlpha = 1;
  ctx.drawImage(image, 0, 0, canvas.width, canvas.height);
  ctx.globalAlpha = Number($("opacity").value) / 100;
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(mask, 0, 0, canvas.width, canvas.height);
  $("opacity-value").textContent = $("opacity").value + "%";
}

function showLegend(classes) {
  const legend = $("legend");
  legend.replaceChildren();
  for (const c of classes) {
    const item = document.createElement("li");
    item.dataset.class = c.name;
    item.dataset.share = c.share;
    if (c.pixels === 0) item.classList.add("absent");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = c.colour;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = c.name;
    const bar = document.createElement("span");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.style.width = percent(c.share);
    fill.style.background = c.colour;
    bar.append(fill);
    const share = document.createElement("span");
    share.className = "share";
    share.textContent = percent(c.share);
    item.append(swatch, name, bar, share);
    legend.append(item);
  }
}

async function segment() {
  if (!chosen) return;
  $("segment").disabled = true;
  $("error").textContent = "";
  $("status").textContent = "segmenting…";
  document.body.dataset.state = "working";
  try {
    const body = window.segflow.mode === "browser" ? await segmentInBrowser(chosen) : await segmentOnServer(chosen);
    await Promise.all([loaded($("image"), URL.createObjectURL(chosen)), loaded($("mask"), body.mask_png)]);
    $("results").hidden = false;
    drawOverlay();
    showLegend(body.classes);
    $("status").textContent =
      `${body.width}×${body.height} px, segmented ${body.where}: ` +
      `${body.ms.model.toFixed(0)} ms model, ${body.ms.total.toFixed(0)} ms in all`;
    document.body.dataset.state = "done";
  } catch (err) {
    $("error").textContent = err.message;
    $("status").textContent = "";
    document.body.dataset.state = "error";
  } finally {
    $("segment").disabled = false;
  }
}

$("file").addEventListener("change", (e) => choose(e.target.files[0]));
$("segment").addEventListener("click", segment);
$("mode-browser").addEventListener("change", () => setMode("browser"));
$("mode-server").addEventListener("change", () => setMode("server"));
$("opacity").addEventListener("input", drawOverlay);
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  choose(e.dataTransfer.files[0]);
});
showModel();
