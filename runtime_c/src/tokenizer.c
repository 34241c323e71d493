/* tokenizer.c - the char and BPE tokenizers of onebit/tokenizer.py, read in place from the
 * tokenizer.* tensors.  Encoding matches HF tokenizers byte for byte: special tokens are split out
 * first, then (byte-level BPE) the GPT-2 or Llama-3 regex pre-tokenizer, or (SentencePiece-style)
 * spaces become metaspaces and a character missing from the vocabulary becomes its <0xNN> byte
 * tokens; then merges by rank inside each pre-token.
 * The lookup tables live in the model's arena and scratch in the caller's output, except for
 * pre-tokens longer than BPE_SMALL bytes, whose linear-ish merge takes scratch from malloc: one
 * block per call, grown by doubling, so at most log2(longest / BPE_SMALL) + 1 allocations
 * whatever the number of long pre-tokens (tests/test_tokenizer_bounds.c counts them). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

#include "unicode_tables.h"

#define OB_SPECIAL_MAX 256

/* The tables are keyed with a value drawn when the model opens (hash_key): the token bytes and
 * merge pairs come from the file, and with a fixed hash a crafted file could put every entry in
 * one probe chain and make opening and encoding quadratic.  The key changes where entries sit,
 * never which id or rank a lookup returns. */
