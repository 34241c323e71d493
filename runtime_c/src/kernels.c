/* kernels.c - compute kernels of the onebit C runtime: scalar references + SIMD twins.
 * See kernels.h for the contract and docs/DESIGN.md for the math and the packed layouts. */
#if !defined(_GNU_SOURCE)
#define _GNU_SOURCE 1
#endif
#include "kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#define OB_HAVE_X86 1
#include <cpuid.h>
#include <immintrin.h>
#endif

#if defined(__aarch64__)
#define OB_HAVE_NEON 1
#include <arm_neon.h>
#endif

#define OB_UNUSED(x) ((void)(x))
#define OB_CVT_F32(v) (v)
#define OB_CVT_F16(v) ob_f16_to_f32(v)
#define OB_CVT_Q8(v) ((float)(v))

/* ================================================================= small helpers */

size_t ob_row_bytes(ob_wfmt fmt, int K) {
    if (K < 0) return 0;
    switch (fmt) {
    case OB_WFMT_T2: return (size_t)((K + 127) / 128) * 32;
    case OB_WFMT_T16: {
        int r = K % 160;
        return (size_t)(K / 160) * 32 + (size_t)((r + 4) / 5);
    }
    case OB_WFMT_B1: return (size_t)((K + 127) / 128) * 16;
    default: return 0;
    }
}

/* Covers T2 / B1 (K rounded up to 128) and T1.6 (its tail reads up to 160*(K/160) + 5*L <= K+4).
 * SIMD kernels may read any byte below the stride. */
size_t ob_act_stride(int K) {
    if (K < 0) K = 0;
    return (size_t)((K + 4 + 127) / 128) * 128;
}

float ob_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: normalize */
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while ((man & 0x400u) == 0);
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
        }
    } else if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13); /* inf / nan (payload kept) */
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t ob_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) /* inf or nan */
        return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u | ((ax >> 13) & 0x3ffu) : 0));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds to >= 65520: inf */
    if (ax < 0x38800000u) {                                 /* result subnormal or zero */
        if (ax < 0x33000000u) return (uint16_t)sign;        /* < 2^-25: rounds to 0 */
        uint32_t e = ax >> 23;                      /* 102..112 */
        uint32_t m = (ax & 0x7fffffu) | 0x800000u;
        uint32_t s = 126u - e; /* value / 2^-24 = m * 2^(e-126): drop s = 14..24 bits */
        uint32_t q = m >> s;
        uint32_t rem = m & ((1u << s) - 1u);
        uint32_t half = 1u << (s - 1);
        if (rem > half || (rem == half && (q & 1u))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t e = (ax >> 23) - 127 + 15;
    uint32_t m = ax & 0x7fffffu;
    uint32_t q = (e << 10) | (m >> 13);
    uint32_t rem = m & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (q & 1u))) q++; /* may carry into exp: correct */
    return (uint16_t)(sign | q);
}

void ob_row_f16_to_f32(const uint16_t *src, int K, float *dst) {
    for (int k = 0; k < K; k++) dst[k] = ob_f16_to_f32(src[k]);
}

void ob_row_q8_to_f32(const int8_t *src, float scale, int K, float *dst) {
    for (int k = 0; k < K; k++) dst[k] = scale * (float)src[k];
}

/* ----- T1.6 byte encoding (DESIGN.md) */
static uint8_t t16_encode(const int t[5]) {
    int v = t[0] * 81 + t[1] * 27 + t[2] * 9 + t[3] * 3 + t[4];
    return (uint8_t)((v * 256 + 242) / 243);
}
static int t16_decode(uint8_t b, int slot) {
    static const int pow3[5] = {1, 3, 9, 27, 81};
    unsigned q = ((unsigned)b * (unsigned)pow3[slot]) & 255u;
    return (int)((q * 3u) >> 8);
}

int ob_pack_row_ref(ob_wfmt fmt, const int8_t *q, int K, uint8_t *out) {
    size_t nb = ob_row_bytes(fmt, K);
    if (fmt == OB_WFMT_T2) {
        for (int k = 0; k < K; k++)
            if (q[k] < -1 || q[k] > 1) return -1;
        memset(out, 0x55, nb); /* code 1 everywhere (padding = 0) */
        for (int k = 0; k < K; k++) {
            int blk = k / 128, i = (k % 128) / 32, j = k % 32;
            uint8_t *p = out + blk * 32 + j;
            *p = (uint8_t)((*p & ~(3u << (2 * i))) | ((unsigned)(q[k] + 1) << (2 * i)));
        }
        return 0;
    }
    if (fmt == OB_WFMT_T16) {
        for (int k = 0; k < K; k++)
            if (q[k] < -1 || q[k] > 1) return -1;
        int nfull = K / 160, r = K % 160;
        for (int blk = 0; blk < nfull; blk++)
            for (int j = 0; j < 32; j++) {
                int t[5];
                for (int i = 0; i < 5; i++) t[i] = q[blk * 160 + j + 32 * i] + 1;
                out[blk * 32 + j] = t16_encode(t);
            }
        if (r > 0) {
            int L = (r + 4) / 5;
            for (int j = 0; j < L; j++) {
                int t[5];
                for (int i = 0; i < 5; i++) {
                    int idx = j + L * i;
                    t[i] = idx < r ? q[nfull * 160 + idx] + 1 : 1;
                }
                out[nfull * 32 + j] = t16_encode(t);
            }
        }
        return 0;
    }
    if (fmt == OB_WFMT_B1) {
        memset(out, 0, nb);
        for (int k = 0; k < K; k++)
            if (q[k] > 0) out[k / 8] |= (uint8_t)(1u << (k % 8));
        return 0;
    }
    return -1;
}

/* ================================================================= scalar references */

void ob_quantize_ref(const float *x, int K, int8_t *xq, float *a_out, int32_t *sum_out) {
    float amax = 0.0f;
    for (int k = 0; k < K; k++) {
        float v = fabsf(x[k]);
        if (v > amax) amax = v;
    }
    float a = 127.0f / fmaxf(amax, 1e-5f);
    int32_t s = 0;
    for (int k = 0; k < K; k++) {
        float v = nearbyintf(x[k] * a);
        if (v > 127.0f) v = 127.0f;
        if (v < -128.0f) v = -128.0f;
        xq[k] = (int8_t)v;
        s += xq[k];
    }
    size_t st = ob_act_stride(K);
    memset(xq + K, 0, st - (size_t)K);
    *a_out = a;
    *sum_out = s;
}

static inline float ob_out(int32_t acc, float wscale, float a) {
    float f = wscale / a;
    return (float)acc * f;
}

void ob_matmul_t2_ref(const uint8_t *w, int K, float wscale, const int8_t *xq, size_t xq_stride,
                      const float *a, const int32_t *xsum, int m, int r0, int r1, float *y,
                      size_t ldy) {
    size_t rb = ob_row_bytes(OB_WFMT_T2, K);
    int nblk = (K + 127) / 128;
    for (int r = r0; r < r1; r++) {
        const uint8_t *wr = w + (size_t)r * rb;
        for (int t = 0; t < m; t++) {
            const int8_t *x = xq + (size_t)t * xq_stride;
            int32_t acc = 0;
            for (int b = 0; b < nblk; b++) {
                const uint8_t *wb = wr + b * 32;
                const int8_t *xb = x + b * 128;
                for (int j = 0; j < 32; j++) {
                    unsigned v = wb[j];
                    acc += (int32_t)(v & 3u) * xb[j] + (int32_t)((v >> 2) & 3u) * xb[32 + j] +
                           (int32_t)((v >> 4) & 3u) * xb[64 + j] + (int32_t)(v >> 6) * xb[96 + j];
                }
            }
            y[(size_t)t * ldy + r] = ob_out(acc - xsum[t], wscale, a[t]);
        }
    }
}

