/* onebit.h - the public API of the onebit C runtime (C99, libc + libm + pthreads).
 *
 * Runs 1-bit / ternary decoder-only transformers stored in a `.1bit` file (docs/FORMAT.md).
 * Objects are opaque; every function that can fail returns an ob_status, nothing aborts or
 * prints, and each object keeps a last-error message with detail (ob_model_error,
 * ob_session_error).  Functions that create an object take an optional `err` buffer that
 * receives the message when creation fails (there is no object to ask then).
 *
 * Typical use:
 *     ob_model *m; ob_session *s; char err[256];
 *     if (ob_model_open(&m, "model.1bit", err, sizeof err)) { fprintf(stderr, "%s\n", err); ... }
 *     ob_session_params sp = ob_session_params_default();   sp.n_ctx = 256; sp.n_threads = 2;
 *     if (ob_session_create(&s, m, &sp, NULL, 0, err, sizeof err)) ...
 *     ob_generate(s, prompt_ids, n_prompt, 200, &sampler, on_token, user, NULL, NULL);
 *     ob_session_free(s); ob_model_free(m);
 *
 * No malloc at all: ob_memory_required() says how many bytes a model and a session need; pass
 * caller-owned buffers to ob_model_open_memory() and ob_session_create() (with n_threads = 1,
 * since worker threads need the C library's own allocations).
 *
 * Threads.  An ob_model is immutable once open: any number of sessions, on any threads, may share
 * it, and every function taking a `const ob_model *` (info, metadata, ob_token_bytes,
 * ob_tokenize_ex, ob_detokenize_ex, ob_session_create) may be called on it from any thread at
 * once.  The two exceptions write the model's last-error message: ob_tokenize and ob_detokenize
 * when they fail (use the _ex forms from threads).  An ob_session belongs to one thread at a time
 * (calls on one session must not overlap; handing it to another thread between calls is fine);
 * its own worker threads (n_threads > 1) are internal.  Free sessions before their model.  There
 * is no global state: results never depend on what other threads do (tests/test_threads.c, run
 * under ThreadSanitizer by `make -C runtime_c test-tsan`).
 */
#ifndef ONEBIT_H
#define ONEBIT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define OB_VERSION_MAJOR 1 /* the .1bit major version this runtime reads */
#define OB_VERSION_MINOR 0

/* ---------------------------------------------------------------- status codes */

typedef enum ob_status {
    OB_OK = 0,
    OB_ERR_INVALID_ARG = 1,  /* NULL pointer, negative count, bad option value */
    OB_ERR_IO = 2,           /* cannot open / stat / map / read a file */
    OB_ERR_FORMAT = 3,       /* not a valid .1bit file (magic, sizes, offsets, shapes, JSON) */
    OB_ERR_VERSION = 4,      /* .1bit major version newer than this runtime */
    OB_ERR_CHECKSUM = 5,     /* header or body CRC-32 mismatch */
    OB_ERR_UNSUPPORTED = 6,  /* valid file, but an option this build cannot run */
    OB_ERR_NOMEM = 7,        /* allocation failed or caller's arena too small */
    OB_ERR_CONTEXT_FULL = 8, /* tokens would not fit in the session's context */
    OB_ERR_TOKEN = 9,        /* token id out of range, or text the tokenizer cannot encode */
    OB_ERR_ISA = 10,         /* ONEBIT_ISA / params.isa names an unknown or unavailable ISA */
    OB_ERR_BUFFER = 11,      /* caller's output buffer too small (the needed size is returned) */
    OB_ERR_STOPPED = 12      /* a callback asked to stop */
} ob_status;

/* A static, human-readable name of a status ("ok", "invalid argument", ...). */
const char *ob_strerror(ob_status status);

typedef struct ob_model ob_model;
typedef struct ob_session ob_session;

/* ---------------------------------------------------------------- models */

/* Map a .1bit file read-only (zero-copy) and validate it: magic, version, sizes, every offset /
 * length / shape / dtype, both CRC-32s, the metadata JSON and that every tensor the config needs
 * is present with the right shape. */
