// The onnxruntime-web half of the wasm decode benchmark, shared by the Node runner (bench_wasm.mjs)
// and the browser page (bench.js) so that both time exactly the same protocol: session creation,
// one prefill of half the context, then single-token decode steps through the KV-cache.

// The model's shape from the "onebit.config" JSON string near the end of the graph: onnxruntime-web
// does not expose metadata_props.
export function onebitConfig(bytes) {
  const text = new TextDecoder("latin1").decode(bytes.subarray(Math.max(0, bytes.length - 65536)));
  const i = text.lastIndexOf('{"vocab_size"');
  if (i < 0) throw new Error("no onebit.config in the graph: not an onebit export");
  return JSON.parse(text.slice(i, text.indexOf("}", i) + 1));
}

// `ort` is the onnxruntime-web module, already configured (threads, wasm paths); `bytes` the graph.
export async function benchOrtGraph(ort, bytes, steps) {
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
