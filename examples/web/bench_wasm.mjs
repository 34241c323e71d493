// Time an exported decoder graph on onnxruntime-web's WASM backend under Node (single thread):
// session creation, one prefill of half the context and single-token decode steps.
//   node bench_wasm.mjs path/to/model_web.onnx [steps]
import { readFile } from "node:fs/promises";
import * as ort from "onnxruntime-web";

import { benchOrtGraph } from "./ort_decode.mjs";

const [path, stepsArg] = process.argv.slice(2);
if (!path) {
  console.error("usage: node bench_wasm.mjs MODEL.onnx [steps]");
  process.exit(1);
}
const steps = Number(stepsArg ?? 100);
ort.env.wasm.numThreads = 1;
ort.env.logLevel = "error";

const r = await benchOrtGraph(ort, await readFile(path), steps);
console.log(JSON.stringify({ model: path, load_ms: +r.loadMs.toFixed(1), prefill_tokens: r.prefillTokens,
  prefill_ms: +r.prefillMs.toFixed(2), decode_ms_per_token: +r.stepMs.toFixed(3),
  tokens_per_s: +(1000 / r.stepMs).toFixed(1) }));