ob_status ob_model_open(ob_model **out, const char *path, char *err, size_t err_size);

/* Same over bytes already in memory (e.g. the array of a header from `onebit-export
 * --emit-c-header`).  The bytes must stay valid and unchanged while the model lives, and be
 * 64-byte aligned (tensors are read in place).  arena: NULL to malloc the model's bookkeeping,
 * or a caller buffer of at least ob_memory_required()'s model_bytes (nothing else is allocated;
 * the buffer must outlive the model). */
ob_status ob_model_open_memory(ob_model **out, const void *data, size_t size, void *arena,
                               size_t arena_size, char *err, size_t err_size);

void ob_model_free(ob_model *model); /* NULL is fine; never frees a caller's arena */

/* The last error recorded on this model ("" if none): by ob_tokenize / ob_detokenize. */
const char *ob_model_error(const ob_model *model);

typedef struct ob_model_info {
    int vocab_size, dim, n_layers, n_heads, n_kv_heads, head_dim, ffn_dim, max_seq_len;
    const char *norm;       /* "rmsnorm" | "layernorm" */
    const char *pos;        /* "rope" | "learned" */
    const char *activation; /* "silu" | "relu2" | "gelu" */
    int gated, qk_norm, subln, tie_embeddings;
    float residual_scale, norm_eps, rope_theta;
    const char *quant;       /* "ternary" | "binary" | "mixed" (a per-layer precision map) */
    const char *pack;        /* "t2" | "t1.6" | "b1" (mixed: its ternary layers') */
    const char *embed_dtype; /* "f32" | "f16" | "i8" */
    const char *tokenizer;   /* "char" | "bpe" */
    int n_merges;
    int eot_token; /* id of "<|endoftext|>", or -1 */
    /* End-of-sequence ids (metadata tokenizer.eos_token_ids, from the model's generation_config.json /
     * tokenizer_config.json); models trained by onebit have none.  Generation stops after one. */
    int n_eos_tokens;
    int32_t eos_tokens[8]; /* OB_MAX_EOS */
    uint64_t file_size;
    /* Bytes of T2X, the interleaved 2-bit layout the loader moved the T2 and T1.6 weights into out of
     * the file mapping (the GEMV then reads one stream, and T1.6 runs as fast as T2; docs/RUNTIME.md
     * "Load"), 0 if none: the kernels this CPU runs gain nothing from it, ONEBIT_REPACK=0, or
     * ob_model_open_memory, which always reads in place. */
    uint64_t repacked_bytes;
} ob_model_info;

ob_status ob_model_get_info(const ob_model *model, ob_model_info *info);
#define OB_MAX_EOS 8 /* a model with more end-of-sequence ids is refused */
/* 1 if token is one of the model's end-of-sequence ids, else 0. */
int ob_token_is_eos(const ob_model *model, int32_t token);
/* The metadata JSON as stored (not NUL-terminated; *size bytes). */
const char *ob_model_metadata(const ob_model *model, size_t *size);

/* ---------------------------------------------------------------- tokenizer */

/* Encode UTF-8 text (len bytes; invalid UTF-8 is an error) exactly as onebit/tokenizer.py does.
 * Writes at most cap ids; *n_tokens receives the number of ids the text needs.  If cap is too
 * small returns OB_ERR_BUFFER (call again with cap >= *n_tokens).  Encoding needs up to one id
 * slot per byte of the longest pre-token as scratch, and a text segment may gain one leading
 * token (add_prefix_space, SentencePiece's metaspace), so cap >= len + 1 always suffices.  BPE merging
 * is O(n log n) in a pre-token's length; a pre-token longer than 64 bytes takes about 36 bytes
 * of scratch per byte from malloc, freed before returning (OB_ERR_NOMEM if that fails).
 * Reads the model only; the message of a failure goes to err (err_size bytes; may be NULL). */