void ob_matmul_t16_ref(const uint8_t *w, int K, float wscale, const int8_t *xq, size_t xq_stride,
                       const float *a, const int32_t *xsum, int m, int r0, int r1, float *y,
                       size_t ldy) {
    size_t rb = ob_row_bytes(OB_WFMT_T16, K);
    int nfull = K / 160, rem = K % 160, L = (rem + 4) / 5;
    for (int r = r0; r < r1; r++) {
        const uint8_t *wr = w + (size_t)r * rb;
        for (int t = 0; t < m; t++) {
            const int8_t *x = xq + (size_t)t * xq_stride;
            int32_t acc = 0;
            for (int b = 0; b < nfull; b++) {
                const uint8_t *wb = wr + b * 32;
                const int8_t *xb = x + b * 160;
                for (int j = 0; j < 32; j++)
                    for (int i = 0; i < 5; i++) acc += t16_decode(wb[j], i) * xb[j + 32 * i];
            }
            if (rem) {
                const uint8_t *wb = wr + nfull * 32;
                const int8_t *xb = x + nfull * 160;
                for (int j = 0; j < L; j++)
                    for (int i = 0; i < 5; i++) acc += t16_decode(wb[j], i) * xb[j + L * i];
            }
            y[(size_t)t * ldy + r] = ob_out(acc - xsum[t], wscale, a[t]);
        }
    }
}

void ob_matmul_b1_ref(const uint8_t *w, int K, float wscale, const int8_t *xq, size_t xq_stride,
                      const float *a, const int32_t *xsum, int m, int r0, int r1, float *y,
                      size_t ldy) {
    size_t rb = ob_row_bytes(OB_WFMT_B1, K);
    int kp = (K + 127) / 128 * 128;
    for (int r = r0; r < r1; r++) {
        const uint8_t *wr = w + (size_t)r * rb;
        for (int t = 0; t < m; t++) {
            const int8_t *x = xq + (size_t)t * xq_stride;
            int32_t s = 0; /* sum of x where the bit is set */
            for (int k = 0; k < kp; k++)
                if ((wr[k >> 3] >> (k & 7)) & 1) s += x[k];
            y[(size_t)t * ldy + r] = ob_out(2 * s - xsum[t], wscale, a[t]);
        }
    }
}

void ob_gemv_f32_ref(const float *w, size_t ldw, int K, const float *x, int r0, int r1, float *y) {
    for (int r = r0; r < r1; r++) {
        const float *wr = w + (size_t)r * ldw;
        float s = 0.0f;
        for (int k = 0; k < K; k++) s += wr[k] * x[k];
        y[r] = s;
    }
}

void ob_gemv_f16_ref(const uint16_t *w, size_t ldw, int K, const float *x, int r0, int r1,
                     float *y) {
    for (int r = r0; r < r1; r++) {
        const uint16_t *wr = w + (size_t)r * ldw;
        float s = 0.0f;
        for (int k = 0; k < K; k++) s += ob_f16_to_f32(wr[k]) * x[k];
        y[r] = s;
    }
}

void ob_gemv_q8_ref(const int8_t *w, const float *scale, size_t ldw, int K, const float *x, int r0,
                    int r1, float *y) {
    for (int r = r0; r < r1; r++) {
        const int8_t *wr = w + (size_t)r * ldw;
        float s = 0.0f;
        for (int k = 0; k < K; k++) s += (float)wr[k] * x[k];
        y[r] = scale[r] * s;
    }
}

/* ================================================================= SIMD paths */

/* ----------------------------------------------------------------- shared tiling driver
 * A packed matmul is run as tiles of R rows x T tokens; a tile decodes each weight block once
 * and multiplies it with T tokens' activations.  Rows are visited in chunks of about 64 KB of
 * weights; inside a chunk, token tiles are the outer loop (their activations stay in L1) and row
 * tiles the inner loop (the chunk's weights stay in L2).  The int32 results are exact, so the
 * tile shape never changes a result. */
typedef void (*ob_tile_fn)(const uint8_t *w, size_t rb, int K, const int8_t *x, size_t xs,
                           int32_t *out /* [R][T], row-major, T = the tile's token count */);

typedef struct {
    ob_tile_fn fn[5][2]; /* [T 1..4][0: R = rbig(T), 1: R = 1] */
    int rbig[5];
} ob_tiles;

__attribute__((unused)) static void ob_run_tiles(const ob_tiles *tl, ob_wfmt fmt, const uint8_t *w, int K, float wscale,
                         const int8_t *xq, size_t xs, const float *a, const int32_t *xsum, int m,
                         int r0, int r1, float *y, size_t ldy) {
    size_t rb = ob_row_bytes(fmt, K);
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
                    for (int t = 0; t < T; t++) {
                        int32_t acc = out[i * T + t];
                        if (fmt == OB_WFMT_B1) acc = 2 * acc - xsum[t0 + t];
                        else acc -= xsum[t0 + t];
                        y[(size_t)(t0 + t) * ldy + r + i] = ob_out(acc, wscale, a[t0 + t]);
                    }
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

#if defined(OB_HAVE_X86)

#define OB_T512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))
#define OB_T256 __attribute__((target("avx2,fma,f16c")))
#define OB_INL static inline __attribute__((always_inline))
/* software prefetch distance (bytes ahead in each weight row) for the GEMV kernels; 0 = off */
#ifndef OB_PF_DIST
#define OB_PF_DIST 0
#endif
/* acc += dpbusd(a: u8, b: s8).  Inline asm with a read-write operand: with the intrinsic, GCC 12
 * copies every accumulator of an unrolled tile once per iteration (and spills); this keeps each
 * accumulator in one register. */
#define OB_DP512(acc, a, b) __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b))
#define OB_DP256(acc, a, b) __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b))

/* =================================================================== AVX-512 (F/BW/VL/VNNI)
 * T2: one 32-byte block is broadcast to both halves of a zmm.  Masking with
 * [0x03 x32 | 0x0C x32] yields the codes of weights 0..31 (scale 1) and 32..63 (scale 4, the
 * codes sit in bits 2-3) lined up with activations x[0..63] in natural order; masking with
 * [0x30 | 0xC0] (or shifting right by 4 and masking again) gives weights 64..127 against x[64..127].
 * vpdpbusd (u8 codes x s8 activations -> i32) sums four byte products per lane with no
 * saturation; each i32 lane only ever sees one scale, so the scale is removed exactly by an
 * arithmetic shift per lane before the horizontal sum. */

OB_T512 OB_INL int32_t ob512_hsum_shift(__m512i v, __m512i sh) {
    return _mm512_reduce_add_epi32(_mm512_srav_epi32(v, sh));
}

OB_T512 OB_INL void ob512_t2_tile(const uint8_t *w, size_t rb, int K, const int8_t *x, size_t xs,
                                  int32_t *out, const int R, const int T) {
    const int nblk = (K + 127) / 128;
    const __m512i m01 = _mm512_inserti64x4(_mm512_set1_epi8(0x03), _mm256_set1_epi8(0x0C), 1);
    const __m512i m23 = _mm512_inserti64x4(_mm512_set1_epi8(0x30), _mm256_set1_epi8((char)0xC0), 1);
    const __m512i sh01 = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi32(2), 1);
    const __m512i sh23 = _mm512_inserti64x4(_mm512_set1_epi32(4), _mm256_set1_epi32(6), 1);
    if (T == 1) { /* GEMV: two accumulators per row (scales 1|4 and 16|64), no shifts */
        __m512i acc0[8], acc1[8];
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) acc0[r] = acc1[r] = _mm512_setzero_si512();
        for (int b = 0; b < nblk; b++) {
            const __m512i x0 = _mm512_loadu_si512((const void *)(x + b * 128));
            const __m512i x1 = _mm512_loadu_si512((const void *)(x + b * 128 + 64));
#if OB_PF_DIST > 0
            if ((b & 1) == 0) {
#pragma GCC unroll 8
                for (int r = 0; r < R; r++)
                    _mm_prefetch((const char *)(w + (size_t)r * rb + (size_t)b * 32 + OB_PF_DIST), _MM_HINT_T0);
            }
#endif
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) {
                const __m512i W = _mm512_broadcast_i64x4(
                    _mm256_loadu_si256((const __m256i *)(w + (size_t)r * rb + (size_t)b * 32)));
                OB_DP512(acc0[r], _mm512_and_si512(W, m01), x0);
                OB_DP512(acc1[r], _mm512_and_si512(W, m23), x1);
            }
        }
