/* session.c - the RunState (KV-cache and buffers, carved out of one arena) and the forward pass.
 * Each step of forward() names its twin in onebit/model.py.  Nothing here allocates after
 * ob_session_create; results do not depend on the thread count (rows and heads are split into
 * fixed ranges and every output element is computed by exactly one thread, in one order). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct ob_session {
    const ob_model *model;
    const ob_config *cfg;
    ob_kernels k;
    ob_threadpool *pool;
    int n_threads, n_ctx, n_batch, pos, has_logits;
    int n_hist; /* valid tokens at the start of history */
    ob_kv_type kv_type;
    size_t kv_layer; /* elements per layer of one cache (n_ctx * kv_dim), laid out [kv_head][pos][head_dim]
                        so that one head's keys / values are contiguous (prefetch, TLB) */
    void *key_cache, *value_cache;
    float *rope_cos, *rope_sin; /* [n_ctx, head_dim / 2] */
    /* activations for up to n_batch tokens */
    float *x, *h, *q, *kx, *vx, *att, *o, *gate, *up;
    int8_t *xq;
    size_t xq_stride;
    int16_t *head_xq; /* [dim] the int8 head's int16 activations (ob_quantize_i16) */
    float *act_a;
    int32_t *act_sum;
    float *scores; /* [n_heads, n_ctx] */
    float *logits; /* [vocab] of the last token */
    int32_t *history; /* [2 * n_ctx] the tail of the token sequence (at least its last n_ctx tokens, or all),
                         which outlives slides: the repetition penalty looks up to n_ctx tokens back */
    float *samp_f;    /* [3 * vocab] sampler scratch */
    int32_t *samp_i;  /* [2 * vocab] */
    ob_sampler_state sampler;
    void *alloc_base;
    char error[OB_ERRMSG];
};

ob_session_params ob_session_params_default(void) {
    ob_session_params p;
    memset(&p, 0, sizeof p);
    p.n_ctx = 0;
    p.n_threads = 1;
    p.n_batch = 32;
    p.kv_type = OB_KV_F16;
    p.isa = NULL;
    return p;
}

ob_sampler_params ob_sampler_params_default(void) {
    ob_sampler_params p;
    p.temperature = 0.8f;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.repeat_penalty = 1.0f;
    p.repeat_window = 64;
    p.seed = 0;
    p.ignore_eos = 0;
    return p;
}

/* Query rows handled together by one call of the scores / mix kernels: heads that share a KV head,
 * and in a prompt, for fewer than this many such heads, consecutive tokens too.  The kernels then
 * read (and widen) each cached row once for all of them, as they do for 2B4T's 4 heads. */
#define OB_ATTN_ROWS 4

static size_t max3(size_t a, size_t b, size_t c) { return a > b ? (a > c ? a : c) : (b > c ? b : c); }

/* Carve every buffer out of the arena (measure-only when arena->base is NULL).  Sizes are 64-bit:
 * the config limits (model.c: dim <= 2^16, ffn <= 2^18, vocab <= 2^24, layers <= 2^10, n_ctx <=
 * 2^20, threads <= 256) keep every product below 2^50, and the arena flags any request or total
 * that a 32-bit size_t cannot hold.  The KV-cache is not zeroed: every position is written before
 * attention reads it, so its pages stay untouched (and, from malloc, uncommitted) until used. */
static void layout(ob_session *s, ob_arena *ar, const ob_config *c, int n_ctx, int n_batch, ob_kv_type kv,
                   int n_threads) {
    uint64_t B = (uint64_t)n_batch, T = (uint64_t)n_ctx, inner = (uint64_t)c->n_heads * (uint64_t)c->head_dim;
    uint64_t kvd = (uint64_t)c->n_kv_heads * (uint64_t)c->head_dim, D = (uint64_t)c->dim, F = (uint64_t)c->ffn_dim;
    uint64_t V = (uint64_t)c->vocab_size, hd = (uint64_t)c->head_dim;
    uint64_t esz = kv == OB_KV_F16 ? 2 : 4, kv_layer = T * kvd, half = hd / 2;
    size_t xq_stride = ob_act_stride((int)max3((size_t)c->dim, (size_t)inner, (size_t)c->ffn_dim));
    void *p[20];
    int i = 0;
    p[i++] = ob_arena_alloc_raw(ar, esz * kv_layer * (uint64_t)c->n_layers);
    p[i++] = ob_arena_alloc_raw(ar, esz * kv_layer * (uint64_t)c->n_layers);
    p[i++] = ob_arena_alloc(ar, 4 * T * (half ? half : 1));
    p[i++] = ob_arena_alloc(ar, 4 * T * (half ? half : 1));
    p[i++] = ob_arena_alloc(ar, 4 * B * D);                           /* x */
    p[i++] = ob_arena_alloc(ar, 4 * B * (D > inner ? D : inner));     /* h */
    p[i++] = ob_arena_alloc(ar, 4 * B * inner);                       /* q */
    p[i++] = ob_arena_alloc(ar, 4 * B * kvd);                         /* k */
    p[i++] = ob_arena_alloc(ar, 4 * B * kvd);                         /* v */
    p[i++] = ob_arena_alloc(ar, 4 * B * inner);                       /* att */
    p[i++] = ob_arena_alloc(ar, 4 * B * D);                           /* o */
    p[i++] = ob_arena_alloc(ar, 4 * B * F);                           /* gate */
    p[i++] = ob_arena_alloc(ar, 4 * B * F);                           /* up */
    p[i++] = ob_arena_alloc(ar, (uint64_t)xq_stride * B);             /* xq */
    p[i++] = ob_arena_alloc(ar, 8 * B);                               /* a, sum */
    /* scores [n_heads, n_ctx], then each thread's attention scratch (attention_heads) */
    p[i++] = ob_arena_alloc(ar, 4 * ((uint64_t)c->n_heads * T + OB_ATTN_ROWS * (T + 2 * hd) * (uint64_t)n_threads));
    p[i++] = ob_arena_alloc(ar, 4 * V);
    p[i++] = ob_arena_alloc(ar, 8 * T);  /* history */
    p[i++] = ob_arena_alloc(ar, 20 * V); /* sampler: 3V floats + 2V ints */
    p[i++] = ob_arena_alloc(ar, 2 * D);  /* head_xq */
    if (!s) return;
    i = 0;
    s->key_cache = p[i++];
    s->value_cache = p[i++];
    s->rope_cos = (float *)p[i++];
    s->rope_sin = (float *)p[i++];
    s->x = (float *)p[i++];
    s->h = (float *)p[i++];
    s->q = (float *)p[i++];
    s->kx = (float *)p[i++];
    s->vx = (float *)p[i++];
    s->att = (float *)p[i++];
    s->o = (float *)p[i++];
    s->gate = (float *)p[i++];
    s->up = (float *)p[i++];
    s->xq = (int8_t *)p[i++];
    s->act_a = (float *)p[i];
    s->act_sum = (int32_t *)p[i++] + B;
    s->scores = (float *)p[i++];
    s->logits = (float *)p[i++];
    s->history = (int32_t *)p[i++];
    s->samp_f = (float *)p[i];
    s->samp_i = (int32_t *)p[i++] + 3 * (size_t)c->vocab_size;
    s->head_xq = (int16_t *)p[i++];
    s->xq_stride = xq_stride;
    s->kv_layer = (size_t)kv_layer;
}

