/* kernels_impl.h - what the kernel files share (internal; see kernels.h for the contract and for
 * how to add an ISA).  Included by kernels_ref.c, kernels_dispatch.c and every kernels_<isa>.c. */
#ifndef ONEBIT_KERNELS_IMPL_H
#define ONEBIT_KERNELS_IMPL_H

#include "kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#define OB_HAVE_X86 1
#endif
#if defined(__aarch64__) || (defined(__arm__) && defined(__ARM_NEON))
#define OB_HAVE_NEON 1
#endif
#if defined(__ARM_FEATURE_MVE)
#define OB_HAVE_MVE 1
#endif
#if defined(__wasm_simd128__)
#define OB_HAVE_SIMD128 1
#endif
#if defined(__ARM_FEATURE_DSP) && defined(__ARM_ARCH_PROFILE) && __ARM_ARCH_PROFILE == 'M'
#define OB_HAVE_DSP 1
#endif

#define OB_CVT_F32(v) (v)
#define OB_CVT_F16(v) ob_f16_to_f32(v)
#define OB_INL static inline __attribute__((always_inline))

/* One activation to int8, as every quantizer's scalar steps do it: round half to even, clamp to
 * [-128, 127], NaN to 0.  Casting a NaN to an integer is undefined in C; the SIMD paths give 0
 * for it too (x86 zeroes NaN lanes before the clamp; NEON and wasm convert a NaN to 0). */
static inline int8_t ob_q8_round(float v) {
    v = nearbyintf(v);
    if (v > 127.0f) v = 127.0f;
    if (v < -128.0f) v = -128.0f;
    if (v != v) v = 0.0f;
    return (int8_t)v;
}

/* exp(x) in f32 for the activations and the softmax, the same bits on every ISA and with every libm
 * (glibc, newlib and wasi-libc each round their expf their own way).  Cody-Waite reduction,
 * x = n ln2 + r with n = floor(x log2e + 1/2) and ln2 split so that n * OB_EXP_C1 is exact, then
 * the degree-5 minimax polynomial of Cephes' expf (S. L. Moshier) for exp(r) on |r| <= ln2 / 2, and
 * the power of two built in the exponent bits.  Every operation is a separate statement, so no
 * compiler fuses a multiply and an add (the SIMD versions use separate mul / add too); the
 * clamp keeps n in [-126, 127], so the result is always normal: about 1 ulp from exp on
 * [OB_EXP_LO, OB_EXP_HI] (test_kernels checks 2), 1.2e-38 below, 1.7e38 above (no inf).  The
 * clamp is written as x86 min / max order it (a NaN gives OB_EXP_HI's value), so the SIMD paths
 * agree on every input. */
