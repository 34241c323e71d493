/* fixture.h - build .1bit files in memory for the C tests (docs/FORMAT.md), so a test can shape
 * exactly the file it needs: any config, a char or BPE tokenizer, thousands of extra records,
 * records out of order, forged shapes.  Weights are zeros: these files exercise the loader and
 * the tokenizer, not the numbers.  Header-only because every test is one translation unit.
 *
 *     fx f; fx_init(&f, &cfg);  fx_model(&f);  (fx_add(&f, ...) for more)
 *     uint8_t *data = fx_write(&f, &size);     ...     fx_free(&f);   free(data);
 */
#ifndef ONEBIT_TESTS_FIXTURE_H
#define ONEBIT_TESTS_FIXTURE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/internal.h"

typedef struct fx_config {
    int vocab_size, dim, n_layers, n_heads, n_kv_heads, ffn_dim, max_seq_len;
    const char *pack;  /* "t2" | "t1.6" | "b1" */
    const char *embed; /* "f32" | "f16" | "i8" */
    /* numbers exactly as they appear in the metadata JSON (strings: no printf, no locale) */
    const char *norm_eps, *rope_theta, *residual_scale;
    int bpe; /* 0: char tokenizer over tokens[]; 1: BPE with 256 byte tokens + merges */
    const char *const *tokens; /* char: vocab_size token strings */
    const int32_t (*merges)[3]; /* bpe: n_merges (left, right, merged) rows; merged = 256 + row */
    int n_merges;
    const char *special_tokens; /* the tokenizer.special_tokens JSON object, NULL for {} */
    const char *tokenizer_extra; /* more tokenizer members, e.g. ", \"eos_token_ids\": [1]" (NULL: none) */
    /* bpe: another tokenizer.pretokenizer (NULL: gpt2-bytelevel) and the tokenizer.flags tensor
     * (vocab_size bytes; NULL: none) */
    const char *pretokenizer;
    const uint8_t *tok_flags;
} fx_config;

typedef struct fx_tensor {
    char name[64];
    uint32_t dtype, n_dims;
    uint64_t shape[4];
    uint64_t size, offset; /* offset: relative to the data section; assigned by fx_write unless fixed */
    int fixed_offset;
    const void *data; /* size bytes, or NULL for zeros */
    float scale;
} fx_tensor;

typedef struct fx {
    fx_config cfg;
    fx_tensor *t;
    int n, cap;
    int reverse; /* lay the data out in reverse directory order (records not sorted by offset) */
    uint8_t *tok_bytes;
    int32_t *tok_offsets, *merge_rows;
    float *scale_ones;
    size_t n_tok_bytes;
} fx;

static fx_config fx_default_config(void) {
    fx_config c;
    memset(&c, 0, sizeof c);
    c.vocab_size = 4;
    c.dim = 32;
    c.n_layers = 1;
    c.n_heads = 2;
    c.n_kv_heads = 1;
    c.ffn_dim = 64;
    c.max_seq_len = 16;
    c.pack = "t2";
    c.embed = "f32";
    c.norm_eps = "1e-05";
    c.rope_theta = "10000.0";
    c.residual_scale = "1.0";
    static const char *const abcd[] = {"a", "b", "c", " "};
    c.tokens = abcd;
    return c;
}

static void fx_init(fx *f, const fx_config *c) {
    memset(f, 0, sizeof *f);
    f->cfg = *c;
}

static uint64_t fx_bytes(uint32_t dtype, uint64_t rows, uint64_t K) {
    switch (dtype) {
    case OB_DT_F32:
    case OB_DT_I32: return 4 * rows * K;
    case OB_DT_F16: return 2 * rows * K;
    case OB_DT_T2: return rows * ((K + 127) / 128 * 32);
    case OB_DT_B1: return rows * ((K + 127) / 128 * 16);
    case OB_DT_T16: return rows * (32 * (K / 160) + (K % 160 + 4) / 5);
    default: return rows * K;
    }
}

