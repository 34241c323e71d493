// The page's other backend: onebit's own C runtime built for WebAssembly (runtime_c/build/wasm,
// served at /onebit/), on the exported model.1bit.  Tokenizer, sampler and context sliding are the
// runtime's own (the same as onebit-run); this file only adapts them to the page's interface,
// which onebit.js (onnxruntime-web) also has: tokenizer.encode / decoder, generate().
import { Onebit } from "/onebit/onebit.mjs";

// Hand the event loop a turn (a message, not setTimeout: no 4 ms clamp), so that the page paints
// and an edit can abort the run.
const macrotask = () => new Promise((resolve) => {
  const channel = new MessageChannel();
  channel.port1.onmessage = () => resolve();
  channel.port2.postMessage(0);
});

export class OnebitWasmModel {
  constructor(ob) {
    this.ob = ob;
    this.name = "onebit.wasm";
    this.threads = 1;
    this.layers = ob.layers;
    this.context = ob.nCtx;
    this.vocabSize = ob.vocabSize;
    this.tokenizer = {
      kind: ob.tokenizerKind,
      encode: (text) => Array.from(ob.tokenize(text)),
      decoder: () => {
        const utf8 = new TextDecoder("utf-8", { fatal: false });
        return (id) => (id === undefined ? utf8.decode() : utf8.decode(ob.tokenBytes(id), { stream: true }));
      },
    };
  }

  /** Load onebit.wasm and model.1bit from the folder at baseUrl. */
  static async load(baseUrl, { file = "model.1bit" } = {}) {
    const fetchOk = async (url) => {
      const res = await fetch(url);
      if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
      return res.arrayBuffer();
    };
    const [wasm, model] = await Promise.all([
      fetchOk(new URL("/onebit/onebit.wasm", location.href)),
      fetchOk(new URL(file, new URL(baseUrl, location.href))),
    ]);
    // f32 KV-cache, as onnxruntime-web's beside it: the two backends give the same tokens
    return new OnebitWasmModel(await Onebit.load(wasm, model, { kv: "f32" }));
  }

  describe() {
    return `onebit.wasm (${this.ob.isa}), ${this.layers} layers, context ${this.context}, ` +
      `${this.tokenizer.kind} vocabulary of ${this.vocabSize}`;
  }

  /**
   * Yield maxNewTokens new token ids; stops early (without error) once signal aborts.  The same
   * loop as Onebit.generate (prefill, then sample / decode; the runtime slides the context), with
   * a turn of the event loop every 30 ms.
   */
  async *generate(promptIds, maxNewTokens, samplerConfig, signal) {
    if (promptIds.length === 0) throw new Error("the prompt is empty: generation needs at least one token");
    if (promptIds.length > this.context) {
      throw new Error(`the prompt (${promptIds.length} tokens) is longer than the model's context of ` +
        `${this.context} tokens (the prompt itself must fit)`);
    }
    if (maxNewTokens === 0) return;
    this.ob.setSampler(samplerConfig);
    this.ob.prefill(promptIds);
    let turn = performance.now();
    for (let produced = 0; ;) {
      if (signal?.aborted) return;
      const tok = this.ob.sample();
      produced += 1;
      yield tok;
      if (produced === maxNewTokens || signal?.aborted) return;
      this.ob.decode(tok);
      if (performance.now() - turn > 30) {
        await macrotask();
        turn = performance.now();
      }
    }
  }
}