#define OB_EXP_LO (-87.33654f)
#define OB_EXP_HI 88.02969f
#define OB_EXP_LOG2E 1.44269504088896341f
#define OB_EXP_C1 0.693359375f
#define OB_EXP_C2 (-2.12194440e-4f)
#define OB_EXP_P0 1.9875691500e-4f
#define OB_EXP_P1 1.3981999507e-3f
#define OB_EXP_P2 8.3334519073e-3f
#define OB_EXP_P3 4.1665795894e-2f
#define OB_EXP_P4 1.6666665459e-1f
#define OB_EXP_P5 5.0000001201e-1f
static inline float ob_expf(float x) {
    x = x < OB_EXP_HI ? x : OB_EXP_HI;
    x = x > OB_EXP_LO ? x : OB_EXP_LO;
    float t = x * OB_EXP_LOG2E;
    t = t + 0.5f;
    float fn = floorf(t);
    float hi = fn * OB_EXP_C1;
    float r = x - hi;
    float lo = fn * OB_EXP_C2;
    r = r - lo;
    float r2 = r * r;
    float p = OB_EXP_P0 * r;
    p = p + OB_EXP_P1;
    p = p * r;
    p = p + OB_EXP_P2;
    p = p * r;
    p = p + OB_EXP_P3;
    p = p * r;
    p = p + OB_EXP_P4;
    p = p * r;
    p = p + OB_EXP_P5;
    p = p * r2;
    p = p + r;
    p = p + 1.0f;
    uint32_t bits = (uint32_t)((int32_t)fn + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* kernels.h t16_to_t2 for blocks b0 .. of the row (a SIMD version does the blocks made of full T1.6
 * slices and leaves the rest here). */
void ob_t16_to_t2_from(const uint8_t *row, int K, int b0, uint8_t *out, size_t bs);

/* kernels.h rmsnorm: the four partial sums of squares combined, then x[i..n) added in order. */
double ob_sumsq_tail(double s0, double s1, double s2, double s3, const float *x, int i, int n);

/* SiLU of one value as the activation kernels compute it: x / (1 + exp(-x)). */
static inline float ob_silu1(float x) {
    float e = ob_expf(-x);
    float d = 1.0f + e;
    return x / d;
}

/* The output step of every packed matmul, shared so SIMD and scalar results are bit-identical. */
static inline float ob_out(int32_t acc, float wscale, float a) {
    float f = wscale / a;
    return (float)acc * f;
}

/* The output step of the int8 head GEMV (kernels.h gemv_q8): the exact sum, one rounding to f32,
 * then the same two f32 operations as ob_out, shared so every ISA gives the same bits. */
static inline float ob_out_q8(int64_t s, float scale, float a) {
    float f = scale / a;
    return (float)s * f;
}
/* int32 lanes of the SIMD head GEMVs: a lane adds products |w * xq| <= 128 * 32767 = 4194176, so
 * 512 of them stay below 2^31 (512 * 4194176 = 2147418112 < 2147483647).  Each kernel sizes its
 * K chunks so that no lane takes more than OB_Q8_LANE_PRODUCTS products, then widens to int64. */
#define OB_Q8_LANE_PRODUCTS 512

/* Each ISA file fills the entries it accelerates (the rest keep the scalar references). */
#if defined(OB_HAVE_X86)
void ob_kernels_fill_avx2(ob_kernels *k);
void ob_kernels_fill_avx512(ob_kernels *k);
#endif
#if defined(OB_HAVE_NEON)
void ob_kernels_fill_neon(ob_kernels *k);
#endif
#if defined(OB_HAVE_MVE)
void ob_kernels_fill_mve(ob_kernels *k);
#endif
#if defined(OB_HAVE_SIMD128)
void ob_kernels_fill_simd128(ob_kernels *k);
#endif
#if defined(OB_HAVE_DSP)
void ob_kernels_fill_dsp(ob_kernels *k);
#endif

/* ----------------------------------------------------------------- shared tiling driver
 * A packed matmul is run as tiles of R rows x T tokens; a tile decodes each weight block once
 * and multiplies it with T tokens' activations.  Rows are visited in chunks of about 64 KB of
 * weights; inside a chunk, token tiles are the outer loop (their activations stay in L1) and row
 * tiles the inner loop (the chunk's weights stay in L2).  The int32 results are exact, so the
 * tile shape never changes a result. */
typedef void (*ob_tile_fn)(const uint8_t *w, size_t rb, int K, const int8_t *x, size_t xs,
                           int32_t *out /* [R][T], row-major, T = the tile's token count */);

/* The one-token T2 GEMV driver shared by the x86 ISAs: a thread's rows [r0, r1) are cut into ns
 * segments of L rows and segs() sums row i of every segment at once (one activation load serves ns
 * rows, ns far-apart weight streams in flight); the r1 - r0 - ns * L leftover rows go through one().
 * Both return exact int32 sums; the output step is ob_out's with its factor divided once. */
typedef void (*ob_t2_rows_fn)(const uint8_t *w, size_t stride, int nblk, const int8_t *x, int32_t *out);
/* T2X, one token: n whole groups from w on, y[i] for their n * OB_T2X_ROWS rows (ob_out's step). */
typedef void (*ob_t2x_groups_fn)(const uint8_t *w, int n, int nblk, const int8_t *x, int32_t xsum, float f, float *y);
#define OB_T2_NS_MAX 16
#if OB_T2X_ROWS > OB_T2_NS_MAX
#error "a T2X group must fit the T2 GEMV's accumulators"
#endif
static inline void ob_t2_gemv_segmented(ob_t2_rows_fn segs, ob_t2_rows_fn one, int ns, const uint8_t *w, int K,
                                        float wscale, const int8_t *xq, float a, int32_t xsum, int r0, int r1,
                                        float *y) {
    const size_t rb = ob_row_bytes(OB_WFMT_T2, K);
    const int nblk = (K + 127) / 128, L = (r1 - r0) / ns;
    const float f = wscale / a;
    int32_t out[OB_T2_NS_MAX];
    for (int i = 0; i < L; i++) {
        segs(w + (size_t)(r0 + i) * rb, (size_t)L * rb, nblk, xq, out);
        for (int s = 0; s < ns; s++) y[r0 + i + s * L] = (float)(out[s] - xsum) * f;
    }
    for (int r = r0 + L * ns; r < r1; r++) {
        one(w + (size_t)r * rb, rb, nblk, xq, out);
        y[r] = (float)(out[0] - xsum) * f;
    }
}

/* T2X (kernels.h): where row r's first block sits, in bytes from the matrix; its next blocks
 * follow OB_T2X_ROWS * 32 bytes apart. */
static inline size_t ob_t2x_offset(int nblk, int r) {
    return ((size_t)(r / OB_T2X_ROWS) * (size_t)nblk * OB_T2X_ROWS + (size_t)(r % OB_T2X_ROWS)) * 32;
}

typedef struct {
    ob_tile_fn fn[5][2]; /* [T 1..4][0: R = rbig(T), 1: R = 1] */
    int rbig[5];
} ob_tiles;

static inline void ob_run_tiles(const ob_tiles *tl, ob_wfmt fmt, const uint8_t *w, int K, float wscale,
                         const int8_t *xq, size_t xs, const float *a, const int32_t *xsum, int m,
                         int r0, int r1, float *y, size_t ldy) {
    size_t rb = ob_row_bytes(fmt, K);
    const int t2x = fmt == OB_WFMT_T2X, nblk = (K + 127) / 128, G = OB_T2X_ROWS;
    int chunk = (int)(65536 / (rb ? rb : 1));
    if (chunk < 8) chunk = 8;
    chunk = chunk / 8 * 8;
    int32_t out[8 * 4];
    for (int c0 = r0; c0 < r1; c0 += chunk) {
        int c1 = c0 + chunk < r1 ? c0 + chunk : r1;
        for (int t0 = 0; t0 < m; t0 += 4) {
            int T = m - t0 < 4 ? m - t0 : 4;
            int R = tl->rbig[T];
            const int8_t *x = xq + (size_t)t0 * xs;
            float f[4]; /* ob_out's factor, divided once per token rather than once per row */
            for (int t = 0; t < T; t++) f[t] = wscale / a[t0 + t];
            for (int r = c0; r < c1;) {
                /* T2X: a tile's rows are 32 bytes apart inside one group, never across two */
                int big = c1 - r >= R && (!t2x || (r % R == 0 && r % G + R <= G));
                int nr = big ? R : 1;
                tl->fn[T][big ? 0 : 1](t2x ? w + ob_t2x_offset(nblk, r) : w + (size_t)r * rb, t2x ? 32 : rb, K, x, xs,
                                       out);
                for (int i = 0; i < nr; i++)
                    for (int t = 0; t < T; t++) {
                        int32_t acc = out[i * T + t];
                        if (fmt == OB_WFMT_B1) acc = 2 * acc - xsum[t0 + t];
                        else acc -= xsum[t0 + t];
                        y[(size_t)(t0 + t) * ldy + r + i] = (float)acc * f[t]; /* = ob_out(acc, wscale, a) */
                    }
                r += nr;
            }
        }
    }
}

/* The T2X matmul driver shared by the x86 ISAs.  One token: every whole group of OB_T2X_ROWS rows
 * in [r0, r1) in one groups() call, one sequential weight stream (rows a group boundary cuts go
 * through one()).  Several tokens: ob_run_tiles, whose tiles never cross a group there.  The same
 * exact int32 sums and output step as T2. */
static inline void ob_run_t2x(const ob_tiles *tl, ob_t2x_groups_fn groups, ob_t2_rows_fn one, const uint8_t *w,
                              int K, float wscale, const int8_t *xq, size_t xs, const float *a, const int32_t *xsum,
                              int m, int r0, int r1, float *y, size_t ldy) {
    const int nblk = (K + 127) / 128, G = OB_T2X_ROWS;
    int32_t out[8 * 4];
    if (m == 1) {
        const float f = wscale / a[0];
        int g0 = (r0 + G - 1) / G, g1 = r1 / G; /* the whole groups inside [r0, r1) */
        if (g1 <= g0) g0 = g1 = r1 / G + 1;   /* none: every row through one() */
        for (int r = r0; r < r1;) {
            if (r == g0 * G) {
                groups(w + ob_t2x_offset(nblk, r), g1 - g0, nblk, xq, xsum[0], f, y + r);
                r = g1 * G;
                continue;
            }
            one(w + ob_t2x_offset(nblk, r), 32, nblk, xq, out);
            y[r] = (float)(out[0] - xsum[0]) * f;
            r++;
        }
        return;
    }
    ob_run_tiles(tl, OB_WFMT_T2X, w, K, wscale, xq, xs, a, xsum, m, r0, r1, y, ldy);
}

/* The T2X entry points of an x86 ISA: its 8-row T2 GEMV pre##_t2_gemv_rows(w, row stride, nblk, x,
 * out, R, block stride), its tiles pre##_t2x_tiles (OB_DEF_TILES over pre##_t2x_tile) and its
 * one-token groups pre##_t2x_gemv_groups (an ob_t2x_groups_fn).  OB_DEF_T2X_GROUPS defines one that
 * reads the groups one after the other through rows(); AVX2 reads several at once and uses it for
 * the groups left over. */
#define OB_DEF_T2X_GROUPS(isa, name, rows)                                                         \
    isa static void name(const uint8_t *w, int n, int nb, const int8_t *x, int32_t xsum, float f,   \
                         float *y) {                                                               \
        int32_t o[OB_T2X_ROWS];                                                                    \
        for (int g = 0; g < n; g++, w += (size_t)nb * OB_T2X_ROWS * 32, y += OB_T2X_ROWS) {        \
            rows(w, 32, nb, x, o, OB_T2X_ROWS, OB_T2X_ROWS * 32);                                  \
            for (int i = 0; i < OB_T2X_ROWS; i++) y[i] = (float)(o[i] - xsum) * f;                 \
        }                                                                                          \
    }
#define OB_DEF_T2X(isa, pre)                                                                       \
    isa static void pre##_t2x_gemv_1(const uint8_t *w, size_t s, int nb, const int8_t *x,           \
                                     int32_t *o) {                                                 \
        pre##_t2_gemv_rows(w, s, nb, x, o, 1, OB_T2X_ROWS * 32);                                   \
    }                                                                                              \
    static void pre##_t2x_matmul(const uint8_t *w, int K, float wscale, const int8_t *xq, size_t xs, \
                                 const float *a, const int32_t *xsum, int m, int r0, int r1, float *y, \
                                 size_t ldy) {                                                     \
        ob_run_t2x(&pre##_t2x_tiles, pre##_t2x_gemv_groups, pre##_t2x_gemv_1, w, K, wscale, xq, xs, a, \
                   xsum, m, r0, r1, y, ldy);                                                       \
    }

