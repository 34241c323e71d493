/* test_kernels.c - kernels: scalar reference vs a dumb unpacked dot product, every SIMD path the
 * CPU supports vs the scalar reference (bit-identical for quantize and the packed matmuls), row
 * ranges, thread counts 1..4, the int8 head GEMV bit-identical, float GEMV tolerances, f16 conversion,
 * ISA selection, ob_expf against exp. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "kernels_impl.h" /* ob_expf and its range */
#include "threadpool.h"

static int g_fail = 0;
static int g_checks = 0;
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        g_checks++;                                                                                \
        if (!(cond)) {                                                                             \
            if (g_fail < 30) {                                                                     \
                fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                               \
                fprintf(stderr, __VA_ARGS__);                                                      \
                fprintf(stderr, "\n");                                                             \
            }                                                                                      \
            g_fail++;                                                                              \
        }                                                                                          \
    } while (0)

/* ---------------------------------------------------------------- seeded PRNG (splitmix64) */
static uint64_t g_rng = 0x1b1b5eedULL;
static uint64_t rnd(void) {
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
static int rndi(int lo, int hi) { return lo + (int)(rnd() % (uint64_t)(hi - lo + 1)); } /* [lo,hi] */
static float rndf(void) { return (float)((rnd() >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f; }
/* nonzero int8 in [-128, 127] */
static int8_t rnd_i8(void) {
    int v;
    do v = rndi(-128, 127);
    while (v == 0);
    return (int8_t)v;
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

/* ---------------------------------------------------------------- independent decoders */
/* Weight k of a packed row, decoded straight from DESIGN.md (not using kernels.c). */
static int dumb_weight(ob_wfmt fmt, const uint8_t *row, int K, int k) {
    if (fmt == OB_WFMT_T2) {
        int blk = k >> 7, within = k & 127, slot = within >> 5, j = within & 31;
        return ((row[blk * 32 + j] >> (2 * slot)) & 3) - 1;
    }
    if (fmt == OB_WFMT_T16) {
        int nfull = K / 160, b, slot;
        if (k < nfull * 160) {
            int within = k % 160;
            b = row[(k / 160) * 32 + within % 32];
            slot = within / 32;
        } else {
            int r = K % 160, L = (r + 4) / 5, idx = k - nfull * 160;
            b = row[nfull * 32 + idx % L];
            slot = idx / L;
        }
        int p = 1;
        for (int i = 0; i < slot; i++) p *= 3;
        return ((((b * p) % 256) * 3) >> 8) - 1;
    }
    return ((row[k / 8] >> (k % 8)) & 1) ? 1 : -1;
}

typedef void (*mm_ref_fn)(const uint8_t *, int, float, const int8_t *, size_t, const float *,
                          const int32_t *, int, int, int, float *, size_t);
/* T2X kernels are checked against the T2 reference on the plain rows they were repacked from. */
static ob_wfmt plain_fmt(ob_wfmt f) { return f == OB_WFMT_T2X ? OB_WFMT_T2 : f; }
static mm_ref_fn ref_fn(ob_wfmt f) {
    f = plain_fmt(f);
    return f == OB_WFMT_T2 ? ob_matmul_t2_ref : f == OB_WFMT_T16 ? ob_matmul_t16_ref : ob_matmul_b1_ref;
}
static const char *fmt_name(ob_wfmt f) {
    return f == OB_WFMT_T2 ? "T2" : f == OB_WFMT_T16 ? "T1.6" : f == OB_WFMT_T2X ? "T2X" : "B1";
}
/* The kernel's copy of N plain rows w: w itself, or for T2X a repacked copy (free it if != w). */
static uint8_t *kernel_weights(ob_wfmt f, uint8_t *w, int N, int K) {
    if (f != OB_WFMT_T2X) return w;
    uint8_t *x = xmalloc(ob_t2x_bytes(N, K));
    ob_t2x_repack(NULL, OB_WFMT_T2, w, N, K, x);
    return x;
}

static const int KS[] = {1, 2, 5, 31, 32, 64, 100, 127, 128, 129, 159, 160, 161, 255, 256, 257,
                         300, 320, 321, 480, 512, 640, 1000, 1024, 2048, 2049};
#define NKS ((int)(sizeof(KS) / sizeof(KS[0])))

static int bits_eq(const float *a, const float *b, size_t n) { return memcmp(a, b, n * 4) == 0; }

/* ---------------------------------------------------------------- reference vs dumb */
static void test_ref_vs_dumb(void) {
    for (int f = 0; f < OB_WFMT_FILE_COUNT; f++)
        for (int ki = 0; ki < NKS; ki++) {
            int K = KS[ki], N = rndi(1, 9), m = rndi(1, 4);
            size_t rb = ob_row_bytes((ob_wfmt)f, K), st = ob_act_stride(K);
            int8_t *q = xmalloc((size_t)N * K);
            uint8_t *w = xmalloc((size_t)N * rb);
            int8_t *xq = xmalloc((size_t)m * st);
            float a[4], y[4 * 9], yd[4 * 9];
            int32_t xs[4];
            for (int i = 0; i < N * K; i++)
                q[i] = (int8_t)(f == OB_WFMT_B1 ? (rnd() & 1 ? 1 : -1) : rndi(-1, 1));
            for (int r = 0; r < N; r++) {
                CHECK(ob_pack_row_ref((ob_wfmt)f, q + (size_t)r * K, K, w + r * rb) == 0, "pack");
                for (int k = 0; k < K; k++)
                    CHECK(dumb_weight((ob_wfmt)f, w + r * rb, K, k) == q[(size_t)r * K + k],
                          "%s K=%d pack/decode mismatch at r=%d k=%d", fmt_name((ob_wfmt)f), K, r, k);
            }
            for (int t = 0; t < m; t++) {
                float *x = xmalloc((size_t)K * 4);
                for (int k = 0; k < K; k++) x[k] = rndf() * 3.0f;
                ob_quantize_ref(x, K, xq + t * st, &a[t], &xs[t]);
                /* dumb quantize */
                float amax = 0;
                for (int k = 0; k < K; k++) amax = fabsf(x[k]) > amax ? fabsf(x[k]) : amax;
                float aa = 127.0f / (amax > 1e-5f ? amax : 1e-5f);
                int32_t s = 0;
                for (int k = 0; k < K; k++) {
                    float v = nearbyintf(x[k] * aa);
                    int iv = v > 127 ? 127 : v < -128 ? -128 : (int)v;
                    CHECK(xq[t * st + k] == iv, "quantize ref k=%d", k);
                    s += iv;
                }
                for (size_t k = (size_t)K; k < st; k++) CHECK(xq[t * st + k] == 0, "padding");
                CHECK(aa == a[t] && s == xs[t], "quantize ref scale/sum");
                free(x);
            }
            float wscale = 0.01f + (float)(rnd() % 1000) * 1e-4f;
            ref_fn((ob_wfmt)f)(w, K, wscale, xq, st, a, xs, m, 0, N, y, 9);
            for (int t = 0; t < m; t++)
                for (int r = 0; r < N; r++) {
                    int32_t acc = 0;
                    for (int k = 0; k < K; k++) acc += q[(size_t)r * K + k] * xq[t * st + k];
                    float fac = wscale / a[t];
                    yd[t * 9 + r] = (float)acc * fac;
                    CHECK(bits_eq(&y[t * 9 + r], &yd[t * 9 + r], 1),
                          "%s K=%d ref vs dumb: t=%d r=%d %.9g vs %.9g", fmt_name((ob_wfmt)f), K,
                          t, r, y[t * 9 + r], yd[t * 9 + r]);
                }
            free(q);
            free(w);
            free(xq);
        }
}

/* ---------------------------------------------------------------- SIMD vs reference */
static void fill_weights(ob_wfmt f, uint8_t *w, size_t n, int K, int N, int valid) {
    if (!valid) { /* raw random bytes: every byte value, incl. T2 code 3 and T1.6 bytes >= 243 */
        for (size_t i = 0; i < n; i++) w[i] = (uint8_t)rnd();
        return;
    }
    size_t rb = ob_row_bytes(f, K);
    int8_t *q = xmalloc((size_t)K);
    for (int r = 0; r < N; r++) {
        for (int k = 0; k < K; k++) q[k] = (int8_t)(f == OB_WFMT_B1 ? (rnd() & 1 ? 1 : -1) : rndi(-1, 1));
        ob_pack_row_ref(f, q, K, w + (size_t)r * rb);
    }
    free(q);
}

/* m tokens of random int8 activations (zero past K), with their sums and scales */
static void fill_acts(int8_t *xq, size_t st, int K, int m, float *a, int32_t *xs) {
    for (int t = 0; t < m; t++) {
        int32_t s = 0;
        for (size_t k = 0; k < st; k++) {
            int8_t v = k < (size_t)K ? rnd_i8() : 0;
            xq[t * st + k] = v;
            s += v;
        }
        xs[t] = s;
        a[t] = 0.5f + (float)(rnd() % 10000) * 1e-3f;
    }
}

/* T1.6 rows repacked into T2X (the loader does this on x86, model.c): the T2X reference on the copy
 * gives T1.6's results bit for bit, for valid rows and for raw bytes (>= 243 included), every K
 * (full blocks, tails, K < 160) and row counts that leave the last group of 8 part padding; weight
 * by weight the copy holds the T1.6 row's codes, code 1 past K and in the padding rows. */
static void test_t16_repack(void) {
    for (int valid = 0; valid < 2; valid++)
        for (int ki = 0; ki < NKS; ki++) {
            int K = KS[ki], N = rndi(1, 19), m = rndi(1, 3), nblk = (K + 127) / 128;
            size_t rb = ob_row_bytes(OB_WFMT_T16, K), st = ob_act_stride(K);
            uint8_t *w = xmalloc((size_t)N * rb), *x = xmalloc(ob_t2x_bytes(N, K));
            int8_t *xq = xmalloc((size_t)m * st);
            float a[3], y16[3 * 19], y2[3 * 19];
            int32_t xs[3];
            fill_weights(OB_WFMT_T16, w, (size_t)N * rb, K, N, valid);
            fill_acts(xq, st, K, m, a, xs);
            ob_t2x_repack(NULL, OB_WFMT_T16, w, N, K, x);
            int groups = (N + OB_T2X_ROWS - 1) / OB_T2X_ROWS, bad = 0;
            for (int r = 0; r < groups * OB_T2X_ROWS; r++)
                for (int k = 0; k < nblk * 128; k++) {
                    const uint8_t *blk = x + ob_t2x_offset(nblk, r) + (size_t)(k / 128) * OB_T2X_ROWS * 32;
                    int code = (blk[k % 32] >> (2 * (k % 128 / 32))) & 3;
                    int want = r < N && k < K ? dumb_weight(OB_WFMT_T16, w + (size_t)r * rb, K, k) + 1 : 1;
                    bad += code != want;
                }
            CHECK(bad == 0, "T1.6 -> T2X K=%d N=%d %s: %d codes differ", K, N, valid ? "valid" : "raw", bad);
            float wscale = 0.01f + (float)(rnd() % 1000) * 1e-4f;
            ob_matmul_t16_ref(w, K, wscale, xq, st, a, xs, m, 0, N, y16, (size_t)N);
            ob_matmul_t2x_ref(x, K, wscale, xq, st, a, xs, m, 0, N, y2, (size_t)N);
            CHECK(bits_eq(y16, y2, (size_t)m * N), "T1.6 -> T2X K=%d N=%d %s: matmul differs", K, N,
                  valid ? "valid" : "raw");
            free(w);
            free(x);
            free(xq);
        }
}

/* The ISA's T1.6 -> T2 row decoder against the reference: raw bytes, every K, blocks packed (bs 32)
 * and spread as in T2X (bs 256), nothing written between the blocks. */
static void test_isa_t16_to_t2(const ob_kernels *kern) {
    for (int ki = 0; ki < NKS; ki++)
        for (int spread = 0; spread < 2; spread++) {
            int K = KS[ki], nblk = (K + 127) / 128;
            size_t rb = ob_row_bytes(OB_WFMT_T16, K), bs = spread ? OB_T2X_ROWS * 32 : 32, n = (size_t)nblk * bs;
            uint8_t *row = xmalloc(rb), *got = xmalloc(n), *want = xmalloc(n);
            for (size_t i = 0; i < rb; i++) row[i] = (uint8_t)rnd();
            memset(got, 0xA5, n);
            memset(want, 0xA5, n);
            kern->t16_to_t2(row, K, got, bs);
            ob_t16_to_t2_ref(row, K, want, bs);
            CHECK(memcmp(got, want, n) == 0, "%s t16_to_t2 K=%d bs=%zu differs from the reference",
                  ob_isa_name(kern->isa), K, bs);
            free(row);
            free(got);
            free(want);
        }
}

/* ys (m x N, filled with -7 before the call) holds yr's rows [r0, r1) and -7 elsewhere */
static int rows_match(const float *yr, const float *ys, int m, int N, int r0, int r1) {
    int ok = 1;
    for (int t = 0; t < m; t++)
        for (int r = 0; r < N; r++) {
            float e = (r >= r0 && r < r1) ? yr[t * N + r] : -7.0f;
            if (!bits_eq(&e, &ys[t * N + r], 1)) ok = 0;
        }
    return ok;
}

static void test_isa_matmul(const ob_kernels *kern) {
    const int MMAX = 9;
    for (int f = 0; f < OB_WFMT_COUNT; f++)
        for (int ki = 0; ki < NKS; ki++) {
            int K = KS[ki];
            int N = rndi(1, 40);
            size_t rb = ob_row_bytes(plain_fmt((ob_wfmt)f), K), st = ob_act_stride(K) + (size_t)rndi(0, 3) * 64;
            uint8_t *w = xmalloc((size_t)N * rb);
            int8_t *xq = xmalloc((size_t)MMAX * st);
            float a[9];
            int32_t xs[9];
            float *yr = xmalloc((size_t)MMAX * N * 4), *ys = xmalloc((size_t)MMAX * N * 4);
            for (int valid = 0; valid < 2; valid++) {
                fill_weights(plain_fmt((ob_wfmt)f), w, (size_t)N * rb, K, N, valid);
                uint8_t *wk = kernel_weights((ob_wfmt)f, w, N, K);
                fill_acts(xq, st, K, MMAX, a, xs);
                float wscale = 0.001f + (float)(rnd() % 1000) * 1e-4f;
                for (int m = 1; m <= MMAX; m++) {
                    ref_fn((ob_wfmt)f)(w, K, wscale, xq, st, a, xs, m, 0, N, yr, (size_t)N);
                    for (int i = 0; i < m * N; i++) ys[i] = NAN;
                    kern->matmul[f](wk, K, wscale, xq, st, a, xs, m, 0, N, ys, (size_t)N);
                    CHECK(bits_eq(yr, ys, (size_t)m * N), "%s %s K=%d N=%d m=%d valid=%d: full range differs",
                          ob_isa_name(kern->isa), fmt_name((ob_wfmt)f), K, N, m, valid);
                    /* random row range; rows outside stay untouched */
                    int r0 = rndi(0, N - 1), r1 = rndi(r0, N);
                    for (int i = 0; i < m * N; i++) ys[i] = -7.0f;
                    kern->matmul[f](wk, K, wscale, xq, st, a, xs, m, r0, r1, ys, (size_t)N);
                    CHECK(rows_match(yr, ys, m, N, r0, r1), "%s %s K=%d N=%d m=%d rows [%d,%d) differ", ob_isa_name(kern->isa),
                          fmt_name((ob_wfmt)f), K, N, m, r0, r1);
                }
                if (wk != w) free(wk);
            }
            free(w);
            free(xq);
            free(yr);
            free(ys);
        }
}

/* Batches longer than a kernel's token block (AVX2's unpacked T2X GEMM takes 32 tokens at a time):
 * m = 33 and 67 tokens, random rows and row ranges, against the reference.  K = 2600: that GEMM's
 * int16 sums are widened every 1024 weights, and its last stretch is shorter (2688 = 2 x 1024 +
 * 640). */
static void test_isa_many_tokens(const ob_kernels *kern) {
    const int Ms[] = {33, 67}, Kt[] = {130, 1000, 2600};
    for (int f = 0; f < OB_WFMT_COUNT; f++)
        for (int ki = 0; ki < 3; ki++)
            for (int mi = 0; mi < 2; mi++) {
                int K = Kt[ki], m = Ms[mi], N = rndi(5, 30);
                size_t rb = ob_row_bytes(plain_fmt((ob_wfmt)f), K), st = ob_act_stride(K);
                uint8_t *w = xmalloc((size_t)N * rb);
                int8_t *xq = xmalloc((size_t)m * st);
                float *a = xmalloc((size_t)m * 4), *yr = xmalloc((size_t)m * N * 4), *ys = xmalloc((size_t)m * N * 4);
                int32_t *xs = xmalloc((size_t)m * 4);
                fill_weights(plain_fmt((ob_wfmt)f), w, (size_t)N * rb, K, N, rndi(0, 1));
                uint8_t *wk = kernel_weights((ob_wfmt)f, w, N, K);
                fill_acts(xq, st, K, m, a, xs);
                int r0 = rndi(0, N - 1), r1 = rndi(r0, N);
                ref_fn((ob_wfmt)f)(w, K, 0.25f, xq, st, a, xs, m, 0, N, yr, (size_t)N);
                for (int i = 0; i < m * N; i++) ys[i] = -7.0f;
                kern->matmul[f](wk, K, 0.25f, xq, st, a, xs, m, r0, r1, ys, (size_t)N);
                CHECK(rows_match(yr, ys, m, N, r0, r1), "%s %s K=%d N=%d m=%d rows [%d,%d) differ",
                      ob_isa_name(kern->isa), fmt_name((ob_wfmt)f), K, N, m, r0, r1);
                if (wk != w) free(wk);
                free(w); free(xq); free(a); free(yr); free(ys); free(xs);
            }
}

/* One token over many rows: AVX2's T2X GEMV reads OB256_STREAMS (4) groups of 8 rows at once when
 * a row has 20 blocks or more.  117 rows = 14 whole groups (3 per stream, 2 left over) and 5 rows;
 * K = 2600 (21 blocks, an odd one after the pairs), 2560 (20) and 2400 (19: one stream); the whole
 * range and random ones, which start and end inside groups. */
static void test_isa_gemv_streams(const ob_kernels *kern) {
    const int Kt[] = {2600, 2560, 2400}, N = 117;
    for (int f = 0; f < OB_WFMT_COUNT; f++)
        for (int ki = 0; ki < 3; ki++) {
            int K = Kt[ki];
            size_t rb = ob_row_bytes(plain_fmt((ob_wfmt)f), K), st = ob_act_stride(K);
            uint8_t *w = xmalloc((size_t)N * rb);
            int8_t *xq = xmalloc(st);
            float a[1], *yr = xmalloc((size_t)N * 4), *ys = xmalloc((size_t)N * 4);
            int32_t xs[1];
            fill_weights(plain_fmt((ob_wfmt)f), w, (size_t)N * rb, K, N, rndi(0, 1));
            uint8_t *wk = kernel_weights((ob_wfmt)f, w, N, K);
            fill_acts(xq, st, K, 1, a, xs);
            ref_fn((ob_wfmt)f)(w, K, 0.25f, xq, st, a, xs, 1, 0, N, yr, (size_t)N);
            for (int rep = 0; rep < 4; rep++) {
                int r0 = rep ? rndi(0, 20) : 0, r1 = rep ? rndi(N - 20, N) : N;
                for (int i = 0; i < N; i++) ys[i] = -7.0f;
                kern->matmul[f](wk, K, 0.25f, xq, st, a, xs, 1, r0, r1, ys, (size_t)N);
                CHECK(rows_match(yr, ys, 1, N, r0, r1), "%s %s K=%d N=%d one token, rows [%d,%d) differ",
                      ob_isa_name(kern->isa), fmt_name((ob_wfmt)f), K, N, r0, r1);
            }
            if (wk != w) free(wk);
            free(w); free(xq); free(yr); free(ys);
        }
}

/* extreme values: all activations -128 or 127, all codes max: catches int16 saturation.  m = 1
 * (the GEMV, whose AVX2 / AVX-512 paths read 8 row segments at once: N = 19 gives full segments
 * and leftover rows), m = 2-3 (the tiles) and m = 4-5 (AVX2's unpacked T2X GEMM, whose int16 sums
 * run 32 steps: K = 4096 is 128 of them). */
static void test_isa_extremes(const ob_kernels *kern) {
    enum { N = 19, MX = 5 };
    const int Ks[] = {128, 4096, 16384 + 160};
    for (int ki = 0; ki < 3; ki++)
        for (int f = 0; f < OB_WFMT_COUNT; f++)
            for (int pat = 0; pat < 4; pat++) {
                int K = Ks[ki];
                ob_wfmt pf = plain_fmt((ob_wfmt)f);
                size_t rb = ob_row_bytes(pf, K), st = ob_act_stride(K);
                uint8_t *w = xmalloc((size_t)N * rb);
                int8_t *xq = xmalloc((size_t)MX * st);
                int8_t *q = xmalloc((size_t)K);
                float a[MX] = {1.0f, 3.0f, 0.5f, 2.0f, 7.0f}, yr[N * MX], ys[N * MX];
                int32_t xs[MX];
                for (int r = 0; r < N; r++) {
                    for (int k = 0; k < K; k++) q[k] = (int8_t)((pat & 1) ? 1 : (r % 3 == 1 ? -1 : 1));
                    ob_pack_row_ref(pf, q, K, w + r * rb);
                }
                if (pf == OB_WFMT_T2 && pat == 3) memset(w, 0xff, (size_t)N * rb); /* code 3 */
                uint8_t *wk = kernel_weights((ob_wfmt)f, w, N, K);
                for (int t = 0; t < MX; t++) {
                    int32_t s = 0;
                    for (size_t k = 0; k < st; k++) {
                        int8_t v = k < (size_t)K ? (int8_t)((pat & 2) ? -128 : 127) : 0;
                        if ((t & 1) && k < (size_t)K && (k & 1)) v = (int8_t)-v - (v > 0);
                        xq[t * st + k] = v;
                        s += v;
                    }
                    xs[t] = s;
                }
                for (int m = 1; m <= MX; m++) {
                    ref_fn((ob_wfmt)f)(w, K, 0.5f, xq, st, a, xs, m, 0, N, yr, N);
                    kern->matmul[f](wk, K, 0.5f, xq, st, a, xs, m, 0, N, ys, N);
                    CHECK(bits_eq(yr, ys, (size_t)(N * m)), "%s %s extremes K=%d pat=%d m=%d", ob_isa_name(kern->isa),
                          fmt_name((ob_wfmt)f), K, pat, m);
                }
                if (wk != w) free(wk);
                free(w);
                free(xq);
                free(q);
            }
}

static void test_isa_quantize(const ob_kernels *kern) {
    for (int ki = 0; ki < NKS; ki++)
        for (int rep = 0; rep < 4; rep++) {
            int K = KS[ki];
            size_t st = ob_act_stride(K);
            float *x = xmalloc((size_t)K * 4);
            float scale = rep == 0 ? 1e-7f : rep == 1 ? 1.0f : rep == 2 ? 1000.0f : 3.0f;
            for (int k = 0; k < K; k++) x[k] = rndf() * scale;
            if (rep == 3) /* exact .5 ties after scaling */
                for (int k = 0; k < K; k++) x[k] = (float)rndi(-254, 254) * 0.5f;
            int8_t *q1 = xmalloc(st), *q2 = xmalloc(st);
            memset(q2, 0x55, st);
            float a1, a2;
            int32_t s1, s2;
            ob_quantize_ref(x, K, q1, &a1, &s1);
            kern->quantize(x, K, q2, &a2, &s2);
            CHECK(memcmp(q1, q2, st) == 0 && s1 == s2 && memcmp(&a1, &a2, 4) == 0,
                  "%s quantize K=%d rep=%d", ob_isa_name(kern->isa), K, rep);
            free(x);
            free(q1);
            free(q2);
        }
    /* all zeros */
    float z[300] = {0};
    int8_t q[512];
    float a;
    int32_t s;
    kern->quantize(z, 300, q, &a, &s);
    CHECK(s == 0 && a == 127.0f / 1e-5f, "%s quantize zeros", ob_isa_name(kern->isa));
    /* NaN and infinity (what a forged file's weights can make): NaN -> 0, defined and the same on
     * every ISA, in the SIMD body (k = 3, 40) and in the scalar tails (k = 76 of 77) */
    for (int c = 0; c < 2; c++) {
        const int K = 77;
        size_t st = ob_act_stride(K);
        float xs[77];
        for (int k = 0; k < K; k++) xs[k] = rndf();
        xs[3] = NAN;
        xs[40] = -NAN;
        xs[76] = NAN;
        if (c) xs[20] = -INFINITY; /* the scale becomes 0, inf * 0 is NaN again */
        int8_t *q1 = xmalloc(st), *q2 = xmalloc(st);
        float a1, a2;
        int32_t s1, s2;
        ob_quantize_ref(xs, K, q1, &a1, &s1);
        kern->quantize(xs, K, q2, &a2, &s2);
        CHECK(q1[3] == 0 && q1[40] == 0 && q1[76] == 0 && (c == 0 || (s1 == 0 && q1[20] == 0)),
              "quantize ref NaN case %d", c);
        CHECK(memcmp(q1, q2, st) == 0 && s1 == s2 && memcmp(&a1, &a2, 4) == 0, "%s quantize NaN case %d",
              ob_isa_name(kern->isa), c);
        free(q1);
        free(q2);
    }
}

static int close_enough(float ref, float got, float mag) {
    return fabsf(ref - got) <= 1e-5f * mag + 1e-6f;
}

static void test_isa_float(const ob_kernels *kern) {
    const int Ks[] = {1, 3, 8, 15, 16, 17, 31, 32, 33, 64, 100, 257, 1000, 2048};
    for (int ki = 0; ki < (int)(sizeof(Ks) / sizeof(Ks[0])); ki++) {
        int K = Ks[ki], N = rndi(1, 37);
        size_t ldw = (size_t)K + (size_t)rndi(0, 5);
        float *wf = xmalloc(ldw * N * 4), *x = xmalloc((size_t)K * 4);
        uint16_t *wh = xmalloc(ldw * N * 2);
        float *yr = xmalloc((size_t)N * 4), *ys = xmalloc((size_t)N * 4), *yp = xmalloc((size_t)N * 4);
        float *mag = xmalloc((size_t)N * 4);
        for (size_t i = 0; i < ldw * N; i++) {
            wf[i] = rndf();
            wh[i] = ob_f32_to_f16(rndf());
        }
        for (int k = 0; k < K; k++) x[k] = rndf() * 4.0f;
        for (int kind = 0; kind < 2; kind++) {
            for (int r = 0; r < N; r++) {
                float s = 0;
                for (int k = 0; k < K; k++) {
                    float wv = kind == 0 ? wf[r * ldw + k] : ob_f16_to_f32(wh[r * ldw + k]);
                    s += fabsf(wv * x[k]);
                }
                mag[r] = s;
            }
            int r0 = rndi(0, N - 1), r1 = rndi(r0, N);
            if (kind == 0) {
                ob_gemv_f32_ref(wf, ldw, K, x, 0, N, yr);
                kern->gemv_f32(wf, ldw, K, x, 0, N, ys);
                kern->gemv_f32(wf, ldw, K, x, r0, r1, yp);
            } else {
                ob_gemv_f16_ref(wh, ldw, K, x, 0, N, yr);
                kern->gemv_f16(wh, ldw, K, x, 0, N, ys);
                kern->gemv_f16(wh, ldw, K, x, r0, r1, yp);
            }
            for (int r = 0; r < N; r++)
                CHECK(close_enough(yr[r], ys[r], mag[r]), "%s gemv kind=%d K=%d r=%d: %.9g vs %.9g",
                      ob_isa_name(kern->isa), kind, K, r, yr[r], ys[r]);
            CHECK(bits_eq(ys + r0, yp + r0, (size_t)(r1 - r0)), "%s gemv kind=%d K=%d range not deterministic",
                  ob_isa_name(kern->isa), kind, K);
        }
        free(wf); free(x); free(wh); free(yr); free(ys); free(yp); free(mag);
    }
}

/* The int8 head: ob_quantize_i16 against its definition (written out here in double), the reference
 * GEMV against a plain int64 sum and double scaling, including sums far beyond int32. */
static void test_q8_ref(void) {
    /* quantizer: half to even, the clamp, NaN, the zero row */
    {
        float x[7] = {32767.0f, 2.5f, 3.5f, -2.5f, -0.5f, 1.5f, NAN}, a;
        int16_t q[7];
        ob_quantize_i16(x, 7, q, &a);
        const int16_t want[7] = {32767, 2, 4, -2, 0, 2, 0};
        CHECK(a == 1.0f && memcmp(q, want, sizeof want) == 0, "quantize_i16 rounding: a=%g q1..5=%d %d %d %d %d", a,
              q[1], q[2], q[3], q[4], q[5]);
        float z[5] = {0, 0, -0.0f, 0, 0};
        ob_quantize_i16(z, 5, q, &a);
        int nz = 0;
        for (int k = 0; k < 5; k++) nz += q[k] != 0;
        CHECK(nz == 0 && a == 32767.0f / 1e-5f, "quantize_i16 zero row");
    }
    for (int rep = 0; rep < 50; rep++) {
        int K = rndi(1, 3000);
        float *x = xmalloc((size_t)K * 4), a;
        int16_t *q = xmalloc((size_t)K * 2);
        float scale = rep % 5 == 0 ? 1e-3f : 30.0f;
        for (int k = 0; k < K; k++) x[k] = rndf() * scale;
        ob_quantize_i16(x, K, q, &a);
        double amax = 0;
        for (int k = 0; k < K; k++) amax = fabs(x[k]) > amax ? fabs(x[k]) : amax;
        int top = 0, bad = 0;
        for (int k = 0; k < K; k++) {
            double v = (double)(float)(x[k] * a); /* the f32 product, then round half to even */
            double f = floor(v), d = v - f;
            double want = d > 0.5 ? f + 1 : d < 0.5 ? f : (fmod(f, 2.0) == 0 ? f : f + 1);
            if (want > 32767) want = 32767;
            if (want < -32767) want = -32767;
            bad += q[k] != (int16_t)want;
            top += q[k] == 32767 || q[k] == -32767;
        }
        CHECK(bad == 0 && top >= 1 && a == 32767.0f / fmaxf((float)amax, 1e-5f), "quantize_i16 K=%d: %d wrong", K, bad);
        free(x); free(q);
    }
    /* GEMV: plain int64 sums (extremes and random), then (float)S * (scale / a) */
    for (int rep = 0; rep < 12; rep++) {
        int K = rep < 4 ? 20000 + rep : rndi(1, 5000), N = 5;
        size_t ldw = (size_t)K + (size_t)(rep % 3);
        int8_t *w = xmalloc(ldw * N);
        int16_t *q = xmalloc((size_t)K * 2);
        float sc[5] = {0.01f, 0.5f, 1.0f, 3e-3f, 0.0625f}, y[5], a = rep % 2 ? 1.0f : 3.7e3f;
        for (size_t i = 0; i < ldw * N; i++) w[i] = rep < 4 ? (int8_t)(rep % 2 ? -128 : 127) : (int8_t)rndi(-128, 127);
        for (int k = 0; k < K; k++) q[k] = rep < 4 ? (int16_t)(rep < 2 ? -32767 : 32767) : (int16_t)rndi(-32767, 32767);
        ob_gemv_q8_ref(w, sc, ldw, K, q, a, 0, N, y);
        for (int r = 0; r < N; r++) {
            int64_t S = 0;
            for (int k = 0; k < K; k++) S += (int64_t)w[(size_t)r * ldw + k] * q[k];
            if (rep < 4) CHECK(S == (int64_t)K * w[0] * q[0] && (S > INT32_MAX || S < INT32_MIN), "q8 extreme sum");
            float f = sc[r] / a, want = (float)S * f;
            double exact = (double)S * sc[r] / a;
            CHECK(bits_eq(&y[r], &want, 1) && fabs(y[r] - exact) <= 1e-6 * fabs(exact) + 1e-30,
                  "gemv_q8 ref K=%d r=%d: %.9g vs %.9g", K, r, y[r], want);
        }
        free(w); free(q);
    }
}

/* Every ISA's int8 head GEMV gives the reference's bits: random and extreme weights (-128 / 127)
 * and activations (+-32767), K odd, not a multiple of 16 / 32 / 64, across the int32 chunking
 * (4096 / 8192) and beyond int32 sums, padded rows, any row range. */
static void test_isa_q8(const ob_kernels *kern) {
    const int Ks[] = {1, 3, 15, 16, 17, 31, 32, 33, 63, 64, 65, 97, 100, 257, 768, 1000, 2047, 2048, 2049,
                      2560, 4095, 4096, 4097, 8191, 8192, 8193, 12289, 20001};
    for (int ki = 0; ki < (int)(sizeof(Ks) / sizeof(Ks[0])); ki++)
        for (int mode = 0; mode < 4; mode++) {
            /* mode 0 random; 1 all (-128, -32767); 2 all (127, 32767); 3 random signs of the extremes */
            int K = Ks[ki], N = K > 4000 ? rndi(1, 9) : rndi(1, 37);
            size_t ldw = (size_t)K + (size_t)rndi(0, 5);
            int8_t *w = xmalloc(ldw * N);
            int16_t *q = xmalloc((size_t)K * 2);
            float *sc = xmalloc((size_t)N * 4), *yr = xmalloc((size_t)N * 4), *ys = xmalloc((size_t)N * 4),
                  *yp = xmalloc((size_t)N * 4), a = 1.0f;
            for (size_t i = 0; i < ldw * N; i++)
                w[i] = mode == 0 ? (int8_t)rndi(-128, 127) : mode == 1 ? -128 : mode == 2 ? 127 : (rnd() & 1 ? 127 : -128);
            if (mode == 0) {
                float *x = xmalloc((size_t)K * 4);
                for (int k = 0; k < K; k++) x[k] = rndf() * 4.0f;
                ob_quantize_i16(x, K, q, &a);
                free(x);
            } else
                for (int k = 0; k < K; k++) q[k] = mode == 1 ? -32767 : mode == 2 ? 32767 : (rnd() & 1 ? 32767 : -32767);
            for (int r = 0; r < N; r++) sc[r] = 0.001f + (float)(rnd() % 100) * 1e-4f;
            int r0 = rndi(0, N - 1), r1 = rndi(r0, N);
            ob_gemv_q8_ref(w, sc, ldw, K, q, a, 0, N, yr);
            kern->gemv_q8(w, sc, ldw, K, q, a, 0, N, ys);
            for (int r = 0; r < N; r++) yp[r] = NAN;
            kern->gemv_q8(w, sc, ldw, K, q, a, r0, r1, yp);
            CHECK(bits_eq(yr, ys, (size_t)N), "%s gemv_q8 K=%d mode=%d differs from the reference: %.9g vs %.9g",
                  ob_isa_name(kern->isa), K, mode, yr[0], ys[0]);
            CHECK(bits_eq(yr + r0, yp + r0, (size_t)(r1 - r0)), "%s gemv_q8 K=%d mode=%d rows %d..%d differ",
                  ob_isa_name(kern->isa), K, mode, r0, r1);
            free(w); free(q); free(sc); free(yr); free(ys); free(yp);
        }
}

/* The f16 GEMV on the halves a fast widening may get wrong (subnormals, the largest half, signed
 * zeros, Inf, NaN) and on inputs outside a scaled path's range (|x| >= 2^15, NaN): finite rows
 * within the float tolerance of the reference, Inf / NaN rows with the reference's class and
 * sign, and every row the same whether computed alone or in the whole range. */
static int fclass(float v) { return isnan(v) ? 0 : isinf(v) ? (v > 0 ? 1 : 2) : 3; }
static void test_isa_f16_gemv_edges(const ob_kernels *kern) {
    const int Ks[] = {8, 16, 24, 40, 769, 4096, 4097};
    const uint16_t odd[] = {0x0001, 0x8001, 0x03ff, 0x83ff, 0x0400, 0x7bff, 0xfbff, 0x0000, 0x8000};
    for (int ki = 0; ki < (int)(sizeof(Ks) / sizeof(Ks[0])); ki++)
        for (int xcase = 0; xcase < 3; xcase++) {
            int K = Ks[ki], N = 6;
            uint16_t *w = xmalloc((size_t)K * N * 2);
            float *x = xmalloc((size_t)K * 4), *yr = xmalloc(N * 4), *ys = xmalloc(N * 4), *y1 = xmalloc(N * 4);
            for (int i = 0; i < K * N; i++) w[i] = rnd() % 3 ? ob_f32_to_f16(rndf()) : odd[rnd() % 9];
            w[1 * K + rndi(0, K - 1)] = 0x7c00;                               /* +Inf */
            w[2 * K + rndi(0, K - 1)] = 0x7e01;                               /* NaN */
            w[3 * K + rndi(0, K - 1)] = 0xfc00;                               /* -Inf */
            w[4 * K + K - 1] = 0xfc00;                                        /* -Inf in the tail */
            for (int k = 0; k < K; k++) x[k] = rnd() % 7 ? rndf() * 4.0f : (rnd() % 2 ? 1e-40f : -3e-39f);
            if (xcase == 1) x[rndi(0, K - 1)] = -1e5f;
            if (xcase == 2) x[rndi(0, K - 1)] = NAN;
            ob_gemv_f16_ref(w, (size_t)K, K, x, 0, N, yr);
            kern->gemv_f16(w, (size_t)K, K, x, 0, N, ys);
            for (int r = 0; r < N; r++) kern->gemv_f16(w, (size_t)K, K, x, r, r + 1, y1);
            for (int r = 0; r < N; r++) {
                float mag = 0;
                for (int k = 0; k < K; k++) mag += fabsf(ob_f16_to_f32(w[(size_t)r * K + k]) * x[k]);
                int ok = fclass(yr[r]) == 3 ? close_enough(yr[r], ys[r], mag) : fclass(yr[r]) == fclass(ys[r]);
                CHECK(ok, "%s gemv f16 edges K=%d x=%d r=%d: %.9g vs %.9g", ob_isa_name(kern->isa), K, xcase, r,
                      yr[r], ys[r]);
                CHECK(memcmp(&ys[r], &y1[r], 4) == 0 || (isnan(ys[r]) && isnan(y1[r])),
                      "%s gemv f16 edges K=%d row %d alone differs", ob_isa_name(kern->isa), K, r);
            }
            free(w); free(x); free(yr); free(ys); free(y1);
        }
}

/* ---------------------------------------------------------------- threads */
static void test_threads(const ob_kernels *kern) {
    int K = 1000, N = 203, m = 5;
    for (int f = 0; f < OB_WFMT_COUNT; f++) {
        size_t rb = ob_row_bytes(plain_fmt((ob_wfmt)f), K), st = ob_act_stride(K);
        uint8_t *w = xmalloc((size_t)N * rb);
        int8_t *xq = xmalloc((size_t)m * st);
        float a[5], *y1 = xmalloc((size_t)m * N * 4), *yn = xmalloc((size_t)m * N * 4);
        int32_t xs[5];
        fill_weights(plain_fmt((ob_wfmt)f), w, (size_t)N * rb, K, N, 1);
        uint8_t *wk = kernel_weights((ob_wfmt)f, w, N, K);
        float *x = xmalloc((size_t)m * K * 4);
        for (int i = 0; i < m * K; i++) x[i] = rndf();
        ob_quantize_rows(kern, x, (size_t)K, m, K, xq, st, a, xs);
        ref_fn((ob_wfmt)f)(w, K, 0.02f, xq, st, a, xs, m, 0, N, y1, (size_t)N);
        for (int nt = 1; nt <= 4; nt++) {
            ob_threadpool *p = ob_threadpool_create(nt);
            CHECK(p && ob_threadpool_size(p) == nt, "pool create %d", nt);
            for (int rep = 0; rep < 3; rep++) {
                for (int mm = 1; mm <= m; mm += 4) {
                    for (int i = 0; i < m * N; i++) yn[i] = NAN;
                    ob_matmul_mt(p, kern, (ob_wfmt)f, wk, N, K, 0.02f, xq, st, a, xs, mm, yn, (size_t)N);
                    CHECK(bits_eq(y1, yn, (size_t)mm * N), "%s %s threads=%d m=%d differ",
                          ob_isa_name(kern->isa), fmt_name((ob_wfmt)f), nt, mm);
                }
            }
            ob_threadpool_destroy(p);
        }
        if (wk != w) free(wk);
        free(w); free(xq); free(y1); free(yn); free(x);
    }
    /* float GEMVs: identical for any thread count */
    {
        int KF = 777, NF = 130;
        float *wf = xmalloc((size_t)KF * NF * 4), *x = xmalloc((size_t)KF * 4), *sc = xmalloc((size_t)NF * 4), xa;
        uint16_t *wh = xmalloc((size_t)KF * NF * 2);
        int16_t *x16 = xmalloc((size_t)KF * 2);
        int8_t *wq = xmalloc((size_t)KF * NF);
        float *y1 = xmalloc((size_t)NF * 4 * 3), *yn = xmalloc((size_t)NF * 4 * 3);
        for (int i = 0; i < KF * NF; i++) {
            wf[i] = rndf();
            wh[i] = ob_f32_to_f16(rndf());
            wq[i] = rnd_i8();
        }
        for (int i = 0; i < KF; i++) x[i] = rndf();
        for (int i = 0; i < NF; i++) sc[i] = 0.01f;
        ob_quantize_i16(x, KF, x16, &xa);
        for (int nt = 1; nt <= 4; nt++) {
            ob_threadpool *p = ob_threadpool_create(nt);
            float *y = nt == 1 ? y1 : yn;
            ob_gemv_f32_mt(p, kern, wf, (size_t)KF, NF, KF, x, y);
            ob_gemv_f16_mt(p, kern, wh, (size_t)KF, NF, KF, x, y + NF);
            ob_gemv_q8_mt(p, kern, wq, sc, (size_t)KF, NF, KF, x16, xa, y + 2 * NF);
            if (nt > 1) CHECK(bits_eq(y1, yn, (size_t)NF * 3), "%s float gemv threads=%d differ", ob_isa_name(kern->isa), nt);
            ob_threadpool_destroy(p);
        }
        free(wf); free(x); free(sc); free(wh); free(wq); free(x16); free(y1); free(yn);
    }
    /* a matrix big enough to be cut guided at every thread count (ob_take_rows): the same bits */
    {
        int KB = 800, NB = 6000; /* 4.8 MB of int8 rows: over OB_CHUNK_BYTES a thread at 4 threads */
        int8_t *wq = xmalloc((size_t)KB * NB);
        float *x = xmalloc((size_t)KB * 4), *sc = xmalloc((size_t)NB * 4), *y1 = xmalloc((size_t)NB * 4),
              *yn = xmalloc((size_t)NB * 4), xa;
        int16_t *x16 = xmalloc((size_t)KB * 2);
        for (size_t i = 0; i < (size_t)KB * NB; i++) wq[i] = rnd_i8();
        for (int i = 0; i < KB; i++) x[i] = rndf();
        for (int i = 0; i < NB; i++) sc[i] = 0.01f + 0.001f * (float)(i % 7);
        ob_quantize_i16(x, KB, x16, &xa);
        for (int nt = 1; nt <= 4; nt++) {
            ob_threadpool *p = ob_threadpool_create(nt);
            for (int i = 0; i < NB; i++) yn[i] = NAN;
            ob_gemv_q8_mt(p, kern, wq, sc, (size_t)KB, NB, KB, x16, xa, nt == 1 ? y1 : yn);
            if (nt > 1) CHECK(bits_eq(y1, yn, (size_t)NB), "%s guided q8 gemv threads=%d differ", ob_isa_name(kern->isa), nt);
            ob_threadpool_destroy(p);
        }
        free(wq); free(x); free(sc); free(y1); free(yn); free(x16);
    }
}

typedef struct {
    int *hits;
} pool_ctx;
static void pool_task(void *ctx, int ith, int nth) {
    pool_ctx *c = (pool_ctx *)ctx;
    __atomic_add_fetch(&c->hits[ith], 1, __ATOMIC_SEQ_CST);
    (void)nth;
}
static void test_pool(void) {
    for (int nt = 1; nt <= 4; nt++) {
        ob_threadpool *p = ob_threadpool_create(nt);
        int hits[4] = {0, 0, 0, 0};
        pool_ctx c = {hits};
        for (int i = 0; i < 2000; i++) ob_threadpool_run(p, pool_task, &c);
        for (int i = 0; i < nt; i++) CHECK(hits[i] == 2000, "pool nt=%d thread %d ran %d", nt, i, hits[i]);
        ob_threadpool_destroy(p);
    }
    /* split covers [0, n) exactly once */
    for (int n = 0; n < 100; n += 7)
        for (int nth = 1; nth <= 5; nth++) {
            int prev = 0;
            for (int i = 0; i < nth; i++) {
                int r0, r1;
                ob_split_rows(n, i, nth, 16, &r0, &r1);
                CHECK(r0 == prev && r1 >= r0 && (r0 % 16 == 0 || r0 == n), "split n=%d", n);
                prev = r1;
            }
            CHECK(prev == n, "split end n=%d", n);
        }
}

/* ob_take_rows: the chunks of one dispatch cover [0, n) once; a matrix of under OB_CHUNK_BYTES a
 * thread is at most one chunk a thread, a bigger one is cut guided (each chunk at most a 1 / (2 nth)
 * share of the rows left, none shorter than OB_TAIL_BYTES but the last, never growing). */
typedef struct {
    int next, n;
    size_t rb;
    int *hits;
} take_ctx;
static void take_task(void *ctx, int ith, int nth) {
    take_ctx *c = (take_ctx *)ctx;
    int r0, r1;
    (void)ith;
    while (ob_take_rows(&c->next, c->n, c->rb, nth, &r0, &r1))
        for (int r = r0; r < r1; r++) __atomic_add_fetch(&c->hits[r], 1, __ATOMIC_RELAXED);
}
static void test_take_rows(void) {
    static const struct {
        int n;
        size_t rb;
    } cases[] = {{0, 64}, {1, 64}, {203, 250}, {768, 192}, {2048, 192}, {6912, 1280}, {128256, 2560}, {5000, 3000}, {100, 1 << 20}};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const int n = cases[ci].n;
        const size_t rb = cases[ci].rb, tail = (OB_TAIL_BYTES + rb - 1) / rb;
        for (int nth = 1; nth <= 4; nth++) {
            const int guided = nth > 1 && (size_t)n * rb / (size_t)nth >= OB_CHUNK_BYTES;
            int next = 0, r0, r1, prev = 0, count = 0, last = n;
            while (count <= n && ob_take_rows(&next, n, rb, nth, &r0, &r1)) {
                const int len = r1 - r0;
                CHECK(r0 == prev && len > 0 && r1 <= n && r0 % OB_ROW_ALIGN == 0,
                      "take_rows n=%d rb=%zu nth=%d: chunk [%d, %d) after %d", n, rb, nth, r0, r1, prev);
                if (guided && r1 < n) {
                    size_t share = ((size_t)(n - r0) + 2 * (size_t)nth - 1) / (2 * (size_t)nth);
                    CHECK((size_t)len >= tail && len <= last && (size_t)len < (share > tail ? share : tail) + OB_ROW_ALIGN,
                          "take_rows n=%d rb=%zu nth=%d: guided chunk of %d rows at %d (tail %zu, before %d)", n, rb,
                          nth, len, r0, tail, last);
                }
                last = len;
                prev = r1;
                count++;
            }
            CHECK(prev == n, "take_rows n=%d rb=%zu nth=%d: ended at %d", n, rb, nth, prev);
            if (!guided)
                CHECK(count <= nth, "take_rows n=%d rb=%zu nth=%d: %d chunks", n, rb, nth, count);
            else if (n >= 4 * nth * OB_ROW_ALIGN) /* fewer rows: the alignment bounds the count */
                CHECK(count > 2 * nth, "take_rows n=%d rb=%zu nth=%d: only %d guided chunks", n, rb, nth, count);
        }
    }
    /* the same through a pool, threads racing for the chunks: every row exactly once */
    int *hits = xmalloc(sizeof(int) * 128256);
    for (int nt = 1; nt <= 4; nt++) {
        ob_threadpool *p = ob_threadpool_create(nt);
        for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
            take_ctx c = {0, cases[ci].n, cases[ci].rb, hits};
            memset(hits, 0, sizeof(int) * 128256);
            ob_threadpool_run(p, take_task, &c);
            int bad = 0;
            for (int r = 0; r < c.n; r++) bad += hits[r] != 1;
            CHECK(bad == 0, "take_rows n=%d rb=%zu threads=%d: %d rows not taken exactly once", c.n, c.rb, nt, bad);
        }
        ob_threadpool_destroy(p);
    }
    free(hits);
}

/* ---------------------------------------------------------------- strides, K = 0 */
static void test_strides(const ob_kernels *kern) {
    for (int K = 0; K <= 5000; K++) {
        size_t st = ob_act_stride(K);
        size_t t2 = (size_t)(K + 127) / 128 * 128;
        int r = K % 160;
        size_t t16 = (size_t)(K / 160) * 160 + (size_t)((r + 4) / 5) * 5;
        CHECK(st >= t2 && st >= t16 && st % 64 == 0, "ob_act_stride(%d)", K);
        CHECK(ob_row_bytes(OB_WFMT_T2, K) == (size_t)(K + 127) / 128 * 32 &&
                  ob_row_bytes(OB_WFMT_B1, K) == (size_t)(K + 127) / 128 * 16 &&
                  ob_row_bytes(OB_WFMT_T16, K) == (size_t)(32 * (K / 160) + (r + 4) / 5),
              "ob_row_bytes(%d)", K);
    }
    /* K = 0: empty dot products give exactly 0 */
    int8_t xq[128];
    float a, y[3] = {1, 1, 1};
    int32_t s;
    float x0 = 0;
    kern->quantize(&x0, 0, xq, &a, &s);
    uint8_t w[1] = {0};
    for (int f = 0; f < OB_WFMT_COUNT; f++) {
        kern->matmul[f](w, 0, 1.0f, xq, sizeof xq, &a, &s, 1, 0, 3, y, 3);
        CHECK(y[0] == 0 && y[1] == 0 && y[2] == 0, "%s K=0", ob_isa_name(kern->isa));
    }
}

/* ---------------------------------------------------------------- f16, ISA selection */
static void test_f16(void) {
    for (uint32_t h = 0; h < 65536; h++) {
        float f = ob_f16_to_f32((uint16_t)h);
        uint16_t back = ob_f32_to_f16(f);
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) CHECK((back & 0x7c00) == 0x7c00 && (back & 0x3ff), "nan");
        else CHECK(back == h, "f16 roundtrip %04x -> %g -> %04x", h, f, back);
    }
    CHECK(ob_f16_to_f32(0x3c00) == 1.0f && ob_f16_to_f32(0x7bff) == 65504.0f, "f16 values");
    CHECK(ob_f32_to_f16(1.0f + 1.0f / 2048) == 0x3c00, "tie to even down");
    CHECK(ob_f32_to_f16(1.0f + 3.0f / 2048) == 0x3c02, "tie to even up");
    CHECK(ob_f32_to_f16(65520.0f) == 0x7c00 && ob_f32_to_f16(65519.0f) == 0x7bff, "overflow");
    CHECK(ob_f32_to_f16(ldexpf(1.0f, -24)) == 1 && ob_f32_to_f16(ldexpf(1.0f, -25)) == 0 &&
              ob_f32_to_f16(ldexpf(1.5f, -25)) == 1, "subnormal rounding");
    /* monotone rounding: f32 -> f16 -> f32 is the nearest half */
    for (int i = 0; i < 100000; i++) {
        float f = rndf() * (rnd() & 1 ? 70000.0f : 1e-4f);
        float g = ob_f16_to_f32(ob_f32_to_f16(f));
        if (fabsf(f) < 65504.0f) {
            uint16_t h = ob_f32_to_f16(f);
            float up = ob_f16_to_f32((uint16_t)(h + 1)), dn = ob_f16_to_f32((uint16_t)(h - 1));
            if ((h & 0x7fff) != 0 && (h & 0x7fff) < 0x7bff)
                CHECK(fabsf(g - f) <= fabsf(up - f) && fabsf(g - f) <= fabsf(dn - f), "nearest %g", f);
        }
    }
}

static void test_isa_select(void) {
    ob_isa isa;
    CHECK(setenv("ONEBIT_ISA", "bogus", 1) == 0, "setenv");
    CHECK(ob_isa_from_env(&isa) == OB_ISA_EUNKNOWN, "bogus isa");
    setenv("ONEBIT_ISA", "scalar", 1);
    CHECK(ob_isa_from_env(&isa) == OB_ISA_OK && isa == OB_ISA_SCALAR, "scalar isa");
    for (int i = 0; i < OB_ISA_COUNT; i++) {
        setenv("ONEBIT_ISA", ob_isa_name((ob_isa)i), 1);
        int rc = ob_isa_from_env(&isa);
        if (ob_isa_supported((ob_isa)i)) CHECK(rc == OB_ISA_OK && isa == (ob_isa)i, "isa %d", i);
        else CHECK(rc == OB_ISA_EUNSUPPORTED, "unsupported isa %d", i);
        ob_kernels k;
        CHECK(ob_kernels_init(&k, (ob_isa)i) == (ob_isa_supported((ob_isa)i) ? 0 : OB_ISA_EUNSUPPORTED), "init %d", i);
    }
    unsetenv("ONEBIT_ISA");
    CHECK(ob_isa_from_env(&isa) == OB_ISA_OK && isa == ob_isa_detect(), "unset isa");
    CHECK(ob_isa_supported(ob_isa_detect()), "detected isa supported");
}

/* f16 <-> f32 rows (the KV-cache): the bits of the scalar conversions, every value for f16 -> f32
 * and random bit patterns (every class) for f32 -> f16, lengths covering every tail; a NaN only
 * has to stay a NaN (hardware quiets signalling NaNs, the scalar code keeps them). */
static int f32_is_nan(uint32_t b) { return (b & 0x7f800000u) == 0x7f800000u && (b & 0x7fffffu); }
static int f16_is_nan(uint16_t b) { return (b & 0x7c00u) == 0x7c00u && (b & 0x3ffu); }
static void test_isa_f16conv(const ob_kernels *kern) {
    enum { N = 65536 };
    uint16_t *h = xmalloc(N * 2), *hr = xmalloc(N * 2), *hs = xmalloc(N * 2);
    float *f = xmalloc(N * 4), *fr = xmalloc(N * 4), *fs = xmalloc(N * 4);
    for (int i = 0; i < N; i++) h[i] = (uint16_t)i;
    ob_row_f16_to_f32(h, N, fr);
    kern->f16_to_f32(h, N, fs);
    int bad = 0;
    for (int i = 0; i < N; i++) {
        uint32_t a, b;
        memcpy(&a, fr + i, 4);
        memcpy(&b, fs + i, 4);
        if (a != b && !(f32_is_nan(a) && f32_is_nan(b))) bad++;
    }
    CHECK(bad == 0, "%s f16_to_f32: %d of 65536 values differ", ob_isa_name(kern->isa), bad);
    for (int i = 0; i < N; i++) {
        uint32_t b = (uint32_t)rnd();
        if (i % 4 == 1) b = (b & 0x8000ffffu) | ((uint32_t)rndi(100, 145) << 23); /* around the f16 range */
        if (i % 4 == 2) b = (b & 0x803fffffu) | 0x38000000u;                      /* subnormal f16 results */
        memcpy(f + i, &b, 4);
    }
    ob_row_f32_to_f16(f, N, hr);
    kern->f32_to_f16(f, N, hs);
    bad = 0;
    for (int i = 0; i < N; i++)
        if (hr[i] != hs[i] && !(f16_is_nan(hr[i]) && f16_is_nan(hs[i]))) bad++;
    CHECK(bad == 0, "%s f32_to_f16: %d of 65536 values differ", ob_isa_name(kern->isa), bad);
    for (int n = 0; n <= 40; n++) { /* tails: nothing written past n */
        memset(hs, 0xab, 100);
        kern->f32_to_f16(f, n, hs);
        CHECK(((uint8_t *)hs)[2 * n] == 0xab, "%s f32_to_f16 n=%d wrote past the end", ob_isa_name(kern->isa), n);
        memset(fs, 0xab, 200);
        kern->f16_to_f32(h + 1000, n, fs);
        CHECK(((uint8_t *)fs)[4 * n] == 0xab, "%s f16_to_f32 n=%d wrote past the end", ob_isa_name(kern->isa), n);
        for (int i = 0; i < n; i++) CHECK(fs[i] == fr[1000 + i], "%s f16_to_f32 n=%d value %d", ob_isa_name(kern->isa), n, i);
    }
    free(h); free(hr); free(hs); free(f); free(fr); free(fs);
}

/* The fused scores / mix of kern (those it has) against the per-head, per-row references, for G query
 * heads on n rows of hd values; scores and probabilities ld apart.  o0 / o1: cap bytes of room each.
 * Returns the mismatches (+ 1 element: nothing written past the end, nor between rows). */
static int attn_mismatches(const ob_kernels *kern, const float *q, int G, const float *rows, const uint16_t *rows16,
                           const float *p, int hd, int n, size_t ld, float sc, float *o0, float *o1, size_t cap) {
    int bad = 0;
    for (int kind = 0; kind < 4; kind++) {
        memset(o0, 0x7f, cap);
        memset(o1, 0x7f, cap);
        size_t len = kind < 2 ? (size_t)G * ld : (size_t)G * hd;
        if (kind == 0 && kern->scores_f32) {
            for (int g = 0; g < G; g++) ob_scores_f32_ref(q + g * hd, 1, rows, hd, n, sc, o0 + g * ld, 0);
            kern->scores_f32(q, G, rows, hd, n, sc, o1, ld);
        } else if (kind == 1 && kern->scores_f16) {
            for (int g = 0; g < G; g++) ob_scores_f16_ref(q + g * hd, 1, rows16, hd, n, sc, o0 + g * ld, 0);
            kern->scores_f16(q, G, rows16, hd, n, sc, o1, ld);
        } else if (kind == 2 && kern->mix_f32) {
            for (int g = 0; g < G; g++) ob_mix_f32_ref(o0 + g * hd, 1, p + g * ld, 0, rows, hd, n);
            kern->mix_f32(o1, G, p, ld, rows, hd, n);
        } else if (kind == 3 && kern->mix_f16) {
            for (int g = 0; g < G; g++) ob_mix_f16_ref(o0 + g * hd, 1, p + g * ld, 0, rows16, hd, n);
            kern->mix_f16(o1, G, p, ld, rows16, hd, n);
        }
        bad += !bits_eq(o0, o1, len + 1);
    }
    return bad;
}

/* Attention dot / axpy: the bits of the references (a fixed order, no FMA) for every length
 * 0..300, f32 and f16 rows; and the reference equals the plain 8-partial-sum loop. */
static void test_isa_attn(const ob_kernels *kern) {
    enum { N = 300 };
    float a[N], b[N], y0[N], y1[N];
    uint16_t h[N];
    int bad = 0;
    for (int n = 0; n <= N; n += (n < 40 ? 1 : 13)) {
        for (int i = 0; i < n; i++) {
            a[i] = rndf() * 3.0f;
            b[i] = rndf() * 3.0f;
            h[i] = ob_f32_to_f16(rndf() * 3.0f);
        }
        float plain[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int i = 0; i < n; i++) plain[i & 7] += a[i] * b[i];
        float want = ((plain[0] + plain[4]) + (plain[1] + plain[5])) + ((plain[2] + plain[6]) + (plain[3] + plain[7]));
        float r32 = ob_dot_f32_ref(a, b, n), s32 = kern->dot_f32(a, b, n);
        float r16 = ob_dot_f16_ref(a, h, n), s16 = kern->dot_f16(a, h, n);
        bad += !bits_eq(&r32, &want, 1) + !bits_eq(&r32, &s32, 1) + !bits_eq(&r16, &s16, 1);
        float c = rndf();
        for (int kind = 0; kind < 2; kind++) {
            for (int i = 0; i < n; i++) y0[i] = y1[i] = rndf();
            if (kind == 0) {
                ob_axpy_f32_ref(y0, c, b, n);
                kern->axpy_f32(y1, c, b, n);
            } else {
                ob_axpy_f16_ref(y0, c, h, n);
                kern->axpy_f16(y1, c, h, n);
            }
            bad += !bits_eq(y0, y1, (size_t)n);
        }
    }
    CHECK(bad == 0, "%s attention dot/axpy: %d mismatches", ob_isa_name(kern->isa), bad);
    /* the fused scores / mix (where an ISA has them): the bits of the per-head, per-row references,
     * for head sizes with and without the 8-multiple fast path, row counts around the row blocks, and
     * 1-9 query heads on one KV head (every mix of the 4 / 2 / 1 head blocks), their scores and
     * probabilities LD apart */
    enum { R = 21, H = 136, GM = 9, LD = R + 3 };
    static float rows[R * H], q[GM * H], p[GM * LD], o0[GM * LD + GM * H + 1], o1[GM * LD + GM * H + 1];
    static uint16_t rows16[R * H];
    static const int gs[] = {1, 2, 3, 4, 5, 7, 8, 9};
    bad = 0;
    for (int hd = 1; hd <= H; hd += (hd < 24 ? 1 : 8)) {
        for (int n = 0; n <= R; n++) {
            const int G = gs[(hd + n) % 8];
            for (int i = 0; i < n * hd; i++) {
                rows[i] = rndf() * 3.0f;
                rows16[i] = ob_f32_to_f16(rndf() * 3.0f);
            }
            for (int i = 0; i < G * hd; i++) q[i] = rndf();
            for (int i = 0; i < G * LD; i++) p[i] = rndf();
            float sc = 0.125f + rndf() * 0.01f;
            bad += attn_mismatches(kern, q, G, rows, rows16, p, hd, n, LD, sc, o0, o1, sizeof o0);
        }
    }
    CHECK(bad == 0, "%s attention scores/mix: %d mismatches", ob_isa_name(kern->isa), bad);
    /* long caches, which the kernels may cut into tiles of rows (AVX2: 4 KB): a few head sizes, row
     * counts around tile multiples, 1-5 query heads */
    enum { RL = 300, HL = 128 };
    static float lrows[RL * HL], lo0[5 * HL + 5 * RL + 1], lo1[5 * HL + 5 * RL + 1], lp[5 * RL];
    static uint16_t lrows16[RL * HL];
    static const int lhd[] = {8, 64, 72, 128}, ln[] = {31, 32, 33, 64, 65, 257, RL};
    bad = 0;
    for (int a = 0; a < 4; a++)
        for (int b = 0; b < 7; b++) {
            const int hd = lhd[a], n = ln[b], G = 1 + (a + b) % 5;
            for (int i = 0; i < n * hd; i++) {
                lrows[i] = rndf() * 3.0f;
                lrows16[i] = ob_f32_to_f16(rndf() * 3.0f);
            }
            for (int i = 0; i < G * hd; i++) q[i] = rndf();
            for (int i = 0; i < G * n; i++) lp[i] = rndf();
            bad += attn_mismatches(kern, q, G, lrows, lrows16, lp, hd, n, (size_t)n, 0.125f, lo0, lo1, sizeof lo0);
        }
    CHECK(bad == 0, "%s attention scores/mix over long caches: %d mismatches", ob_isa_name(kern->isa), bad);
}

/* ---------------------------------------------------------------- int4 / int8 rows (mixed models) */
typedef void (*mm_rs_fn)(const uint8_t *, int, const float *, const int8_t *, size_t, const float *,
                         const int32_t *, int, int, int, float *, size_t);
static mm_rs_fn rs_ref_fn(ob_ifmt f) { return f == OB_IFMT_I4 ? ob_matmul_i4_ref : ob_matmul_i8_ref; }
static const char *ifmt_name(ob_ifmt f) { return f == OB_IFMT_I4 ? "I4" : "I8"; }

/* Weight k of a stored row, straight from FORMAT.md (nibble - 8, or the signed byte). */
static int dumb_iweight(ob_ifmt f, const uint8_t *row, int k) {
    if (f == OB_IFMT_I8) return (int8_t)row[k];
    int v = row[(k / 64) * 32 + k % 32];
    return ((k % 64) < 32 ? (v & 15) : (v >> 4)) - 8;
}

/* valid: codes as the exporter writes them (int4 [-7, 7], int8 [-127, 127]); else raw random bytes
 * (nibble 0 = -8, int8 -128, arbitrary I4 padding nibbles). */
static void fill_iweights(ob_ifmt f, uint8_t *w, int K, int N, int valid) {
    size_t rb = ob_irow_bytes(f, K);
    if (!valid) {
        for (size_t i = 0; i < (size_t)N * rb; i++) w[i] = (uint8_t)rnd();
        return;
    }
    int8_t *q = xmalloc((size_t)K);
    for (int r = 0; r < N; r++) {
        for (int k = 0; k < K; k++) q[k] = (int8_t)(f == OB_IFMT_I4 ? rndi(-7, 7) : rndi(-127, 127));
        if (f == OB_IFMT_I4) CHECK(ob_pack_row_i4_ref(q, K, w + (size_t)r * rb) == 0, "pack i4");
        else memcpy(w + (size_t)r * rb, q, (size_t)K);
    }
    free(q);
}

static void test_rs_ref_vs_dumb(void) {
    int8_t q[64 + 7];
    uint8_t row[64];
    for (int k = 0; k < 71; k++) q[k] = (int8_t)rndi(-8, 7);
    CHECK(ob_pack_row_i4_ref(q, 71, row) == 0, "pack i4 71");
    for (int k = 0; k < 71; k++) CHECK(dumb_iweight(OB_IFMT_I4, row, k) == q[k], "i4 pack/decode k=%d", k);
    for (int k = 71; k < 128; k++) CHECK(dumb_iweight(OB_IFMT_I4, row, k) == 0, "i4 padding k=%d", k);
    q[3] = 8;
    CHECK(ob_pack_row_i4_ref(q, 71, row) == -1, "pack i4 rejects 8");
    for (int f = 0; f < OB_IFMT_COUNT; f++)
        for (int ki = 0; ki < NKS; ki++)
            for (int valid = 0; valid < 2; valid++) {
                int K = KS[ki], N = rndi(1, 9), m = rndi(1, 4);
                size_t rb = ob_irow_bytes((ob_ifmt)f, K), st = ob_act_stride(K);
                uint8_t *w = xmalloc((size_t)N * rb);
                int8_t *xq = xmalloc((size_t)m * st);
                float a[4], sc[9], y[4 * 9];
                int32_t xs[4];
                fill_iweights((ob_ifmt)f, w, K, N, valid);
                fill_acts(xq, st, K, m, a, xs);
                for (int r = 0; r < N; r++) sc[r] = 0.001f + (float)(rnd() % 1000) * 1e-4f;
                rs_ref_fn((ob_ifmt)f)(w, K, sc, xq, st, a, xs, m, 0, N, y, 9);
                for (int t = 0; t < m; t++)
                    for (int r = 0; r < N; r++) {
                        int32_t acc = 0;
                        for (int k = 0; k < K; k++) acc += dumb_iweight((ob_ifmt)f, w + r * rb, k) * xq[t * st + k];
                        float want = (float)acc * (sc[r] / a[t]);
                        CHECK(bits_eq(&y[t * 9 + r], &want, 1), "%s K=%d valid=%d ref vs dumb: t=%d r=%d %.9g vs %.9g",
                              ifmt_name((ob_ifmt)f), K, valid, t, r, y[t * 9 + r], want);
                    }
                free(w);
                free(xq);
            }
}

/* Every ISA's int4 / int8 matmul against the reference: full range, random row ranges (rows
 * outside untouched), 1..9 tokens, exporter codes and raw bytes, extreme values, 1..4 threads.
 * Weight buffers are exactly N rows long, so ASan sees any read past an unpadded I8 row. */
static void test_isa_rs(const ob_kernels *kern) {
    const int MMAX = 9;
    for (int f = 0; f < OB_IFMT_COUNT; f++)
        for (int ki = 0; ki < NKS; ki++) {
            int K = KS[ki], N = rndi(1, 40);
            size_t rb = ob_irow_bytes((ob_ifmt)f, K), st = ob_act_stride(K) + (size_t)rndi(0, 3) * 64;
            uint8_t *w = xmalloc((size_t)N * rb);
            int8_t *xq = xmalloc((size_t)MMAX * st);
            float a[9], *sc = xmalloc((size_t)N * 4);
            int32_t xs[9];
            float *yr = xmalloc((size_t)MMAX * N * 4), *ys = xmalloc((size_t)MMAX * N * 4);
            for (int valid = 0; valid < 2; valid++) {
                fill_iweights((ob_ifmt)f, w, K, N, valid);
                fill_acts(xq, st, K, MMAX, a, xs);
                for (int r = 0; r < N; r++) sc[r] = 0.001f + (float)(rnd() % 1000) * 1e-4f;
                for (int m = 1; m <= MMAX; m++) {
                    rs_ref_fn((ob_ifmt)f)(w, K, sc, xq, st, a, xs, m, 0, N, yr, (size_t)N);
                    for (int i = 0; i < m * N; i++) ys[i] = NAN;
                    kern->matmul_rs[f](w, K, sc, xq, st, a, xs, m, 0, N, ys, (size_t)N);
                    CHECK(bits_eq(yr, ys, (size_t)m * N), "%s %s K=%d N=%d m=%d valid=%d: full range differs",
                          ob_isa_name(kern->isa), ifmt_name((ob_ifmt)f), K, N, m, valid);
                    int r0 = rndi(0, N - 1), r1 = rndi(r0, N), ok = 1;
                    for (int i = 0; i < m * N; i++) ys[i] = -7.0f;
                    kern->matmul_rs[f](w, K, sc, xq, st, a, xs, m, r0, r1, ys, (size_t)N);
                    for (int t = 0; t < m; t++)
                        for (int r = 0; r < N; r++) {
                            float e = (r >= r0 && r < r1) ? yr[t * N + r] : -7.0f;
                            if (!bits_eq(&e, &ys[t * N + r], 1)) ok = 0;
                        }
                    CHECK(ok, "%s %s K=%d N=%d m=%d rows [%d,%d) differ", ob_isa_name(kern->isa),
                          ifmt_name((ob_ifmt)f), K, N, m, r0, r1);
                }
            }
            free(w); free(xq); free(sc); free(yr); free(ys);
        }
    /* extremes: every weight at its most negative / most positive code, activations -128 or 127:
     * catches 16-bit saturation and 32-bit lane overflow; 9 rows, so that the one-token GEMVs' row
     * segments run as well as their leftover rows */
    const int Ks[] = {64, 4096, 16384 + 33};
    for (int ki = 0; ki < 3; ki++)
        for (int f = 0; f < OB_IFMT_COUNT; f++)
            for (int pat = 0; pat < 8; pat++) {
                int K = Ks[ki], N = 9, m = pat < 4 ? 2 : 1;
                size_t rb = ob_irow_bytes((ob_ifmt)f, K), st = ob_act_stride(K);
                uint8_t *w = xmalloc((size_t)N * rb);
                int8_t *xq = xmalloc((size_t)m * st);
                float a[2] = {1.0f, 3.0f}, sc[9] = {0.5f, 0.25f, 2.0f, 1.0f, 0.125f, 4.0f, 0.75f, 1.5f, 3.0f}, yr[18], ys[18];
                int32_t xs[2];
                uint8_t lo = f == OB_IFMT_I4 ? 0x00 : 0x80, hi = f == OB_IFMT_I4 ? 0xff : 0x7f;
                for (int r = 0; r < N; r++) memset(w + r * rb, (pat & 1) ? hi : (r == 1 ? hi : lo), rb);
                for (int t = 0; t < m; t++) {
                    int32_t s = 0;
                    for (size_t k = 0; k < st; k++) {
                        int8_t v = k < (size_t)K ? (int8_t)((pat & 2) ? -128 : 127) : 0;
                        if ((t & 1) && k < (size_t)K && (k & 1)) v = (int8_t)-v - (v > 0);
                        xq[t * st + k] = v;
                        s += v;
                    }
                    xs[t] = s;
                }
                rs_ref_fn((ob_ifmt)f)(w, K, sc, xq, st, a, xs, m, 0, N, yr, (size_t)N);
                kern->matmul_rs[f](w, K, sc, xq, st, a, xs, m, 0, N, ys, (size_t)N);
                CHECK(bits_eq(yr, ys, (size_t)m * N), "%s %s extremes K=%d pat=%d m=%d", ob_isa_name(kern->isa),
                      ifmt_name((ob_ifmt)f), K, pat, m);
                free(w);
                free(xq);
            }
    /* threads */
    for (int f = 0; f < OB_IFMT_COUNT; f++) {
        int K = 1000, N = 203, m = 5;
        size_t rb = ob_irow_bytes((ob_ifmt)f, K), st = ob_act_stride(K);
        uint8_t *w = xmalloc((size_t)N * rb);
        int8_t *xq = xmalloc((size_t)m * st);
        float a[5], *sc = xmalloc((size_t)N * 4), *y1 = xmalloc((size_t)m * N * 4), *yn = xmalloc((size_t)m * N * 4);
        int32_t xs[5];
        fill_iweights((ob_ifmt)f, w, K, N, 1);
        fill_acts(xq, st, K, m, a, xs);
        for (int r = 0; r < N; r++) sc[r] = 0.01f + (float)r * 1e-4f;
        kern->matmul_rs[f](w, K, sc, xq, st, a, xs, m, 0, N, y1, (size_t)N);
        for (int nt = 1; nt <= 4; nt++) {
            ob_threadpool *p = ob_threadpool_create(nt);
            for (int mm = 1; mm <= m; mm += 4) {
                for (int i = 0; i < m * N; i++) yn[i] = NAN;
                ob_matmul_rs_mt(p, kern, (ob_ifmt)f, w, N, K, sc, xq, st, a, xs, mm, yn, (size_t)N);
                CHECK(bits_eq(y1, yn, (size_t)mm * N), "%s %s threads=%d m=%d differ", ob_isa_name(kern->isa),
                      ifmt_name((ob_ifmt)f), nt, mm);
            }
            ob_threadpool_destroy(p);
        }
        free(w); free(xq); free(sc); free(y1); free(yn);
    }
    /* row sizes; K = 0 gives exactly 0 */
    for (int K = 0; K <= 3000; K++) {
        CHECK(ob_irow_bytes(OB_IFMT_I4, K) == (size_t)(K + 63) / 64 * 32 && ob_irow_bytes(OB_IFMT_I8, K) == (size_t)K,
              "ob_irow_bytes(%d)", K);
        CHECK(ob_act_stride(K) >= (size_t)(K + 63) / 64 * 64, "ob_act_stride(%d) < I4 padding", K);
    }
    int8_t xq0[128] = {0};
    float a0 = 1.0f, sc0[3] = {1, 1, 1}, y0[3] = {1, 1, 1};
    int32_t s0 = 0;
    uint8_t w0[1] = {0};
    for (int f = 0; f < OB_IFMT_COUNT; f++) {
        kern->matmul_rs[f](w0, 0, sc0, xq0, sizeof xq0, &a0, &s0, 1, 0, 3, y0, 3);
        CHECK(y0[0] == 0 && y0[1] == 0 && y0[2] == 0, "%s %s K=0", ob_isa_name(kern->isa), ifmt_name((ob_ifmt)f));
    }
}

/* ob_expf against exp in double: within 2 ulp on [OB_EXP_LO, OB_EXP_HI] (a sweep plus random
 * points), clamped outside, normal and finite everywhere, a NaN taking the upper bound. */
static void test_expf_ref(void) {
    double worst = 0.0;
    int bad = 0;
    for (int i = 0; i <= 400000; i++) {
        float x = i < 200001 ? OB_EXP_LO + (OB_EXP_HI - OB_EXP_LO) * (float)i / 200000.0f : rndf() * 20.0f;
        if (x < OB_EXP_LO) x = OB_EXP_LO;
        if (x > OB_EXP_HI) x = OB_EXP_HI;
        double want = exp((double)x);
        float got = ob_expf(x);
        double ulp = ldexp(1.0, ilogb(want) - 23); /* one unit in the last place of a float near want */
        double err = fabs((double)got - want) / ulp;
        if (err > worst) worst = err;
        if (!(err <= 2.0)) bad++;
    }
    CHECK(bad == 0, "ob_expf: %d points over 2 ulp (worst %.2f)", bad, worst);
    float lo = ob_expf(OB_EXP_LO), hi = ob_expf(OB_EXP_HI);
    CHECK(ob_expf(-1000.0f) == lo && ob_expf(-INFINITY) == lo && lo >= 1.17549435e-38f && lo < 1.2e-38f,
          "ob_expf below the range: %g", (double)lo);
    CHECK(ob_expf(1000.0f) == hi && ob_expf(INFINITY) == hi && isfinite(hi) && hi > 1.7e38f, "ob_expf above: %g",
          (double)hi);
    CHECK(ob_expf(NAN) == hi, "ob_expf(NaN) takes the upper bound");
    CHECK(ob_expf(0.0f) == 1.0f && ob_expf(-0.0f) == 1.0f, "ob_expf(0) = 1");
    float x = 0.75f, g[3] = {x, -x, 0.0f}, up[3] = {2.0f, 2.0f, 2.0f};
    ob_silu_ref(g, up, 3);
    CHECK(fabs(g[0] - 2.0 * 0.75 / (1.0 + exp(-0.75))) < 1e-6 && fabs(g[1] + 2.0 * 0.75 / (1.0 + exp(0.75))) < 1e-6 &&
              g[2] == 0.0f,
          "silu ref: %g %g %g", (double)g[0], (double)g[1], (double)g[2]);
}

/* relu2 and rmsnorm references against kernels.h's formulas written out */
static void test_elementwise_ref(void) {
    float g[6] = {2.0f, -3.0f, -0.0f, NAN, 0.5f, INFINITY}, up[6] = {1.5f, 2.0f, 3.0f, 4.0f, -2.0f, 1.0f};
    ob_relu2_ref(g, up, 6);
    CHECK(g[0] == 6.0f && g[1] == 0.0f && !signbit(g[1]) && g[2] == 0.0f && !signbit(g[2]) && g[3] == 0.0f &&
              g[4] == -0.5f && isinf(g[5]),
          "relu2 ref: %g %g %g %g %g %g", (double)g[0], (double)g[1], (double)g[2], (double)g[3], (double)g[4], (double)g[5]);
    float x[7], w[7], y[7];
    double ss = 0.0;
    for (int i = 0; i < 7; i++) {
        x[i] = 0.25f * (float)(i - 3) + 0.1f;
        w[i] = 1.0f + 0.125f * (float)i;
        ss += (double)x[i] * (double)x[i];
    }
    ob_rmsnorm_ref(x, w, 7, 1e-5f, y);
    float r = 1.0f / sqrtf((float)(ss / 7) + 1e-5f);
    int bad = 0;
    for (int i = 0; i < 7; i++) bad += fabsf(y[i] - x[i] * r * w[i]) > 1e-6f * fabsf(x[i] * r * w[i]) + 1e-12f;
    CHECK(bad == 0, "rmsnorm ref: %d values off the formula", bad);
}

/* exp_shift, silu and softmax of every ISA: the scalar references' bits, on random values of every scale,
 * the clamp edges and special values, n from 0 to 70 (every vector tail), with and without up. */
static void test_isa_exp(const ob_kernels *kern) {
    static const float special[] = {0.0f, -0.0f, 1.0f, -1.0f, OB_EXP_LO, OB_EXP_HI, -87.4f, 88.1f, 1e-40f, -1e-40f,
                                    1e30f, -1e30f, INFINITY, -INFINITY, NAN, 0.5f, -0.5f, 0.34657359f, -0.34657359f};
    const int ns = (int)(sizeof special / sizeof special[0]);
    float a[80], b[80], up[80], m[3] = {0.0f, 3.5f, -2.0f};
    int bad = 0;
    for (int rep = 0; rep < 400; rep++) {
        int n = rep % 71;
        for (int i = 0; i < n; i++) {
            float scale = (float)ldexp(1.0, rndi(-10, 7));
            a[i] = (rep & 3) == 0 ? special[rndi(0, ns - 1)] : rndf() * scale;
            up[i] = rndf() * 4.0f;
        }
        memcpy(b, a, sizeof a);
        float mm = m[rep % 3];
        ob_exp_shift_ref(a, n, mm);
        kern->exp_shift(b, n, mm);
        if (memcmp(a, b, sizeof(float) * (size_t)n) != 0) bad++;
        for (int i = 0; i < n; i++) b[i] = a[i] = (rep & 3) == 1 ? special[rndi(0, ns - 1)] : rndf() * 30.0f;
        const float *u = (rep & 1) ? up : NULL;
        ob_silu_ref(a, u, (size_t)n);
        kern->silu(b, u, (size_t)n);
        for (int i = 0; i < n; i++)
            if (memcmp(&a[i], &b[i], 4) != 0 && !(isnan(a[i]) && isnan(b[i]))) bad++;
        /* softmax: attention scores of every scale, a special value now and then (the max of the
         * vector lanes and of the tail, NaN skipped by both), the sum in order */
        for (int i = 0; i < n; i++)
            b[i] = a[i] = (rep & 7) == 2 ? special[rndi(0, ns - 1)] : rndf() * (float)ldexp(1.0, rndi(-4, 6));
        ob_softmax_ref(a, 0, &n, 1);
        kern->softmax(b, 0, &n, 1);
        for (int i = 0; i < n; i++)
            if (memcmp(&a[i], &b[i], 4) != 0 && !(isnan(a[i]) && isnan(b[i]))) bad++;
    }
    CHECK(bad == 0, "%s exp_shift / silu / softmax: %d mismatches with the references", ob_isa_name(kern->isa), bad);
    /* softmax of 1..11 rows at once (the kernel may sum several side by side), each row its own
     * length, 0 included, against the reference row by row */
    bad = 0;
    for (int rep = 0; rep < 200; rep++) {
        enum { LD = 75 };
        static float ra[11 * LD], rb[11 * LD];
        int rows = rndi(1, 11), len[11];
        for (int r = 0; r < rows; r++) {
            len[r] = rep % 5 == 0 ? rndi(0, 3) : rndi(0, LD - 1);
            for (int i = 0; i < LD; i++)
                rb[r * LD + i] = ra[r * LD + i] =
                    (rep & 7) == 2 ? special[rndi(0, ns - 1)] : rndf() * (float)ldexp(1.0, rndi(-4, 6));
        }
        for (int r = 0; r < rows; r++) ob_softmax_ref(ra + r * LD, 0, &len[r], 1);
        kern->softmax(rb, LD, len, rows);
        for (int i = 0; i < rows * LD; i++)
            if (memcmp(&ra[i], &rb[i], 4) != 0 && !(isnan(ra[i]) && isnan(rb[i]))) bad++;
    }
    CHECK(bad == 0, "%s softmax of several rows: %d mismatches with the reference", ob_isa_name(kern->isa), bad);
    /* relu2 and rmsnorm: the same inputs and tails; rmsnorm also in place (y = x) */
    bad = 0;
    for (int rep = 0; rep < 400; rep++) {
        int n = rep % 71;
        for (int i = 0; i < n; i++) {
            a[i] = (rep & 3) == 0 ? special[rndi(0, ns - 1)] : rndf() * (float)ldexp(1.0, rndi(-10, 7));
            up[i] = rndf() * 4.0f;
        }
        memcpy(b, a, sizeof a);
        const float *u = (rep & 1) ? up : NULL;
        ob_relu2_ref(a, u, (size_t)n);
        kern->relu2(b, u, (size_t)n);
        for (int i = 0; i < n; i++) bad += memcmp(&a[i], &b[i], 4) != 0 && !(isnan(a[i]) && isnan(b[i]));
        float x[80], y0[80], y1[80], eps = (rep & 2) ? 1e-5f : 1e-6f;
        for (int i = 0; i < n; i++) x[i] = (rep & 3) == 1 ? special[rndi(0, ns - 1)] : rndf() * 5.0f;
        ob_rmsnorm_ref(x, up, n, eps, y0);
        kern->rmsnorm(x, up, n, eps, y1);
        kern->rmsnorm(x, up, n, eps, x);
        for (int i = 0; i < n; i++)
            bad += (memcmp(&y0[i], &y1[i], 4) != 0 || memcmp(&y0[i], &x[i], 4) != 0) && !(isnan(y0[i]) && isnan(y1[i]) && isnan(x[i]));
    }
    CHECK(bad == 0, "%s relu2 / rmsnorm: %d mismatches with the references", ob_isa_name(kern->isa), bad);
}

int main(void) {
    printf("test_kernels: detected ISA %s\n", ob_isa_name(ob_isa_detect()));
    test_f16();
    test_isa_select();
    test_pool();
    test_take_rows();
    test_ref_vs_dumb();
    test_t16_repack();
    test_rs_ref_vs_dumb();
    test_q8_ref();
    test_expf_ref();
    test_elementwise_ref();
    char ran[128] = "";
    for (int i = 0; i < OB_ISA_COUNT; i++) {
        if (!ob_isa_supported((ob_isa)i)) {
            printf("  isa %-6s: not supported here, skipped\n", ob_isa_name((ob_isa)i));
            continue;
        }
        ob_kernels k;
        ob_kernels_init(&k, (ob_isa)i);
        int before = g_fail;
        test_isa_quantize(&k);
        test_isa_matmul(&k);
        test_isa_extremes(&k);
        test_isa_many_tokens(&k);
        test_isa_gemv_streams(&k);
        test_isa_t16_to_t2(&k);
        test_isa_float(&k);
        test_isa_q8(&k);
        test_isa_f16_gemv_edges(&k);
        test_isa_f16conv(&k);
        test_isa_attn(&k);
        test_isa_exp(&k);
        test_threads(&k);
        test_strides(&k);
        test_isa_rs(&k);
        printf("  isa %-6s: %s\n", ob_isa_name((ob_isa)i), g_fail == before ? "ok" : "FAILED");
        strcat(ran, " ");
        strcat(ran, ob_isa_name((ob_isa)i));
    }
    printf("test_kernels: ISAs tested:%s; %d checks, %d failures\n", ran, g_checks, g_fail);
    return g_fail ? 1 : 0;
}