static uint64_t mix64(uint64_t x) { /* a bijective finalizer: every input bit reaches every output bit */
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

uint32_t ob_tok_bytes_hash(uint64_t key, const uint8_t *p, size_t n) {
    uint64_t h = key ^ 0xcbf29ce484222325ULL; /* FNV-1a from a keyed basis */
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
    return (uint32_t)mix64(h ^ n);
}

uint32_t ob_tok_pair_hash(uint64_t key, int32_t a, int32_t b) {
    return (uint32_t)mix64((((uint64_t)(uint32_t)a << 32) | (uint32_t)b) ^ key);
}

static uint32_t bytes_hash(const ob_tokenizer *t, const uint8_t *p, size_t n) { return ob_tok_bytes_hash(t->hash_key, p, n); }

static uint32_t pair_hash(const ob_tokenizer *t, int32_t a, int32_t b) { return ob_tok_pair_hash(t->hash_key, a, b); }

/* Different in every process (ASLR) and every open: the addresses of this call's stack and of
 * the tables, and the clocks.  Where none of them varies (a fixed-address MCU image) the key is
 * still a constant, which is no worse than an unkeyed hash. */
static uint64_t draw_key(const void *tables) {
    int local;
    uint64_t k = mix64((uint64_t)(uintptr_t)&local) ^ mix64((uint64_t)(uintptr_t)tables + 1);
    k ^= mix64((uint64_t)time(NULL) ^ ((uint64_t)clock() << 32));
    return k;
}

int ob_tok_len(const ob_tokenizer *t, int32_t id, const uint8_t **bytes) {
    int32_t a = ob_rd_i32(t->offsets + 4 * (size_t)id), b = ob_rd_i32(t->offsets + 4 * (size_t)id + 4);
    *bytes = t->bytes + a;
    return b - a;
}

static int32_t merge_field(const ob_tokenizer *t, int32_t rank, int k) {
    return ob_rd_i32(t->merges + 12 * (size_t)rank + 4 * (size_t)k);
}

/* Token id with exactly these bytes, or -1. */
static int32_t vocab_find(const ob_tokenizer *t, const uint8_t *s, size_t n) {
    for (uint32_t h = bytes_hash(t, s, n) & t->vocab_hash_mask;; h = (h + 1) & t->vocab_hash_mask) {
        int32_t e = t->vocab_hash[h];
        if (e == 0) return -1;
        const uint8_t *b;
        int len = ob_tok_len(t, e - 1, &b);
        if ((size_t)len == n && memcmp(b, s, n) == 0) return e - 1;
    }
}

/* Rank of the merge (left, right), or -1. */
static int32_t merge_find(const ob_tokenizer *t, int32_t left, int32_t right) {
    if (t->n_merges == 0) return -1;
    for (uint32_t h = pair_hash(t, left, right) & t->merge_hash_mask;; h = (h + 1) & t->merge_hash_mask) {
        int32_t e = t->merge_hash[h];
        if (e == 0) return -1;
        if (merge_field(t, e - 1, 0) == left && merge_field(t, e - 1, 1) == right) return e - 1;
    }
}

/* The tokenizer.sentencepiece object and tokenizer.flags (docs/FORMAT.md). */
static ob_status sp_settings(ob_tokenizer *t, const ob_file *f, ob_json tj, char *err, size_t es) {
    static const char *const prepends[] = {"always", "always-unless-space", "first-unless-space", "never"};
    ob_json sp, v;
    ob_tensor_rec rec;
    int b;
    long long unk;
    int r = ob_file_find(f, "tokenizer.flags", &rec, err, es);
    if (r > 0) return (ob_status)r;
    if (r < 0 || rec.dtype != OB_DT_U8 || rec.n_dims != 1 || rec.shape[0] != (uint64_t)t->vocab_size) {
        ob_set_msg(err, es, "tensor 'tokenizer.flags' (U8 [vocab_size]) is missing or malformed");
        return OB_ERR_FORMAT;
    }
    t->flags = ob_file_tensor_data(f, &rec);
    for (int32_t id = 0; id < t->vocab_size; id++) { /* decoding reads a byte token's one byte */
        const uint8_t *bytes;
        int len = ob_tok_len(t, id, &bytes);
        if ((t->flags[id] & (OB_TOKF_BYTE | OB_TOKF_FALLBACK)) && len != 1) {
            ob_set_msg(err, es, "tokenizer.flags marks token %d as a byte token, but it has %d bytes", (int)id, len);
            return OB_ERR_FORMAT;
        }
    }
    if (ob_json_get(tj, "sentencepiece", &sp) || !ob_json_is_object(sp)) {
        ob_set_msg(err, es, "metadata: tokenizer.sentencepiece object is missing");
        return OB_ERR_FORMAT;
    }
    t->sp_prepend = -1;
    if (ob_json_get(sp, "prepend", &v) == 0)
        for (int i = 0; i < 4; i++)
            if (ob_json_string_eq(v, prepends[i])) t->sp_prepend = i;
    if (t->sp_prepend < 0) {
        ob_set_msg(err, es, "metadata: tokenizer.sentencepiece.prepend is not one of always, always-unless-space, "
                            "first-unless-space, never");
        return OB_ERR_UNSUPPORTED;
    }
    t->sp_unk = -1;
    if (ob_json_get(sp, "unk_token_id", &v) == 0 && ob_json_int(v, &unk) == 0) {
        if (unk < 0 || unk >= t->vocab_size) {
            ob_set_msg(err, es, "metadata: tokenizer.sentencepiece.unk_token_id %lld is outside the vocabulary", unk);
            return OB_ERR_FORMAT;
        }
        t->sp_unk = (int)unk;
    }
    if (ob_json_get(sp, "split", &v) == 0 && ob_json_bool(v, &b) == 0) t->sp_split = b;
    if (ob_json_get(sp, "byte_fallback", &v) == 0 && ob_json_bool(v, &b) == 0) t->sp_byte_fallback = b;
    if (ob_json_get(sp, "fuse_unk", &v) == 0 && ob_json_bool(v, &b) == 0) t->sp_fuse_unk = b;
    if (ob_json_get(sp, "strip_leading_space", &v) == 0 && ob_json_int(v, &unk) == 0)
        t->sp_strip = unk < 0 ? 0 : unk > 8 ? 8 : (int)unk;
    return OB_OK;
}

void ob_tokenizer_index(ob_tokenizer *t, uint64_t key) {
    t->hash_key = key;
    memset(t->vocab_hash, 0, sizeof(int32_t) * ((size_t)t->vocab_hash_mask + 1));
    memset(t->merge_hash, 0, sizeof(int32_t) * ((size_t)t->merge_hash_mask + 1));
    for (int32_t id = 0; id < t->vocab_size; id++) {
        const uint8_t *b;
        int len = ob_tok_len(t, id, &b);
        if (t->flags && (t->flags[id] & OB_TOKF_HIDDEN)) continue; /* never looked up */
        if (vocab_find(t, b, (size_t)len) >= 0) continue;           /* the first id wins */
        uint32_t h = bytes_hash(t, b, (size_t)len) & t->vocab_hash_mask;
        while (t->vocab_hash[h]) h = (h + 1) & t->vocab_hash_mask;
        t->vocab_hash[h] = id + 1;
    }
    for (int32_t i = 0; i < t->n_merges; i++) {
        if (merge_find(t, merge_field(t, i, 0), merge_field(t, i, 1)) >= 0) continue; /* lowest rank wins */
        uint32_t h = pair_hash(t, merge_field(t, i, 0), merge_field(t, i, 1)) & t->merge_hash_mask;
        while (t->merge_hash[h]) h = (h + 1) & t->merge_hash_mask;
        t->merge_hash[h] = i + 1;
    }
}

ob_status ob_tokenizer_init(ob_model *m, ob_arena *arena, size_t vocab_cap, size_t merge_cap, char *err,
                            size_t es) {
    ob_tokenizer *t = &m->tok;
    const ob_file *f = &m->file;
    ob_tensor_rec rec;
    int V = m->cfg.vocab_size;
    memset(t, 0, sizeof *t);
    t->kind = m->cfg.tok_kind;
    t->vocab_size = V;
    int r = ob_file_find(f, "tokenizer.tokens", &rec, err, es);
    if (r > 0) return (ob_status)r;
    if (r < 0 || rec.dtype != OB_DT_U8 || rec.n_dims != 1) {
        ob_set_msg(err, es, "tensor 'tokenizer.tokens' (U8, 1-D) is missing or malformed");
        return OB_ERR_FORMAT;
    }
    t->bytes = ob_file_tensor_data(f, &rec);
    t->bytes_size = rec.size;
    r = ob_file_find(f, "tokenizer.offsets", &rec, err, es);
    if (r > 0) return (ob_status)r;
    if (r < 0 || rec.dtype != OB_DT_I32 || rec.n_dims != 1 || rec.shape[0] != (uint64_t)V + 1) {
        ob_set_msg(err, es, "tensor 'tokenizer.offsets' (I32 [vocab_size + 1]) is missing or malformed");
        return OB_ERR_FORMAT;
    }
    t->offsets = ob_file_tensor_data(f, &rec);
    int32_t prev = 0;
    if (ob_rd_i32(t->offsets) != 0) {
        ob_set_msg(err, es, "tokenizer.offsets[0] is not 0");
        return OB_ERR_FORMAT;
    }
    for (int i = 1; i <= V; i++) {
        int32_t o = ob_rd_i32(t->offsets + 4 * (size_t)i);
        if (o < prev || (uint64_t)o > t->bytes_size) {
            ob_set_msg(err, es, "tokenizer.offsets[%d] = %d is out of order or beyond tokenizer.tokens", i, (int)o);
            return OB_ERR_FORMAT;
        }
        prev = o;
    }
    if ((uint64_t)prev != t->bytes_size) {
        ob_set_msg(err, es, "tokenizer.offsets[vocab_size] != size of tokenizer.tokens");
        return OB_ERR_FORMAT;
    }
    t->n_merges = 0;
    r = ob_file_find(f, "tokenizer.merges", &rec, err, es);
    if (r > 0) return (ob_status)r;
    if (r == 0) {
        t->merges = ob_file_tensor_data(f, &rec);
        t->n_merges = (int)rec.shape[0];
        for (int i = 0; i < t->n_merges; i++)
            for (int k = 0; k < 3; k++) {
                int32_t id = merge_field(t, i, k);
                if (id < 0 || id >= V) {
                    ob_set_msg(err, es, "tokenizer.merges[%d] has id %d outside the vocabulary", i, (int)id);
                    return OB_ERR_FORMAT;
                }
            }
    }
    ob_json root = ob_json_root((const char *)f->data + f->meta_offset, (size_t)f->meta_size), tj, sj, k, v;
    t->pretok = t->kind == OB_TOK_CHAR ? OB_PRE_NONE : OB_PRE_GPT2; /* model.c checked the name */
    if (t->kind == OB_TOK_BPE && ob_json_get(root, "tokenizer", &tj) == 0) {
        int b;
        if (ob_json_get(tj, "pretokenizer", &v) == 0 && ob_json_string_eq(v, "llama3-bytelevel"))
            t->pretok = OB_PRE_LLAMA3;
        if (ob_json_get(tj, "pretokenizer", &v) == 0 && ob_json_string_eq(v, "sentencepiece"))
            t->pretok = OB_PRE_SENTENCEPIECE;
        if (ob_json_get(tj, "add_prefix_space", &v) == 0 && ob_json_bool(v, &b) == 0) t->add_prefix_space = b;
        if (ob_json_get(tj, "ignore_merges", &v) == 0 && ob_json_bool(v, &b) == 0) t->ignore_merges = b;
        if (t->pretok == OB_PRE_SENTENCEPIECE) {
            ob_status st = sp_settings(t, f, tj, err, es);
            if (st) return st;
        }
    }
    t->vocab_hash = (int32_t *)ob_arena_alloc(arena, 4 * vocab_cap);
    t->merge_hash = (int32_t *)ob_arena_alloc(arena, 4 * merge_cap);
    if (!t->vocab_hash || !t->merge_hash) {
        ob_set_msg(err, es, "arena too small for the tokenizer tables");
        return OB_ERR_NOMEM;
    }
    t->vocab_hash_mask = (uint32_t)vocab_cap - 1;
    t->merge_hash_mask = (uint32_t)merge_cap - 1;
    ob_tokenizer_index(t, draw_key(t->vocab_hash));
    for (int b = 0; b < 256; b++) t->byte_token[b] = -1;
    for (int32_t id = 0; id < V; id++) {
        const uint8_t *b;
        int len = ob_tok_len(t, id, &b);
        if (t->flags) { /* byte fallback goes to the <0xNN> tokens */
            if ((t->flags[id] & OB_TOKF_FALLBACK) && len == 1 && t->byte_token[b[0]] < 0) t->byte_token[b[0]] = id;
        } else if (len == 1 && t->byte_token[b[0]] < 0) {
            t->byte_token[b[0]] = id;
        }
    }
    if (t->pretok == OB_PRE_SENTENCEPIECE && (t->sp_space = vocab_find(t, (const uint8_t *)" ", 1)) < 0) {
        ob_set_msg(err, es, "SentencePiece-style tokenizer has no token for the metaspace");
        return OB_ERR_FORMAT;
    }
    if (t->kind == OB_TOK_BPE && t->pretok != OB_PRE_SENTENCEPIECE)
        for (int b = 0; b < 256; b++)
            if (t->byte_token[b] < 0) {
                ob_set_msg(err, es, "BPE tokenizer has no token for byte 0x%02x", b);
                return OB_ERR_FORMAT;
            }
    /* special tokens, split out of the text before pre-tokenization (as HF's added tokens) */
    size_t cur = 0;
    if (ob_json_get(root, "tokenizer", &tj) == 0 && ob_json_get(tj, "special_tokens", &sj) == 0)
        while (ob_json_next(sj, &cur, &k, &v) == 0) {
            long long id;
            const uint8_t *b;
            if (ob_json_int(v, &id) || id < 0 || id >= V) continue; /* checked in model.c */
            if (t->n_special == (int)(sizeof t->special_ids / sizeof t->special_ids[0])) {
                ob_set_msg(err, es, "more than %d special tokens are not supported",
                           (int)(sizeof t->special_ids / sizeof t->special_ids[0]));
                return OB_ERR_UNSUPPORTED;
            }
            int blen = ob_tok_len(t, (int32_t)id, &b);
            if (blen == 0) {
                ob_set_msg(err, es, "special token %lld is empty", id);
                return OB_ERR_FORMAT;
            }
            /* a segment may gain a leading token (add_prefix_space, a metaspace); a special token of
             * two bytes or more pays for it, so len + 1 ids always suffice */
            if (blen < 2 && (t->add_prefix_space || t->pretok == OB_PRE_SENTENCEPIECE)) {
                ob_set_msg(err, es, "special token %lld is a single byte, not supported with a leading space", id);
                return OB_ERR_UNSUPPORTED;
            }
            /* encoding tries every special token at every byte: a bounded length keeps it linear */
            if (blen > OB_SPECIAL_MAX) {
                ob_set_msg(err, es, "special token %lld is %d bytes long, more than the %d supported", id, blen,
                           OB_SPECIAL_MAX);
                return OB_ERR_UNSUPPORTED;
            }
            t->special_ids[t->n_special++] = (int32_t)id;
        }
    return OB_OK;
}

/* ---------------------------------------------------------------- encoding */

static uint32_t decode_cp(const uint8_t *s, int len) {
    if (len == 1) return s[0];
    uint32_t cp = s[0] & (0xff >> (len + 1));
    for (int k = 1; k < len; k++) cp = (cp << 6) | (s[k] & 0x3f);
    return cp;
}

static int in_ranges(const uint32_t (*r)[2], size_t n, uint32_t cp) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < r[mid][0]) hi = mid;
        else if (cp > r[mid][1]) lo = mid + 1;
        else return 1;
    }
    return 0;
}

