// onebit.mjs - run a .1bit model with onebit.wasm (the C runtime built for wasm32-wasi), in Node
// or a browser.  Single-threaded; generation is greedy or sampled exactly as in onebit-run.
//
//   import { Onebit } from './onebit.mjs';
//   const ob = await Onebit.load(wasmBytes, modelBytes, { nCtx: 0, kv: 'f16', env: { ONEBIT_ISA: 'scalar' } });
//   const out = ob.generate('ROMEO:', 200, { temperature: 0 }, (text, id) => { ... });
//   ob.close();
//
// wasmBytes / modelBytes: ArrayBuffer or typed array.  Errors are thrown as Error('onebit: ...').

const ENC = new TextEncoder();

// The runtime needs only a few WASI calls: its environment (ONEBIT_ISA), a clock (it seeds the
// tokenizer's hash key) and stderr for a libc message that should never come.  A reactor module has no main, so nothing else is used.
function wasiImports(env, getMemory) {
  const vars = Object.entries(env).map(([k, v]) => ENC.encode(`${k}=${v}\0`));
  const view = () => new DataView(getMemory().buffer);
  return {
    environ_sizes_get(countPtr, sizePtr) {
      view().setUint32(countPtr, vars.length, true);
      view().setUint32(sizePtr, vars.reduce((n, v) => n + v.length, 0), true);
      return 0;
    },
    environ_get(ptrs, buf) {
      const bytes = new Uint8Array(getMemory().buffer);
      vars.forEach((v, i) => {
        view().setUint32(ptrs + 4 * i, buf, true);
        bytes.set(v, buf);
        buf += v.length;
      });
      return 0;
    },
    fd_write(fd, iovs, n, writtenPtr) {
      let total = 0;
      const parts = [];
      for (let i = 0; i < n; i++) {
        const p = view().getUint32(iovs + 8 * i, true), len = view().getUint32(iovs + 8 * i + 4, true);
        parts.push(new Uint8Array(getMemory().buffer, p, len).slice());
        total += len;
      }
      console.error(new TextDecoder().decode(concat(parts)));
      view().setUint32(writtenPtr, total, true);
      return 0;
    },
    clock_time_get(id, precision, timePtr) { // nanoseconds, as a BigInt
      view().setBigUint64(timePtr, BigInt(Math.round(performance.now() * 1e6)), true);
      return 0;
    },
    fd_close: () => 8, // EBADF: there are no files
    fd_seek: () => 8,
    proc_exit(code) { throw new Error(`onebit: the runtime exited (${code})`); },
  };
}

