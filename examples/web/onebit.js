// An exported onebit model on onnxruntime-web: the KV-cached decode loop of onebit/sampling.py
// (docs/SAMPLING.md) over model_web.onnx, the standard-ops graph (docs/ONNX.md).
import { Sampler } from "./sampler.js";
import { Tokenizer } from "./tokenizer.js";

export class OnebitModel {
  constructor(ort, session, config, tokenizer) {
    this.ort = ort;
    this.session = session;
    this.tokenizer = tokenizer;
    const dec = config.model.decoder;
    this.layers = dec.num_hidden_layers;
    this.kvHeads = dec.num_key_value_heads;
    this.headDim = dec.head_size;
    this.context = config.model.context_length;
    this.vocabSize = config.model.vocab_size;
    this.name = "onnxruntime-web";
    this.threads = ort.env.wasm.numThreads;
  }

  describe() {
    return `onnxruntime-web (wasm, model_web.onnx), ${this.layers} layers, context ${this.context}, ` +
      `${this.tokenizer.kind} vocabulary of ${this.vocabSize}`;
  }

  /** Load genai_config.json, tokenizer.json and model_web.onnx from the folder at baseUrl. */
  static async load(ort, baseUrl, { graph = "model_web.onnx" } = {}) {
    const base = new URL(baseUrl, location.href);
    const fetchOk = async (name) => {
      const res = await fetch(new URL(name, base));
      if (!res.ok) throw new Error(`${new URL(name, base)}: HTTP ${res.status}`);
      return res;
    };
    const [config, tokenizer, bytes] = await Promise.all([
      fetchOk("genai_config.json").then((r) => r.json()),
      fetchOk("tokenizer.json").then((r) => r.json()).then((spec) => new Tokenizer(spec)),
      fetchOk(graph).then((r) => r.arrayBuffer()),
    ]);
    const session = await ort.InferenceSession.create(new Uint8Array(bytes), {
      executionProviders: ["wasm"],
      graphOptimizationLevel: "all",
    });
    return new OnebitModel(ort, session, config, tokenizer);
  }

  feeds(ids, start, past) {
    const { Tensor } = this.ort;
    const t = ids.length;
    const f = {
      input_ids: new Tensor("int64", BigInt64Array.from(ids, BigInt), [1, t]),
      attention_mask: new Tensor("int64", new BigInt64Array(start + t).fill(1n), [1, start + t]),
      position_ids: new Tensor("int64", BigInt64Array.from({ length: t }, (_, i) => BigInt(start + i)), [1, t]),
    };
    for (let i = 0; i < this.layers; i++) {
      for (const part of ["key", "value"]) {
        f[`past_key_values.${i}.${part}`] = past
          ? past[`present.${i}.${part}`]
          : new Tensor("float32", new Float32Array(0), [1, this.kvHeads, 0, this.headDim]);
      }
    }
    return f;
  }

  /** The same checks as onebit.sampling.check_request. */
  checkRequest(promptIds, maxNewTokens) {
    if (promptIds.length === 0) throw new Error("the prompt is empty: generation needs at least one token");
    if (!(maxNewTokens >= 0)) throw new Error(`the number of new tokens must be >= 0, got ${maxNewTokens}`);
    if (promptIds.length > this.context) {
      throw new Error(`the prompt (${promptIds.length} tokens) is longer than the model's context of ` +
        `${this.context} tokens (the prompt itself must fit)`);
    }
  }

  /**
   * Yield maxNewTokens new token ids, one by one; stops early (without error) once signal aborts.
   * Exactly onebit.train.sample.generate: prefill the prompt, then one token per forward; when the
   * context is full, slide (docs/SAMPLING.md: re-prefill the last max(1, context / 2) tokens).
   */
  async *generate(promptIds, maxNewTokens, samplerConfig, signal) {
    this.checkRequest(promptIds, maxNewTokens);
    const sampler = new Sampler(samplerConfig);
    const context = [...promptIds];
    if (maxNewTokens === 0) return;
    const ctx = this.context;
    let out = await this.session.run(this.feeds(context, 0, null));
    let pos = context.length; // the position of the next evaluated token
    for (let produced = 0; ;) {
      if (signal?.aborted) return;
      const logits = out.logits;
      const v = this.vocabSize;
      const last = logits.data.subarray(logits.data.length - v);
      const tok = sampler.sample(last, context.slice(-ctx)); // the penalty looks at most ctx back
      context.push(tok);
      produced += 1;
      yield tok;
      if (produced === maxNewTokens || signal?.aborted) return;
      const previous = out;
      if (pos === ctx) {
        const keep = Math.max(1, Math.floor(ctx / 2));
        out = await this.session.run(this.feeds(context.slice(-keep), 0, null));
        pos = keep;
      } else {
        out = await this.session.run(this.feeds([tok], pos, previous));
        pos += 1;
      }
      for (const t of Object.values(previous)) t.dispose?.();
    }
  }
}