/* Unicode White_Space, which is what the Rust regex's \s matches. */
static int is_space(uint32_t c) {
    return (c >= 9 && c <= 13) || c == 32 || c == 0x85 || c == 0xa0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200a) ||
           c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}
static int is_letter(uint32_t c) {
    if (c < 128) return (c | 32) >= 'a' && (c | 32) <= 'z';
    return in_ranges(ob_uni_letter, sizeof ob_uni_letter / sizeof ob_uni_letter[0], c);
}
static int is_number(uint32_t c) {
    if (c < 128) return c >= '0' && c <= '9';
    return in_ranges(ob_uni_number, sizeof ob_uni_number / sizeof ob_uni_number[0], c);
}

enum { CLS_SPACE, CLS_LETTER, CLS_NUMBER, CLS_OTHER, CLS_END };

typedef struct {
    const uint8_t *s;
    size_t n;
} text_view;

/* Class of the code point at i (and its byte length). */
static int cls_at(text_view t, size_t i, int *len) {
    if (i >= t.n) {
        *len = 0;
        return CLS_END;
    }
    *len = ob_utf8_len(t.s + i, t.n - i);
    uint32_t c = decode_cp(t.s + i, *len);
    return is_space(c) ? CLS_SPACE : is_letter(c) ? CLS_LETTER : is_number(c) ? CLS_NUMBER : CLS_OTHER;
}

