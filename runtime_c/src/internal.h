/* internal.h - structures shared by the runtime's own source files (not installed).
 *
 * Shape of llama2.c's run.c: a Config (ob_config), Weights carved out of one mapping (ob_layer,
 * ob_linear, pointers straight into the file) and a RunState (the session's buffers).
 */
#ifndef ONEBIT_INTERNAL_H
#define ONEBIT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "../include/onebit.h"
#include "kernels.h"
#include "threadpool.h"

#define OB_ERRMSG 256
#define OB_NAME_MAX 64

/* ---------------------------------------------------------------- little helpers */

uint32_t ob_rd_u32(const uint8_t *p);
uint64_t ob_rd_u64(const uint8_t *p);
uint16_t ob_rd_u16(const uint8_t *p);
float ob_rd_f32(const uint8_t *p);
int32_t ob_rd_i32(const uint8_t *p);

/* snprintf into a message buffer (err may be NULL / size 0). */
void ob_set_msg(char *err, size_t err_size, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Length (1..4) of the valid UTF-8 sequence at s (n bytes available), or 0 if invalid. */
int ob_utf8_len(const unsigned char *s, size_t n);

/* CRC-32 (ISO-HDLC / zlib): crc = ob_crc32(0, data, n) for a whole buffer. */
uint32_t ob_crc32(uint32_t crc, const uint8_t *data, size_t n);

/* Bump allocator over one block; measure-only when base is NULL.  Requests are 64-bit so that a
 * size computed from a hostile file cannot wrap a 32-bit size_t on the way in: a request or a
 * total beyond SIZE_MAX sets `overflow` (and returns NULL) instead. */
typedef struct ob_arena {
    uint8_t *base;
    size_t size, used;
    int overflow;
} ob_arena;
void *ob_arena_alloc(ob_arena *a, uint64_t bytes);     /* 64-byte aligned, zeroed; NULL if full */
void *ob_arena_alloc_raw(ob_arena *a, uint64_t bytes); /* same, not zeroed (written before read) */
size_t ob_arena_round(size_t bytes);                   /* bytes as ob_arena_alloc will count them */

/* ---------------------------------------------------------------- JSON (json.c) */

/* A value inside a validated JSON text: [p, p + n). */
typedef struct ob_json {
    const char *p;
    size_t n;
} ob_json;

/* Strict RFC 8259 check (depth <= 32, no trailing bytes, valid UTF-8 and escapes).  0 or -1 and
 * a message naming the byte offset. */
int ob_json_validate(const char *text, size_t n, char *err, size_t err_size);
/* The whole text as a value (after validation). */
ob_json ob_json_root(const char *text, size_t n);
int ob_json_is_object(ob_json v);
/* Member `key` of object v; 0 found, -1 missing / v not an object. */
int ob_json_get(ob_json obj, const char *key, ob_json *out);
/* Iterate an object's members: start with *cursor = 0; returns 0 and fills key/value, -1 at end. */
int ob_json_next(ob_json obj, size_t *cursor, ob_json *key, ob_json *value);
int ob_json_is_array(ob_json v);
/* Iterate an array's items the same way. */
int ob_json_item(ob_json arr, size_t *cursor, ob_json *value);
/* Conversions; 0 ok, -1 wrong type / out of range. */
int ob_json_int(ob_json v, long long *out);
int ob_json_number(ob_json v, double *out);
int ob_json_bool(ob_json v, int *out);
/* Unescaped string into buf (NUL-terminated); -1 if not a string or it does not fit. */
int ob_json_string(ob_json v, char *buf, size_t cap, size_t *len);
int ob_json_string_eq(ob_json v, const char *s);

/* ---------------------------------------------------------------- the file (format.c) */

enum {
    OB_DT_F32 = 0, OB_DT_F16 = 1, OB_DT_I8 = 2, OB_DT_T2 = 3, OB_DT_T16 = 4, OB_DT_B1 = 5,
    OB_DT_U8 = 6, OB_DT_I32 = 7, OB_DT_I4 = 8, OB_DT_COUNT = 9
};

typedef struct ob_tensor_rec {
    char name[OB_NAME_MAX];
    uint32_t dtype, n_dims;
    uint64_t shape[4];
    uint64_t offset, size; /* offset relative to data_offset */
    float scale;
} ob_tensor_rec;

typedef struct ob_file {
    const uint8_t *data;
    uint64_t size;
    uint16_t version_major, version_minor;
    uint64_t meta_offset, meta_size, dir_offset, data_offset;
    uint32_t n_tensors;
    const uint32_t *by_name; /* record numbers sorted by name (binary search), or NULL (linear scan) */
} ob_file;

/* Header, CRCs, directory and metadata JSON syntax.  No allocation. */
ob_status ob_file_parse(ob_file *f, const void *data, size_t size, char *err, size_t err_size);
/* Directory record i (parsed and checked against the file). */
ob_status ob_file_tensor(const ob_file *f, uint32_t i, ob_tensor_rec *rec, char *err,
                         size_t err_size);
/* Check every record, then that no two tensors overlap and no name repeats: sort-then-scan over
 * index (n_tensors entries of caller scratch, n log n, no allocation).  On success index holds
 * the records sorted by name and f->by_name points at it. */
ob_status ob_file_check_directory(ob_file *f, uint32_t *index, char *err, size_t err_size);
/* Find a tensor by name: 0 found, -1 missing, or an ob_status > 0 on a bad record. */
int ob_file_find(const ob_file *f, const char *name, ob_tensor_rec *rec, char *err,
                 size_t err_size);
const uint8_t *ob_file_tensor_data(const ob_file *f, const ob_tensor_rec *rec);
const char *ob_dtype_name(uint32_t dtype);

/* ---------------------------------------------------------------- the model */

enum { OB_NORM_RMS = 0, OB_NORM_LAYER = 1 };
enum { OB_POS_ROPE = 0, OB_POS_LEARNED = 1 };
enum { OB_ACT_SILU = 0, OB_ACT_RELU2 = 1, OB_ACT_GELU = 2 };
enum { OB_TOK_CHAR = 0, OB_TOK_BPE = 1 };
/* pre-tokenizers of byte-level BPE (metadata tokenizer.pretokenizer) */
enum { OB_PRE_NONE = 0, OB_PRE_GPT2 = 1, OB_PRE_LLAMA3 = 2, OB_PRE_SENTENCEPIECE = 3 };
/* SentencePiece-style: when a text segment gets a leading metaspace (onebit/tokenizer.py) */
enum { OB_SP_ALWAYS = 0, OB_SP_ALWAYS_UNLESS_SPACE = 1, OB_SP_FIRST_UNLESS_SPACE = 2, OB_SP_NEVER = 3 };
/* tokenizer.flags bits (SentencePiece-style only) */
enum { OB_TOKF_BYTE = 1, OB_TOKF_FALLBACK = 2, OB_TOKF_HIDDEN = 4 };

typedef struct ob_config {
    int vocab_size, dim, n_layers, n_heads, n_kv_heads, head_dim, ffn_dim, max_seq_len;
    int norm, pos, activation, gated, qk_norm, subln, tie_embeddings;
    float norm_eps, rope_theta, residual_scale;
    int binary;     /* quant: 0 ternary, 1 binary */
    int wdtype;     /* OB_DT_T2 / OB_DT_T16 / OB_DT_B1; a mixed model's ternary layers' */
    int mixed;      /* quant.weights "mixed": each BitLinear's kind from config.precision */
    ob_json precision; /* config.precision (mixed only): pattern -> kind, first match decides */
    int embed_dtype; /* OB_DT_F32 / F16 / I8 */
    int head_dtype;  /* quant.head_dtype (absent: embed_dtype): OB_DT_F32 / F16 / I8, or I4 (int8 activations) */
    int separate_head; /* head.weight is stored: an untied head, or a tied one in its own dtype */
    int tok_kind;
    int eot_token;
    int n_eos; /* metadata tokenizer.eos_token_ids: generation stops after one of these */
    int32_t eos[OB_MAX_EOS];
} ob_config;

/* A BitLinear weight, read in place. */
typedef struct ob_linear {
    const uint8_t *w;
    ob_wfmt fmt;
    int rows, cols;
    float scale;
    const float *row_scale; /* int4 / int8 layers of mixed models: per-row scales, and ifmt; else NULL */
    ob_ifmt ifmt;
} ob_linear;

/* A float matrix used by the embedding / head ([rows, cols]). */
typedef struct ob_fmatrix {
    const void *w;
    const float *row_scale; /* I8 / I4 only */
    int dtype, rows, cols;
} ob_fmatrix;

typedef struct ob_layer {
    const float *attn_norm, *q_norm, *k_norm, *attn_sub_norm, *mlp_norm, *mlp_sub_norm;
    ob_linear q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj;
} ob_layer;

typedef struct ob_tokenizer {
    int kind, vocab_size, n_merges;
    const uint8_t *bytes;   /* tokenizer.tokens */
    uint64_t bytes_size;
    const uint8_t *offsets; /* tokenizer.offsets, I32 [vocab + 1] (read with ob_rd_i32) */
    const uint8_t *merges;  /* tokenizer.merges, I32 [n_merges, 3] */
    int32_t byte_token[256]; /* id of the single-byte token for each byte, or -1 */
    /* open addressing: token bytes -> id; (left, right) -> merge rank */
    int32_t *vocab_hash;
    uint32_t vocab_hash_mask;
    int32_t *merge_hash;
    uint32_t merge_hash_mask;
    uint64_t hash_key; /* keys both tables (tokenizer.c: hash flooding) */
    int pretok; /* OB_PRE_* */
    int add_prefix_space, ignore_merges; /* byte-level options */
    /* SentencePiece-style: tokenizer.flags, prepend rule, split at metaspaces, byte fallback,
     * unk id (-1: none) and fusing, spaces stripped from the front of decoded text, id of "▁" */
    const uint8_t *flags;
    int sp_prepend, sp_split, sp_byte_fallback, sp_unk, sp_fuse_unk, sp_strip, sp_space;
    int n_special;
    int32_t special_ids[256]; /* Llama-3 reserves 256 */
} ob_tokenizer;

struct ob_model {
    ob_file file;
    ob_config cfg;
    ob_fmatrix embed, head;
    const float *pos_embed; /* [max_seq_len, dim] or NULL */
    const float *norm;
    ob_layer *layers;
    ob_tokenizer tok;
    void *mapping; /* mmap base (munmap on free) or NULL */
    size_t mapping_size;
    void *repacked; /* anonymous mapping of the T2 matrices in T2X (kernels.h), or NULL */
    size_t repacked_size;
    void *alloc_base; /* malloc'd block holding this struct, or NULL (caller's arena) */
    size_t plan_bytes; /* bookkeeping bytes (ob_model_plan_bytes), for memory budgets */
    char pack_name[8], embed_name[8];
    char error[OB_ERRMSG];
};

/* Everything a model needs beyond its struct, from the file alone (no allocation). */
typedef struct ob_model_plan {
    ob_file file;
    ob_config cfg;
    int n_merges;
    size_t vocab_hash_cap, merge_hash_cap;
} ob_model_plan;

ob_status ob_model_plan_file(ob_model_plan *plan, const void *data, size_t size, char *err,
                             size_t err_size);
size_t ob_model_plan_bytes(const ob_model_plan *plan);

/* tokenizer.c */
ob_status ob_tokenizer_init(ob_model *m, ob_arena *arena, size_t vocab_cap, size_t merge_cap,
                            char *err, size_t err_size);
int ob_tok_len(const ob_tokenizer *t, int32_t id, const uint8_t **bytes);
/* The keyed hashes of the lookup tables, and a refill of both tables under a given key (the tests
 * use key 0 to show that a crafted file really collides without the key). */
uint32_t ob_tok_bytes_hash(uint64_t key, const uint8_t *p, size_t n);
uint32_t ob_tok_pair_hash(uint64_t key, int32_t a, int32_t b);
void ob_tokenizer_index(ob_tokenizer *t, uint64_t key);
/* Merge scratch for long pre-tokens, grown by doubling and reused across them; n_alloc counts the
 * allocations.  free(p) when done. */
typedef struct ob_bpe_scratch {
    void *p;
    size_t cap;
    int n_alloc;
} ob_bpe_scratch;
/* BPE merges over one pre-token's byte tokens w[0..n), in place; the new length (-1: no memory).
 * The rescan (short words) and the heap (long ones) give identical results (tests compare them).
 * ob_bpe_merge_heap is ob_bpe_merge_heap_in with a scratch of its own. */
int ob_bpe_merge_small(const ob_tokenizer *t, int32_t *w, int n);
int ob_bpe_merge_heap_in(const ob_tokenizer *t, int32_t *w, int n, ob_bpe_scratch *s);
int ob_bpe_merge_heap(const ob_tokenizer *t, int32_t *w, int n);
/* ob_tokenize_ex with the caller's merge scratch (ob_tokenize_ex: one of its own per call). */
ob_status ob_tokenize_in(const ob_model *m, const char *text, size_t len, int32_t *tokens, int cap, int *n_tokens,
                         ob_bpe_scratch *scratch, char *err, size_t err_size);

/* sampler.c */
typedef struct ob_sampler_state {
    ob_sampler_params p;
    uint64_t rng;
} ob_sampler_state;
void ob_sampler_seed(ob_sampler_state *s, const ob_sampler_params *p);
/* logits: vocab floats (modified in place); history: the last n_hist tokens; scratch: probs
 * (vocab floats) and idx (vocab ints). */
int32_t ob_sampler_draw(ob_sampler_state *s, float *logits, int vocab, const int32_t *history,
                        int n_hist, float *probs, int32_t *idx);

#endif /* ONEBIT_INTERNAL_H */
