// The page's behaviour, served as /static/page.js: its Content-Security-Policy runs no inline script.
"use strict";
const $ = (id) => document.getElementById(id);
let chosen = null;

function percent(x) { return (100 * x).toFixed(1) + "%"; }

async function showModel() {
  try {
    const response = await fetch("/model");
    const m = await response.json();
    const miou = m.metrics && m.metrics.test_miou != null ? percent(m.metrics.test_miou) : "n/a";
    $("model-info").textContent =
      `${m.name} version ${m.version ?? "?"}${m.alias ? " (@" + m.alias + ")" : ""} · ${m.runtime} · test mIoU ${miou}`;
  } catch (err) {
    $("model-info").textContent = "model information unavailable";
  }
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
  const form = new FormData();
  form.append("file", chosen, chosen.name);
  try {
    const response = await fetch("/predict?format=json&mask=true", { method: "POST", body: form });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.detail || `the server answered ${response.status}`);
    await Promise.all([loaded($("image"), URL.createObjectURL(chosen)), loaded($("mask"), body.mask_png)]);
    $("results").hidden = false;
    drawOverlay();
    showLegend(body.classes);
    $("status").textContent =
      `${body.width}×${body.height} px, model version ${body.model.version} (${body.model.runtime}): ` +
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
