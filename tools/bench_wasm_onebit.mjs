// Time a .1bit model on onebit.wasm (make -C runtime_c wasm) under Node, one thread, with the
// protocol of examples/web/bench_wasm.mjs (onnxruntime-web): load, one prefill of half the
// context, then single-token decode steps.  Prints one JSON line with the same fields.
//   node tools/bench_wasm_onebit.mjs MODEL.1bit [steps] [isa]
import { readFile } from 'node:fs/promises';
import { Onebit } from '../runtime_c/build/wasm/onebit.mjs';

const [path, stepsArg, isa] = process.argv.slice(2);
if (!path) {
  console.error('usage: node tools/bench_wasm_onebit.mjs MODEL.1bit [steps] [isa]');
  process.exit(1);
}
const steps = Number(stepsArg ?? 100);
const wasm = await readFile(new URL('../runtime_c/build/wasm/onebit.wasm', import.meta.url));
let t0 = performance.now();
// f32 KV-cache: the cache of onnxruntime-web's graph, the peer of every recorded figure
const ob = await Onebit.load(wasm, await readFile(path), { kv: 'f32', env: isa ? { ONEBIT_ISA: isa } : {} });
const loadMs = performance.now() - t0;

const ctx = ob.nCtx;
const prompt = Array.from({ length: Math.floor(ctx / 2) }, (_, i) => (i * 7) % ob.vocabSize);
t0 = performance.now();
ob.prefill(prompt);
const prefillMs = performance.now() - t0;
const n = Math.min(steps, ctx - prompt.length);
t0 = performance.now();
for (let s = 0; s < n; s++) ob.decode(s % ob.vocabSize);
const stepMs = (performance.now() - t0) / n;
console.log(JSON.stringify({ model: path, isa: ob.isa, load_ms: +loadMs.toFixed(1), prefill_tokens: prompt.length,
  prefill_ms: +prefillMs.toFixed(2), decode_ms_per_token: +stepMs.toFixed(3), tokens_per_s: +(1000 / stepMs).toFixed(1) }));
ob.close();
