// docs/SAMPLING.md in JavaScript: the same token as onebit/sampling.py's Sampler for the same logits.
// Every fp32 step is rounded with Math.fround (one IEEE operation at a time); exp is evaluated in
// float64 and rounded to fp32, as the spec says. PCG32 runs on BigInt (64-bit state).

const MASK64 = (1n << 64n) - 1n;
const PCG_MULT = 6364136223846793005n;
const PCG_INC = (54n << 1n) | 1n;
const f32 = Math.fround;

export const DEFAULT_SAMPLER = Object.freeze({
  temperature: 0.8, topK: 0, topP: 1.0, repeatPenalty: 1.0, repeatWindow: 64, seed: 0,
});

export class Pcg32 {
  constructor(seed) {
    this.state = 0n;
    this.nextU32();
    this.state = (this.state + BigInt.asUintN(64, BigInt(seed))) & MASK64;
    this.nextU32();
  }

  nextU32() {
    const old = this.state;
    this.state = (old * PCG_MULT + PCG_INC) & MASK64;
    const xorshifted = Number((((old >> 18n) ^ old) >> 27n) & 0xffffffffn);
    const rot = Number(old >> 59n);
    return ((xorshifted >>> rot) | (xorshifted << ((32 - rot) & 31))) >>> 0;
  }

  /** Top 24 bits times 2^-24: exact in fp32, uniform in [0, 1). */
  nextFloat() {
    return (this.nextU32() >>> 8) / 16777216;
  }
}

export function validateSampler(cfg) {
  const c = { ...DEFAULT_SAMPLER, ...cfg };
  if (!(c.temperature >= 0)) throw new Error(`temperature must be >= 0, got ${c.temperature}`);
  if (!(Number.isInteger(c.topK) && c.topK >= 0)) throw new Error(`top_k must be an integer >= 0, got ${c.topK}`);
  if (!(c.topP > 0 && c.topP <= 1)) throw new Error(`top_p must be in (0, 1], got ${c.topP}`);
  if (!(c.repeatPenalty > 0)) throw new Error(`repeat_penalty must be > 0, got ${c.repeatPenalty}`);
  if (!(Number.isInteger(c.repeatWindow) && c.repeatWindow >= 0)) {
    throw new Error(`repeat_window must be an integer >= 0, got ${c.repeatWindow}`);
  }
  if (!Number.isInteger(c.seed)) throw new Error(`seed must be an integer, got ${c.seed}`);
  return c;
}

export class Sampler {
  constructor(cfg) {
    this.cfg = validateSampler(cfg);
    this.rng = new Pcg32(this.cfg.seed);
  }

  /** One token id from fp32 logits (a Float32Array, not modified) and the context so far. */
  sample(logitsIn, context) {
    const cfg = this.cfg;
    const logits = Float32Array.from(logitsIn);
    // 1. repetition penalty over the distinct ids among the last repeatWindow context tokens
    if (cfg.repeatPenalty !== 1 && cfg.repeatWindow > 0) {
      const p = f32(cfg.repeatPenalty);
      for (const t of new Set(context.slice(-cfg.repeatWindow))) {
        logits[t] = logits[t] > 0 ? logits[t] / p : logits[t] * p;
      }
    }
    // 2. greedy: argmax, ties to the lowest id, no draw
    if (cfg.temperature === 0) {
      let best = 0;
      for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
      return best;
    }
    // 3. temperature (Float32Array stores round each quotient to fp32)
    const temp = f32(cfg.temperature);
    for (let i = 0; i < logits.length; i++) logits[i] = logits[i] / temp;
    // 4. candidates: logit descending, id ascending; top-k
    let ids = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a] || a - b);
    if (cfg.topK > 0 && cfg.topK < ids.length) ids = ids.slice(0, cfg.topK);
    // 5. softmax over the candidates, 6. cumulative sums, both sequential in fp32
    const m = logits[ids[0]];
    const e = ids.map((id) => f32(Math.exp(f32(logits[id] - m))));
    let total = 0;
    for (const v of e) total = f32(total + v);
    const cum = new Float32Array(ids.length);
    let acc = 0;
    for (let j = 0; j < ids.length; j++) {
      acc = f32(acc + f32(e[j] / total));
      cum[j] = acc;
    }
    // 7. top-p: the smallest prefix reaching topP
    let keep = ids.length;
    if (cfg.topP < 1) {
      const topP = f32(cfg.topP);
      const j = cum.findIndex((c) => c >= topP);
      if (j >= 0) keep = j + 1;
    }
    // 8. one draw, scaled to the kept mass
    const r = f32(f32(this.rng.nextFloat()) * cum[keep - 1]);
    for (let j = 0; j < keep; j++) if (r < cum[j]) return ids[j];
    return ids[keep - 1];
  }
}
