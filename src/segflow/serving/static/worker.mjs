// The page's in-browser mode, served as /browser/worker.mjs (a module worker): loads the
// served ONNX model into onnxruntime-web (WebAssembly; threads when the page is
// cross-origin isolated), decodes the chosen photo here and segments it with segment.mjs.
// The photo never leaves this worker: it fetches only the runtime and the model.
import { classShares, predict } from "./segment.mjs";

let ort = null;
let session = null;
let browser = null;

async function load(description, threads) {
  browser = description;
  const start = performance.now();
  ort = await import(browser.runtime_url + "ort.wasm.min.mjs");
  ort.env.wasm.wasmPaths = browser.runtime_url;
  const cores = Math.max(1, Math.min(navigator.hardwareConcurrency || 1, 4));
  ort.env.wasm.numThreads = self.crossOriginIsolated ? threads || cores : 1;
  const response = await fetch(browser.model_url);
  if (!response.ok) throw new Error(`the model could not be loaded (${response.status}): reload the page`);
  const bytes = new Uint8Array(await response.arrayBuffer());
  session = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"], graphOptimizationLevel: "all" });
  return {
    threads: ort.env.wasm.numThreads,
    isolated: self.crossOriginIsolated,
    seconds: (performance.now() - start) / 1000,
  };
}

async function pixels(file) {
  // As the server decodes: EXIF orientation applied, no colour-profile conversion.
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, {
      imageOrientation: "from-image",
      colorSpaceConversion: "none",
      premultiplyAlpha: "none",
    });
  } catch (err) {
    throw new Error(`this browser cannot decode ${file.name || "the file"}: not an image it knows`);
  }
  const { width, height } = bitmap;
  const canvas = new OffscreenCanvas(width, height);
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(bitmap, 0, 0);
  bitmap.close();
  const rgba = context.getImageData(0, 0, width, height).data;
  const rgb = new Uint8Array(width * height * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    rgb[j] = rgba[i];
    rgb[j + 1] = rgba[i + 1];
    rgb[j + 2] = rgba[i + 2];
  }
  return { rgb, width, height };
}

async function segment(file) {
  const start = performance.now();
  const { rgb, width, height } = await pixels(file);
  const decoded = performance.now();
  let modelMs = 0;
  const run = async (batch, n, tileH, tileW) => {
    const begin = performance.now();
    const output = await session.run({ image: new ort.Tensor("float32", batch, [n, 3, tileH, tileW]) }, ["logits"]);
    modelMs += performance.now() - begin;
    return output.logits.data;
  };
  const mask = await predict(rgb, height, width, browser.recipe, run);
  const done = performance.now();
  return {
    mask,
    width,
    height,
    classes: classShares(mask, browser.recipe.class_names, browser.recipe.palette),
    ms: { decode: decoded - start, model: modelMs, segment: done - decoded, total: done - start },
  };
}

self.onmessage = async (event) => {
  const { id, kind } = event.data;
  try {
    if (kind === "load") {
      self.postMessage({ id, ok: true, result: await load(event.data.browser, event.data.threads) });
    } else if (kind === "segment") {
      const result = await segment(event.data.file);
      self.postMessage({ id, ok: true, result }, [result.mask.buffer]);
    }
  } catch (err) {
    self.postMessage({ id, ok: false, error: err && err.message ? err.message : String(err) });
  }
};
