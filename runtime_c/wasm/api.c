/* api.c - the functions onebit.wasm exports to JavaScript (onebit.mjs wraps them).
 *
 * JavaScript reaches C only through numbers and linear memory, so this glue turns the public API's
 * structs and callbacks into calls that take and return scalars: one handle owns a model, its
 * session and an error message; the caller drives the decode loop (prefill, sample, decode) and
 * reads each token's bytes out of memory. */
#if !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200112L
#endif
#include <stdlib.h>
#include <string.h>

#include "onebit.h"

#define OBW_EXPORT(name) __attribute__((export_name(#name)))

typedef struct obw {
    ob_model *model;
    ob_session *session;
    const void *data; /* the model's bytes (malloc'ed by the caller, freed with the handle) */
    char error[256];
} obw;

/* A handle for the .1bit bytes at data (64-byte aligned, allocated with obw_alloc; the handle
 * takes them over), with a KV-cache of kv_type (an ob_kv_type value).  NULL only if the handle
 * itself cannot be allocated; otherwise check obw_error(h) (empty on success). */
OBW_EXPORT(obw_open)
obw *obw_open(void *data, size_t size, int n_ctx, int kv_type) {
    obw *h = (obw *)calloc(1, sizeof *h);
    if (!h) {
        free(data);
        return NULL;
    }
    h->data = data;
    if (ob_model_open_memory(&h->model, data, size, NULL, 0, h->error, sizeof h->error)) return h;
    ob_session_params sp = ob_session_params_default();
    sp.n_ctx = n_ctx;
    sp.n_threads = 1;
    sp.kv_type = (ob_kv_type)kv_type; /* ob_session_create rejects an unknown value */
    ob_session_create(&h->session, h->model, &sp, NULL, 0, h->error, sizeof h->error);
    return h;
}

OBW_EXPORT(obw_error) const char *obw_error(const obw *h) { return h ? h->error : "out of memory"; }

OBW_EXPORT(obw_close)
void obw_close(obw *h) {
    if (!h) return;
    ob_session_free(h->session);
    ob_model_free(h->model);
    free((void *)h->data);
    free(h);
}

/* Memory for JavaScript to fill (model bytes, text, token ids); 64-byte aligned. */
OBW_EXPORT(obw_alloc)
void *obw_alloc(size_t n) {
    void *p = NULL;
    return posix_memalign(&p, 64, n ? n : 1) ? NULL : p;
}
OBW_EXPORT(obw_free) void obw_free(void *p) { free(p); }

static int status(obw *h, ob_status st, const char *detail) {
    if (st == OB_OK) return 0;
    strncpy(h->error, detail && *detail ? detail : ob_strerror(st), sizeof h->error - 1);
    h->error[sizeof h->error - 1] = 0;
    return -(int)st;
}

OBW_EXPORT(obw_vocab_size)
int obw_vocab_size(obw *h) {
    ob_model_info info;
    return ob_model_get_info(h->model, &info) ? 0 : info.vocab_size;
}
OBW_EXPORT(obw_n_layers)
int obw_n_layers(obw *h) {
    ob_model_info info;
    return ob_model_get_info(h->model, &info) ? 0 : info.n_layers;
}
/* "char" or "bpe" */
OBW_EXPORT(obw_tokenizer)
const char *obw_tokenizer(obw *h) {
    ob_model_info info;
    return ob_model_get_info(h->model, &info) ? "" : info.tokenizer;
}
OBW_EXPORT(obw_n_ctx) int obw_n_ctx(obw *h) { return ob_session_n_ctx(h->session); }
OBW_EXPORT(obw_isa) const char *obw_isa(obw *h) { return ob_session_isa(h->session); }

/* Token ids of len bytes of UTF-8 text into ids (cap slots; cap >= len always suffices).
 * Returns the count, or a negative status with obw_error set. */
OBW_EXPORT(obw_tokenize)
int obw_tokenize(obw *h, const char *text, size_t len, int32_t *ids, int cap) {
    int n = 0;
    ob_status st = ob_tokenize(h->model, text, len, ids, cap, &n);
    return st ? status(h, st, ob_model_error(h->model)) : n;
}

/* Sampler settings (docs/SAMPLING.md) and a fresh PRNG state from seed. */
OBW_EXPORT(obw_set_sampler)
int obw_set_sampler(obw *h, float temperature, int top_k, float top_p, float repeat_penalty,
                    int repeat_window, uint64_t seed) {
    ob_sampler_params p = {temperature, top_k, top_p, repeat_penalty, repeat_window, seed, 0};
    return status(h, ob_session_set_sampler(h->session, &p), ob_session_error(h->session));
}

/* Forget the context, then evaluate n prompt tokens. */
OBW_EXPORT(obw_prefill)
int obw_prefill(obw *h, const int32_t *ids, int n) {
    ob_session_reset(h->session);
    return status(h, ob_session_eval(h->session, ids, n, NULL, 0), ob_session_error(h->session));
}

/* The next token drawn from the last logits, or a negative status. */
OBW_EXPORT(obw_sample)
int obw_sample(obw *h) {
    int32_t t;
    ob_status st = ob_session_sample(h->session, &t);
    return st ? status(h, st, ob_session_error(h->session)) : (int)t;
}

/* Evaluate one more token (sliding past the context). */
OBW_EXPORT(obw_decode)
int obw_decode(obw *h, int token) {
    return status(h, ob_session_decode(h->session, token), ob_session_error(h->session));
}

/* 1 if token ends a sequence for this model (its eos_token_ids), else 0. */
OBW_EXPORT(obw_is_eos) int obw_is_eos(obw *h, int token) { return ob_token_is_eos(h->model, token); }

/* A token's bytes: returns their address and writes the length to *len. */
OBW_EXPORT(obw_token_bytes)
const uint8_t *obw_token_bytes(obw *h, int token, size_t *len) {
    const uint8_t *bytes = NULL;
    *len = 0;
    if (ob_token_bytes(h->model, token, &bytes, len)) return NULL;
    return bytes;
}
