// The decode benchmark of tools/bench_wasm.py inside the browser (bench.html): one engine, one
// thread, the protocol of bench_wasm.mjs (onnxruntime-web) and tools/bench_wasm_onebit.mjs
// (onebit.wasm): load, one prefill of half the context, then single-token decode steps.
//   bench.html?engine=onebit&file=model.1bit&steps=16      (files relative to /model/)
//   bench.html?engine=ort&file=web/model_web.onnx&steps=16
// The result is one JSON object in <pre id="result"> (data-state "done" or "error").
const params = new URLSearchParams(location.search);
const out = document.getElementById("result");

async function fetchBytes(name) {
  const url = new URL(name, new URL("/model/", location.href));
  const res = await fetch(url);
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  return new Uint8Array(await res.arrayBuffer());
}

async function benchOnebit(file, steps) {
  const { Onebit } = await import("/onebit/onebit.mjs");
  const [wasm, model] = await Promise.all([fetchBytes("/onebit/onebit.wasm"), fetchBytes(file)]);
  let t0 = performance.now();
  const ob = await Onebit.load(wasm, model, { kv: "f32" }); // the cache onnxruntime-web's graph has
  const loadMs = performance.now() - t0;
  const prompt = Array.from({ length: Math.floor(ob.nCtx / 2) }, (_, i) => (i * 7) % ob.vocabSize);
  t0 = performance.now();
  ob.prefill(prompt);
  const prefillMs = performance.now() - t0;
  const n = Math.min(steps, ob.nCtx - prompt.length);
  t0 = performance.now();
  for (let s = 0; s < n; s++) ob.decode(s % ob.vocabSize);
  const stepMs = (performance.now() - t0) / n;
  const isa = ob.isa;
  ob.close();
  return { isa, loadMs, prefillTokens: prompt.length, prefillMs, stepMs };
}

async function benchOrt(file, steps) {
  const ort = await import("./ort/ort.wasm.min.mjs");
  const { benchOrtGraph } = await import("./ort_decode.mjs");
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.wasmPaths = new URL("./ort/", location.href).href;
  ort.env.logLevel = "error";
  return benchOrtGraph(ort, await fetchBytes(file), steps);
}

try {
  const engine = params.get("engine"), file = params.get("file"), steps = Number(params.get("steps") ?? 16);
  const r = engine === "onebit" ? await benchOnebit(file, steps)
    : engine === "ort" ? await benchOrt(file, steps) : null;
  if (!r) throw new Error(`unknown engine ${engine} (onebit or ort)`);
  out.textContent = JSON.stringify({
    model: file, ...(r.isa ? { isa: r.isa } : {}), load_ms: +r.loadMs.toFixed(1), prefill_tokens: r.prefillTokens,
    prefill_ms: +r.prefillMs.toFixed(2), decode_ms_per_token: +r.stepMs.toFixed(3),
    tokens_per_s: +(1000 / r.stepMs).toFixed(1), user_agent: navigator.userAgent,
  });
  out.dataset.state = "done";
} catch (e) {
  out.textContent = e.message;
  out.dataset.state = "error";
}