#pragma GCC unroll 8
        for (int r = 0; r < R; r++)
            out[r] = _mm512_reduce_add_epi32(
                _mm512_add_epi32(_mm512_srav_epi32(acc0[r], sh01), _mm512_srav_epi32(acc1[r], sh23)));
        return;
    }
    /* GEMM: one accumulator per (row, token): codes of 64..127 shifted down into bits 0-3 */
    __m512i acc[4 * 4];
#pragma GCC unroll 16
    for (int i = 0; i < R * T; i++) acc[i] = _mm512_setzero_si512();
    for (int b = 0; b < nblk; b++) {
        __m512i A[4], B[4];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const __m512i W = _mm512_broadcast_i64x4(
                _mm256_loadu_si256((const __m256i *)(w + (size_t)r * rb + (size_t)b * 32)));
            A[r] = _mm512_and_si512(W, m01);
            B[r] = _mm512_and_si512(_mm512_srli_epi16(W, 4), m01);
        }
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            const __m512i x0 = _mm512_loadu_si512((const void *)(x + (size_t)t * xs + b * 128));
            const __m512i x1 = _mm512_loadu_si512((const void *)(x + (size_t)t * xs + b * 128 + 64));
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) {
                OB_DP512(acc[r * T + t], A[r], x0);
                OB_DP512(acc[r * T + t], B[r], x1);
            }
        }
    }
#pragma GCC unroll 16
    for (int i = 0; i < R * T; i++) out[i] = ob512_hsum_shift(acc[i], sh01);
}

/* T1.6 (ymm, AVX512VL): q = b * 3^i (mod 256) by byte additions, trit = (q >= 86) + (q >= 171)
 * which equals (q * 3) >> 8 for every byte value; the tail block uses masked loads. */
OB_T512 OB_INL __m256i ob512_trit(__m256i q, __m256i ones) {
    __mmask32 k1 = _mm256_cmpge_epu8_mask(q, _mm256_set1_epi8(86));
    __mmask32 k2 = _mm256_cmpge_epu8_mask(q, _mm256_set1_epi8((char)171));
    __m256i t = _mm256_maskz_mov_epi8(k1, ones);
    return _mm256_mask_add_epi8(t, k2, t, ones);
}

OB_T512 OB_INL void ob512_t16_block(const uint8_t *w, size_t rb, const int8_t *x, size_t xs,
                                     __m256i *acc, const int R, const int T, const int tail,
                                     __mmask32 km, int step) {
    const __m256i ones = _mm256_set1_epi8(1);
    __m256i q[4];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
        q[r] = tail ? _mm256_maskz_loadu_epi8(km, w + (size_t)r * rb)
                    : _mm256_loadu_si256((const __m256i *)(w + (size_t)r * rb));
#pragma GCC unroll 5
    for (int i = 0; i < 5; i++) {
        __m256i tr[4];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            if (i) q[r] = _mm256_add_epi8(q[r], _mm256_add_epi8(q[r], q[r]));
            tr[r] = ob512_trit(q[r], ones);
        }
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            const int8_t *xp = x + (size_t)t * xs + (size_t)i * (size_t)step;
            const __m256i xv = tail ? _mm256_maskz_loadu_epi8(km, xp) : _mm256_loadu_si256((const __m256i *)xp);
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) OB_DP256(acc[r * T + t], tr[r], xv);
        }
    }
}

OB_T512 OB_INL void ob512_t16_tile(const uint8_t *w, size_t rb, int K, const int8_t *x, size_t xs,
                                   int32_t *out, const int R, const int T) {
    const int nfull = K / 160, rem = K % 160, L = (rem + 4) / 5;
    __m256i acc[4 * 4];
#pragma GCC unroll 16
    for (int i = 0; i < R * T; i++) acc[i] = _mm256_setzero_si256();
    for (int b = 0; b < nfull; b++)
        ob512_t16_block(w + (size_t)b * 32, rb, x + (size_t)b * 160, xs, acc, R, T, 0, 0, 32);
    if (rem)
        ob512_t16_block(w + (size_t)nfull * 32, rb, x + (size_t)nfull * 160, xs, acc, R, T, 1,
                        (__mmask32)(((uint64_t)1 << L) - 1), L);
#pragma GCC unroll 16
    for (int i = 0; i < R * T; i++) {
        __m128i s = _mm_add_epi32(_mm256_castsi256_si128(acc[i]), _mm256_extracti128_si256(acc[i], 1));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
        out[i] = _mm_cvtsi128_si32(s);
    }
}

/* B1: 64 bits -> mask register -> 0/1 bytes -> vpdpbusd with the activations = sum over set bits. */
OB_T512 OB_INL void ob512_b1_tile(const uint8_t *w, size_t rb, int K, const int8_t *x, size_t xs,
                                  int32_t *out, const int R, const int T) {
    const int n64 = (K + 127) / 128 * 2;
    const __m512i ones = _mm512_set1_epi8(1);
    __m512i acc[4 * 4];
#pragma GCC unroll 16
    for (int i = 0; i < R * T; i++) acc[i] = _mm512_setzero_si512();
    for (int c = 0; c < n64; c++) {
        __m512i bits[4];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            uint64_t v;
            memcpy(&v, w + (size_t)r * rb + (size_t)c * 8, 8);
            bits[r] = _mm512_maskz_mov_epi8(_cvtu64_mask64(v), ones);
        }
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            const __m512i xv = _mm512_loadu_si512((const void *)(x + (size_t)t * xs + (size_t)c * 64));
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) OB_DP512(acc[r * T + t], bits[r], xv);
        }
    }
#pragma GCC unroll 16
    for (int i = 0; i < R * T; i++) out[i] = _mm512_reduce_add_epi32(acc[i]);
}

OB_DEF_TILES(OB_T512, ob512_t2, 8, 4)
OB_DEF_TILES(OB_T512, ob512_t16, 4, 4)
OB_DEF_TILES(OB_T512, ob512_b1, 4, 4)
OB_DEF_MATMUL(ob512_t2, OB_WFMT_T2)
OB_DEF_MATMUL(ob512_t16, OB_WFMT_T16)
OB_DEF_MATMUL(ob512_b1, OB_WFMT_B1)

OB_T512 static void ob512_quantize(const float *x, int K, int8_t *xq, float *a_out, int32_t *sum_out) {
    __m512 mx = _mm512_setzero_ps();
    int k = 0;
    for (; k + 16 <= K; k += 16) mx = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x + k)), mx);
    if (k < K) {
        __mmask16 km = (__mmask16)((1u << (K - k)) - 1);
        mx = _mm512_max_ps(_mm512_abs_ps(_mm512_maskz_loadu_ps(km, x + k)), mx);
    }
    float amax = _mm512_reduce_max_ps(mx);
    float a = 127.0f / fmaxf(amax, 1e-5f);
    const __m512 va = _mm512_set1_ps(a), lo = _mm512_set1_ps(-128.0f), hi = _mm512_set1_ps(127.0f);
    __m512i s = _mm512_setzero_si512();
    for (k = 0; k < K; k += 16) {
        __mmask16 km = K - k >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (K - k)) - 1);
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(km, x + k), va);
        v = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
        __m512i q = _mm512_cvttps_epi32(v);
        s = _mm512_add_epi32(s, q);
        _mm_mask_storeu_epi8(xq + k, km, _mm512_cvtepi32_epi8(q));
    }
    size_t st = ob_act_stride(K);
    memset(xq + K, 0, st - (size_t)K);
    *a_out = a;
    *sum_out = _mm512_reduce_add_epi32(s);
}

/* Float GEMVs: per row one 16-lane FMA accumulator over k in order, masked tail, then
 * _mm512_reduce_add_ps.  Rows are processed OB512_GEMV_ROWS at a time (x loaded once, that many
 * DRAM streams in flight) with the same per-row operation sequence as a lone row, so results
 * never depend on the row range.  kind: 0 f32, 1 f16, 2 int8 (times scale[r]). */