/* Bytes after i covered by a run of class cls. */
static size_t run_of(text_view t, size_t i, int cls) {
    int len;
    while (cls_at(t, i, &len) == cls) i += (size_t)len;
    return i;
}

/* End of the GPT-2 pre-token starting at i:
 * 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static size_t pretoken_end(text_view t, size_t i) {
    const uint8_t *s = t.s + i;
    size_t left = t.n - i;
    if (s[0] == '\'' && left >= 2) {
        if (left >= 3 && ((s[1] == 'r' && s[2] == 'e') || (s[1] == 'v' && s[2] == 'e') || (s[1] == 'l' && s[2] == 'l')))
            return i + 3;
        if (s[1] == 's' || s[1] == 't' || s[1] == 'm' || s[1] == 'd') return i + 2;
    }
    int len, len2;
    int c0 = cls_at(t, i, &len);
    size_t j = i;
    int c = c0;
    if (s[0] == ' ') { /* optional leading space of the next three alternatives */
        c = cls_at(t, i + 1, &len2);
        if (c == CLS_LETTER || c == CLS_NUMBER || c == CLS_OTHER) j = i + 1;
        else c = c0;
    }
    if (c == CLS_LETTER || c == CLS_NUMBER || c == CLS_OTHER) return run_of(t, j, c);
    /* whitespace: \s+(?!\S) backs off one code point when text follows, else \s+ */
    size_t end = run_of(t, i, CLS_SPACE);
    if (end < t.n) {
        size_t last = i, k = i;
        while (k < end) {
            last = k;
            k += (size_t)ob_utf8_len(t.s + k, t.n - k);
        }
        if (last > i) return last;
    }
    return end;
}

static int is_newline(text_view t, size_t i) { return i < t.n && (t.s[i] == '\r' || t.s[i] == '\n'); }

/* End of the Llama-3 (BitNet b1.58 2B4T) pre-token starting at i, alternatives tried in order:
 * (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
 * \s*[\r\n]+|\s+(?!\S)|\s+ */
