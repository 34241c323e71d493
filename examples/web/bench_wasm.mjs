// Time an exported decoder graph on onnxruntime-web's WASM backend under Node (single thread):
// session creation, one prefill of half the context and single-token decode steps.
//   node bench_wasm.mjs path/to/model_web.onnx [steps]
import { readFile } from "node:fs/promises";
import * as ort from "onnxruntime-web";

const [path, stepsArg] = process.argv.slice(2);
if (!path) {
  console.error("usage: node bench_wasm.mjs MODEL.onnx [steps]");
  process.exit(1);
}
const steps = Number(stepsArg ?? 100);
ort.env.wasm.numThreads = 1;
ort.env.logLevel = "error";

let t0 = performance.now();
const session = await ort.InferenceSession.create(await readFile(path), { executionProviders: ["wasm"] });
const loadMs = performance.now() - t0;
const meta = await readOnebitConfig(path);
const { n_layers: layers, n_kv_heads: kvHeads, max_seq_len: ctx } = meta;
const headDim = meta.dim / meta.n_heads;

function feeds(ids, start, past) {
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
}

const prompt = Array.from({ length: Math.floor(ctx / 2) }, (_, i) => (i * 7) % meta.vocab_size);
t0 = performance.now();
let out = await session.run(feeds(prompt, 0, null));
const prefillMs = performance.now() - t0;
let pos = prompt.length;
const n = Math.min(steps, ctx - pos);
t0 = performance.now();
for (let s = 0; s < n; s++) {
  out = await session.run(feeds([s % meta.vocab_size], pos, out));
  pos += 1;
}
const stepMs = (performance.now() - t0) / n;
console.log(JSON.stringify({ model: path, load_ms: +loadMs.toFixed(1), prefill_tokens: prompt.length,
  prefill_ms: +prefillMs.toFixed(2), decode_ms_per_token: +stepMs.toFixed(3), tokens_per_s: +(1000 / stepMs).toFixed(1) }));

async function readOnebitConfig(file) {
  // onnxruntime-web does not expose metadata_props: read the config from the sibling genai_config
  // when there is one, else from the protobuf's "onebit.config" string.
  const bytes = await readFile(file);
  const text = new TextDecoder("latin1").decode(bytes.subarray(Math.max(0, bytes.length - 65536)));
  const i = text.lastIndexOf('{"vocab_size"');
  return JSON.parse(text.slice(i, text.indexOf("}", i) + 1));
}