#ifndef OB512_GEMV_ROWS
#define OB512_GEMV_ROWS 4
#endif
OB_T512 OB_INL __m512 ob512_ldw(const void *w, size_t i, const int kind) {
    if (kind == 0) return _mm512_loadu_ps((const float *)w + i);
    if (kind == 1) return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)w + i)));
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)((const int8_t *)w + i))));
}
OB_T512 OB_INL __m512 ob512_ldw_m(const void *w, size_t i, __mmask16 k, const int kind) {
    if (kind == 0) return _mm512_maskz_loadu_ps(k, (const float *)w + i);
    if (kind == 1) return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, (const uint16_t *)w + i));
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(k, (const int8_t *)w + i)));
}
OB_T512 OB_INL void ob512_gemv_rows(const void *w, const float *scale, size_t ldw, int K, const float *x,
                                    int r, float *y, const int R, const int kind, const int pfd) {
    const int esz = kind == 0 ? 4 : kind == 1 ? 2 : 1;
    const int kfull = K & ~15;
    const __mmask16 kt = (__mmask16)((1u << (K & 15)) - 1);
    __m512 c[OB512_GEMV_ROWS];
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) c[i] = _mm512_setzero_ps();
    for (int k = 0; k < kfull; k += 16) {
        const __m512 xv = _mm512_loadu_ps(x + k);
#pragma GCC unroll 8
        for (int i = 0; i < R; i++) {
            size_t idx = (size_t)(r + i) * ldw + (size_t)k;
            if (pfd) _mm_prefetch((const char *)w + idx * esz + pfd, _MM_HINT_T0);
            c[i] = _mm512_fmadd_ps(ob512_ldw(w, idx, kind), xv, c[i]);
        }
    }
    if (kt) {
        const __m512 xv = _mm512_maskz_loadu_ps(kt, x + kfull);
#pragma GCC unroll 8
        for (int i = 0; i < R; i++)
            c[i] = _mm512_fmadd_ps(ob512_ldw_m(w, (size_t)(r + i) * ldw + (size_t)kfull, kt, kind), xv, c[i]);
    }
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) {
        float sum = _mm512_reduce_add_ps(c[i]);
        y[r + i] = kind == 2 ? scale[r + i] * sum : sum;
    }
}
#define OB512_GEMV(name, kind, pfd)                                                                \
    OB_T512 static void name(const void *w, const float *scale, size_t ldw, int K, const float *x, \
                             int r0, int r1, float *y) {                                           \
        int r = r0;                                                                                \
        for (; r + OB512_GEMV_ROWS <= r1; r += OB512_GEMV_ROWS)                                    \
            ob512_gemv_rows(w, scale, ldw, K, x, r, y, OB512_GEMV_ROWS, kind, pfd);                \
        for (; r < r1; r++) ob512_gemv_rows(w, scale, ldw, K, x, r, y, 1, kind, pfd);              \
    }
OB512_GEMV(ob512_gemv_f32_s, 0, 0)
OB512_GEMV(ob512_gemv_f16_s, 1, 0)
/* int8 GEMV, its own loop: per row OB512_Q8_NA (2) 16-lane FMA accumulators, k in blocks of
 * 16 * NA (chunk j of a block into accumulator j), the remaining 16-chunks and the masked tail
 * continuing the j sequence, then a pairwise tree over the accumulators and _mm512_reduce_add_ps.
 * The per-row sequence does not depend on OB512_Q8_ROWS (rows sharing the x loads), so results
 * never depend on the row range.  Measured on Zen 4 (32000 x 2048, 64-byte aligned x, from DRAM):
 * one row at a time (a single sequential weight stream), 2 accumulators and no software prefetch
 * ~26 GB/s against a ~32 GB/s plain read; 2 or 4 interleaved rows 7-11 GB/s whatever the prefetch
 * distance (0.5-4 KB); 4 accumulators ~12 GB/s and 8 erratic (12-26) with aligned x.  In L2 the
 * loop is compute-bound at ~25-30 GB/s (vpmovsxbd + vcvtdq2ps + FMA per 16 weights). */
#ifndef OB512_Q8_ROWS
#define OB512_Q8_ROWS 1
#endif
#ifndef OB512_Q8_PF
#define OB512_Q8_PF 0
#endif
#ifndef OB512_Q8_NA
#define OB512_Q8_NA 2
#endif
#define OB512_CVT8(p) _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p))))
OB_T512 OB_INL void ob512_q8_rows(const int8_t *w, const float *scale, size_t ldw, int K, const float *x,
                                  int r, float *y, const int R) {
    enum { NA = OB512_Q8_NA };
    const int kb = K - K % (16 * NA);
    __m512 a[OB512_Q8_ROWS][NA];
    const int8_t *wr[OB512_Q8_ROWS];
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) {
#pragma GCC unroll 8
        for (int j = 0; j < NA; j++) a[i][j] = _mm512_setzero_ps();
        wr[i] = w + (size_t)(r + i) * ldw;
    }
    int k = 0;
    for (; k < kb; k += 16 * NA) {
        __m512 xv[NA];
#pragma GCC unroll 8
        for (int j = 0; j < NA; j++) xv[j] = _mm512_loadu_ps(x + k + 16 * j);
#pragma GCC unroll 8
        for (int i = 0; i < R; i++) {
            const int8_t *p = wr[i] + k;
            if (OB512_Q8_PF) _mm_prefetch((const char *)p + OB512_Q8_PF, _MM_HINT_T0);
#pragma GCC unroll 8
            for (int j = 0; j < NA; j++) a[i][j] = _mm512_fmadd_ps(OB512_CVT8(p + 16 * j), xv[j], a[i][j]);
        }
    }
    /* remainder (< 16 * NA): 16-chunks into a[0], a[1], ..., then the masked tail into the next */
    int j = 0;
    for (; k + 16 <= K; k += 16, j++) {
        const __m512 xv = _mm512_loadu_ps(x + k);
#pragma GCC unroll 8
        for (int i = 0; i < R; i++) a[i][j] = _mm512_fmadd_ps(OB512_CVT8(wr[i] + k), xv, a[i][j]);
    }
    if (k < K) {
        const __mmask16 kt = (__mmask16)((1u << (K - k)) - 1);
        const __m512 xv = _mm512_maskz_loadu_ps(kt, x + k);
#pragma GCC unroll 8
        for (int i = 0; i < R; i++)
            a[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(kt, wr[i] + k))), xv,
                                      a[i][j]);
    }
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) {
#pragma GCC unroll 8
        for (int h = NA / 2; h >= 1; h /= 2)
#pragma GCC unroll 8
            for (int t = 0; t < h; t++) a[i][t] = _mm512_add_ps(a[i][t], a[i][t + h]);
        y[r + i] = scale[r + i] * _mm512_reduce_add_ps(a[i][0]);
    }
}
OB_T512 static void ob512_gemv_q8_s(const int8_t *w, const float *scale, size_t ldw, int K, const float *x,
                                    int r0, int r1, float *y) {
    int r = r0;
    for (; r + OB512_Q8_ROWS <= r1; r += OB512_Q8_ROWS) ob512_q8_rows(w, scale, ldw, K, x, r, y, OB512_Q8_ROWS);
    for (; r < r1; r++) ob512_q8_rows(w, scale, ldw, K, x, r, y, 1);
}
static void ob512_gemv_f32(const float *w, size_t ldw, int K, const float *x, int r0, int r1, float *y) {
    ob512_gemv_f32_s(w, NULL, ldw, K, x, r0, r1, y);
}
static void ob512_gemv_f16(const uint16_t *w, size_t ldw, int K, const float *x, int r0, int r1, float *y) {
    ob512_gemv_f16_s(w, NULL, ldw, K, x, r0, r1, y);
}
static void ob512_gemv_q8(const int8_t *w, const float *scale, size_t ldw, int K, const float *x, int r0,
                          int r1, float *y) {
    ob512_gemv_q8_s(w, scale, ldw, K, x, r0, r1, y);
}

/* =================================================================== AVX2 (+FMA, F16C)
 * T2: a 32-byte block gives weights 0..31 (W & 0x03), 32..63 (W & 0x0C, scale 4), 64..95
 * ((W >> 4) & 0x03) and 96..127 ((W >> 4) & 0x0C, scale 4).  vpmaddubsw (u8 x s8 -> pairs summed
 * to s16) cannot saturate: |pair| <= 2 * 12 * 128.  The scale-1 half is shifted left by 2, added
 * to the scale-4 half in 16 bits (|.| <= 12288), widened with vpmaddwd and the final sum shifted
 * right by 2 (exact). */

