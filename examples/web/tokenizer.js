// The onebit tokenizers in JavaScript, read from the exported tokenizer.json (Hugging Face format):
// "char" (one token per character, no merges) and GPT-2 style byte-level BPE. Encoding equals
// onebit/tokenizer.py's; decoding works on raw token bytes, like the C and Python runtimes.

// GPT-2's pre-tokenizer regex (Hugging Face ByteLevel with use_regex).
const GPT2_SPLIT = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/** GPT-2's byte <-> printable character table (bytes_to_unicode). */
function byteLevelTables() {
  const keep = [];
  for (let b = 0x21; b <= 0x7e; b++) keep.push(b);
  for (let b = 0xa1; b <= 0xac; b++) keep.push(b);
  for (let b = 0xae; b <= 0xff; b++) keep.push(b);
  const toChar = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    toChar[b] = String.fromCodePoint(keep.includes(b) ? b : 256 + extra++);
  }
  const toByte = new Map(toChar.map((c, b) => [c, b]));
  return { toChar, toByte };
}

export class TokenizerError extends Error {}

export class Tokenizer {
  /** @param {object} spec the parsed tokenizer.json */
  constructor(spec) {
    const model = spec.model ?? {};
    if (model.type !== "BPE") throw new TokenizerError(`unsupported tokenizer model ${model.type}: need BPE`);
    this.vocab = new Map(Object.entries(model.vocab));
    for (const t of spec.added_tokens ?? []) this.vocab.set(t.content, t.id);
    this.vocabSize = this.vocab.size;
    this.idToToken = new Array(this.vocabSize);
    for (const [tok, id] of this.vocab) this.idToToken[id] = tok;
    this.special = new Map((spec.added_tokens ?? []).filter((t) => t.special).map((t) => [t.content, t.id]));
    const merges = model.merges ?? [];
    const decoder = spec.decoder ?? {};
    if (merges.length === 0 && spec.pre_tokenizer == null && decoder.type === "Fuse") {
      this.kind = "char";
    } else if (decoder.type === "ByteLevel") {
      this.kind = "bpe";
    } else {
      throw new TokenizerError("unsupported tokenizer: need a char tokenizer or a byte-level BPE");
    }
    this.ranks = new Map(merges.map((m, rank) => [Array.isArray(m) ? m.join(" ") : m, rank]));
    this.tables = byteLevelTables();
    const utf8 = new TextEncoder();
    this.bytes = this.idToToken.map((tok) => {
      if (this.kind === "char" || this.special.has(tok)) return utf8.encode(tok);
      const chars = Array.from(tok);
      if (!chars.every((c) => this.tables.toByte.has(c))) return utf8.encode(tok);
      return Uint8Array.from(chars, (c) => this.tables.toByte.get(c));
    });
    this.cache = new Map();
  }

  static async fromUrl(url) {
    const res = await fetch(url);
    if (!res.ok) throw new TokenizerError(`${url}: HTTP ${res.status}`);
    return new Tokenizer(await res.json());
  }

  /** Token ids of text; char: throws on a character outside the vocabulary. */
  encode(text) {
    if (this.kind === "char") {
      const ids = [];
      let offset = 0;
      for (const ch of text) {
        const id = this.vocab.get(ch);
        if (id === undefined) {
          const cp = ch.codePointAt(0).toString(16).toUpperCase().padStart(4, "0");
          throw new TokenizerError(`character ${JSON.stringify(ch)} (U+${cp}) at offset ${offset} is not in the vocabulary`);
        }
        ids.push(id);
        offset += 1;
      }
      return ids;
    }
    const ids = [];
    for (const [piece, specialId] of this.splitSpecial(text)) {
      if (specialId !== undefined) {
        ids.push(specialId);
        continue;
      }
      for (const word of piece.match(GPT2_SPLIT) ?? []) ids.push(...this.bpeWord(word));
    }
    return ids;
  }

  /** [text, undefined] pieces between special tokens and [token, id] for each special token. */
  splitSpecial(text) {
    const out = [];
    let rest = text;
    while (rest.length) {
      let best = -1;
      let bestTok = null;
      for (const tok of this.special.keys()) {
        const i = rest.indexOf(tok);
        if (i >= 0 && (best < 0 || i < best || (i === best && tok.length > bestTok.length))) {
          best = i;
          bestTok = tok;
        }
      }
      if (best < 0) {
        out.push([rest, undefined]);
        break;
      }
      if (best > 0) out.push([rest.slice(0, best), undefined]);
      out.push([bestTok, this.special.get(bestTok)]);
      rest = rest.slice(best + bestTok.length);
    }
    return out;
  }

  /** Byte-level BPE of one pre-tokenized word: merge the lowest-ranked adjacent pair, leftmost first. */
  bpeWord(word) {
    const cached = this.cache.get(word);
    if (cached) return cached;
    let parts = Array.from(new TextEncoder().encode(word), (b) => this.tables.toChar[b]);
    for (;;) {
      let bestRank = Infinity;
      let at = -1;
      for (let i = 0; i + 1 < parts.length; i++) {
        const rank = this.ranks.get(`${parts[i]} ${parts[i + 1]}`);
        if (rank !== undefined && rank < bestRank) {
          bestRank = rank;
          at = i;
        }
      }
      if (at < 0) break;
      const [left, right] = [parts[at], parts[at + 1]];
      const merged = [];
      for (let i = 0; i < parts.length; i++) {
        if (i + 1 < parts.length && parts[i] === left && parts[i + 1] === right) {
          merged.push(left + right);
          i += 1;
        } else {
          merged.push(parts[i]);
        }
      }
      parts = merged;
    }
    const ids = parts.map((p) => {
      const id = this.vocab.get(p);
      if (id === undefined) throw new TokenizerError(`byte-level piece ${JSON.stringify(p)} is not in the vocabulary`);
      return id;
    });
    this.cache.set(word, ids);
    return ids;
  }

  /** Raw bytes of a token (byte-level alphabet undone). */
  tokenBytes(id) {
    return this.bytes[id] ?? new Uint8Array([0xef, 0xbf, 0xbd]);
  }

  /** Text of ids; invalid UTF-8 becomes U+FFFD. */
  decode(ids) {
    const stream = this.decoder();
    return ids.map((id) => stream(id)).join("") + stream();
  }

  /** A streaming decoder: call with each id, then once without one to flush. */
  decoder() {
    const utf8 = new TextDecoder("utf-8", { fatal: false });
    return (id) => (id === undefined ? utf8.decode() : utf8.decode(this.tokenBytes(id), { stream: true }));
  }
}