static ob_status check_params(const ob_config *c, const ob_session_params *in, ob_session_params *out, char *err,
                              size_t es) {
    *out = in ? *in : ob_session_params_default();
    /* not max_seq_len itself: a file may claim up to 2^20 positions, and the cache grows with it */
    if (out->n_ctx == 0) out->n_ctx = c->max_seq_len < OB_DEFAULT_CTX ? c->max_seq_len : OB_DEFAULT_CTX;
    if (out->n_ctx < 1 || out->n_ctx > c->max_seq_len) {
        ob_set_msg(err, es, "context length %d is not in 1..%d (the model's max_seq_len)", out->n_ctx, c->max_seq_len);
        return OB_ERR_INVALID_ARG;
    }
    if (out->n_threads < 1 || out->n_threads > 256) {
        ob_set_msg(err, es, "thread count %d is not in 1..256", out->n_threads);
        return OB_ERR_INVALID_ARG;
    }
    if (out->n_batch < 1) out->n_batch = 32;
    if (out->n_batch > out->n_ctx) out->n_batch = out->n_ctx;
    if (out->kv_type != OB_KV_F32 && out->kv_type != OB_KV_F16) {
        ob_set_msg(err, es, "unknown KV-cache type %d", (int)out->kv_type);
        return OB_ERR_INVALID_ARG;
    }
    return OB_OK;
}

/* Bytes of one session's block, or 0 when it would not fit in a size_t. */
static size_t session_bytes(const ob_config *c, const ob_session_params *p) {
    ob_arena measure = {NULL, 0, 0, 0};
    ob_arena_alloc(&measure, sizeof(ob_session));
    layout(NULL, &measure, c, p->n_ctx, p->n_batch, p->kv_type, p->n_threads);
    ob_arena_alloc(&measure, 64); /* + room to align a caller's buffer */
    return measure.overflow ? 0 : measure.used;
}