static size_t pretoken_end_llama3(text_view t, size_t i) {
    const uint8_t *s = t.s + i;
    size_t left = t.n - i;
    if (s[0] == '\'' && left >= 2) {
        int a = s[1] | 32, b = left >= 3 ? s[2] | 32 : 0; /* ASCII case folding: (?i:...) */
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
        if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
    }
    int len0, len1;
    int c0 = cls_at(t, i, &len0);
    int c1 = cls_at(t, i + (size_t)len0, &len1);
    if (c0 == CLS_LETTER) return run_of(t, i, CLS_LETTER);
    if (c0 != CLS_NUMBER && !is_newline(t, i) && c1 == CLS_LETTER) /* one non-letter prefix */
        return run_of(t, i + (size_t)len0, CLS_LETTER);
    if (c0 == CLS_NUMBER) { /* at most three digits */
        size_t j = i;
        for (int k = 0; k < 3 && cls_at(t, j, &len1) == CLS_NUMBER; k++) j += (size_t)len1;
        return j;
    }
    if (c0 == CLS_OTHER || (s[0] == ' ' && c1 == CLS_OTHER)) {
        size_t j = run_of(t, c0 == CLS_OTHER ? i : i + 1, CLS_OTHER);
        while (is_newline(t, j)) j++;
        return j;
    }
    /* whitespace: up to and including its last \r or \n if it has one, */
    size_t end = run_of(t, i, CLS_SPACE), last_nl = 0;
    for (size_t k = i; k < end; k++)
        if (t.s[k] == '\r' || t.s[k] == '\n') last_nl = k + 1;
    if (last_nl) return last_nl;
    /* else \s+(?!\S) backs off one code point when text follows, else \s+ */
    if (end < t.n) {
        size_t last = i, k = i;
        while (k < end) {
            last = k;
            k += (size_t)ob_utf8_len(t.s + k, t.n - k);
        }
        if (last > i) return last;
    }
    return end;
}

typedef struct {
    int32_t *out;
    int cap, n;
    ob_bpe_scratch *scratch;
} tok_out;

/* Pre-tokens up to this many bytes merge in place by rescanning (quadratic, but no memory and the
 * fastest way for the short words of ordinary text); longer ones use the heap below. */
#define BPE_SMALL 64

/* BPE over one pre-token: byte tokens, then repeatedly merge the lowest-ranked adjacent pair
 * (leftmost on ties), as HF's word merge does.  In place in w[0..n); returns the new length. */
int ob_bpe_merge_small(const ob_tokenizer *t, int32_t *w, int len) {
    while (len > 1) {
        int32_t best = -1;
        int at = -1;
        for (int i = 0; i + 1 < len; i++) {
            int32_t r = merge_find(t, w[i], w[i + 1]);
            if (r >= 0 && (best < 0 || r < best)) {
                best = r;
                at = i;
            }
        }
        if (best < 0) break;
        w[at] = merge_field(t, best, 2);
        memmove(w + at + 1, w + at + 2, sizeof(int32_t) * (size_t)(len - at - 2));
        len--;
    }
    return len;
}

/* A candidate merge: the pair starting at symbol pos (its first byte's index) has this rank. */
typedef struct {
    int32_t rank, pos;
} bpe_cand;

static int cand_less(bpe_cand a, bpe_cand b) { return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos); }

static void heap_push(bpe_cand *h, int *n, bpe_cand c) {
    int i = (*n)++;
    while (i > 0 && cand_less(c, h[(i - 1) / 2])) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = c;
}

static bpe_cand heap_pop(bpe_cand *h, int *n) {
    bpe_cand top = h[0], last = h[--*n];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && cand_less(h[c + 1], h[c])) c++;
        if (!cand_less(h[c], last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n > 0) h[i] = last;
    return top;
}

/* The same merges in O(n log n): the symbols form a linked list (a merge unlinks the right one)
 * and a min-heap orders the candidate pairs by (rank, position), the order the rescan above
 * picks them in.  Entries go stale when a neighbour merges; a popped entry is used only if its
 * pair still exists with that rank.  Each merge pushes at most two entries, so the heap never
 * holds more than 3n.  Scratch: 3 ints + 3 heap entries per byte, in s (grown if too small). */
int ob_bpe_merge_heap_in(const ob_tokenizer *t, int32_t *w, int n, ob_bpe_scratch *s) {
    if (n < 2) return n;
    size_t per = 3 * sizeof(int32_t) + 3 * sizeof(bpe_cand);
    if ((size_t)n > SIZE_MAX / per) return -1;
    size_t need = per * (size_t)n;
    if (need > s->cap) {
        size_t cap = s->cap <= SIZE_MAX / 2 && s->cap * 2 > need ? s->cap * 2 : need;
        free(s->p);
        s->p = malloc(cap);
        s->cap = s->p ? cap : 0;
        s->n_alloc++;
        if (!s->p) return -1;
    }
    int32_t *id = (int32_t *)s->p;
    if (!id) return -1;
    int32_t *prev = id + n, *next = prev + n;
    bpe_cand *heap = (bpe_cand *)(next + n);
    int hn = 0;
    for (int i = 0; i < n; i++) {
        id[i] = w[i];
        prev[i] = i - 1;
        next[i] = i + 1 < n ? i + 1 : -1;
    }
    for (int i = 0; i + 1 < n; i++) {
        int32_t r = merge_find(t, id[i], id[i + 1]);
        if (r >= 0) heap_push(heap, &hn, (bpe_cand){r, i});
    }
    while (hn > 0) {
        bpe_cand c = heap_pop(heap, &hn);
        int i = c.pos, j = next[i];
        if (id[i] < 0 || j < 0 || merge_find(t, id[i], id[j]) != c.rank) continue; /* stale */
        id[i] = merge_field(t, c.rank, 2);
        id[j] = -1;
        next[i] = next[j];
        if (next[j] >= 0) prev[next[j]] = i;
        int32_t r;
        if (prev[i] >= 0 && (r = merge_find(t, id[prev[i]], id[i])) >= 0) heap_push(heap, &hn, (bpe_cand){r, prev[i]});
        if (next[i] >= 0 && (r = merge_find(t, id[i], id[next[i]])) >= 0) heap_push(heap, &hn, (bpe_cand){r, i});
    }
    int len = 0;
    for (int i = 0; i >= 0; i = next[i]) w[len++] = id[i]; /* symbol 0 is always the head */
    return len;
}