OB_T256 OB_INL int32_t ob256_hsum_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

OB_T256 OB_INL void ob256_t2_tile(const uint8_t *w, size_t rb, int K, const int8_t *x, size_t xs,
                                  int32_t *out, const int R, const int T) {
    const int nblk = (K + 127) / 128;
    const __m256i m03 = _mm256_set1_epi8(0x03), m0c = _mm256_set1_epi8(0x0C);
    const __m256i ones16 = _mm256_set1_epi16(1);
    __m256i acc[4 * 4];
#pragma GCC unroll 16
    for (int i = 0; i < R * T; i++) acc[i] = _mm256_setzero_si256();
    for (int b = 0; b < nblk; b++) {
        __m256i A0[4], A1[4], A2[4], A3[4];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const __m256i W = _mm256_loadu_si256((const __m256i *)(w + (size_t)r * rb + (size_t)b * 32));
            const __m256i Wh = _mm256_srli_epi16(W, 4);
            A0[r] = _mm256_and_si256(W, m03);
            A1[r] = _mm256_and_si256(W, m0c);
            A2[r] = _mm256_and_si256(Wh, m03);
            A3[r] = _mm256_and_si256(Wh, m0c);
        }
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            const int8_t *xp = x + (size_t)t * xs + (size_t)b * 128;
            const __m256i x0 = _mm256_loadu_si256((const __m256i *)xp);
            const __m256i x1 = _mm256_loadu_si256((const __m256i *)(xp + 32));
            const __m256i x2 = _mm256_loadu_si256((const __m256i *)(xp + 64));
            const __m256i x3 = _mm256_loadu_si256((const __m256i *)(xp + 96));
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) {
                __m256i s1 = _mm256_add_epi16(_mm256_maddubs_epi16(A0[r], x0), _mm256_maddubs_epi16(A2[r], x2));
                __m256i s4 = _mm256_add_epi16(_mm256_maddubs_epi16(A1[r], x1), _mm256_maddubs_epi16(A3[r], x3));
                __m256i s = _mm256_add_epi16(_mm256_slli_epi16(s1, 2), s4);
                acc[r * T + t] = _mm256_add_epi32(acc[r * T + t], _mm256_madd_epi16(s, ones16));
            }
        }
    }
#pragma GCC unroll 16
    for (int i = 0; i < R * T; i++) out[i] = ob256_hsum_epi32(acc[i]) >> 2;
}

/* T1.6: q = b * 3^i (mod 256) by byte additions; trit = min(q -sat 85, 1) + min(q -sat 170, 1)
 * = (q * 3) >> 8.  Five vpmaddubsw per block summed in 16 bits (|.| <= 2560), then widened.  The
 * tail block is copied into zero-padded local buffers and run through the same code. */
OB_T256 OB_INL void ob256_t16_block(const uint8_t *w, size_t rb, const int8_t *x, size_t xs,
                                    size_t step, __m256i *acc, const int R, const int T) {
    const __m256i one8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    const __m256i c85 = _mm256_set1_epi8(85), c170 = _mm256_set1_epi8((char)170);
    __m256i q[4], s[4 * 4];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) q[r] = _mm256_loadu_si256((const __m256i *)(w + (size_t)r * rb));
#pragma GCC unroll 16
    for (int i = 0; i < R * T; i++) s[i] = _mm256_setzero_si256();
#pragma GCC unroll 5
    for (int i = 0; i < 5; i++) {
        __m256i tr[4];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            if (i) q[r] = _mm256_add_epi8(q[r], _mm256_add_epi8(q[r], q[r]));
            tr[r] = _mm256_add_epi8(_mm256_min_epu8(_mm256_subs_epu8(q[r], c85), one8),
                                    _mm256_min_epu8(_mm256_subs_epu8(q[r], c170), one8));
        }
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            const __m256i xv = _mm256_loadu_si256((const __m256i *)(x + (size_t)t * xs + (size_t)i * step));
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) s[r * T + t] = _mm256_add_epi16(s[r * T + t], _mm256_maddubs_epi16(tr[r], xv));
        }
    }
#pragma GCC unroll 16
    for (int i = 0; i < R * T; i++) acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(s[i], ones16));
}

OB_T256 OB_INL void ob256_t16_tile(const uint8_t *w, size_t rb, int K, const int8_t *x, size_t xs,
                                   int32_t *out, const int R, const int T) {
    const int nfull = K / 160, rem = K % 160, L = (rem + 4) / 5;
    __m256i acc[4 * 4];
#pragma GCC unroll 16
    for (int i = 0; i < R * T; i++) acc[i] = _mm256_setzero_si256();
    for (int b = 0; b < nfull; b++)
        ob256_t16_block(w + (size_t)b * 32, rb, x + (size_t)b * 160, xs, 32, acc, R, T);
    if (rem) {
        uint8_t wt[4 * 32];
        int8_t xt[4 * 160];
        memset(wt, 0, sizeof(wt));
        memset(xt, 0, sizeof(xt));
        for (int r = 0; r < R; r++) memcpy(wt + r * 32, w + (size_t)r * rb + (size_t)nfull * 32, (size_t)L);
        for (int t = 0; t < T; t++)
            for (int i = 0; i < 5; i++)
                memcpy(xt + t * 160 + i * 32, x + (size_t)t * xs + (size_t)nfull * 160 + (size_t)(i * L), (size_t)L);
        ob256_t16_block(wt, 32, xt, 160, 32, acc, R, T);
    }
#pragma GCC unroll 16
    for (int i = 0; i < R * T; i++) out[i] = ob256_hsum_epi32(acc[i]);
}

/* B1: 4 bytes -> 32 bytes of 0/1 (byte shuffle, bit test), vpmaddubsw with the activations. */
OB_T256 OB_INL void ob256_b1_tile(const uint8_t *w, size_t rb, int K, const int8_t *x, size_t xs,
                                  int32_t *out, const int R, const int T) {
    const int nblk = (K + 127) / 128;
    const __m256i idx = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2,
                                         2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bm = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    const __m256i one8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    __m256i acc[4 * 4];
#pragma GCC unroll 16
    for (int i = 0; i < R * T; i++) acc[i] = _mm256_setzero_si256();
    for (int b = 0; b < nblk; b++) {
        __m256i s[4 * 4];
#pragma GCC unroll 16
        for (int i = 0; i < R * T; i++) s[i] = _mm256_setzero_si256();
        for (int c = 0; c < 4; c++) {
            __m256i bits[4];
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) {
                int32_t v;
                memcpy(&v, w + (size_t)r * rb + (size_t)b * 16 + (size_t)c * 4, 4);
                __m256i e = _mm256_shuffle_epi8(_mm256_set1_epi32(v), idx);
                bits[r] = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(e, bm), bm), one8);
            }
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) {
                const __m256i xv = _mm256_loadu_si256((const __m256i *)(x + (size_t)t * xs + (size_t)b * 128 + (size_t)c * 32));
#pragma GCC unroll 4
                for (int r = 0; r < R; r++) s[r * T + t] = _mm256_add_epi16(s[r * T + t], _mm256_maddubs_epi16(bits[r], xv));
            }
        }
#pragma GCC unroll 16
        for (int i = 0; i < R * T; i++) acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(s[i], ones16));
    }
#pragma GCC unroll 16
    for (int i = 0; i < R * T; i++) out[i] = ob256_hsum_epi32(acc[i]);
}

OB_DEF_TILES(OB_T256, ob256_t2, 4, 2)
OB_DEF_TILES(OB_T256, ob256_t16, 2, 2)
OB_DEF_TILES(OB_T256, ob256_b1, 4, 1)
OB_DEF_MATMUL(ob256_t2, OB_WFMT_T2)
OB_DEF_MATMUL(ob256_t16, OB_WFMT_T16)
OB_DEF_MATMUL(ob256_b1, OB_WFMT_B1)