ob_status ob_tokenize_ex(const ob_model *model, const char *text, size_t len, int32_t *tokens, int cap,
                         int *n_tokens, char *err, size_t err_size);
/* The same, recording the message of a failure in the model (ob_model_error) instead: that one
 * write makes concurrent failing calls on a shared model race; threads use ob_tokenize_ex. */
ob_status ob_tokenize(ob_model *model, const char *text, size_t len, int32_t *tokens, int cap,
                      int *n_tokens);

/* The raw bytes of one token (not NUL-terminated; may be invalid UTF-8 on its own). */
ob_status ob_token_bytes(const ob_model *model, int32_t token, const uint8_t **bytes, size_t *len);

/* Concatenate the bytes of n tokens into buf (cap bytes); *len receives the bytes needed.
 * OB_ERR_BUFFER if cap is too small.  Invalid UTF-8 is passed through as raw bytes, except with a
 * SentencePiece-style tokenizer, whose text is HF's decode: a run of byte tokens that is not UTF-8
 * becomes one U+FFFD per token, and leading spaces are stripped as its decoder says.  Reads the
 * model only; the message of a failure goes to err (may be NULL). */
ob_status ob_detokenize_ex(const ob_model *model, const int32_t *tokens, int n, char *buf, size_t cap,
                           size_t *len, char *err, size_t err_size);
/* The same, recording a failure's message in the model (as ob_tokenize). */
ob_status ob_detokenize(ob_model *model, const int32_t *tokens, int n, char *buf, size_t cap,
                        size_t *len);

/* The prompt text of a one-message chat: the model's chat template (Hugging Face
 * tokenizer_config.json) applied to one user message with the assistant's turn opened.  No
 * template engine here: the exporter renders the template around a placeholder and stores the
 * fixed text before and after it (metadata tokenizer.chat_prefix / chat_suffix, and chat_trim when
 * the template strips the message's surrounding whitespace as Python's str.strip does), so the
 * result is prefix + message + suffix, to be tokenized with ob_tokenize_ex.  Writes it and a NUL
 * into buf (cap bytes).  *need (may be NULL) receives the text's length on success and the capacity
 * that suffices with OB_ERR_BUFFER (cap too small).  OB_ERR_UNSUPPORTED if the model has no chat
 * template pieces (models trained by onebit have no template). */
ob_status ob_chat_prompt(const ob_model *model, const char *user, size_t len, char *buf, size_t cap,
                         size_t *need, char *err, size_t err_size);

/* ---------------------------------------------------------------- sessions */

typedef enum ob_kv_type { OB_KV_F32 = 0, OB_KV_F16 = 1 } ob_kv_type;

#define OB_DEFAULT_CTX 4096 /* n_ctx = 0 means min(max_seq_len, this) */

typedef struct ob_session_params {
    int n_ctx;           /* context length in tokens, 1..max_seq_len; 0 = min(max_seq_len, 4096) */
    int n_threads;       /* >= 1; results are identical for every count */
    int n_batch;         /* tokens per prefill GEMM, >= 1 (default 32) */
    ob_kv_type kv_type;  /* KV-cache element type (default f16; f32 is the exact twin of PyTorch's cache) */
    const char *isa;     /* NULL / "" = ONEBIT_ISA or the best this CPU has; else "scalar", ... */
    /* Memory budget in bytes, 0 = none: the session (KV-cache and buffers) plus the model it runs
     * (its file, read through the mapping, and its bookkeeping).  Over budget, ob_session_create
     * fails with OB_ERR_NOMEM and a message saying how much was needed, before allocating. */
    uint64_t max_memory;
} ob_session_params;

ob_session_params ob_session_params_default(void);

/* Bytes a model (its bookkeeping, not its weights) and a session with these params need; for
 * caller-provided arenas.  Parses the file's header and metadata, allocates nothing.
 * OB_ERR_NOMEM when the session would not fit the address space or params->max_memory. */
ob_status ob_memory_required(const void *data, size_t size, const ob_session_params *params,
                             size_t *model_bytes, size_t *session_bytes);