int ob_bpe_merge_heap(const ob_tokenizer *t, int32_t *w, int n) {
    ob_bpe_scratch s = {NULL, 0, 0};
    int len = ob_bpe_merge_heap_in(t, w, n, &s);
    free(s.p);
    return len;
}

/* Merges over the len symbols at the end of the output. */
static ob_status merge_tail(const ob_tokenizer *t, int len, tok_out *o) {
    int32_t *w = o->out + o->n;
    len = len <= BPE_SMALL ? ob_bpe_merge_small(t, w, len) : ob_bpe_merge_heap_in(t, w, len, o->scratch);
    if (len < 0) return OB_ERR_NOMEM;
    o->n += len;
    return OB_OK;
}

/* One byte-level pre-token: byte tokens into the output (n slots of scratch), then merged; under
 * ignore_merges a pre-token that is a token by itself is that token. */
static ob_status bpe_word(const ob_tokenizer *t, const uint8_t *s, size_t n, tok_out *o) {
    if ((size_t)(o->cap - o->n) < n) return OB_ERR_BUFFER;
    int32_t whole = t->ignore_merges ? vocab_find(t, s, n) : -1;
    if (whole >= 0) {
        o->out[o->n++] = whole;
        return OB_OK;
    }
    for (size_t i = 0; i < n; i++) o->out[o->n + i] = t->byte_token[s[i]];
    return merge_tail(t, (int)n, o);
}

static ob_status encode_bytelevel(const ob_tokenizer *t, text_view seg, tok_out *o) {
    size_t i = 0;
    while (i < seg.n) {
        size_t e = t->pretok == OB_PRE_LLAMA3 ? pretoken_end_llama3(seg, i) : pretoken_end(seg, i);
        ob_status st = bpe_word(t, seg.s + i, e - i, o);
        if (st) return st;
        i = e;
    }
    return OB_OK;
}

/* ---------------------------------------------------------------- SentencePiece-style */

/* Bytes of the metaspace (U+2581) or space at s[i], else 0: both are the "▁" token. */
static int metaspace_at(text_view seg, size_t i) {
    if (i < seg.n && seg.s[i] == ' ') return 1;
    if (i + 2 < seg.n && seg.s[i] == 0xe2 && seg.s[i + 1] == 0x96 && seg.s[i + 2] == 0x81) return 3;
    return 0;
}

/* One word (HF's BPE merge_word): a symbol per character, the character's own token if the
 * vocabulary has it, else its <0xNN> tokens (byte_fallback), else unk (consecutive unks fused
 * into one under fuse_unk; a byte-fallback character does not end a run, as in HF); then merges.
 * `lead` puts a metaspace first. */
static ob_status sp_word(const ob_tokenizer *t, text_view seg, size_t i, size_t end, int lead, tok_out *o) {
    if ((size_t)(o->cap - o->n) < end - i + (size_t)lead) return OB_ERR_BUFFER;
    int32_t *w = o->out + o->n;
    int len = 0, pending_unk = 0;
    if (lead) w[len++] = t->sp_space;
    while (i < end) {
        int l = ob_utf8_len(seg.s + i, seg.n - i), m = metaspace_at(seg, i);
        int32_t id = m ? t->sp_space : vocab_find(t, seg.s + i, (size_t)l);
        if (m) l = m;
        if (id >= 0) {
            if (pending_unk) w[len++] = t->sp_unk;
            pending_unk = 0;
            w[len++] = id;
        } else {
            int ok = t->sp_byte_fallback;
            for (int k = 0; ok && k < l; k++) ok = t->byte_token[seg.s[i + (size_t)k]] >= 0;
            if (ok) {
                for (int k = 0; k < l; k++) w[len++] = t->byte_token[seg.s[i + (size_t)k]];
            } else if (t->sp_unk >= 0) {
                if (pending_unk && !t->sp_fuse_unk) w[len++] = t->sp_unk;
                pending_unk = 1;
            }
        }
        i += (size_t)l;
    }
    if (pending_unk) w[len++] = t->sp_unk;
    return merge_tail(t, len, o);
}

/* A text segment between special tokens: maybe a leading metaspace, then one word, or with
 * split a word starting at every metaspace. */
