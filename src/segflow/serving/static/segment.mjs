// segflow's one prediction path (segflow/inference/segment.py), in JavaScript for the page's
// in-browser mode: working-resolution resize, padding or tiling, blended tile logits, the
// bilinear resize of the logits back to the photo's size and the argmax. Every parameter
// (working long side, tile, overlap, ramp weights, padding multiple, the upsampling memory
// rule) comes from the service's recipe (GET /model -> browser.recipe, built from the Python
// module's own constants by segflow.serving.browser), never from a constant here.
//
// The resizes follow OpenCV's (cv2.resize) arithmetic, as the server runs it: INTER_AREA to
// shrink (float32 area weights, rounded half to even), INTER_LINEAR on 8-bit pixels to
// enlarge (11-bit fixed point), INTER_LINEAR on float32 logits, INTER_NEAREST for masks.
// Pure functions on typed arrays: no DOM, so Node can run them too.
"use strict";

const f32 = Math.fround;

/** Python's round(): half to even (round(2.5) == 2), as segment.scaled_size uses it. */
export function pyRound(x) {
  const floor = Math.floor(x);
  const rest = x - floor;
  if (rest > 0.5) return floor + 1;
  if (rest < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

/** OpenCV's cvRound + saturate_cast<uchar>: half to even, clamped to 0..255. */
function toByte(x) {
  const r = pyRound(x);
  return r < 0 ? 0 : r > 255 ? 255 : r;
}

/** segment.working_factor: the resize that brings the longer side to `longSide` (null: 1). */
export function workingFactor(height, width, longSide) {
  return longSide == null ? 1.0 : longSide / Math.max(height, width);
}

/** segment.scaled_size */
export function scaledSize(height, width, scale) {
  return [Math.max(1, pyRound(height * scale)), Math.max(1, pyRound(width * scale))];
}

/** OpenCV's computeResizeAreaTab: [source index, destination index, weight] triples. */
function areaTable(ssize, dsize, scale) {
  const table = [];
  for (let dx = 0; dx < dsize; dx++) {
    const fsx1 = dx * scale;
    const fsx2 = fsx1 + scale;
    const cell = Math.min(scale, ssize - fsx1);
    let sx1 = Math.ceil(fsx1);
    let sx2 = Math.floor(fsx2);
    sx2 = Math.min(sx2, ssize - 1);
    sx1 = Math.min(sx1, sx2);
    if (sx1 - fsx1 > 1e-3) table.push([sx1 - 1, dx, f32((sx1 - fsx1) / cell)]);
    for (let sx = sx1; sx < sx2; sx++) table.push([sx, dx, f32(1.0 / cell)]);
    if (fsx2 - sx2 > 1e-3) table.push([sx2, dx, f32(Math.min(Math.min(fsx2 - sx2, 1), cell) / cell)]);
  }
  return table;
}

/** cv2.resize(rgb, INTER_AREA) of (h, w, 3) uint8 to (dh, dw, 3), shrinking. */
function resizeArea(src, height, width, dh, dw) {
  const scaleX = 1 / (dw / width); // cv2: 1. / inv_scale, inv_scale = dsize / ssize
  const scaleY = 1 / (dh / height);
  const dst = new Uint8Array(dh * dw * 3);
  const ix = Math.round(scaleX);
  const iy = Math.round(scaleY);
  if (Math.abs(scaleX - ix) < Number.EPSILON && Math.abs(scaleY - iy) < Number.EPSILON) {
    // resizeAreaFast: whole blocks, their mean (the 2x2 SIMD path rounds half up).
    const area = ix * iy;
    const inverse = f32(1 / area);
    for (let dy = 0; dy < dh; dy++) {
      for (let dx = 0; dx < dw; dx++) {
        for (let c = 0; c < 3; c++) {
          let sum = 0;
          for (let y = dy * iy; y < dy * iy + iy; y++) {
            for (let x = dx * ix; x < dx * ix + ix; x++) sum += src[(y * width + x) * 3 + c];
          }
          dst[(dy * dw + dx) * 3 + c] = area === 4 && ix === 2 ? (sum + 2) >> 2 : toByte(f32(sum * inverse));
        }
      }
    }
    return dst;
  }
  const xtab = areaTable(width, dw, scaleX);
  const ytab = areaTable(height, dh, scaleY);
  const buf = new Float32Array(dw * 3);
  const sum = new Float32Array(dw * 3);
  let previous = ytab.length ? ytab[0][1] : 0;
  const flush = (dy) => {
    for (let i = 0; i < dw * 3; i++) dst[dy * dw * 3 + i] = toByte(sum[i]);
  };
  for (const [sy, dy, beta] of ytab) {
    buf.fill(0);
    const row = sy * width * 3;
    for (const [sx, dx, alpha] of xtab) {
      for (let c = 0; c < 3; c++) buf[dx * 3 + c] = f32(buf[dx * 3 + c] + f32(src[row + sx * 3 + c] * alpha));
    }
    if (dy !== previous) {
      flush(previous);
      for (let i = 0; i < dw * 3; i++) sum[i] = f32(beta * buf[i]);
      previous = dy;
    } else {
      for (let i = 0; i < dw * 3; i++) sum[i] = f32(sum[i] + f32(beta * buf[i]));
    }
  }
  flush(previous);
  return dst;
}

/** OpenCV's linear coefficients along one axis: source index and weight of each output. */
function linearAxis(ssize, dsize, clampEnds) {
  const scale = 1 / (dsize / ssize);
  const index = new Int32Array(dsize);
  const weight = new Float32Array(dsize);
  for (let d = 0; d < dsize; d++) {
    let fx = f32((d + 0.5) * scale - 0.5);
    let sx = Math.floor(fx);
    fx = f32(fx - sx);
    if (clampEnds) {
      if (sx < 0) (fx = 0), (sx = 0);
      if (sx >= ssize - 1) (fx = 0), (sx = ssize - 1);
    }
    index[d] = sx;
    weight[d] = fx;
  }
  return { index, weight };
}

const clip = (v, hi) => (v < 0 ? 0 : v > hi ? hi : v);

/** cv2.resize(rgb, INTER_LINEAR) of (h, w, 3) uint8, enlarging: 11-bit fixed point. */
function resizeLinear8u(src, height, width, dh, dw) {
  const xs = linearAxis(width, dw, true);
  const ys = linearAxis(height, dh, false);
  const ax0 = new Int32Array(dw);
  const ax1 = new Int32Array(dw);
  for (let d = 0; d < dw; d++) {
    ax0[d] = pyRound(f32(1 - xs.weight[d]) * 2048);
    ax1[d] = pyRound(xs.weight[d] * 2048);
  }
  const horizontal = (sy) => {
    const out = new Int32Array(dw * 3);
    const row = sy * width * 3;
    for (let d = 0; d < dw; d++) {
      const sx = xs.index[d];
      const next = Math.min(sx + 1, width - 1);
      for (let c = 0; c < 3; c++) {
        out[d * 3 + c] = src[row + sx * 3 + c] * ax0[d] + src[row + next * 3 + c] * ax1[d];
      }
    }
    return out;
  };
  const dst = new Uint8Array(dh * dw * 3);
  for (let d = 0; d < dh; d++) {
    const sy = ys.index[d];
    const b0 = pyRound(f32(1 - ys.weight[d]) * 2048);
    const b1 = pyRound(ys.weight[d] * 2048);
    const r0 = horizontal(clip(sy, height - 1));
    const r1 = horizontal(clip(sy + 1, height - 1));
    for (let i = 0; i < dw * 3; i++) {
      // VResizeLinearVec_32s8u: 16-bit high products of the rows shifted by 4, then + 2 >> 2
      // (checked equal to cv2.resize on real photos).
      const v = ((((r0[i] >> 4) * b0) >> 16) + (((r1[i] >> 4) * b1) >> 16) + 2) >> 2;
      dst[d * dw * 3 + i] = clip(v, 255);
    }
  }
  return dst;
}

/** segment.rescale of an RGB photo: INTER_AREA to shrink, linear to enlarge. */
export function rescale(rgb, height, width, scale) {
  if (scale === 1.0) return { rgb, height, width };
  const [dh, dw] = scaledSize(height, width, scale);
  const out = scale < 1 ? resizeArea(rgb, height, width, dh, dw) : resizeLinear8u(rgb, height, width, dh, dw);
  return { rgb: out, height: dh, width: dw };
}

/** segment.tile_origins */
export function tileOrigins(length, tile, overlap) {
  if (length <= tile) return [0];
  const stride = Math.max(1, Math.trunc(tile * (1 - overlap)));
  const starts = [];
  for (let s = 0; s < length - tile; s += stride) starts.push(s);
  starts.push(length - tile);
  return starts;
}

const ceilTo = (value, multiple) => Math.ceil(value / multiple) * multiple;

/**
 * segment.Segmenter.logits: (C, h, w) float32 logits of an image at the working scale.
 * `run(batch, n, th, tw)` runs the network on (n, 3, th, tw) float32 RGB 0..255 and
 * resolves to its (n, C, th, tw) logits (a Float32Array).
 */
export async function logits(scaled, height, width, recipe, run) {
  let [tileH, tileW] = recipe.tile;
  let paddedH, paddedW;
  if (height <= tileH && width <= tileW) {
    paddedH = ceilTo(height, recipe.pad_multiple);
    paddedW = ceilTo(width, recipe.pad_multiple);
    tileH = paddedH;
    tileW = paddedW;
  } else {
    paddedH = Math.max(height, tileH);
    paddedW = Math.max(width, tileW);
    tileH = Math.min(tileH, paddedH);
    tileW = Math.min(tileW, paddedW);
  }
  const ys = tileOrigins(paddedH, tileH, recipe.overlap);
  const xs = tileOrigins(paddedW, tileW, recipe.overlap);
  const origins = [];
  for (const y of ys) for (const x of xs) origins.push([y, x]);
  // Several tiles are always of the recipe's tile size, whose ramps the recipe carries.
  const several = origins.length > 1;
  if (several && (recipe.ramp[0].length !== tileH || recipe.ramp[1].length !== tileW)) {
    throw new Error(`the recipe's ramps do not fit tiles of ${tileH}x${tileW}`);
  }
  const rampY = several ? Float32Array.from(recipe.ramp[0]) : new Float32Array(tileH).fill(1);
  const rampX = several ? Float32Array.from(recipe.ramp[1]) : new Float32Array(tileW).fill(1);
  const plane = tileH * tileW;
  let total = null;
  let classes = 0;
  for (let start = 0; start < origins.length; start += recipe.batch_size) {
    const chunk = origins.slice(start, start + recipe.batch_size);
    const batch = new Float32Array(chunk.length * 3 * plane);
    chunk.forEach(([y0, x0], n) => {
      for (let y = 0; y < tileH; y++) {
        const sy = y0 + y;
        if (sy >= height) continue; // padding rows stay 0
        for (let x = 0; x < tileW; x++) {
          const sx = x0 + x;
          if (sx >= width) continue;
          const s = (sy * width + sx) * 3;
          const d = n * 3 * plane + y * tileW + x;
          batch[d] = scaled[s];
          batch[d + plane] = scaled[s + 1];
          batch[d + 2 * plane] = scaled[s + 2];
        }
      }
    });
    const output = await run(batch, chunk.length, tileH, tileW);
    if (total === null) {
      classes = output.length / (chunk.length * plane);
      total = new Float32Array(classes * paddedH * paddedW);
    }
    chunk.forEach(([y0, x0], n) => {
      for (let c = 0; c < classes; c++) {
        const base = (n * classes + c) * plane;
        const dest = c * paddedH * paddedW;
        for (let y = 0; y < tileH; y++) {
          const row = dest + (y0 + y) * paddedW + x0;
          for (let x = 0; x < tileW; x++) {
            const weight = f32(rampY[y] * rampX[x]);
            total[row + x] = f32(total[row + x] + f32(output[base + y * tileW + x] * weight));
          }
        }
      }
    });
  }
  const coverage = (length, tile, starts, ramp) => {
    const sum = new Float32Array(length);
    for (const s of starts) for (let i = 0; i < tile; i++) sum[s + i] = f32(sum[s + i] + ramp[i]);
    return sum;
  };
  const coverY = coverage(paddedH, tileH, ys, rampY);
  const coverX = coverage(paddedW, tileW, xs, rampX);
  const out = new Float32Array(classes * height * width);
  for (let c = 0; c < classes; c++) {
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const v = f32(total[c * paddedH * paddedW + y * paddedW + x] / coverY[y]);
        out[(c * height + y) * width + x] = f32(v / coverX[x]);
      }
    }
  }
  return { logits: out, classes };
}

