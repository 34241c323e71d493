/* sampler.c - docs/SAMPLING.md step by step (its Python twin: onebit/sampling.py Sampler).
 * fp32 one operation at a time (this file must not be compiled with -ffast-math; FMA contraction
 * does not arise: no expression here has a multiply feeding an add), exp in float64. */
#include <math.h>
#include <string.h>

#include "internal.h"

static const uint64_t PCG_MULT = 6364136223846793005ULL;
static const uint64_t PCG_INC = (54ULL << 1) | 1;

static uint32_t pcg32_next(uint64_t *state) {
    uint64_t old = *state;
    *state = old * PCG_MULT + PCG_INC;
    uint32_t xorshifted = (uint32_t)(((old >> 18) ^ old) >> 27);
    uint32_t rot = (uint32_t)(old >> 59);
    return (xorshifted >> rot) | (xorshifted << ((0u - rot) & 31));
}

void ob_sampler_seed(ob_sampler_state *s, const ob_sampler_params *p) {
    s->p = *p;
    s->rng = 0;
    pcg32_next(&s->rng);
    s->rng += p->seed;
    pcg32_next(&s->rng);
}

/* Sortable key: ascending key order = descending logit order; -0 and +0 tie, as in NumPy. */
static uint32_t desc_key(float f) {
    uint32_t u;
    if (f == 0.0f) f = 0.0f;
    memcpy(&u, &f, 4);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return ~u;
}

/* Stable LSD radix sort of (key, id) pairs by key, 4 passes of 8 bits.  Input ids ascend, so
 * ties stay in ascending id order: exactly SAMPLING.md's total order. */
static void radix_sort(uint32_t *key, int32_t *id, uint32_t *key2, int32_t *id2, int n) {
    for (int shift = 0; shift < 32; shift += 8) {
        int count[257];
        memset(count, 0, sizeof count);
        for (int i = 0; i < n; i++) count[((key[i] >> shift) & 0xff) + 1]++;
        for (int b = 0; b < 256; b++) count[b + 1] += count[b];
        for (int i = 0; i < n; i++) {
            int d = count[(key[i] >> shift) & 0xff]++;
            key2[d] = key[i];
            id2[d] = id[i];
        }
        uint32_t *tk = key;
        key = key2;
        key2 = tk;
        int32_t *ti = id;
        id = id2;
        id2 = ti;
    }
    /* after an even number of passes the sorted data is back in the caller's arrays */
}

int32_t ob_sampler_draw(ob_sampler_state *s, float *logits, int V, const int32_t *history, int n_hist,
                        float *scratch, int32_t *idx) {
    const ob_sampler_params *p = &s->p;
    /* 1. repetition penalty, once per distinct id among the last repeat_window tokens */
    if (p->repeat_penalty != 1.0f && p->repeat_window > 0 && n_hist > 0) {
        int w = n_hist < p->repeat_window ? n_hist : p->repeat_window;
        const int32_t *ctx = history + (n_hist - w);
        float pen = p->repeat_penalty;
        for (int i = 0; i < w; i++) {
            int seen = 0;
            for (int j = 0; j < i && !seen; j++) seen = ctx[j] == ctx[i];
            if (seen) continue;
            float *l = &logits[ctx[i]];
            *l = *l > 0.0f ? *l / pen : *l * pen;
        }
    }
    /* 2. greedy: argmax, ties to the lowest id, no draw */
    if (p->temperature == 0.0f) {
        int32_t best = 0;
        float bv = logits[0]; /* in a register: comparing against logits[best] chains a load per id */
        for (int i = 1; i < V; i++)
            if (logits[i] > bv) bv = logits[best = i];
        return best;
    }
    /* 3. temperature */
    for (int i = 0; i < V; i++) logits[i] = logits[i] / p->temperature;
    /* 4. candidates: logit descending, id ascending; then top-k */
    uint32_t *key = (uint32_t *)scratch, *key2 = (uint32_t *)scratch + V;
    int32_t *id = idx, *id2 = idx + V;
    for (int i = 0; i < V; i++) {
        key[i] = desc_key(logits[i]);
        id[i] = i;
    }
    radix_sort(key, id, key2, id2, V);
    int n = (p->top_k > 0 && p->top_k < V) ? p->top_k : V;
    /* 5. softmax over the candidates (fp32 subtraction, float64 exp rounded to fp32) and
     * 6. cumulative sums, both sequential in candidate order; probabilities go in key2's room */
    float *e = (float *)key2, m = logits[id[0]], S = 0.0f;
    for (int j = 0; j < n; j++) {
        float d = logits[id[j]] - m;
        e[j] = (float)exp((double)d);
        S = S + e[j];
    }
    float *C = (float *)key, c = 0.0f;
    for (int j = 0; j < n; j++) {
        float pj = e[j] / S;
        c = c + pj;
        C[j] = c;
    }
    /* 7. top-p: the smallest prefix whose cumulative sum reaches top_p */
    int keep = n;
    if (p->top_p < 1.0f)
        for (int j = 0; j < n; j++)
            if (C[j] >= p->top_p) {
                keep = j + 1;
                break;
            }
    /* 8. one draw, scaled by the kept mass */
    float u = (float)(pcg32_next(&s->rng) >> 8) * (1.0f / 16777216.0f);
    float r = u * C[keep - 1];
    for (int j = 0; j < keep; j++)
        if (r < C[j]) return id[j];
    return id[keep - 1];
}