static ob_status encode_sentencepiece(const ob_tokenizer *t, text_view seg, int at_start, tok_out *o) {
    if (seg.n == 0) return OB_OK;
    int p = t->sp_prepend, space0 = metaspace_at(seg, 0) > 0;
    int lead = p == OB_SP_ALWAYS || (p == OB_SP_ALWAYS_UNLESS_SPACE && !space0) ||
               (p == OB_SP_FIRST_UNLESS_SPACE && at_start && !space0);
    if (!t->sp_split) return sp_word(t, seg, 0, seg.n, lead, o);
    size_t i = 0; /* (lead is 0 when the text starts with a metaspace: split comes only with Metaspace) */
    while (i < seg.n) {
        size_t e = i + (size_t)(metaspace_at(seg, i) ? metaspace_at(seg, i) : ob_utf8_len(seg.s + i, seg.n - i));
        while (e < seg.n && !metaspace_at(seg, e)) e += (size_t)ob_utf8_len(seg.s + e, seg.n - e);
        ob_status st = sp_word(t, seg, i, e, lead, o);
        if (st) return st;
        lead = 0;
        i = e;
    }
    return OB_OK;
}

/* A segment of text between special tokens, whichever the pre-tokenizer. */
static ob_status encode_segment(const ob_tokenizer *t, text_view seg, int at_start, tok_out *o) {
    if (t->pretok == OB_PRE_SENTENCEPIECE) return encode_sentencepiece(t, seg, at_start, o);
    if (!t->add_prefix_space || seg.n == 0 || seg.s[0] == ' ') return encode_bytelevel(t, seg, o);
    /* ByteLevel(add_prefix_space): every segment not starting with a space gets one */
    uint8_t *copy = (uint8_t *)malloc(seg.n + 1);
    if (!copy) return OB_ERR_NOMEM;
    copy[0] = ' ';
    memcpy(copy + 1, seg.s, seg.n);
    ob_status st = encode_bytelevel(t, (text_view){copy, seg.n + 1}, o);
    free(copy);
    return st;
}

/* Longest special token starting at s (n bytes left); its id, or -1. */
static int32_t special_at(const ob_tokenizer *t, const uint8_t *s, size_t n, size_t *len) {
    int32_t best = -1;
    *len = 0;
    for (int k = 0; k < t->n_special; k++) {
        const uint8_t *b;
        size_t l = (size_t)ob_tok_len(t, t->special_ids[k], &b);
        if (l <= n && l > *len && memcmp(s, b, l) == 0) {
            best = t->special_ids[k];
            *len = l;
        }
    }
    return best;
}

ob_status ob_tokenize_in(const ob_model *m, const char *text, size_t len, int32_t *tokens, int cap, int *n_tokens,
                         ob_bpe_scratch *scratch, char *err, size_t es) {
    if (err && es) err[0] = 0;
    if (!m || (!text && len) || (!tokens && cap) || cap < 0 || !n_tokens) {
        ob_set_msg(err, es, "invalid argument (NULL model, text, tokens or n_tokens, or a negative cap)");
        return OB_ERR_INVALID_ARG;
    }
    const ob_tokenizer *t = &m->tok;
    const uint8_t *s = (const uint8_t *)text;
    *n_tokens = 0;
    for (size_t i = 0; i < len;) {
        int l = ob_utf8_len(s + i, len - i);
        if (!l) {
            ob_set_msg(err, es, "text is not valid UTF-8 (byte 0x%02x at offset %zu)", s[i], i);
            return OB_ERR_TOKEN;
        }
        i += (size_t)l;
    }
    tok_out o = {tokens, cap, 0, scratch};
    ob_status st = OB_OK;
    if (t->kind == OB_TOK_CHAR) {
        for (size_t i = 0; i < len;) {
            int l = ob_utf8_len(s + i, len - i);
            int32_t id = vocab_find(t, s + i, (size_t)l);
            if (id < 0) {
                ob_set_msg(err, es, "character '%.*s' (U+%04X) at offset %zu is not in the char tokenizer's vocabulary",
                           l, (const char *)s + i, decode_cp(s + i, l), i);
                return OB_ERR_TOKEN;
            }
            if (o.n == o.cap) {
                st = OB_ERR_BUFFER;
                break;
            }
            o.out[o.n++] = id;
            i += (size_t)l;
        }
    } else {
        size_t start = 0, i = 0;
        while (st == OB_OK && i <= len) {
            size_t sl = 0;
            int32_t sid = i < len ? special_at(t, s + i, len - i, &sl) : -1;
            if (i < len && sid < 0) {
                i++;
                continue;
            }
            text_view seg = {s + start, i - start};
            st = encode_segment(t, seg, start == 0, &o);
            if (st == OB_OK && sid >= 0) {
                if (o.n == o.cap) st = OB_ERR_BUFFER;
                else o.out[o.n++] = sid;
            }
            if (i == len) break;
            i += sl;
            start = i;
        }
    }
    if (st == OB_ERR_NOMEM) {
        ob_set_msg(err, es, "cannot allocate the merge scratch for a pre-token in %zu bytes of text", len);
        return st;
    }
    if (st == OB_ERR_BUFFER) {
        *n_tokens = (int)(len < (size_t)0x7ffffffe ? len + 1 : 0x7fffffff);
        ob_set_msg(err, es, "token buffer of %d ids is too small (%zu always suffices)", cap, len + 1);
        return st;
    }
    *n_tokens = o.n;
    return OB_OK;
}

ob_status ob_tokenize_ex(const ob_model *m, const char *text, size_t len, int32_t *tokens, int cap, int *n_tokens,
                         char *err, size_t es) {
    ob_bpe_scratch scratch = {NULL, 0, 0};
    ob_status st = ob_tokenize_in(m, text, len, tokens, cap, n_tokens, &scratch, err, es);
    free(scratch.p);
    return st;
}