OB_T256 static void ob256_quantize(const float *x, int K, int8_t *xq, float *a_out, int32_t *sum_out) {
    const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 mx = _mm256_setzero_ps();
    int k = 0;
    for (; k + 8 <= K; k += 8) mx = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + k), absm), mx);
    __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(mx, 1), _mm256_castps256_ps128(mx));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
    float amax = _mm_cvtss_f32(m4);
    for (; k < K; k++) {
        float v = fabsf(x[k]);
        if (v > amax) amax = v;
    }
    float a = 127.0f / fmaxf(amax, 1e-5f);
    const __m256 va = _mm256_set1_ps(a), lo = _mm256_set1_ps(-128.0f), hi = _mm256_set1_ps(127.0f);
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    __m256i s = _mm256_setzero_si256();
    for (k = 0; k + 32 <= K; k += 32) {
        __m256i q[4];
        for (int i = 0; i < 4; i++) {
            __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + k + 8 * i), va);
            v = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
            q[i] = _mm256_cvttps_epi32(v);
            s = _mm256_add_epi32(s, q[i]);
        }
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        _mm256_storeu_si256((__m256i *)(xq + k), _mm256_permutevar8x32_epi32(p, perm));
    }
    int32_t sum = ob256_hsum_epi32(s);
    for (; k < K; k++) {
        float v = nearbyintf(x[k] * a);
        if (v > 127.0f) v = 127.0f;
        if (v < -128.0f) v = -128.0f;
        xq[k] = (int8_t)v;
        sum += xq[k];
    }
    size_t st = ob_act_stride(K);
    memset(xq + K, 0, st - (size_t)K);
    *a_out = a;
    *sum_out = sum;
}

OB_T256 OB_INL float ob256_hsum_ps(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

/* Float GEMVs: per row one 8-lane FMA accumulator over the first K & ~7 columns, horizontal sum,
 * then the last K % 8 products added in order in scalar.  Same sequence for every row. */
#define OB256_GEMV(name, WT, LOAD8, CVT1)                                                          \
    OB_T256 static void name(const WT *w, const float *scale, size_t ldw, int K, const float *x,   \
                             int r0, int r1, float *y) {                                           \
        int kfull = K & ~7;                                                                        \
        int r = r0;                                                                                \
        for (; r + 4 <= r1; r += 4) {                                                              \
            const WT *p[4];                                                                        \
            p[0] = w + (size_t)r * ldw;                                                            \
            p[1] = p[0] + ldw;                                                                     \
            p[2] = p[1] + ldw;                                                                     \
            p[3] = p[2] + ldw;                                                                     \
            __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;                            \
            for (int k = 0; k < kfull; k += 8) {                                                   \
                __m256 xv = _mm256_loadu_ps(x + k);                                                \
                c0 = _mm256_fmadd_ps(LOAD8(p[0] + k), xv, c0);                                     \
                c1 = _mm256_fmadd_ps(LOAD8(p[1] + k), xv, c1);                                     \
                c2 = _mm256_fmadd_ps(LOAD8(p[2] + k), xv, c2);                                     \
                c3 = _mm256_fmadd_ps(LOAD8(p[3] + k), xv, c3);                                     \
            }                                                                                      \
            float sv[4];                                                                           \
            sv[0] = ob256_hsum_ps(c0);                                                             \
            sv[1] = ob256_hsum_ps(c1);                                                             \
            sv[2] = ob256_hsum_ps(c2);                                                             \
            sv[3] = ob256_hsum_ps(c3);                                                             \
            for (int i = 0; i < 4; i++) {                                                          \
                float s = sv[i];                                                                   \
                for (int k = kfull; k < K; k++) s += CVT1(p[i][k]) * x[k];                         \
                y[r + i] = scale ? scale[r + i] * s : s;                                           \
            }                                                                                      \
        }                                                                                          \
        for (; r < r1; r++) {                                                                      \
            const WT *wr = w + (size_t)r * ldw;                                                    \
            __m256 acc = _mm256_setzero_ps();                                                      \
            for (int k = 0; k < kfull; k += 8)                                                     \
                acc = _mm256_fmadd_ps(LOAD8(wr + k), _mm256_loadu_ps(x + k), acc);                 \
            float s = ob256_hsum_ps(acc);                                                          \
            for (int k = kfull; k < K; k++) s += CVT1(wr[k]) * x[k];                               \
            y[r] = scale ? scale[r] * s : s;                                                       \
        }                                                                                          \
    }
#define OB256_LD_F32(p) _mm256_loadu_ps(p)
#define OB256_LD_F16(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p)))
#define OB256_LD_Q8(p) _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(p))))
OB256_GEMV(ob256_gemv_f32_s, float, OB256_LD_F32, OB_CVT_F32)
OB256_GEMV(ob256_gemv_f16_s, uint16_t, OB256_LD_F16, OB_CVT_F16)
/* int8 GEMV: one row at a time (one sequential weight stream, see ob512_q8_rows), four 8-lane
 * accumulators over k in blocks of 32 (chunk j into accumulator j), remaining 8-chunks into
 * c0, c1, c2, then ((c0 + c1) + (c2 + c3)), horizontal sum, last K % 8 products in order. */
OB_T256 static void ob256_gemv_q8_s(const int8_t *w, const float *scale, size_t ldw, int K, const float *x,
                                    int r0, int r1, float *y) {
    const int k32 = K & ~31, kfull = K & ~7;
    for (int r = r0; r < r1; r++) {
        const int8_t *wr = w + (size_t)r * ldw;
        __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
        int k = 0;
        for (; k < k32; k += 32) {
            c0 = _mm256_fmadd_ps(OB256_LD_Q8(wr + k), _mm256_loadu_ps(x + k), c0);
            c1 = _mm256_fmadd_ps(OB256_LD_Q8(wr + k + 8), _mm256_loadu_ps(x + k + 8), c1);
            c2 = _mm256_fmadd_ps(OB256_LD_Q8(wr + k + 16), _mm256_loadu_ps(x + k + 16), c2);
            c3 = _mm256_fmadd_ps(OB256_LD_Q8(wr + k + 24), _mm256_loadu_ps(x + k + 24), c3);
        }
        if (k < kfull) {
            c0 = _mm256_fmadd_ps(OB256_LD_Q8(wr + k), _mm256_loadu_ps(x + k), c0);
            k += 8;
        }
        if (k < kfull) {
            c1 = _mm256_fmadd_ps(OB256_LD_Q8(wr + k), _mm256_loadu_ps(x + k), c1);
            k += 8;
        }
        if (k < kfull) {
            c2 = _mm256_fmadd_ps(OB256_LD_Q8(wr + k), _mm256_loadu_ps(x + k), c2);
            k += 8;
        }
        float s = ob256_hsum_ps(_mm256_add_ps(_mm256_add_ps(c0, c1), _mm256_add_ps(c2, c3)));
        for (k = kfull; k < K; k++) s += (float)wr[k] * x[k];
        y[r] = scale[r] * s;
    }
}
static void ob256_gemv_f32(const float *w, size_t ldw, int K, const float *x, int r0, int r1, float *y) {
    ob256_gemv_f32_s(w, NULL, ldw, K, x, r0, r1, y);
}
static void ob256_gemv_f16(const uint16_t *w, size_t ldw, int K, const float *x, int r0, int r1, float *y) {
    ob256_gemv_f16_s(w, NULL, ldw, K, x, r0, r1, y);
}
static void ob256_gemv_q8(const int8_t *w, const float *scale, size_t ldw, int K, const float *x, int r0,
                          int r1, float *y) {
    ob256_gemv_q8_s(w, scale, ldw, K, x, r0, r1, y);
}

#endif /* OB_HAVE_X86 */

#if defined(OB_HAVE_NEON)
/* =================================================================== NEON (aarch64)
 * Codes are decoded with byte shifts / masks (T2), byte multiplies + a widening multiply by 3
 * (T1.6), or bit tests (B1).  Dot products use vdotq_s32 when compiled with dotprod
 * (__ARM_FEATURE_DOTPROD), else vmull_s8 / vmlal_high_s8 (|pair| <= 2 * 3 * 128) + vpadalq_s16. */
#define OB_NINL static inline __attribute__((always_inline))

OB_NINL int32x4_t obn_dot(int32x4_t acc, int8x16_t a, int8x16_t b) {
#if defined(__ARM_FEATURE_DOTPROD)
    return vdotq_s32(acc, a, b);
#else
    int16x8_t p = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    p = vmlal_high_s8(p, a, b);
    return vpadalq_s16(acc, p);
#endif
}

OB_NINL void obn_t2_tile(const uint8_t *w, size_t rb, int K, const int8_t *x, size_t xs,
                         int32_t *out, const int R, const int T) {
    const int nblk = (K + 127) / 128;
    const uint8x16_t m3 = vdupq_n_u8(3);
    int32x4_t acc[4 * 4];
    for (int i = 0; i < R * T; i++) acc[i] = vdupq_n_s32(0);
    for (int b = 0; b < nblk; b++)
        for (int h = 0; h < 2; h++) { /* bytes 16h .. 16h+15 of the block */
            int8x16_t c[4][4];
            for (int r = 0; r < R; r++) {
                uint8x16_t W = vld1q_u8(w + (size_t)r * rb + (size_t)b * 32 + 16 * h);
                c[r][0] = vreinterpretq_s8_u8(vandq_u8(W, m3));
                c[r][1] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(W, 2), m3));
                c[r][2] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(W, 4), m3));
                c[r][3] = vreinterpretq_s8_u8(vshrq_n_u8(W, 6));
            }
            for (int t = 0; t < T; t++) {
                const int8_t *xp = x + (size_t)t * xs + (size_t)b * 128 + 16 * h;
                for (int i = 0; i < 4; i++) {
                    int8x16_t xv = vld1q_s8(xp + 32 * i);
                    for (int r = 0; r < R; r++) acc[r * T + t] = obn_dot(acc[r * T + t], c[r][i], xv);
                }
            }
        }
    for (int i = 0; i < R * T; i++) out[i] = vaddvq_s32(acc[i]);
}