/* "12.3 MiB"-style sizes for messages (buf: 16 bytes). */
static const char *human(uint64_t b, char *buf) {
    static const char *const unit[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB"};
    double v = (double)b;
    int u = 0;
    while (v >= 1024.0 && u < 5) v /= 1024.0, u++;
    snprintf(buf, 16, u ? "%.1f %s" : "%.0f %s", v, unit[u]);
    return buf;
}

/* The session's size, checked against the address space and the caller's budget before anything
 * is allocated.  model_bytes: the model's file and bookkeeping (what the budget also covers). */
static ob_status plan_session(const ob_config *c, const ob_session_params *p, uint64_t model_bytes, size_t *need,
                              char *err, size_t es) {
    char b1[16], b2[16], b3[16], b4[16], b5[16];
    *need = session_bytes(c, p);
    uint64_t kv = 2 * (uint64_t)(p->kv_type == OB_KV_F16 ? 2 : 4) * (uint64_t)p->n_ctx * (uint64_t)c->n_kv_heads *
                  (uint64_t)c->head_dim * (uint64_t)c->n_layers;
    if (*need == 0) {
        ob_set_msg(err, es, "a session of %d tokens needs more memory than this machine can address (KV-cache %s)",
                   p->n_ctx, human(kv, b1));
        return OB_ERR_NOMEM;
    }
    if (p->max_memory && (uint64_t)*need + model_bytes > p->max_memory) {
        ob_set_msg(err, es,
                   "needs %s (a session of %d tokens: %s, of which KV-cache %s; the model: %s), over the memory "
                   "budget of %s: lower the context%s",
                   human(*need + model_bytes, b1), p->n_ctx, human(*need, b2), human(kv, b3), human(model_bytes, b4),
                   human(p->max_memory, b5), p->kv_type == OB_KV_F32 ? " or use an f16 KV-cache" : "");
        return OB_ERR_NOMEM;
    }
    return OB_OK;
}

ob_status ob_memory_required(const void *data, size_t size, const ob_session_params *params, size_t *model_bytes,
                             size_t *session_bytes_out) {
    ob_model_plan plan;
    ob_session_params p;
    size_t need;
    ob_status st = ob_model_plan_file(&plan, data, size, NULL, 0);
    if (st) return st;
    st = check_params(&plan.cfg, params, &p, NULL, 0);
    if (st) return st;
    size_t mb = ob_model_plan_bytes(&plan);
    st = plan_session(&plan.cfg, &p, (uint64_t)size + mb, &need, NULL, 0);
    if (st) return st;
    if (model_bytes) *model_bytes = mb;
    if (session_bytes_out) *session_bytes_out = need;
    return OB_OK;
}

ob_status ob_session_create(ob_session **out, const ob_model *m, const ob_session_params *params, void *arena_buf,
                            size_t arena_size, char *err, size_t es) {
    if (err && es) err[0] = 0;
    if (!out || !m) {
        ob_set_msg(err, es, "out or model is NULL");
        return OB_ERR_INVALID_ARG;
    }
    *out = NULL;
    const ob_config *c = &m->cfg;
    ob_session_params p;
    ob_status st = check_params(c, params, &p, err, es);
    if (st) return st;
    ob_kernels k;
    if (p.isa && p.isa[0]) {
        ob_isa isa;
        if (ob_isa_parse(p.isa, &isa) != 0) {
            ob_set_msg(err, es, "unknown ISA '%s' (scalar, avx2, avx512, neon)", p.isa);
            return OB_ERR_ISA;
        }
        if (ob_kernels_init(&k, isa) != 0) {
            ob_set_msg(err, es, "ISA '%s' is not available on this CPU or build", p.isa);
            return OB_ERR_ISA;
        }
    } else {
        int r = ob_kernels_init_env(&k);
        if (r == OB_ISA_EUNKNOWN) {
            ob_set_msg(err, es, "ONEBIT_ISA names an unknown ISA (scalar, avx2, avx512, neon)");
            return OB_ERR_ISA;
        }
        if (r != OB_ISA_OK) {
            ob_set_msg(err, es, "ONEBIT_ISA names an ISA this CPU or build cannot run");
            return OB_ERR_ISA;
        }
    }
    size_t need;
    st = plan_session(c, &p, m->file.size + m->plan_bytes, &need, err, es);
    if (st) return st;
    ob_arena ar = {NULL, 0, 0, 0};
    void *owned = NULL;
    if (arena_buf) {
        if (arena_size < need) {
            ob_set_msg(err, es, "arena of %zu bytes is too small: the session needs %zu", arena_size, need);
            return OB_ERR_NOMEM;
        }
        ar.base = (uint8_t *)arena_buf;
        ar.size = arena_size;
    } else {
        owned = malloc(need);
        if (!owned) {
            ob_set_msg(err, es, "cannot allocate %zu bytes for a session of %d tokens", need, p.n_ctx);
            return OB_ERR_NOMEM;
        }
        ar.base = (uint8_t *)owned;
        ar.size = need;
    }
    ob_session *s = (ob_session *)ob_arena_alloc(&ar, sizeof(ob_session));
    layout(s, &ar, c, p.n_ctx, p.n_batch, p.kv_type, p.n_threads);
    s->alloc_base = owned;
    s->model = m;
    s->cfg = c;
    s->k = k;
    s->n_threads = p.n_threads;
    s->n_ctx = p.n_ctx;
    s->n_batch = p.n_batch;
    s->kv_type = p.kv_type;
    if (p.n_threads > 1) {
        s->pool = ob_threadpool_create(p.n_threads);
        if (!s->pool) {
            free(owned);
            ob_set_msg(err, es, "cannot start %d threads", p.n_threads);
            return OB_ERR_NOMEM;
        }
    }
    /* RoPE tables: model.py rope_tables (float64, rounded to fp32) */
    int half = c->head_dim / 2;
    if (c->pos == OB_POS_ROPE)
        for (int t = 0; t < p.n_ctx; t++)
            for (int i = 0; i < half; i++) {
                double freq = pow((double)c->rope_theta, -(double)i * 2.0 / (double)c->head_dim);
                double ang = (double)t * freq;
                s->rope_cos[(size_t)t * half + i] = (float)cos(ang);
                s->rope_sin[(size_t)t * half + i] = (float)sin(ang);
            }
    ob_sampler_params sp = ob_sampler_params_default();
    ob_sampler_seed(&s->sampler, &sp);
    *out = s;
    return OB_OK;
}

void ob_session_free(ob_session *s) {
    if (!s) return;
    ob_threadpool_destroy(s->pool);
    if (s->alloc_base) free(s->alloc_base);
}

const char *ob_session_error(const ob_session *s) { return s ? s->error : "session is NULL"; }
void ob_session_reset(ob_session *s) {
    if (!s) return;
    s->pos = 0;
    s->n_hist = 0;
    s->has_logits = 0;
}
int ob_session_pos(const ob_session *s) { return s ? s->pos : 0; }
int ob_session_n_ctx(const ob_session *s) { return s ? s->n_ctx : 0; }
const char *ob_session_isa(const ob_session *s) { return s ? ob_isa_name(s->k.isa) : "?"; }
const float *ob_session_logits(const ob_session *s) { return s && s->has_logits ? s->logits : NULL; }

/* ---------------------------------------------------------------- forward pieces */

/* model.py Norm: RMSNorm or bias-free LayerNorm in fp32 (sums in double: closest to exact). */
static void norm_row(const ob_kernels *k, const ob_config *c, const float *x, const float *w, int n, float *y) {
    if (c->norm == OB_NORM_RMS) {
        k->rmsnorm(x, w, n, c->norm_eps, y);
    } else {
        double sum = 0.0, var = 0.0;
        for (int i = 0; i < n; i++) sum += x[i];
        float mean = (float)(sum / n);
        for (int i = 0; i < n; i++) {
            double d = (double)x[i] - (double)mean;
            var += d * d;
        }
        float r = 1.0f / sqrtf((float)(var / n) + c->norm_eps);
        for (int i = 0; i < n; i++) y[i] = ((x[i] - mean) * r) * w[i];
    }
}

static void norm_rows(const ob_kernels *k, const ob_config *c, const float *x, size_t ldx, const float *w, int n, int m,
                      float *y, size_t ldy) {
    for (int t = 0; t < m; t++) norm_row(k, c, x + t * ldx, w, n, y + t * ldy);
}

/* model.py BitLinear (eval): the input quantized once, then the packed matmul.  Here the input:
 * rows t0..t1-1 of x (K wide) quantized into their rows of xq. */
static void quantize_rows(ob_session *s, const float *x, int t0, int t1, int K) {
    ob_quantize_rows(&s->k, x + (size_t)t0 * K, (size_t)K, t1 - t0, K, s->xq + (size_t)t0 * s->xq_stride, s->xq_stride,
                     s->act_a + t0, s->act_sum + t0);
}

static void linear(ob_session *s, const ob_linear *l, int m, float *y) {
    if (l->row_scale) { /* int4 / int8 layer of a mixed model */
        ob_matmul_rs_mt(s->pool, &s->k, l->ifmt, l->w, l->rows, l->cols, l->row_scale, s->xq, s->xq_stride,
                        s->act_a, s->act_sum, m, y, (size_t)l->rows);
        return;
    }
    ob_matmul_mt(s->pool, &s->k, l->fmt, l->w, l->rows, l->cols, l->scale, s->xq, s->xq_stride, s->act_a, s->act_sum,
                 m, y, (size_t)l->rows);
}

static void act_rows(const ob_kernels *k, const ob_config *c, float *g, const float *up, size_t n);

/* Up to three BitLinears over the same quantized input in one thread-pool dispatch (q/k/v,
 * gate/up): each thread takes its fixed row range of every matrix, so the results are those of
 * separate calls.  act: also apply the MLP activation to the thread's rows (gate = act(gate) * up,
 * or gate = act(up) when not gated) -- elementwise, so the same bits as a separate pass. */
typedef struct {
    ob_session *s;
    const ob_linear *l[3];
    float *y[3];
    int n, m, act;
    int next[3]; /* ob_take_rows, one counter per matrix (act: one for the gate / up pair) */
} linear_group;

static void linear_rows(ob_session *s, const ob_linear *l, int m, float *y, int r0, int r1) {
    if (l->row_scale)
        s->k.matmul_rs[l->ifmt](l->w, l->cols, l->row_scale, s->xq, s->xq_stride, s->act_a, s->act_sum, m, r0, r1,
                                y, (size_t)l->rows);
    else
        s->k.matmul[l->fmt](l->w, l->cols, l->scale, s->xq, s->xq_stride, s->act_a, s->act_sum, m, r0, r1, y,
                            (size_t)l->rows);
}

static size_t linear_row_bytes(const ob_linear *l) {
    return l->row_scale ? ob_irow_bytes(l->ifmt, l->cols) : ob_row_bytes(l->fmt, l->cols);
}

static void linear_group_task(void *ctx, int ith, int nth) {
    linear_group *g = (linear_group *)ctx;
    ob_session *s = g->s;
    int r0, r1;
    (void)ith;
    if (!g->act) {
        for (int i = 0; i < g->n; i++)
            while (ob_take_rows(&g->next[i], g->l[i]->rows, linear_row_bytes(g->l[i]) * (size_t)g->m, nth, &r0, &r1))
                linear_rows(s, g->l[i], g->m, g->y[i], r0, r1);
        return;
    }
    /* gate / up (or up alone): a chunk of rows of each, then the activation over that chunk */
    const ob_config *c = s->cfg;
    int F = c->ffn_dim;
    while (ob_take_rows(&g->next[0], F, linear_row_bytes(g->l[0]) * (size_t)g->n * (size_t)g->m, nth, &r0, &r1)) {
        for (int i = 0; i < g->n; i++) linear_rows(s, g->l[i], g->m, g->y[i], r0, r1);
        for (int t = 0; t < g->m; t++) {
            size_t o = (size_t)t * F + (size_t)r0;
            if (c->gated) {
                act_rows(&s->k, c, s->gate + o, s->up + o, (size_t)(r1 - r0));
            } else {
                memcpy(s->gate + o, s->up + o, sizeof(float) * (size_t)(r1 - r0));
                act_rows(&s->k, c, s->gate + o, NULL, (size_t)(r1 - r0));
            }
        }
    }
}

/* model.py apply_rope: rotate-half over each head of rows t0..t1-1, row t at position pos0 + t. */
static void rope_rows(const ob_session *s, float *x, int t0, int t1, int n_heads, int pos0) {
    int hd = s->cfg->head_dim, half = hd / 2;
    for (int t = t0; t < t1; t++) {
        const float *cs = s->rope_cos + (size_t)(pos0 + t) * half, *sn = s->rope_sin + (size_t)(pos0 + t) * half;
        for (int h = 0; h < n_heads; h++) {
            float *v = x + ((size_t)t * n_heads + h) * hd;
            for (int i = 0; i < half; i++) {
                float a = v[i], b = v[i + half];
                float a_cos = a * cs[i], b_sin = b * sn[i], b_cos = b * cs[i], a_sin = a * sn[i];
                v[i] = a_cos - b_sin;
                v[i + half] = b_cos + a_sin;
            }
        }
    }
}

/* model.py MLP activation, g = act(g) * up (or act(g)).  SiLU and ReLU^2 are the kernels' (kernels.h;
 * the ReLU a bit mask, not a branch on the sign of the data, which was mispredicted about half the
 * time: 1.9 % of a 2b4t token in perf).  Elementwise, the same operations and bits on every ISA. */
static void act_rows(const ob_kernels *k, const ob_config *c, float *g, const float *up, size_t n) {
    if (c->activation == OB_ACT_SILU) {
        k->silu(g, up, n);
        return;
    }
    if (c->activation == OB_ACT_RELU2) {
        k->relu2(g, up, n);
        return;
    }
    for (size_t i = 0; i < n; i++) { /* GELU (tanh form) */
        float x = g[i];
        float inner = 0.7978845608028654f * (x + 0.044715f * (x * x * x));
        float a = 0.5f * x * (1.0f + tanhf(inner));
        g[i] = up ? a * up[i] : a;
    }
}

static void kv_put(ob_session *s, void *cache, size_t i, const float *src, int n) {
    if (s->kv_type == OB_KV_F16)
        s->k.f32_to_f16(src, n, (uint16_t *)cache + i);
    else
        memcpy((float *)cache + i, src, sizeof(float) * (size_t)n);
}

typedef struct {
    ob_session *s;
    int layer, m, pos0;
    int next; /* the first head no thread has taken (prefill) */
} attn_task;

/* scores: out[r * ldo + j] = q_r . k_j * scale for P query rows hd apart and keys j < n, by the
 * kernel or by dot products where an ISA has none. */
static void attn_scores(const ob_session *s, const float *q, int P, const void *keys, int n, float scale, float *out,
                        size_t ldo) {
    const int hd = s->cfg->head_dim;
    if (s->kv_type == OB_KV_F16 && s->k.scores_f16) s->k.scores_f16(q, P, (const uint16_t *)keys, hd, n, scale, out, ldo);
    else if (s->kv_type != OB_KV_F16 && s->k.scores_f32) s->k.scores_f32(q, P, (const float *)keys, hd, n, scale, out, ldo);
    else
        for (int r = 0; r < P; r++)
            for (int j = 0; j < n; j++)
                out[(size_t)r * ldo + j] =
                    (s->kv_type == OB_KV_F16 ? s->k.dot_f16(q + (size_t)r * hd, (const uint16_t *)keys + (size_t)j * hd, hd)
                                             : s->k.dot_f32(q + (size_t)r * hd, (const float *)keys + (size_t)j * hd, hd)) *
                    scale;
}

/* y_r += p[r * ldp + j] * v_j for j = j0..j1-1: the axpy sequence, row by row. */
static void attn_axpy(const ob_session *s, float *y, const float *p, const void *values, int j0, int j1) {
    const int hd = s->cfg->head_dim;
    for (int j = j0; j < j1; j++) {
        if (s->kv_type == OB_KV_F16) s->k.axpy_f16(y, p[j], (const uint16_t *)values + (size_t)j * hd, hd);
        else s->k.axpy_f32(y, p[j], (const float *)values + (size_t)j * hd, hd);
    }
}

/* mix: y_r = sum over j < n of p[r * ldp + j] * v_j for P rows hd apart, in the axpy order. */
static void attn_mix(const ob_session *s, float *y, int P, const float *p, size_t ldp, const void *values, int n) {
    const int hd = s->cfg->head_dim;
    if (s->kv_type == OB_KV_F16 && s->k.mix_f16) s->k.mix_f16(y, P, p, ldp, (const uint16_t *)values, hd, n);
    else if (s->kv_type != OB_KV_F16 && s->k.mix_f32) s->k.mix_f32(y, P, p, ldp, (const float *)values, hd, n);
    else
        for (int r = 0; r < P; r++) {
            memset(y + (size_t)r * hd, 0, sizeof(float) * (size_t)hd);
            attn_axpy(s, y + (size_t)r * hd, p + (size_t)r * ldp, values, 0, n);
        }
}

/* model.py Attention: causal softmax(q k^T / sqrt(head_dim)) v, k/v shared by n_heads / n_kv_heads
 * query heads, for heads [h0, h1); scratch: this thread's OB_ATTN_ROWS * (n_ctx + 2 * head_dim).
 * Token by token, the heads of the range that share a KV head go to the kernels together.  In a
 * prompt, with fewer than OB_ATTN_ROWS of them (one for a model without grouped queries), tokens
 * that follow each other go too, their queries and outputs copied through scratch: the scores run
 * to the last token's keys (a row past an earlier token's own is computed, never used), the mix to
 * the first token's, and each later token adds its last few rows by axpy, so every output is the
 * same sequence of operations as token by token. */
static void attention_heads(const attn_task *t, int h0, int h1, float *scratch) {
    ob_session *s = t->s;
    const ob_config *c = s->cfg;
    int hd = c->head_dim, group = c->n_heads / c->n_kv_heads;
    float scale = (float)(1.0 / sqrt((double)hd)); /* as torch and NumPy: in double, rounded once */
    const size_t esz = s->kv_type == OB_KV_F16 ? 2 : 4, ldo = (size_t)s->n_ctx;
    for (int hg = h0; hg < h1;) {
        int kvh = hg / group, G = (kvh + 1) * group < h1 ? (kvh + 1) * group - hg : h1 - hg;
        size_t off0 = (size_t)t->layer * s->kv_layer + (size_t)kvh * s->n_ctx * hd; /* rows hd apart */
        const void *keys = (const char *)s->key_cache + off0 * esz, *values = (const char *)s->value_cache + off0 * esz;
        const int per = G < OB_ATTN_ROWS && OB_ATTN_ROWS % G == 0 ? OB_ATTN_ROWS / G : 1; /* tokens a call */
        for (int tok = 0; tok < t->m;) {
            int nt = t->m - tok < per ? t->m - tok : per, n_keys = t->pos0 + tok + 1, P = nt * G;
            const float *q = s->q + ((size_t)tok * c->n_heads + hg) * hd; /* token tok's G heads, hd apart */
            float *out = s->att + ((size_t)tok * c->n_heads + hg) * hd, *sc = s->scores + (size_t)hg * ldo;
            if (nt > 1) { /* rows r = i * G + g: token tok + i, head hg + g */
                float *qb = scratch + OB_ATTN_ROWS * ldo, *yb = qb + OB_ATTN_ROWS * hd;
                for (int i = 0; i < nt; i++)
                    memcpy(qb + (size_t)i * G * hd, q + (size_t)i * c->n_heads * hd, sizeof(float) * (size_t)G * hd);
                q = qb, out = yb, sc = scratch;
            }
            attn_scores(s, q, P, keys, n_keys + nt - 1, scale, sc, ldo);
            for (int r0 = 0; r0 < P; r0 += 8) { /* the kernel may run several rows' sums side by side */
                int len[8], nr = P - r0 < 8 ? P - r0 : 8;
                for (int r = 0; r < nr; r++) len[r] = n_keys + (r0 + r) / G;
                s->k.softmax(sc + (size_t)r0 * ldo, ldo, len, nr);
            }
            attn_mix(s, out, P, sc, ldo, values, n_keys);
            for (int r = G; r < P; r++) /* a later token's own last rows */
                attn_axpy(s, out + (size_t)r * hd, sc + (size_t)r * ldo, values, n_keys, n_keys + r / G);
            if (nt > 1)
                for (int i = 0; i < nt; i++)
                    memcpy(s->att + ((size_t)(tok + i) * c->n_heads + hg) * hd, out + (size_t)i * G * hd,
                           sizeof(float) * (size_t)G * hd);
            tok += nt;
        }
        hg += G;
    }
}

/* One token (decode): fixed ranges of heads, one a thread.  Several (prefill): heads handed out
 * first come first served, about 4 chunks a thread, each a divisor of the KV group so that a chunk
 * never splits a group it could hold whole; a core the neighbours slow down then takes fewer. */
static void attention_task(void *ctx, int ith, int nth) {
    attn_task *t = (attn_task *)ctx;
    const ob_config *c = t->s->cfg;
    int n = c->n_heads, group = n / c->n_kv_heads, h0, h1;
    float *scratch = t->s->scores + (size_t)n * t->s->n_ctx +
                     (size_t)ith * OB_ATTN_ROWS * ((size_t)t->s->n_ctx + 2 * (size_t)c->head_dim);
    if (t->m == 1 || nth == 1) {
        ob_split_rows(n, ith, nth, 1, &h0, &h1);
        attention_heads(t, h0, h1, scratch);
        return;
    }
    int unit = group, want = n / (4 * nth) > 1 ? n / (4 * nth) : 1;
    while (unit > want || group % unit) unit--;
    while ((h0 = __atomic_fetch_add(&t->next, unit, __ATOMIC_RELAXED)) < n)
        attention_heads(t, h0, h0 + unit < n ? h0 + unit : n, scratch);
}

/* model.py Transformer.head: logits of one final-normed row. */
static void head_row(ob_session *s, const float *x, float *logits) {
    const ob_fmatrix *H = &s->model->head;
    const ob_config *c = s->cfg;
    if (H->dtype == OB_DT_F32)
        ob_gemv_f32_mt(s->pool, &s->k, (const float *)H->w, (size_t)c->dim, c->vocab_size, c->dim, x, logits);
    else if (H->dtype == OB_DT_F16)
        ob_gemv_f16_mt(s->pool, &s->k, (const uint16_t *)H->w, (size_t)c->dim, c->vocab_size, c->dim, x, logits);
    else if (H->dtype == OB_DT_I4) { /* int4 head (FORMAT.md "LM head"): quantize x as a BitLinear input */
        quantize_rows(s, x, 0, 1, c->dim);
        ob_matmul_rs_mt(s->pool, &s->k, OB_IFMT_I4, (const uint8_t *)H->w, c->vocab_size, c->dim, H->row_scale, s->xq,
                        s->xq_stride, s->act_a, s->act_sum, 1, logits, (size_t)c->vocab_size);
    } else { /* int8 head (FORMAT.md "LM head"): x quantized to int16 once, exact integer sums */
        float a;
        ob_quantize_i16(x, c->dim, s->head_xq, &a);
        ob_gemv_q8_mt(s->pool, &s->k, (const int8_t *)H->w, H->row_scale, (size_t)c->dim, c->vocab_size, c->dim,
                      s->head_xq, a, logits);
    }
}

static void embed_row(const ob_model *mdl, int32_t tok, float *dst) {
    const ob_fmatrix *E = &mdl->embed;
    int D = E->cols;
    if (E->dtype == OB_DT_F32) memcpy(dst, (const float *)E->w + (size_t)tok * D, sizeof(float) * (size_t)D);
    else if (E->dtype == OB_DT_F16) ob_row_f16_to_f32((const uint16_t *)E->w + (size_t)tok * D, D, dst);
    else ob_row_q8_to_f32((const int8_t *)E->w + (size_t)tok * D, E->row_scale[tok], D, dst);
}

/* The per-token steps between the matrix multiplies of a layer: norms, quantization, RoPE, the
 * KV-cache, residual adds.  Each token's rows are its own, so a prefill's tokens are split over the
 * threads with the same bits; one token (decode) runs them inline, where a dispatch would cost more
 * than it shares.  Single-threaded they were 3-4 % of a 2-thread 134m prefill, the other core
 * waiting. */
typedef struct {
    ob_session *s;
    const ob_layer *L;
    int l, pos0, m;
} layer_step;
typedef void (*layer_step_fn)(const layer_step *st, int t0, int t1);

static void attn_in(const layer_step *st, int t0, int t1) {
    ob_session *s = st->s;
    int D = s->cfg->dim;
    norm_rows(&s->k, s->cfg, s->x + (size_t)t0 * D, D, st->L->attn_norm, D, t1 - t0, s->h + (size_t)t0 * D, D);
    quantize_rows(s, s->h, t0, t1, D);
}

static void qkv_out(const layer_step *st, int t0, int t1) {
    ob_session *s = st->s;
    const ob_config *c = s->cfg;
    int hd = c->head_dim, nh = c->n_heads, nkv = c->n_kv_heads, kvd = nkv * hd;
    if (c->qk_norm) { /* q_norm(q), k_norm(k) per head */
        float *q = s->q + (size_t)t0 * nh * hd, *k = s->kx + (size_t)t0 * kvd;
        norm_rows(&s->k, c, q, hd, st->L->q_norm, hd, (t1 - t0) * nh, q, hd);
        norm_rows(&s->k, c, k, hd, st->L->k_norm, hd, (t1 - t0) * nkv, k, hd);
    }
    if (c->pos == OB_POS_ROPE) { /* apply_rope(q), apply_rope(k) */
        rope_rows(s, s->q, t0, t1, nh, st->pos0);
        rope_rows(s, s->kx, t0, t1, nkv, st->pos0);
    }
    for (int t = t0; t < t1; t++) /* torch.cat((past, k)) -- the KV-cache */
        for (int kh = 0; kh < nkv; kh++) {
            size_t at = (size_t)st->l * s->kv_layer + ((size_t)kh * s->n_ctx + (size_t)(st->pos0 + t)) * hd;
            kv_put(s, s->key_cache, at, s->kx + (size_t)t * kvd + (size_t)kh * hd, hd);
            kv_put(s, s->value_cache, at, s->vx + (size_t)t * kvd + (size_t)kh * hd, hd);
        }
}

static void attn_out(const layer_step *st, int t0, int t1) {
    ob_session *s = st->s;
    const ob_config *c = s->cfg;
    int inner = c->n_heads * c->head_dim;
    if (c->subln) /* attn.sub_norm */
        norm_rows(&s->k, c, s->att + (size_t)t0 * inner, inner, st->L->attn_sub_norm, inner, t1 - t0,
                  s->att + (size_t)t0 * inner, inner);
    quantize_rows(s, s->att, t0, t1, inner);
}

/* x + residual_scale * o over rows t0..t1-1 */
static void residual_rows(ob_session *s, int t0, int t1) {
    int D = s->cfg->dim;
    float rs = s->cfg->residual_scale;
    for (size_t i = (size_t)t0 * D; i < (size_t)t1 * D; i++) s->x[i] = s->x[i] + rs * s->o[i];
}

static void mlp_in(const layer_step *st, int t0, int t1) {
    ob_session *s = st->s;
    int D = s->cfg->dim;
    residual_rows(s, t0, t1); /* x + residual_scale * a */
    norm_rows(&s->k, s->cfg, s->x + (size_t)t0 * D, D, st->L->mlp_norm, D, t1 - t0, s->h + (size_t)t0 * D, D);
    quantize_rows(s, s->h, t0, t1, D);
}

static void mlp_mid(const layer_step *st, int t0, int t1) {
    ob_session *s = st->s;
    const ob_config *c = s->cfg;
    int F = c->ffn_dim;
    if (c->subln) /* mlp.sub_norm */
        norm_rows(&s->k, c, s->gate + (size_t)t0 * F, F, st->L->mlp_sub_norm, F, t1 - t0, s->gate + (size_t)t0 * F, F);
    quantize_rows(s, s->gate, t0, t1, F);
}

static void mlp_out(const layer_step *st, int t0, int t1) { residual_rows(st->s, t0, t1); }

typedef struct {
    const layer_step *st;
    layer_step_fn fn;
} layer_step_task;

static void layer_step_run(void *ctx, int ith, int nth) {
    const layer_step_task *t = (const layer_step_task *)ctx;
    int t0, t1;
    ob_split_rows(t->st->m, ith, nth, 1, &t0, &t1);
    if (t0 < t1) t->fn(t->st, t0, t1);
}

static void per_token(const layer_step *st, layer_step_fn fn) {
    if (st->m < 2 * ob_threadpool_size(st->s->pool)) {
        fn(st, 0, st->m);
        return;
    }
    layer_step_task t = {st, fn};
    ob_threadpool_run(st->s->pool, layer_step_run, &t);
}

/* model.py Transformer.forward over m <= n_batch tokens at positions pos0..pos0+m-1.
 * logits_out: m rows (all) or the last row only, or NULL.  head 0: no logits at all (a prompt's
 * chunks before its last, whose last row's logits the next chunk would overwrite). */
static void forward(ob_session *s, const int32_t *tokens, int m, int pos0, float *logits_out, int all, int head) {
    const ob_model *mdl = s->model;
    const ob_config *c = s->cfg;
    int D = c->dim;
    for (int t = 0; t < m; t++) {
        embed_row(mdl, tokens[t], s->x + (size_t)t * D); /* x = self.embed(tokens) */
        if (mdl->pos_embed) /* x = x + self.pos_embed.weight[start_pos:end] */
            for (int i = 0; i < D; i++) s->x[(size_t)t * D + i] += mdl->pos_embed[(size_t)(pos0 + t) * D + i];
    }
    for (int l = 0; l < c->n_layers; l++) {
        const ob_layer *L = &mdl->layers[l];
        layer_step st = {s, L, l, pos0, m};
        per_token(&st, attn_in); /* Block: self.attn_norm(x), quantized */
        { /* Attention: q_proj, k_proj, v_proj (one dispatch) */
            linear_group g = {s, {&L->q_proj, &L->k_proj, &L->v_proj}, {s->q, s->kx, s->vx}, 3, m, 0, {0, 0, 0}};
            ob_threadpool_run(s->pool, linear_group_task, &g);
        }
        per_token(&st, qkv_out); /* Attention: q_norm, k_norm, apply_rope, the KV-cache */
        attn_task at = {s, l, m, pos0, 0}; /* Attention: scaled_dot_product_attention, causal */
        ob_threadpool_run(s->pool, attention_task, &at);
        per_token(&st, attn_out); /* Attention: sub_norm, quantized */
        linear(s, &L->o_proj, m, s->o); /* Attention: o_proj */
        per_token(&st, mlp_in); /* Block: x + residual_scale * a, self.mlp_norm(x), quantized */
        { /* MLP: act(gate_proj(x)) * up_proj(x), or act(up_proj(x)) (one dispatch) */
            linear_group g = {s, {&L->up_proj, &L->gate_proj, NULL}, {s->up, s->gate, NULL}, c->gated ? 2 : 1, m, 1, {0, 0, 0}};
            ob_threadpool_run(s->pool, linear_group_task, &g);
        }
        per_token(&st, mlp_mid); /* MLP: sub_norm, quantized */
        linear(s, &L->down_proj, m, s->o); /* MLP: down_proj */
        per_token(&st, mlp_out); /* Block: x + residual_scale * mlp */
    }
    if (!head) return;
    int first = all ? 0 : m - 1;
    for (int t = first; t < m; t++) {
        norm_row(&s->k, c, s->x + (size_t)t * D, mdl->norm, D, s->h); /* x = self.norm(x) */
        float *dst = (all && logits_out) ? logits_out + (size_t)t * c->vocab_size : s->logits;
        head_row(s, s->h, dst); /* logits = F.linear(x, head) */
        if (t == m - 1 && dst != s->logits) memcpy(s->logits, dst, sizeof(float) * (size_t)c->vocab_size);
    }
    if (logits_out && !all) memcpy(logits_out, s->logits, sizeof(float) * (size_t)c->vocab_size);
}

/* Append m <= n_ctx tokens to the history, dropping old ones (keeping the last n_ctx) when full. */
static void record(ob_session *s, const int32_t *tokens, int m) {
    if (s->n_hist + m > 2 * s->n_ctx) {
        int kept = s->n_ctx - m;
        memmove(s->history, s->history + (s->n_hist - kept), sizeof(int32_t) * (size_t)kept);
        s->n_hist = kept;
    }
    memcpy(s->history + s->n_hist, tokens, sizeof(int32_t) * (size_t)m);
    s->n_hist += m;
}

/* Evaluate n tokens in batches of n_batch at the current position; checks done by the caller. */
static void eval_tokens(ob_session *s, const int32_t *tokens, int n, float *logits, int all, int rec) {
    for (int done = 0; done < n;) {
        int m = n - done < s->n_batch ? n - done : s->n_batch;
        int last_chunk = done + m == n;
        float *out = NULL;
        if (logits && all) out = logits + (size_t)done * s->cfg->vocab_size;
        else if (logits && last_chunk) out = logits;
        forward(s, tokens + done, m, s->pos, out, all, all || last_chunk);
        if (rec) record(s, tokens + done, m);
        s->pos += m;
        done += m;
    }
    s->has_logits = 1;
}

ob_status ob_session_eval(ob_session *s, const int32_t *tokens, int n, float *logits, int all) {
    if (!s) return OB_ERR_INVALID_ARG;
    if (!tokens || n < 1) {
        ob_set_msg(s->error, sizeof s->error, "eval needs at least one token");
        return OB_ERR_INVALID_ARG;
    }
    if (n > s->n_ctx - s->pos) {
        ob_set_msg(s->error, sizeof s->error,
                   "%d tokens at position %d exceed the session's context of %d tokens", n, s->pos, s->n_ctx);
        return OB_ERR_CONTEXT_FULL;
    }
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= s->cfg->vocab_size) {
            ob_set_msg(s->error, sizeof s->error, "token id %d at index %d is outside the vocabulary of %d",
                       (int)tokens[i], i, s->cfg->vocab_size);
            return OB_ERR_TOKEN;
        }
    eval_tokens(s, tokens, n, logits, all, 1);
    return OB_OK;
}

