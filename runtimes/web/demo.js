// The demo page: load the artifact (./artifact/, or ?artifact=URL); for the digits DiT, generate a digit or all ten
// (a text-to-image artifact takes a prompt instead),
// draw the grid (16 px tiles, 1 px gaps, 10 columns, as runtimes/image.py: grid), show per-step progress,
// the time per image and the adapter's name. window.edgegenDemo holds the page's state for scripts
// (the browser test reads it): state is loading | ready | running | done | error.

import {load} from "./edgegen.js";

const $ = (id) => document.getElementById(id);
const demo = window.edgegenDemo = {state: "loading", error: null, adapter: null, result: null, stats: null};
const COLUMNS = 10, GAP = 1, FILL = 128;

function fail(error) {
  demo.state = "error";
  demo.error = `${error.name}: ${error.message}`;
  $("error").textContent = demo.error;
  $("status").textContent = "failed";
  console.error(error);
}

function draw(images, [n, h, w, c]) {
  const rows = Math.ceil(n / COLUMNS), cols = Math.min(n, COLUMNS);
  const canvas = $("grid");
  canvas.width = cols * (w + GAP) - GAP;
  canvas.height = rows * (h + GAP) - GAP;
  canvas.style.width = `${canvas.width * 8}px`;
  const ctx = canvas.getContext("2d");
  const pixels = ctx.createImageData(canvas.width, canvas.height);
  for (let k = 0; k < pixels.data.length; k += 4) pixels.data.set([FILL, FILL, FILL, 255], k);
  for (let i = 0; i < n; i++) {
    const y0 = Math.floor(i / COLUMNS) * (h + GAP), x0 = (i % COLUMNS) * (w + GAP);
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++) {
        const src = ((i * h + y) * w + x) * c, dst = ((y0 + y) * canvas.width + x0 + x) * 4;
        for (let k = 0; k < 3; k++) pixels.data[dst + k] = images[src + (c === 1 ? 0 : k)];
      }
  }
  ctx.putImageData(pixels, 0, 0);
}

async function generate(pipe) {
  demo.state = "running";
  $("error").textContent = "";
  $("controls").disabled = true;
  try {
    const text = pipe.tokenizer !== undefined;
    const count = Number($("count").value) || 1;
    const digits = $("digit").value === "all" ? [...Array(10).keys()] : [Number($("digit").value)];
    const labels = text ? [$("prompt").value] : Array.from({length: count}, () => digits).flat();
    const progress = $("progress");
    const result = await pipe.generate({
      ...(text ? {prompt: labels[0]} : {labels}),
      steps: Number($("steps").value), guidanceScale: Number($("guidance").value), seed: $("seed").value.trim(),
      onStep: ({done, total}) => {
        progress.max = total;
        progress.value = done;
        $("status").textContent = `step ${done} / ${total}`;
        return new Promise((r) => requestAnimationFrame(r));      // let the page repaint between steps
      },
    });
    draw(result.images, result.shape);
    demo.result = {labels, shape: result.shape, timings: result.timings, samples: Array.from(result.samples)};
    $("status").textContent = `${labels.length} images in ${result.timings.denoise_s.toFixed(2)} s`;
    $("info").textContent = `${(result.timings.per_image_s * 1000).toFixed(0)} ms per image on ${pipe.adapterName}`;
    demo.state = "done";
  } catch (e) {
    fail(e);
  } finally {
    $("controls").disabled = false;
  }
}

async function main() {
  const params = new URLSearchParams(location.search);
  const artifact = new URL(params.get("artifact") || "./artifact/", location.href);
  const pipe = await load(artifact, {
    onProgress: ({stage, done, total, message}) => {
      $("status").textContent = message;
      if (total) { $("progress").max = total; $("progress").value = done; }
    },
  });
  demo.adapter = pipe.adapterName;
  demo.stats = pipe.stats;
  if (pipe.tokenizer !== undefined) {          // text to image: a prompt instead of the digit controls
    document.querySelectorAll(".digits").forEach((e) => { e.hidden = true; });
    document.querySelector(".text").hidden = false;
  } else {
    for (const [id, names] of Object.entries(pipe.id2label)) $("digit").add(new Option(names, id));
  }
  $("steps").value = pipe.sampling.steps ?? 25;
  $("guidance").value = pipe.sampling.guidance_scale ?? 4.0;
  $("generate").onclick = (e) => { e.preventDefault(); generate(pipe); };
  $("controls").disabled = false;
  $("status").textContent = `ready: weights ${(pipe.stats.weightBytesDownloaded / 1e6).toFixed(1)} MB downloaded, `
    + `${(pipe.stats.weightBytesFromCache / 1e6).toFixed(1)} MB from the cache; kernels compiled in ${pipe.stats.pipelineSeconds.toFixed(1)} s`;
  $("info").textContent = `adapter: ${pipe.adapterName}`;
  demo.state = "ready";
}

main().catch(fail);