OB_NINL void obn_t16_block(const uint8_t *w, size_t rb, const int8_t *x, size_t xs,
                           int32x4_t *acc, const int R, const int T) {
    static const uint8_t pow3[5] = {1, 3, 9, 27, 81};
    for (int h = 0; h < 2; h++) {
        uint8x16_t B[4];
        for (int r = 0; r < R; r++) B[r] = vld1q_u8(w + (size_t)r * rb + 16 * h);
        for (int i = 0; i < 5; i++) {
            int8x16_t tr[4];
            for (int r = 0; r < R; r++) {
                uint8x16_t q = vmulq_u8(B[r], vdupq_n_u8(pow3[i]));
                uint8x8_t lo = vshrn_n_u16(vmull_u8(vget_low_u8(q), vdup_n_u8(3)), 8);
                uint8x8_t hi = vshrn_n_u16(vmull_high_u8(q, vdupq_n_u8(3)), 8);
                tr[r] = vreinterpretq_s8_u8(vcombine_u8(lo, hi));
            }
            for (int t = 0; t < T; t++) {
                int8x16_t xv = vld1q_s8(x + (size_t)t * xs + 32 * i + 16 * h);
                for (int r = 0; r < R; r++) acc[r * T + t] = obn_dot(acc[r * T + t], tr[r], xv);
            }
        }
    }
}

OB_NINL void obn_t16_tile(const uint8_t *w, size_t rb, int K, const int8_t *x, size_t xs,
                          int32_t *out, const int R, const int T) {
    const int nfull = K / 160, rem = K % 160, L = (rem + 4) / 5;
    int32x4_t acc[4 * 4];
    for (int i = 0; i < R * T; i++) acc[i] = vdupq_n_s32(0);
    for (int b = 0; b < nfull; b++) obn_t16_block(w + (size_t)b * 32, rb, x + (size_t)b * 160, xs, acc, R, T);
    if (rem) {
        uint8_t wt[4 * 32];
        int8_t xt[4 * 160];
        memset(wt, 0, sizeof(wt));
        memset(xt, 0, sizeof(xt));
        for (int r = 0; r < R; r++) memcpy(wt + r * 32, w + (size_t)r * rb + (size_t)nfull * 32, (size_t)L);
        for (int t = 0; t < T; t++)
            for (int i = 0; i < 5; i++)
                memcpy(xt + t * 160 + i * 32, x + (size_t)t * xs + (size_t)nfull * 160 + (size_t)(i * L), (size_t)L);
        obn_t16_block(wt, 32, xt, 160, acc, R, T);
    }
    for (int i = 0; i < R * T; i++) out[i] = vaddvq_s32(acc[i]);
}

