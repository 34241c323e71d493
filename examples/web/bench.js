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
  const ob = await Onebit.load(wasm, model);
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

// The model's shape from the "onebit.config" JSON string near the end of the graph (as
// bench_wasm.mjs: onnxruntime-web does not expose metadata_props).
function onebitConfig(bytes) {
  const text = new TextDecoder("latin1").decode(bytes.subarray(Math.max(0, bytes.length - 65536)));
  const i = text.lastIndexOf('{"vocab_size"');
  return JSON.parse(text.slice(i, text.indexOf("}", i) + 1));
}

async function benchOrt(file, steps) {
  const ort = await import("./ort/ort.wasm.min.mjs");
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.wasmPaths = new URL("./ort/", location.href).href;
  ort.env.logLevel = "error";
  const bytes = await fetchBytes(file);
  let t0 = performance.now();
  const session = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"] });
  const loadMs = performance.now() - t0;
  const meta = onebitConfig(bytes);
  const { n_layers: layers, n_kv_heads: kvHeads, max_seq_len: ctx } = meta;
  const headDim = meta.dim / meta.n_heads;
  const feeds = (ids, start, past) => {
    const t = ids.length;
    const f = {
      input_ids: new ort.Tensor("int64", BigInt64Array.from(ids, BigInt), [1, t]),
      attention_mask: new ort.Tensor("int64", new BigInt64Array(start + t).fill(1n), [1, start + t]),
      position_ids: new ort.Tensor("int64", BigInt64Array.from({ length: t }, (_, i) => BigInt(start + i)), [1, t]),
    };
    for (let i = 0; i < layers; i++) {
      for (const part of ["key", "value"]) {
        f[`past_key_values.${i}.${part}`] = past?.[`present.${i}.${part}`] ??
          new ort.Tensor("float32", new Float32Array(0), [1, kvHeads, 0, headDim]);
      }
    }
    return f;
  };
  const prompt = Array.from({ length: Math.floor(ctx / 2) }, (_, i) => (i * 7) % meta.vocab_size);
  t0 = performance.now();
  let res = await session.run(feeds(prompt, 0, null));
  const prefillMs = performance.now() - t0;
  let pos = prompt.length;
  const n = Math.min(steps, ctx - pos);
  t0 = performance.now();
  for (let s = 0; s < n; s++) {
    res = await session.run(feeds([s % meta.vocab_size], pos, res));
    pos += 1;
  }
  const stepMs = (performance.now() - t0) / n;
  await session.release();
  return { loadMs, prefillTokens: prompt.length, prefillMs, stepMs };
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
