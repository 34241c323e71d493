// The demo page: load the model on the chosen backend, then (re)generate whenever the prompt, a
// setting or the backend changes.  Backends: onebit.wasm (the C runtime, model.1bit) and
// onnxruntime-web (model_web.onnx); both give the same tokens, the page shows each one's speed.
import { OnebitWasmModel } from "./onebit_wasm.js";

const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
const status = $("status");
const output = $("output");
const stats = $("stats");
const speeds = {}; // backend name -> "N tokens/s" of its last finished run

function setStatus(state, text) {
  status.dataset.state = state;
  status.textContent = text;
}

const BACKENDS = {
  onebit: (base) => OnebitWasmModel.load(base),
  ort: async (base) => {
    const ort = await import("./ort/ort.wasm.min.mjs");
    // Threads need SharedArrayBuffer, which the browser grants only to a cross-origin isolated
    // page (server.mjs sends COOP/COEP); otherwise one thread.  ?threads=N overrides.
    const threads = crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
    ort.env.wasm.numThreads = Number(params.get("threads") ?? threads);
    ort.env.wasm.wasmPaths = new URL("./ort/", location.href).href;
    ort.env.logLevel = "error";
    const { OnebitModel } = await import("./onebit.js");
    return OnebitModel.load(ort, base);
  },
};
const loaded = {}; // backend -> Promise of its model

const SETTINGS = ["n", "temperature", "topK", "topP", "repeatPenalty", "repeatWindow", "seed"];
let model;
let current = null; // { controller, done } of the generation on screen

function samplerSettings() {
  return {
    temperature: Number($("temperature").value),
    topK: Number($("topK").value),
    topP: Number($("topP").value),
    repeatPenalty: Number($("repeatPenalty").value),
    repeatWindow: Number($("repeatWindow").value),
    seed: Number($("seed").value),
  };
}

// One generation on screen at a time: a new run aborts the previous one and waits for it to stop.
// `current` is replaced before any await, so a burst of edits cannot start two runs at once.
async function run() {
  const previous = current;
  const controller = new AbortController();
  let finish;
  current = { controller, done: new Promise((resolve) => (finish = resolve)) };
  try {
    if (previous) {
      previous.controller.abort();
      await previous.done;
    }
    if (!controller.signal.aborted) await generateIntoPage(controller.signal);
  } catch (e) {
    setStatus("error", `error: ${e.message}`);
  } finally {
    finish();
  }
}

async function generateIntoPage(signal) {
  const m = model; // a backend switch waits for this run to stop, but keep to one model anyway
  const prompt = $("prompt").value;
  const n = Number($("n").value);
  const ids = [];
  output.replaceChildren();
  stats.textContent = "";
  output.dataset.ids = "";
  output.dataset.backend = "";
  output.dataset.prompt = "";
  const promptIds = m.tokenizer.encode(prompt);
  const head = document.createElement("span");
  head.className = "prompt";
  head.textContent = prompt;
  const tail = document.createTextNode("");
  output.append(head, tail);
  setStatus("running", "generating…");
  const decode = m.tokenizer.decoder();
  const start = performance.now();
  let firstAt = 0;
  for await (const tok of m.generate(promptIds, n, samplerSettings(), signal)) {
    if (ids.length === 0) firstAt = performance.now();
    ids.push(tok);
    tail.data += decode(tok);
    const elapsed = (performance.now() - firstAt) / 1000;
    if (ids.length > 1) {
      stats.textContent = `${m.name}: ${ids.length} tokens, ${((ids.length - 1) / elapsed).toFixed(1)} ` +
        `tokens/s (prompt ${promptIds.length} tokens, first token after ${(firstAt - start).toFixed(0)} ms, ` +
        `${m.threads} thread${m.threads > 1 ? "s" : ""})`;
    }
  }
  if (signal.aborted) return;
  if (ids.length > 1) {
    speeds[m.name] = `${((ids.length - 1) / ((performance.now() - firstAt) / 1000)).toFixed(1)} tokens/s`;
    $("speeds").textContent = "last runs: " + Object.entries(speeds).map(([k, v]) => `${k} ${v}`).join(", ");
  }
  output.dataset.backend = m.name;
  tail.data += decode();
  output.dataset.ids = ids.join(",");
  output.dataset.promptIds = promptIds.join(",");
  output.dataset.prompt = prompt;
  setStatus("done", `done: ${ids.length} tokens`);
}

function debounce(fn, ms) {
  let timer;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(fn, ms);
  };
}

// Load (once) and switch to the backend named in the selector.
async function useBackend() {
  const backend = $("backend").value;
  setStatus("loading", `loading the model on ${$("backend").selectedOptions[0].text}…`);
  const t0 = performance.now();
  loaded[backend] ??= BACKENDS[backend](params.get("model") ?? "model/");
  try {
    model = await loaded[backend];
  } catch (e) {
    delete loaded[backend]; // let a later switch try again
    throw e;
  }
  window.onebitDemo = { model, run, threads: model.threads, backend: model.name };
  setStatus("ready", `model ready in ${(performance.now() - t0).toFixed(0)} ms: ${model.describe()} ` +
    `(${crossOriginIsolated ? "cross-origin isolated" : "not isolated: 1 thread"})`);
}

async function main() {
  for (const id of SETTINGS) {
    if (params.has(id)) $(id).value = params.get(id);
  }
  if (params.has("prompt")) $("prompt").value = params.get("prompt");
  if (params.has("backend")) $("backend").value = params.get("backend");
  else {
    // onebit.wasm is the default; a folder exported for onnxruntime-web only has no model.1bit
    const base = new URL(params.get("model") ?? "model/", location.href);
    const res = await fetch(new URL("model.1bit", base), { method: "HEAD" });
    if (!res.ok) $("backend").value = "ort";
  }
  await useBackend();
  const rerun = debounce(run, 250);
  $("prompt").addEventListener("input", rerun);
  for (const id of SETTINGS) $(id).addEventListener("change", rerun);
  $("backend").addEventListener("change", async () => {
    try {
      if (current) {
        current.controller.abort();
        await current.done;
      }
      await useBackend();
      await run();
    } catch (e) {
      setStatus("error", `error: ${e.message}`);
    }
  });
  if (params.get("autorun") !== "0") await run();
}

main().catch((e) => {
  setStatus("error", `error: ${e.message}`);
  console.error(e);
});