/* The same driver for int4 / int8 rows (kernels.h ob_matmul_rs_fn): rb bytes per row, per-row
 * scales, and acc = tile sum - xoff * xsum (xoff: the offset the tile's encoding adds to every code,
 * 8 for I4 nibbles, 128 where an int8 kernel feeds unsigned bytes to vpdpbusd, else 0). */
static inline void ob_run_tiles_rs(const ob_tiles *tl, size_t rb, int32_t xoff, const uint8_t *w, int K,
                                   const float *wscale, const int8_t *xq, size_t xs, const float *a,
                                   const int32_t *xsum, int m, int r0, int r1, float *y, size_t ldy) {
    int chunk = (int)(65536 / (rb ? rb : 1));
    if (chunk < 8) chunk = 8;
    chunk = chunk / 8 * 8;
    int32_t out[8 * 4];
    for (int c0 = r0; c0 < r1; c0 += chunk) {
        int c1 = c0 + chunk < r1 ? c0 + chunk : r1;
        for (int t0 = 0; t0 < m; t0 += 4) {
            int T = m - t0 < 4 ? m - t0 : 4;
            int R = tl->rbig[T];
            const int8_t *x = xq + (size_t)t0 * xs;
            for (int r = c0; r < c1;) {
                int big = c1 - r >= R;
                int nr = big ? R : 1;
                tl->fn[T][big ? 0 : 1](w + (size_t)r * rb, rb, K, x, xs, out);
                for (int i = 0; i < nr; i++)
                    for (int t = 0; t < T; t++)
                        y[(size_t)(t0 + t) * ldy + r + i] =
                            ob_out(out[i * T + t] - xoff * xsum[t0 + t], wscale[r + i], a[t0 + t]);
                r += nr;
            }
        }
    }
}