function concat(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

const KV_TYPES = { f32: 0, f16: 1 }; // ob_kv_type's values (onebit.h)

export class Onebit {
  /** Instantiate onebit.wasm and open a model (nCtx 0 = the model's context; kv 'f16', the
   *  default, or 'f32', the KV-cache's element type: f32 is the exact twin of PyTorch's cache). */
  static async load(wasmBytes, modelBytes, { nCtx = 0, kv = 'f16', env = {} } = {}) {
    if (!Object.hasOwn(KV_TYPES, kv)) throw new Error(`onebit: kv must be 'f16' or 'f32', got ${kv}`);
    let memory = null;
    const { instance } = await WebAssembly.instantiate(wasmBytes, {
      wasi_snapshot_preview1: wasiImports(env, () => memory),
    });
    memory = instance.exports.memory;
    instance.exports._initialize();
    return new Onebit(instance.exports, modelBytes, nCtx, KV_TYPES[kv]);
  }

  constructor(exports, modelBytes, nCtx, kvType = KV_TYPES.f16) {
    this.x = exports;
    const bytes = modelBytes instanceof Uint8Array ? modelBytes : new Uint8Array(modelBytes);
    const data = this.x.obw_alloc(bytes.length);
    if (!data) throw new Error('onebit: out of memory for the model');
    this.u8().set(bytes, data);
    this.h = this.x.obw_open(data, bytes.length, nCtx, kvType); // the handle owns data from here on
    if (!this.h) throw new Error('onebit: out of memory');
    const err = this.cstr(this.x.obw_error(this.h));
    if (err) { this.close(); throw new Error(`onebit: ${err}`); }
    this.vocabSize = this.x.obw_vocab_size(this.h);
    this.layers = this.x.obw_n_layers(this.h);
    this.tokenizerKind = this.cstr(this.x.obw_tokenizer(this.h)); // "char" or "bpe"
    this.nCtx = this.x.obw_n_ctx(this.h);
    this.isa = this.cstr(this.x.obw_isa(this.h));
    this.scratch = this.x.obw_alloc(16); // one size_t out-parameter
  }

  u8() { return new Uint8Array(this.x.memory.buffer); } // re-read: memory.grow detaches views

  cstr(ptr) {
    const b = this.u8();
    let end = ptr;
    while (b[end]) end++;
    return new TextDecoder().decode(b.subarray(ptr, end));
  }

  check(st) {
    if (st < 0) throw new Error(`onebit: ${this.cstr(this.x.obw_error(this.h))}`);
    return st;
  }

  /** Token ids of text (Int32Array). */
  tokenize(text) {
    const bytes = ENC.encode(text);
    const cap = bytes.length + 1;
    const t = this.x.obw_alloc(bytes.length + 1), ids = this.x.obw_alloc(4 * cap);
    try {
      this.u8().set(bytes, t);
      const n = this.check(this.x.obw_tokenize(this.h, t, bytes.length, ids, cap));
      return new Int32Array(this.x.memory.buffer, ids, n).slice();
    } finally {
      this.x.obw_free(t);
      this.x.obw_free(ids);
    }
  }

  /** The bytes of one token (Uint8Array). */
  tokenBytes(id) {
    const p = this.x.obw_token_bytes(this.h, id, this.scratch);
    if (!p) throw new Error(`onebit: token id ${id} is outside the vocabulary`);
    const len = new DataView(this.x.memory.buffer).getUint32(this.scratch, true);
    return this.u8().slice(p, p + len);
  }

  /** Forget the context and evaluate the token ids (an array or Int32Array). */
  prefill(ids) {
    const p = this.x.obw_alloc(4 * ids.length);
    try {
      new Int32Array(this.x.memory.buffer, p, ids.length).set(ids);
      this.check(this.x.obw_prefill(this.h, p, ids.length));
    } finally {
      this.x.obw_free(p);
    }
  }

  /** Set the sampler (docs/SAMPLING.md; temperature 0 = greedy) and seed its generator. */
  setSampler({ temperature = 0.8, topK = 0, topP = 1, repeatPenalty = 1, repeatWindow = 64, seed = 0 } = {}) {
    this.check(this.x.obw_set_sampler(this.h, temperature, topK, topP, repeatPenalty, repeatWindow, BigInt(seed)));
  }

  /** The next token id, drawn from the last logits. */
  sample() { return this.check(this.x.obw_sample(this.h)); }

  /** Whether id is one of the model's end-of-sequence ids (its eos_token_ids; none for models trained by onebit). */
  isEos(id) { return this.x.obw_is_eos(this.h, id) !== 0; }

  /** Evaluate one more token (the window slides past the context). */
  decode(id) { this.check(this.x.obw_decode(this.h, id)); }

  /**
   * Continue prompt by up to nNew tokens with the sampler settings of setSampler.  onToken(bytes, id)
   * is called per token; returning true stops.  An end-of-sequence token stops too (it ends ids but
   * has no bytes in the text and no onToken call) unless sampler.ignoreEos.  Returns { ids, bytes,
   * prefillMs, decodeMs } (bytes: the generated text's UTF-8, without the prompt).
   */
  generate(prompt, nNew, sampler = {}, onToken = null) {
    const ids = this.tokenize(prompt);
    if (ids.length === 0) throw new Error('onebit: the prompt must hold at least one token');
    this.setSampler(sampler);
    const t0 = performance.now();
    this.prefill(ids);
    const t1 = performance.now();
    const out = [], parts = [];
    for (let i = 0; i < nNew; i++) {
      const id = this.sample();
      out.push(id);
      if (!sampler.ignoreEos && this.isEos(id)) break;
      const bytes = this.tokenBytes(id);
      parts.push(bytes);
      if (onToken && onToken(bytes, id)) break;
      if (i + 1 < nNew) this.decode(id);
    }
    return { ids: out, bytes: concat(parts), prefillMs: t1 - t0, decodeMs: performance.now() - t1 };
  }

  close() {
    if (this.h) this.x.obw_close(this.h);
    this.h = 0;
  }
}