ob_status ob_session_decode(ob_session *s, int32_t token) {
    if (!s) return OB_ERR_INVALID_ARG;
    if (s->pos < s->n_ctx) return ob_session_eval(s, &token, 1, NULL, 0);
    if (token < 0 || token >= s->cfg->vocab_size) {
        ob_set_msg(s->error, sizeof s->error, "token id %d is outside the vocabulary of %d", (int)token,
                   s->cfg->vocab_size);
        return OB_ERR_TOKEN;
    }
    /* the sliding window (docs/SAMPLING.md): forget the cache, prefill the last keep tokens at 0.. */
    int keep = s->n_ctx / 2 > 1 ? s->n_ctx / 2 : 1;
    record(s, &token, 1);
    s->pos = 0;
    eval_tokens(s, s->history + (s->n_hist - keep), keep, NULL, 0, 0);
    return OB_OK;
}

ob_status ob_session_set_sampler(ob_session *s, const ob_sampler_params *p) {
    if (!s || !p) return OB_ERR_INVALID_ARG;
    if (!(p->temperature >= 0.0f) || p->top_k < 0 || !(p->top_p > 0.0f && p->top_p <= 1.0f) ||
        !(p->repeat_penalty > 0.0f) || p->repeat_window < 0) {
        ob_set_msg(s->error, sizeof s->error,
                   "bad sampler settings: need temperature >= 0, top_k >= 0, top_p in (0, 1], repeat_penalty > 0, "
                   "repeat_window >= 0");
        return OB_ERR_INVALID_ARG;
    }
    ob_sampler_seed(&s->sampler, p);
    return OB_OK;
}