/* Add a 1-D (d1 == 0) or 2-D tensor; data NULL means zeros. */
static fx_tensor *fx_add(fx *f, const char *name, uint32_t dtype, uint64_t d0, uint64_t d1, const void *data) {
    if (f->n == f->cap) {
        f->cap = f->cap ? 2 * f->cap : 64;
        f->t = (fx_tensor *)realloc(f->t, sizeof(fx_tensor) * (size_t)f->cap);
    }
    fx_tensor *t = &f->t[f->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->dtype = dtype;
    t->n_dims = d1 ? 2 : 1;
    t->shape[0] = d0;
    t->shape[1] = d1 ? d1 : 1;
    t->shape[2] = t->shape[3] = 1;
    t->size = d1 ? fx_bytes(dtype, d0, d1) : fx_bytes(dtype, 1, d0);
    t->data = data;
    t->scale = (dtype == OB_DT_T2 || dtype == OB_DT_T16 || dtype == OB_DT_B1) ? 0.5f : 1.0f;
    return t;
}

static uint32_t fx_pack_dtype(const char *pack) {
    return !strcmp(pack, "t2") ? OB_DT_T2 : !strcmp(pack, "b1") ? OB_DT_B1 : OB_DT_T16;
}

static uint32_t fx_embed_dtype(const char *e) {
    return !strcmp(e, "f32") ? OB_DT_F32 : !strcmp(e, "f16") ? OB_DT_F16 : OB_DT_I8;
}

/* The tokenizer tables and every tensor the config needs (rope, rmsnorm, ungated relu2, tied). */
static void fx_model(fx *f) {
    const fx_config *c = &f->cfg;
    int V = c->vocab_size, D = c->dim, hd = c->dim / c->n_heads, kv = c->n_kv_heads * hd;
    uint32_t wd = fx_pack_dtype(c->pack), ed = fx_embed_dtype(c->embed);
    char name[64];
    fx_add(f, "embed.weight", ed, (uint64_t)V, (uint64_t)D, NULL);
    if (ed == OB_DT_I8) {
        f->scale_ones = (float *)malloc(sizeof(float) * (size_t)V);
        for (int i = 0; i < V; i++) f->scale_ones[i] = 1.0f;
        fx_add(f, "embed.weight.scale", OB_DT_F32, (uint64_t)V, 0, f->scale_ones);
    }
    fx_add(f, "norm.weight", OB_DT_F32, (uint64_t)D, 0, NULL);
    for (int l = 0; l < c->n_layers; l++) {
#define FX_NAME(s) (snprintf(name, sizeof name, "layers.%d.%s", l, s), name)
        fx_add(f, FX_NAME("attn_norm.weight"), OB_DT_F32, (uint64_t)D, 0, NULL);
        fx_add(f, FX_NAME("mlp_norm.weight"), OB_DT_F32, (uint64_t)D, 0, NULL);
        fx_add(f, FX_NAME("attn.q_proj.weight"), wd, (uint64_t)D, (uint64_t)D, NULL);
        fx_add(f, FX_NAME("attn.k_proj.weight"), wd, (uint64_t)kv, (uint64_t)D, NULL);
        fx_add(f, FX_NAME("attn.v_proj.weight"), wd, (uint64_t)kv, (uint64_t)D, NULL);
        fx_add(f, FX_NAME("attn.o_proj.weight"), wd, (uint64_t)D, (uint64_t)D, NULL);
        fx_add(f, FX_NAME("mlp.up_proj.weight"), wd, (uint64_t)c->ffn_dim, (uint64_t)D, NULL);
        fx_add(f, FX_NAME("mlp.down_proj.weight"), wd, (uint64_t)D, (uint64_t)c->ffn_dim, NULL);
#undef FX_NAME
    }
    /* tokenizer.tokens / offsets (/ merges) */
    size_t cap = 1024;
    f->tok_bytes = (uint8_t *)malloc(cap);
    f->tok_offsets = (int32_t *)malloc(sizeof(int32_t) * (size_t)(V + 1));
    size_t nb = 0;
    for (int i = 0; i < V; i++) {
        uint8_t tmp[4096];
        size_t l = 0;
        if (!c->bpe) {
            l = strlen(c->tokens[i]);
            memcpy(tmp, c->tokens[i], l);
        } else if (i < 256) {
            tmp[0] = (uint8_t)i;
            l = 1;
        } else { /* a merged token: the bytes of its two parts */
            const int32_t *m = c->merges[i - 256];
            for (int k = 0; k < 2; k++) {
                int32_t part = m[k];
                size_t pl = (size_t)(f->tok_offsets[part + 1] - f->tok_offsets[part]);
                if (l + pl <= sizeof tmp) memcpy(tmp + l, f->tok_bytes + f->tok_offsets[part], pl);
                l += pl;
            }
            if (l > sizeof tmp) l = sizeof tmp;
        }
        while (nb + l > cap) {
            cap *= 2;
            f->tok_bytes = (uint8_t *)realloc(f->tok_bytes, cap);
        }
        f->tok_offsets[i] = (int32_t)nb;
        memcpy(f->tok_bytes + nb, tmp, l);
        nb += l;
        f->tok_offsets[i + 1] = (int32_t)nb;
    }
    f->n_tok_bytes = nb;
    fx_add(f, "tokenizer.tokens", OB_DT_U8, (uint64_t)(nb ? nb : 1), 0, f->tok_bytes);
    fx_add(f, "tokenizer.offsets", OB_DT_I32, (uint64_t)V + 1, 0, f->tok_offsets);
    if (c->bpe && c->n_merges) {
        f->merge_rows = (int32_t *)malloc(sizeof(int32_t) * 3 * (size_t)c->n_merges);
        memcpy(f->merge_rows, c->merges, sizeof(int32_t) * 3 * (size_t)c->n_merges);
        fx_add(f, "tokenizer.merges", OB_DT_I32, (uint64_t)c->n_merges, 3, f->merge_rows);
    }
    if (c->tok_flags) fx_add(f, "tokenizer.flags", OB_DT_U8, (uint64_t)V, 0, c->tok_flags);
}

static void fx_put(uint8_t *p, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* Recompute both CRCs after editing a file in place. */
static void fx_fix_crcs(uint8_t *d, size_t size) {
    fx_put(d + 56, ob_crc32(0, d + 64, size - 64), 4);
    fx_put(d + 60, ob_crc32(0, d, 60), 4);
}

/* The whole file, 64-byte aligned: free(*raw) when done. */
static uint8_t *fx_write(fx *f, size_t *size, void **raw) {
    const fx_config *c = &f->cfg;
    char meta[2048];
    int ml = snprintf(meta, sizeof meta,
                      "{\"config\": {\"vocab_size\": %d, \"dim\": %d, \"n_layers\": %d, \"n_heads\": %d, "
                      "\"n_kv_heads\": %d, \"ffn_dim\": %d, \"max_seq_len\": %d, \"norm\": \"rmsnorm\", "
                      "\"norm_eps\": %s, \"pos\": \"rope\", \"rope_theta\": %s, \"activation\": \"relu2\", "
                      "\"gated\": false, \"qk_norm\": false, \"subln\": false, \"residual_scale\": %s, "
                      "\"tie_embeddings\": true, \"quant\": \"%s\"}, "
                      "\"quant\": {\"weights\": \"%s\", \"pack\": \"%s\", \"activations\": \"int8-absmax-per-token\", "
                      "\"embed_dtype\": \"%s\"}, "
                      "\"tokenizer\": {\"type\": \"%s\", \"vocab_size\": %d, \"pretokenizer\": \"%s\", "
                      "\"special_tokens\": %s%s}}",
                      c->vocab_size, c->dim, c->n_layers, c->n_heads, c->n_kv_heads, c->ffn_dim, c->max_seq_len,
                      c->norm_eps, c->rope_theta, c->residual_scale, strcmp(c->pack, "b1") ? "ternary" : "binary",
                      strcmp(c->pack, "b1") ? "ternary" : "binary", c->pack, c->embed, c->bpe ? "bpe" : "char",
                      c->vocab_size, !c->bpe ? "none" : c->pretokenizer ? c->pretokenizer : "gpt2-bytelevel",
                      c->special_tokens ? c->special_tokens : "{}", c->tokenizer_extra ? c->tokenizer_extra : "");
    uint64_t dir_offset = (64 + (uint64_t)ml + 63) / 64 * 64;
    uint64_t data_offset = (dir_offset + 128 * (uint64_t)f->n + 63) / 64 * 64, pos = 0;
    for (int k = 0; k < f->n; k++) {
        fx_tensor *t = &f->t[f->reverse ? f->n - 1 - k : k];
        if (t->fixed_offset) continue;
        t->offset = pos;
        pos += (t->size + 63) / 64 * 64;
    }
    for (int k = 0; k < f->n; k++) {
        uint64_t end = (f->t[k].offset + f->t[k].size + 63) / 64 * 64;
        if (f->t[k].fixed_offset && end > pos && end - pos <= ((uint64_t)1 << 20)) pos = end; /* else: past the end */
    }
    size_t total = (size_t)(data_offset + pos);
    *raw = malloc(total + 64);
    if (!*raw) {
        printf("fixture: cannot allocate %zu bytes\n", total);
        exit(1);
    }
    uint8_t *d = (uint8_t *)(((uintptr_t)*raw + 63) & ~(uintptr_t)63);
    memset(d, 0, total);
    memcpy(d, "1BIT", 4);
    fx_put(d + 4, 1, 2);
    fx_put(d + 6, 0, 2);
    fx_put(d + 8, total, 8);
    fx_put(d + 16, 64, 8);
    fx_put(d + 24, (uint64_t)ml, 8);
    fx_put(d + 32, dir_offset, 8);
    fx_put(d + 40, (uint64_t)f->n, 4);
    fx_put(d + 48, data_offset, 8);
    memcpy(d + 64, meta, (size_t)ml);
    for (int k = 0; k < f->n; k++) {
        const fx_tensor *t = &f->t[k];
        uint8_t *r = d + dir_offset + 128 * (uint64_t)k;
        memcpy(r, t->name, strlen(t->name));
        fx_put(r + 64, t->dtype, 4);
        fx_put(r + 68, t->n_dims, 4);
        for (int j = 0; j < 4; j++) fx_put(r + 72 + 8 * j, t->shape[j], 8);
        fx_put(r + 104, t->offset, 8);
        fx_put(r + 112, t->size, 8);
        uint32_t sc;
        memcpy(&sc, &t->scale, 4);
        fx_put(r + 120, sc, 4);
        if (t->data && t->offset + t->size <= pos) memcpy(d + data_offset + t->offset, t->data, (size_t)t->size);
    }
    fx_fix_crcs(d, total);
    *size = total;
    return d;
}

static void fx_free(fx *f) {
    free(f->t);
    free(f->tok_bytes);
    free(f->tok_offsets);
    free(f->merge_rows);
    free(f->scale_ones);
    memset(f, 0, sizeof *f);
}

#endif