/** Argmax over classes of (C, h, w) logits; ties keep the first class, as numpy's argmax. */
function argmax(values, classes, pixels) {
  const mask = new Uint8Array(pixels);
  for (let i = 0; i < pixels; i++) {
    let best = values[i];
    for (let c = 1; c < classes; c++) {
      const v = values[c * pixels + i];
      if (v > best) (best = v), (mask[i] = c);
    }
  }
  return mask;
}

/** segment.Segmenter.to_mask: (height, width) class indices from working-scale logits. */
export function toMask(values, classes, h, w, height, width, recipe) {
  if (h === height && w === width) return argmax(values, classes, h * w);
  if (height * width * recipe.upsample_bytes_per_pixel <= recipe.upsample_bytes) {
    // Bilinear logits (cv2 INTER_LINEAR on float32), then argmax: one output row at a time.
    const xs = linearAxis(w, width, true);
    const ys = linearAxis(h, height, false);
    const mask = new Uint8Array(height * width);
    const rows = new Map();
    const horizontal = (c, sy) => {
      const key = c * h + sy;
      let row = rows.get(key);
      if (row) return row;
      row = new Float32Array(width);
      const base = (c * h + sy) * w;
      for (let d = 0; d < width; d++) {
        const sx = xs.index[d];
        const fx = xs.weight[d];
        row[d] = fx === 0 ? values[base + sx] : f32(f32(values[base + sx] * f32(1 - fx)) + f32(values[base + sx + 1] * fx));
      }
      rows.set(key, row);
      return row;
    };
    for (let d = 0; d < height; d++) {
      const fy = ys.weight[d];
      const r0 = clip(ys.index[d], h - 1);
      const r1 = clip(ys.index[d] + 1, h - 1);
      const b0 = f32(1 - fy);
      for (const key of rows.keys()) if (key % h < r0) rows.delete(key);
      let best = null;
      for (let c = 0; c < classes; c++) {
        const top = horizontal(c, r0);
        const bottom = horizontal(c, r1);
        const out = d * width;
        if (c === 0) best = new Float32Array(width);
        for (let x = 0; x < width; x++) {
          const v = f32(f32(b0 * top[x]) + f32(fy * bottom[x]));
          if (c === 0) best[x] = v;
          else if (v > best[x]) (best[x] = v), (mask[out + x] = c);
        }
      }
    }
    return mask;
  }
  // Too big to resize the logits: argmax at the working scale, nearest-neighbour mask.
  const small = argmax(values, classes, h * w);
  const mask = new Uint8Array(height * width);
  const fx = 1 / (width / w);
  const fy = 1 / (height / h);
  for (let y = 0; y < height; y++) {
    const sy = Math.min(Math.floor(y * fy), h - 1);
    for (let x = 0; x < width; x++) mask[y * width + x] = small[sy * w + Math.min(Math.floor(x * fx), w - 1)];
  }
  return mask;
}

/** The whole path: (H, W, 3) uint8 RGB -> (H, W) uint8 class indices. */
export async function predict(rgb, height, width, recipe, run) {
  const scaled = rescale(rgb, height, width, workingFactor(height, width, recipe.long_side));
  const { logits: values, classes } = await logits(scaled.rgb, scaled.height, scaled.width, recipe, run);
  return toMask(values, classes, scaled.height, scaled.width, height, width, recipe);
}

/** regions.class_shares: per class, its pixel count and share of the mask. */
export function classShares(mask, names, palette) {
  const counts = new Array(names.length).fill(0);
  for (let i = 0; i < mask.length; i++) if (mask[i] < names.length) counts[mask[i]]++;
  const hex = (v) => v.toString(16).padStart(2, "0");
  return names.map((name, index) => ({
    index,
    name,
    colour: "#" + palette[index].map(hex).join(""),
    pixels: counts[index],
    share: counts[index] / Math.max(mask.length, 1),
  }));
}