#define OB_DEF_TILE(isa, fmt, tag, R, T)                                                           \
    isa static void ob_##fmt##_##tag##T(const uint8_t *w, size_t rb, int K, const int8_t *x,        \
                                        size_t xs, int32_t *out) {                                 \
        fmt##_tile(w, rb, K, x, xs, out, R, T);                                                    \
    }
/* RG: rows per tile for GEMV (T = 1); RM: rows per tile for T = 2..4 tokens. */
#define OB_DEF_TILES(isa, fmt, RG, RM)                                                             \
    OB_DEF_TILE(isa, fmt, big, RG, 1)                                                              \
    OB_DEF_TILE(isa, fmt, one, 1, 1)                                                               \
    OB_DEF_TILE(isa, fmt, big, RM, 2)                                                              \
    OB_DEF_TILE(isa, fmt, one, 1, 2)                                                               \
    OB_DEF_TILE(isa, fmt, big, RM, 3)                                                              \
    OB_DEF_TILE(isa, fmt, one, 1, 3)                                                               \
    OB_DEF_TILE(isa, fmt, big, RM, 4)                                                              \
    OB_DEF_TILE(isa, fmt, one, 1, 4)                                                               \
    static const ob_tiles fmt##_tiles = {{{NULL, NULL},                                            \
                                          {ob_##fmt##_big1, ob_##fmt##_one1},                      \
                                          {ob_##fmt##_big2, ob_##fmt##_one2},                      \
                                          {ob_##fmt##_big3, ob_##fmt##_one3},                      \
                                          {ob_##fmt##_big4, ob_##fmt##_one4}},                     \
                                         {0, RG, RM, RM, RM}};
#define OB_DEF_MATMUL(fmt, wf)                                                                     \
    static void fmt##_matmul(const uint8_t *w, int K, float wscale, const int8_t *xq, size_t xs,   \
                             const float *a, const int32_t *xsum, int m, int r0, int r1, float *y, \
                             size_t ldy) {                                                         \
        ob_run_tiles(&fmt##_tiles, wf, w, K, wscale, xq, xs, a, xsum, m, r0, r1, y, ldy);          \
    }

#define OB_DEF_MATMUL_RS(fmt, ifmt, xoff)                                                          \
    static void fmt##_matmul(const uint8_t *w, int K, const float *wscale, const int8_t *xq,        \
                             size_t xs, const float *a, const int32_t *xsum, int m, int r0, int r1, \
                             float *y, size_t ldy) {                                               \
        ob_run_tiles_rs(&fmt##_tiles, ob_irow_bytes(ifmt, K), xoff, w, K, wscale, xq, xs, a, xsum, \
                        m, r0, r1, y, ldy);                                                        \
    }

/* The same, with one token (m = 1) going to gemv(w, K, wscale, xq, a, xsum, r0, r1, y) instead. */
#define OB_DEF_MATMUL_RS_GEMV(fmt, ifmt, xoff, gemv)                                               \
    static void fmt##_matmul(const uint8_t *w, int K, const float *wscale, const int8_t *xq,        \
                             size_t xs, const float *a, const int32_t *xsum, int m, int r0, int r1, \
                             float *y, size_t ldy) {                                               \
        if (m == 1) {                                                                              \
            gemv(w, K, wscale, xq, a[0], xsum[0], r0, r1, y);                                      \
            return;                                                                                \
        }                                                                                          \
        ob_run_tiles_rs(&fmt##_tiles, ob_irow_bytes(ifmt, K), xoff, w, K, wscale, xq, xs, a, xsum, \
                        m, r0, r1, y, ldy);                                                        \
    }

#endif /* ONEBIT_KERNELS_IMPL_H */
