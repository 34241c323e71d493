// The demo page: load the model, then (re)generate whenever the prompt or a setting changes.
import * as ort from "./ort/ort.wasm.min.mjs";
import { OnebitModel } from "./onebit.js";

const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
const status = $("status");
const output = $("output");
const stats = $("stats");

function setStatus(state, text) {
  status.dataset.state = state;
  status.textContent = text;
}

// Threads need SharedArrayBuffer, which the browser grants only to a cross-origin isolated page
// (server.mjs sends COOP/COEP); otherwise one thread.
ort.env.wasm.numThreads = crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
ort.env.wasm.wasmPaths = new URL("./ort/", location.href).href;
ort.env.logLevel = "error";

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
  const prompt = $("prompt").value;
  const n = Number($("n").value);
  const ids = [];
  output.replaceChildren();
  stats.textContent = "";
  output.dataset.ids = "";
  const promptIds = model.tokenizer.encode(prompt);
  const head = document.createElement("span");
  head.className = "prompt";
  head.textContent = prompt;
  const tail = document.createTextNode("");
  output.append(head, tail);
  setStatus("running", "generating…");
  const decode = model.tokenizer.decoder();
  const start = performance.now();
  let firstAt = 0;
  for await (const tok of model.generate(promptIds, n, samplerSettings(), signal)) {
    if (ids.length === 0) firstAt = performance.now();
    ids.push(tok);
    tail.data += decode(tok);
    const elapsed = (performance.now() - firstAt) / 1000;
    if (ids.length > 1) {
      stats.textContent = `${ids.length} tokens, ${((ids.length - 1) / elapsed).toFixed(1)} tokens/s ` +
        `(prompt ${promptIds.length} tokens, first token after ${(firstAt - start).toFixed(0)} ms, ` +
        `${ort.env.wasm.numThreads} thread${ort.env.wasm.numThreads > 1 ? "s" : ""})`;
    }
  }
  if (signal.aborted) return;
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

async function main() {
  for (const id of SETTINGS) {
    if (params.has(id)) $(id).value = params.get(id);
  }
  if (params.has("prompt")) $("prompt").value = params.get("prompt");
  const t0 = performance.now();
  model = await OnebitModel.load(ort, params.get("model") ?? "model/");
  setStatus("ready", `model loaded in ${(performance.now() - t0).toFixed(0)} ms ` +
    `(${model.layers} layers, context ${model.context}, ${model.tokenizer.kind} vocabulary of ${model.vocabSize}; ` +
    `${crossOriginIsolated ? "cross-origin isolated" : "not isolated: 1 thread"})`);
  const rerun = debounce(run, 250);
  $("prompt").addEventListener("input", rerun);
  for (const id of SETTINGS) $(id).addEventListener("change", rerun);
  window.onebitDemo = { model, run, threads: ort.env.wasm.numThreads };
  if (params.get("autorun") !== "0") await run();
}

main().catch((e) => {
  setStatus("error", `error: ${e.message}`);
  console.error(e);
});