ob_status ob_tokenize(ob_model *m, const char *text, size_t len, int32_t *tokens, int cap, int *n_tokens) {
    return ob_tokenize_ex(m, text, len, tokens, cap, n_tokens, m ? m->error : NULL, m ? sizeof m->error : 0);
}

/* ---------------------------------------------------------------- decoding */

ob_status ob_token_bytes(const ob_model *m, int32_t token, const uint8_t **bytes, size_t *len) {
    if (!m || !bytes || !len) return OB_ERR_INVALID_ARG;
    if (token < 0 || token >= m->tok.vocab_size) return OB_ERR_TOKEN;
    *len = (size_t)ob_tok_len(&m->tok, token, bytes);
    return OB_OK;
}

/* Where decoded bytes go: into buf (cap bytes) after the first `skip`; total counts them all and
 * head keeps the first few, which is all the decoder's Strip needs to see. */
typedef struct {
    char *buf;
    size_t cap, skip, total;
    uint8_t head[8];
} text_sink;

static void sink_put(text_sink *k, const uint8_t *p, size_t n) {
    for (size_t j = 0; j < n; j++, k->total++) {
        if (k->total < sizeof k->head) k->head[k->total] = p[j];
        if (k->total >= k->skip && k->total - k->skip < k->cap) k->buf[k->total - k->skip] = (char)p[j];
    }
}

static uint8_t byte_of(const ob_tokenizer *t, int32_t id) { return t->bytes[ob_rd_i32(t->offsets + 4 * (size_t)id)]; }

/* Whether the bytes of run byte tokens form valid UTF-8 (Rust's from_utf8, as ob_utf8_len). */
static int run_is_utf8(const ob_tokenizer *t, const int32_t *ids, int run) {
    for (int k = 0; k < run;) {
        uint8_t w[4];
        int m = run - k < 4 ? run - k : 4;
        for (int j = 0; j < m; j++) w[j] = byte_of(t, ids[k + j]);
        int u = ob_utf8_len(w, (size_t)m);
        if (!u) return 0;
        k += u;
    }
    return 1;
}

/* The text of the tokens: their bytes, except that a SentencePiece-style tokenizer decodes as HF's
 * Replace + ByteFallback + Fuse + Strip (a run of byte tokens that is not UTF-8 as a whole is one
 * U+FFFD per token; leading spaces stripped). */
static void decode_into(const ob_tokenizer *t, const int32_t *tokens, int n, text_sink *k) {
    for (int i = 0; i < n;) {
        int run = 0;
        while (t->flags && i + run < n && (t->flags[tokens[i + run]] & OB_TOKF_BYTE)) run++;
        if (run == 0) {
            const uint8_t *b;
            int l = ob_tok_len(t, tokens[i++], &b);
            sink_put(k, b, (size_t)l);
            continue;
        }
        int valid = run_is_utf8(t, tokens + i, run);
        for (int j = 0; j < run; j++) {
            uint8_t c = byte_of(t, tokens[i + j]);
            sink_put(k, valid ? &c : (const uint8_t *)"\xef\xbf\xbd", valid ? 1 : 3);
        }
        i += run;
    }
}

ob_status ob_detokenize_ex(const ob_model *m, const int32_t *tokens, int n, char *buf, size_t cap, size_t *len,
                           char *err, size_t es) {
    if (err && es) err[0] = 0;
    if (!m || (!tokens && n) || n < 0 || !len || (!buf && cap)) {
        ob_set_msg(err, es, "invalid argument (NULL model, tokens, buf or len, or a negative count)");
        return OB_ERR_INVALID_ARG;
    }
    const ob_tokenizer *t = &m->tok;
    uint64_t bound = 0; /* every token's bytes, or 3 per byte token: more than the text */
    for (int i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= t->vocab_size) {
            ob_set_msg(err, es, "token id %d at index %d is outside the vocabulary of %d", tokens[i], i, t->vocab_size);
            return OB_ERR_TOKEN;
        }
        const uint8_t *b;
        bound += (uint64_t)ob_tok_len(t, tokens[i], &b) + 3;
    }
    if (bound > (uint64_t)SIZE_MAX) { /* only reachable with a 32-bit size_t */
        ob_set_msg(err, es, "the text of %d tokens is larger than the address space", n);
        return OB_ERR_BUFFER;
    }
    text_sink k = {buf, 0, 0, 0, {0}};
    decode_into(t, tokens, n, &k); /* the size and the head only */
    size_t strip = 0;
    while (t->flags && (int)strip < t->sp_strip && strip < k.total && strip < sizeof k.head && k.head[strip] == ' ')
        strip++;
    size_t total = k.total - strip;
    *len = total;
    if (total > cap) {
        ob_set_msg(err, es, "output buffer of %zu bytes is too small (%zu needed)", cap, total);
        return OB_ERR_BUFFER;
    }
    k = (text_sink){buf, cap, strip, 0, {0}};
    decode_into(t, tokens, n, &k);
    return OB_OK;
}

ob_status ob_detokenize(ob_model *m, const int32_t *tokens, int n, char *buf, size_t cap, size_t *len) {
    return ob_detokenize_ex(m, tokens, n, buf, cap, len, m ? m->error : NULL, m ? sizeof m->error : 0);
}