OB_NINL void obn_b1_tile(const uint8_t *w, size_t rb, int K, const int8_t *x, size_t xs,
                         int32_t *out, const int R, const int T) {
    const int n16 = (K + 127) / 128 * 8;
    static const uint8_t bmv[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    const uint8x16_t bm = vld1q_u8(bmv), one8 = vdupq_n_u8(1);
    int32x4_t acc[4 * 4];
    for (int i = 0; i < R * T; i++) acc[i] = vdupq_n_s32(0);
    for (int c = 0; c < n16; c++) {
        int8x16_t bits[4];
        for (int r = 0; r < R; r++) {
            const uint8_t *p = w + (size_t)r * rb + (size_t)c * 2;
            uint8x16_t e = vcombine_u8(vdup_n_u8(p[0]), vdup_n_u8(p[1]));
            bits[r] = vreinterpretq_s8_u8(vandq_u8(vtstq_u8(e, bm), one8));
        }
        for (int t = 0; t < T; t++) {
            int8x16_t xv = vld1q_s8(x + (size_t)t * xs + (size_t)c * 16);
            for (int r = 0; r < R; r++) acc[r * T + t] = obn_dot(acc[r * T + t], bits[r], xv);
        }
    }
    for (int i = 0; i < R * T; i++) out[i] = vaddvq_s32(acc[i]);
}

#define OB_NEON_ATTR
OB_DEF_TILES(OB_NEON_ATTR, obn_t2, 4, 4)
OB_DEF_TILES(OB_NEON_ATTR, obn_t16, 2, 2)
OB_DEF_TILES(OB_NEON_ATTR, obn_b1, 4, 4)
OB_DEF_MATMUL(obn_t2, OB_WFMT_T2)
OB_DEF_MATMUL(obn_t16, OB_WFMT_T16)
OB_DEF_MATMUL(obn_b1, OB_WFMT_B1)

static void obn_quantize(const float *x, int K, int8_t *xq, float *a_out, int32_t *sum_out) {
    float32x4_t mx = vdupq_n_f32(0.0f);
    int k = 0;
    for (; k + 4 <= K; k += 4) mx = vmaxnmq_f32(mx, vabsq_f32(vld1q_f32(x + k)));
    float amax = vmaxnmvq_f32(mx);
    for (; k < K; k++) {
        float v = fabsf(x[k]);
        if (v > amax) amax = v;
    }
    float a = 127.0f / fmaxf(amax, 1e-5f);
    const float32x4_t va = vdupq_n_f32(a), lo = vdupq_n_f32(-128.0f), hi = vdupq_n_f32(127.0f);
    int32x4_t s = vdupq_n_s32(0);
    for (k = 0; k + 8 <= K; k += 8) {
        float32x4_t v0 = vminq_f32(vmaxq_f32(vrndnq_f32(vmulq_f32(vld1q_f32(x + k), va)), lo), hi);
        float32x4_t v1 = vminq_f32(vmaxq_f32(vrndnq_f32(vmulq_f32(vld1q_f32(x + k + 4), va)), lo), hi);
        int32x4_t q0 = vcvtq_s32_f32(v0), q1 = vcvtq_s32_f32(v1);
        s = vaddq_s32(s, vaddq_s32(q0, q1));
        int16x8_t q16 = vcombine_s16(vmovn_s32(q0), vmovn_s32(q1));
        vst1_s8(xq + k, vmovn_s16(q16));
    }
    int32_t sum = vaddvq_s32(s);
    for (; k < K; k++) {
        float v = nearbyintf(x[k] * a);
        if (v > 127.0f) v = 127.0f;
        if (v < -128.0f) v = -128.0f;
        xq[k] = (int8_t)v;
        sum += xq[k];
    }
    size_t st = ob_act_stride(K);
    memset(xq + K, 0, st - (size_t)K);
    *a_out = a;
    *sum_out = sum;
}

/* Float GEMVs: one 4-lane FMA accumulator per row over K & ~3 columns, vaddvq, then the last
 * K % 4 products in order in scalar. */
OB_NINL float32x4_t obn_ld_f32(const float *p) { return vld1q_f32(p); }
OB_NINL float32x4_t obn_ld_f16(const uint16_t *p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }
OB_NINL float32x4_t obn_ld_q8(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    int8x8_t b = vreinterpret_s8_s32(vdup_n_s32(v));
    return vcvtq_f32_s32(vmovl_s16(vget_low_s16(vmovl_s8(b))));
}
#define OBN_GEMV(name, WT, LOAD4, CVT1)                                                            \
    static void name(const WT *w, const float *scale, size_t ldw, int K, const float *x, int r0,   \
                     int r1, float *y) {                                                           \
        int kfull = K & ~3;                                                                        \
        for (int r = r0; r < r1; r++) {                                                            \
            const WT *wr = w + (size_t)r * ldw;                                                    \
            float32x4_t acc = vdupq_n_f32(0.0f);                                                   \
            for (int k = 0; k < kfull; k += 4) acc = vfmaq_f32(acc, LOAD4(wr + k), vld1q_f32(x + k)); \
            float s = vaddvq_f32(acc);                                                             \
            for (int k = kfull; k < K; k++) s += CVT1(wr[k]) * x[k];                               \
            y[r] = scale ? scale[r] * s : s;                                                       \
        }                                                                                          \
    }
OBN_GEMV(obn_gemv_f32_s, float, obn_ld_f32, OB_CVT_F32)
OBN_GEMV(obn_gemv_f16_s, uint16_t, obn_ld_f16, ob_f16_to_f32)
OBN_GEMV(obn_gemv_q8_s, int8_t, obn_ld_q8, (float))
static void obn_gemv_f32(const float *w, size_t ldw, int K, const float *x, int r0, int r1, float *y) {
    obn_gemv_f32_s(w, NULL, ldw, K, x, r0, r1, y);
}
static void obn_gemv_f16(const uint16_t *w, size_t ldw, int K, const float *x, int r0, int r1, float *y) {
    obn_gemv_f16_s(w, NULL, ldw, K, x, r0, r1, y);
}
static void obn_gemv_q8(const int8_t *w, const float *scale, size_t ldw, int K, const float *x, int r0,
                        int r1, float *y) {
    obn_gemv_q8_s(w, scale, ldw, K, x, r0, r1, y);
}
#endif /* OB_HAVE_NEON */

static void ob_simd_fill(ob_kernels *k, ob_isa isa) {
    switch (isa) {
#if defined(OB_HAVE_X86)
    case OB_ISA_AVX512:
        k->quantize = ob512_quantize;
        k->matmul[OB_WFMT_T2] = ob512_t2_matmul;
        k->matmul[OB_WFMT_T16] = ob512_t16_matmul;
        k->matmul[OB_WFMT_B1] = ob512_b1_matmul;
        k->gemv_f32 = ob512_gemv_f32;
        k->gemv_f16 = ob512_gemv_f16;
        k->gemv_q8 = ob512_gemv_q8;
        break;
    case OB_ISA_AVX2:
        k->quantize = ob256_quantize;
        k->matmul[OB_WFMT_T2] = ob256_t2_matmul;
        k->matmul[OB_WFMT_T16] = ob256_t16_matmul;
        k->matmul[OB_WFMT_B1] = ob256_b1_matmul;
        k->gemv_f32 = ob256_gemv_f32;
        k->gemv_f16 = ob256_gemv_f16;
        k->gemv_q8 = ob256_gemv_q8;
        break;
#endif
#if defined(OB_HAVE_NEON)
    case OB_ISA_NEON:
        k->quantize = obn_quantize;
        k->matmul[OB_WFMT_T2] = obn_t2_matmul;
        k->matmul[OB_WFMT_T16] = obn_t16_matmul;
        k->matmul[OB_WFMT_B1] = obn_b1_matmul;
        k->gemv_f32 = obn_gemv_f32;
        k->gemv_f16 = obn_gemv_f16;
        k->gemv_q8 = obn_gemv_q8;
        break;
#endif
    default: break;
    }
}

/* ================================================================= ISA selection / dispatch */

#if defined(OB_HAVE_X86)
static uint64_t ob_xgetbv0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}
static int ob_x86_level(void) { /* 0 scalar, 1 avx2, 2 avx512 */
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, f16c = (c >> 29) & 1;
    if (!(osxsave && avx)) return 0;
    uint64_t xcr0 = ob_xgetbv0();
    if ((xcr0 & 0x6) != 0x6) return 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    int avx2 = (b >> 5) & 1;
    int avx512f = (b >> 16) & 1, avx512bw = (b >> 30) & 1, avx512vl = (b >> 31) & 1;
    int vnni = (c >> 11) & 1;
    if (!(avx2 && fma && f16c)) return 0;
    if (avx512f && avx512bw && avx512vl && vnni && (xcr0 & 0xe6) == 0xe6) return 2;
    return 1;
}
#endif

int ob_isa_supported(ob_isa isa) {
    switch (isa) {
    case OB_ISA_SCALAR: return 1;
#if defined(OB_HAVE_X86)
    case OB_ISA_AVX2: return ob_x86_level() >= 1;
    case OB_ISA_AVX512: return ob_x86_level() >= 2;
#endif
#if defined(OB_HAVE_NEON)
    case OB_ISA_NEON: return 1;
#endif
    default: return 0;
    }
}

ob_isa ob_isa_detect(void) {
#if defined(OB_HAVE_X86)
    int l = ob_x86_level();
    return l == 2 ? OB_ISA_AVX512 : l == 1 ? OB_ISA_AVX2 : OB_ISA_SCALAR;
#elif defined(OB_HAVE_NEON)
    return OB_ISA_NEON;
#else
    return OB_ISA_SCALAR;
#endif
}

const char *ob_isa_name(ob_isa isa) {
    switch (isa) {
    case OB_ISA_SCALAR: return "scalar";
    case OB_ISA_AVX2: return "avx2";
    case OB_ISA_AVX512: return "avx512";
    case OB_ISA_NEON: return "neon";
    default: return "?";
    }
}

int ob_isa_parse(const char *name, ob_isa *out) {
    for (int i = 0; i < OB_ISA_COUNT; i++)
        if (name && strcmp(name, ob_isa_name((ob_isa)i)) == 0) {
            *out = (ob_isa)i;
            return 0;
        }
    return -1;
}

int ob_isa_from_env(ob_isa *out) {
    const char *e = getenv("ONEBIT_ISA");
    *out = ob_isa_detect();
    if (!e || !*e) return OB_ISA_OK;
    ob_isa want;
    if (ob_isa_parse(e, &want) != 0) return OB_ISA_EUNKNOWN;
    if (!ob_isa_supported(want)) return OB_ISA_EUNSUPPORTED;
    *out = want;
    return OB_ISA_OK;
}

int ob_kernels_init(ob_kernels *k, ob_isa isa) {
    k->isa = OB_ISA_SCALAR;
    k->quantize = ob_quantize_ref;
    k->matmul[OB_WFMT_T2] = ob_matmul_t2_ref;
    k->matmul[OB_WFMT_T16] = ob_matmul_t16_ref;
    k->matmul[OB_WFMT_B1] = ob_matmul_b1_ref;
    k->gemv_f32 = ob_gemv_f32_ref;
    k->gemv_f16 = ob_gemv_f16_ref;
    k->gemv_q8 = ob_gemv_q8_ref;
    if (!ob_isa_supported(isa)) return OB_ISA_EUNSUPPORTED;
    k->isa = isa;
    ob_simd_fill(k, isa);
    return 0;
}

int ob_kernels_init_env(ob_kernels *k) {
    ob_isa isa;
    int rc = ob_isa_from_env(&isa);
    ob_kernels_init(k, isa);
    return rc;
}

void ob_quantize_rows(const ob_kernels *k, const float *x, size_t ldx, int m, int K, int8_t *xq,
                      size_t xq_stride, float *a, int32_t *xsum) {
    for (int t = 0; t < m; t++)
        k->quantize(x + (size_t)t * ldx, K, xq + (size_t)t * xq_stride, a + t, xsum + t);
}