ob_status ob_session_sample(ob_session *s, int32_t *token) {
    if (!s || !token) return OB_ERR_INVALID_ARG;
    if (!s->has_logits) {
        ob_set_msg(s->error, sizeof s->error, "nothing to sample from: evaluate a token first");
        return OB_ERR_INVALID_ARG;
    }
    int V = s->cfg->vocab_size;
    float *work = s->samp_f; /* the sampler edits a copy; the session's logits stay as computed */
    memcpy(work, s->logits, sizeof(float) * (size_t)V);
    /* candidates sort needs 2V keys: work holds V, the rest of samp_f and samp_i the others */
    int w = s->n_hist < s->n_ctx ? s->n_hist : s->n_ctx; /* the penalty looks at most n_ctx tokens back */
    *token = ob_sampler_draw(&s->sampler, work, V, s->history + (s->n_hist - w), w, work + V, s->samp_i);
    return OB_OK;
}

ob_status ob_generate(ob_session *s, const int32_t *prompt, int n_prompt, int n_new, const ob_sampler_params *p,
                      ob_token_fn on_token, void *user, int32_t *out, int *n_out) {
    if (!s) return OB_ERR_INVALID_ARG;
    if (n_out) *n_out = 0;
    if (!prompt || n_prompt < 1 || n_new < 0) {
        ob_set_msg(s->error, sizeof s->error, "the prompt is empty: generation needs at least one token");
        return OB_ERR_INVALID_ARG;
    }
    if ((long long)s->pos + n_prompt > s->n_ctx) {
        ob_set_msg(s->error, sizeof s->error,
                   "the prompt (%d tokens) is longer than the context of %d tokens (the prompt itself must fit)",
                   s->pos + n_prompt, s->n_ctx);
        return OB_ERR_CONTEXT_FULL;
    }
    ob_sampler_params sp = p ? *p : ob_sampler_params_default();
    ob_status st = ob_session_set_sampler(s, &sp);
    if (st) return st;
    if (n_new == 0) return OB_OK;
    st = ob_session_eval(s, prompt, n_prompt, NULL, 0);
    if (st) return st;
    for (int i = 0;; i++) {
        int32_t tok;
        ob_session_sample(s, &tok);
        if (out) out[i] = tok;
        if (n_out) *n_out = i + 1;
        if (on_token) {
            const uint8_t *b;
            size_t len;
            ob_token_bytes(s->model, tok, &b, &len);
            if (on_token(user, tok, b, len)) {
                ob_set_msg(s->error, sizeof s->error, "generation stopped by the callback after %d tokens", i + 1);
                return OB_ERR_STOPPED;
            }
        }
        if (i + 1 == n_new || (!sp.ignore_eos && ob_token_is_eos(s->model, tok))) return OB_OK;
        st = ob_session_decode(s, tok);
        if (st) return st;
    }
}