/* A session: KV-cache and buffers sized for params->n_ctx.  arena as for ob_model_open_memory
 * (at least session_bytes).  The model must outlive the session. */
ob_status ob_session_create(ob_session **out, const ob_model *model, const ob_session_params *params,
                            void *arena, size_t arena_size, char *err, size_t err_size);
void ob_session_free(ob_session *session);
const char *ob_session_error(const ob_session *session);

/* Forget every token (position 0). */
void ob_session_reset(ob_session *session);
int ob_session_pos(const ob_session *session);   /* tokens evaluated so far */
int ob_session_n_ctx(const ob_session *session);
const char *ob_session_isa(const ob_session *session); /* e.g. "avx512" */

/* Evaluate n tokens at the current position (prefill in batches of n_batch, or decode when
 * n == 1).  OB_ERR_CONTEXT_FULL, with nothing evaluated, if pos + n > n_ctx.
 * logits: NULL, or n * vocab_size floats receiving every token's logits (all == 1) /
 * vocab_size floats for the last token (all == 0).  The last token's logits are also kept
 * in the session (ob_session_logits) for sampling. */
ob_status ob_session_eval(ob_session *session, const int32_t *tokens, int n, float *logits,
                          int all);
/* Evaluate one more token (decode).  While pos < n_ctx this is ob_session_eval(token, 1); when the
 * context is full it slides (docs/SAMPLING.md, "Beyond the context"): the cache is dropped and the
 * last max(1, n_ctx / 2) tokens of the sequence (token included) are prefilled at positions 0...
 * Allocates nothing. */
ob_status ob_session_decode(ob_session *session, int32_t token);
/* The last evaluated token's logits (vocab_size floats), NULL before any eval. */
const float *ob_session_logits(const ob_session *session);

/* ---------------------------------------------------------------- sampling (docs/SAMPLING.md) */

typedef struct ob_sampler_params {
    float temperature;    /* 0 = greedy (argmax, ties to the lowest id) */
    int top_k;            /* 0 = off */
    float top_p;          /* 1 = off */
    float repeat_penalty; /* 1 = off */
    int repeat_window;    /* how many of the last tokens the penalty looks at */
    uint64_t seed;
    int ignore_eos;       /* 0: ob_generate stops after an end-of-sequence token (ob_token_is_eos) */
} ob_sampler_params;

ob_sampler_params ob_sampler_params_default(void); /* 0.8, 0, 1.0, 1.0, 64, 0, 0 */

/* Set the sampler and seed its PRNG (ob_generate does this itself). */
ob_status ob_session_set_sampler(ob_session *session, const ob_sampler_params *params);
/* Draw the next token from the last logits, penalising the session's recent tokens (the last
 * min(repeat_window, n_ctx) tokens of the sequence since the last reset, slides included). */
ob_status ob_session_sample(ob_session *session, int32_t *token);

/* Called once per generated token with its bytes; return nonzero to stop (ob_generate then
 * returns OB_ERR_STOPPED). */
typedef int (*ob_token_fn)(void *user, int32_t token, const uint8_t *bytes, size_t len);

/* Evaluate the prompt, then sample and evaluate (ob_session_decode: sliding past the context)
 * n_new tokens, or fewer: after an end-of-sequence token (ob_token_is_eos; included in out and
 * passed to on_token) it stops unless params->ignore_eos.  OB_ERR_CONTEXT_FULL, before any work, if pos + n_prompt > n_ctx (the prompt
 * itself must fit; the new tokens may go past it).  out (optional, n_new ids) receives the generated
 * tokens and *n_out how many were made.  Allocates nothing. */
ob_status ob_generate(ob_session *session, const int32_t *prompt, int n_prompt, int n_new,
                      const ob_sampler_params *params, ob_token_fn on_token, void *user,
                      int32_t *out, int *n_out);

#ifdef __cplusplus
}
#endif
#endif /* ONEBIT_H */
