/* kernels_neon.c - Advanced SIMD kernels for aarch64 (+ dotprod when compiled with it) and for
 * 32-bit ARMv7 with NEON (+ FMA and f16 conversions with -mfpu=neon-vfpv4 -mfp16-format=ieee). */
#include "kernels_impl.h"

#if defined(OB_HAVE_NEON)
#include <arm_neon.h>
/* =================================================================== NEON
 * Codes are decoded with byte shifts / masks (T2), byte multiplies + a widening multiply by 3
 * (T1.6), or bit tests (B1).  Dot products use vdotq_s32 when compiled with dotprod
 * (__ARM_FEATURE_DOTPROD), else vmull_s8 / vmlal_s8 (|pair| <= 2 * 3 * 128) + vpadalq_s16. */
#define OB_NINL static inline __attribute__((always_inline))

/* What ARMv7 NEON lacks (across-vector adds, the _high widening forms, vfmaq without VFPv4,
 * f16 vectors without the half-precision extension), written with what both have.  The
 * pairwise order (a0 + a1) + (a2 + a3) is the one aarch64's faddp gives. */
#if defined(__aarch64__)
#define OBN_F16 1
OB_NINL int32_t obn_hadd_s32(int32x4_t v) { return vaddvq_s32(v); }
OB_NINL float obn_hadd_f32(float32x4_t v) { return vaddvq_f32(v); }
OB_NINL int16x8_t obn_mull_hi_s8(int8x16_t a, int8x16_t b) { return vmull_high_s8(a, b); }
OB_NINL int16x8_t obn_mlal_hi_s8(int16x8_t p, int8x16_t a, int8x16_t b) { return vmlal_high_s8(p, a, b); }
OB_NINL uint16x8_t obn_mull_hi_u8(uint8x16_t a, uint8x8_t b) { return vmull_high_u8(a, vcombine_u8(b, b)); }
#else
#if defined(__ARM_NEON_FP) && (__ARM_NEON_FP & 2) && defined(__ARM_FP16_FORMAT_IEEE)
#define OBN_F16 1
#endif
OB_NINL int32_t obn_hadd_s32(int32x4_t v) {
    int32x2_t s = vpadd_s32(vget_low_s32(v), vget_high_s32(v));
    return vget_lane_s32(vpadd_s32(s, s), 0);
}
OB_NINL float obn_hadd_f32(float32x4_t v) {
    float32x2_t s = vpadd_f32(vget_low_f32(v), vget_high_f32(v));
    return vget_lane_f32(vpadd_f32(s, s), 0);
}
OB_NINL int16x8_t obn_mull_hi_s8(int8x16_t a, int8x16_t b) { return vmull_s8(vget_high_s8(a), vget_high_s8(b)); }
OB_NINL int16x8_t obn_mlal_hi_s8(int16x8_t p, int8x16_t a, int8x16_t b) {
    return vmlal_s8(p, vget_high_s8(a), vget_high_s8(b));
}
OB_NINL uint16x8_t obn_mull_hi_u8(uint8x16_t a, uint8x8_t b) { return vmull_u8(vget_high_u8(a), b); }
#endif
/* max(m, v) that skips NaN like the reference's v > amax, and round to nearest even: the
 * magic-number add is exact here since |v| <= 127 after the scale (ARMv7 NEON always rounds to
 * nearest; its flush of subnormals to zero cannot change a value that rounds to 0 anyway). */
#if defined(__aarch64__)
OB_NINL float32x4_t obn_max_f32(float32x4_t m, float32x4_t v) { return vmaxnmq_f32(m, v); }
OB_NINL float obn_hmax_f32(float32x4_t v) { return vmaxnmvq_f32(v); }
OB_NINL float32x4_t obn_round_f32(float32x4_t v) { return vrndnq_f32(v); }
#else
OB_NINL float32x4_t obn_max_f32(float32x4_t m, float32x4_t v) { return vbslq_f32(vcgtq_f32(v, m), v, m); }
OB_NINL float obn_hmax_f32(float32x4_t v) {
    float32x2_t s = vpmax_f32(vget_low_f32(v), vget_high_f32(v));
    return vget_lane_f32(vpmax_f32(s, s), 0);
}
OB_NINL float32x4_t obn_round_f32(float32x4_t v) {
    const float32x4_t magic = vdupq_n_f32(12582912.0f); /* 1.5 * 2^23 */
    return vsubq_f32(vaddq_f32(v, magic), magic);
}
#endif
/* acc + a * b: fused where the ISA has it; the float GEMVs are checked to a tolerance, not bits */
OB_NINL float32x4_t obn_mla_f32(float32x4_t acc, float32x4_t a, float32x4_t b) {
#if defined(__aarch64__) || defined(__ARM_FEATURE_FMA)
    return vfmaq_f32(acc, a, b);
#else
    return vmlaq_f32(acc, a, b);
#endif
}

OB_NINL int32x4_t obn_dot(int32x4_t acc, int8x16_t a, int8x16_t b) {
#if defined(__ARM_FEATURE_DOTPROD)
    return vdotq_s32(acc, a, b);
#else
    int16x8_t p = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    p = obn_mlal_hi_s8(p, a, b);
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
    for (int i = 0; i < R * T; i++) out[i] = obn_hadd_s32(acc[i]);
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
                uint8x8_t hi = vshrn_n_u16(obn_mull_hi_u8(q, vdup_n_u8(3)), 8);
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
    for (int i = 0; i < R * T; i++) out[i] = obn_hadd_s32(acc[i]);
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
    for (int i = 0; i < R * T; i++) out[i] = obn_hadd_s32(acc[i]);
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
    for (; k + 4 <= K; k += 4) mx = obn_max_f32(mx, vabsq_f32(vld1q_f32(x + k)));
    float amax = obn_hmax_f32(mx);
    for (; k < K; k++) {
        float v = fabsf(x[k]);
        if (v > amax) amax = v;
    }
    float a = 127.0f / fmaxf(amax, 1e-5f);
    const float32x4_t va = vdupq_n_f32(a), lo = vdupq_n_f32(-128.0f), hi = vdupq_n_f32(127.0f);
    int32x4_t s = vdupq_n_s32(0);
    for (k = 0; k + 8 <= K; k += 8) {
        float32x4_t v0 = vminq_f32(vmaxq_f32(obn_round_f32(vmulq_f32(vld1q_f32(x + k), va)), lo), hi);
        float32x4_t v1 = vminq_f32(vmaxq_f32(obn_round_f32(vmulq_f32(vld1q_f32(x + k + 4), va)), lo), hi);
        int32x4_t q0 = vcvtq_s32_f32(v0), q1 = vcvtq_s32_f32(v1);
        s = vaddq_s32(s, vaddq_s32(q0, q1));
        int16x8_t q16 = vcombine_s16(vmovn_s32(q0), vmovn_s32(q1));
        vst1_s8(xq + k, vmovn_s16(q16));
    }
    int32_t sum = obn_hadd_s32(s);
    for (; k < K; k++) {
        xq[k] = ob_q8_round(x[k] * a);
        sum += xq[k];
    }
    size_t st = ob_act_stride(K);
    memset(xq + K, 0, st - (size_t)K);
    *a_out = a;
    *sum_out = sum;
}

/* Float GEMVs: one 4-lane (fused where available) multiply-add accumulator per row over K & ~3
 * columns, a pairwise horizontal add, then the last K % 4 products in order in scalar. */
OB_NINL float32x4_t obn_ld_f32(const float *p) { return vld1q_f32(p); }
#if defined(OBN_F16) && defined(__aarch64__)
OB_NINL float32x4_t obn_ld_f16(const uint16_t *p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }
#endif
#define OBN_GEMV(name, WT, LOAD4, CVT1)                                                            \
    static void name(const WT *w, const float *scale, size_t ldw, int K, const float *x, int r0,   \
                     int r1, float *y) {                                                           \
        int kfull = K & ~3;                                                                        \
        for (int r = r0; r < r1; r++) {                                                            \
            const WT *wr = w + (size_t)r * ldw;                                                    \
            float32x4_t acc = vdupq_n_f32(0.0f);                                                   \
            for (int k = 0; k < kfull; k += 4) acc = obn_mla_f32(acc, LOAD4(wr + k), vld1q_f32(x + k)); \
            float s = obn_hadd_f32(acc);                                                           \
            for (int k = kfull; k < K; k++) s += CVT1(wr[k]) * x[k];                               \
            y[r] = scale ? scale[r] * s : s;                                                       \
        }                                                                                          \
    }
OBN_GEMV(obn_gemv_f32_s, float, obn_ld_f32, OB_CVT_F32)
static void obn_gemv_f32(const float *w, size_t ldw, int K, const float *x, int r0, int r1, float *y) {
    obn_gemv_f32_s(w, NULL, ldw, K, x, r0, r1, y);
}

/* int8 head GEMV (kernels.h gemv_q8): per 16 weights two vmovl_s8 and four vmlal_s16 (int16 x
 * int16 into int32) over two 4-lane accumulators, widened to int64 per K chunk, the last K % 16
 * products in scalar; exact, then ob_out_q8.  A lane takes 2 products per 16 weights, so a chunk
 * of 8 * OB_Q8_LANE_PRODUCTS (4096) weights cannot overflow it. */
#define OBN_Q8_KC (8 * OB_Q8_LANE_PRODUCTS)
static void obn_gemv_q8(const int8_t *w, const float *scale, size_t ldw, int K, const int16_t *xq, float a,
                        int r0, int r1, float *y) {
    for (int r = r0; r < r1; r++) {
        const int8_t *wr = w + (size_t)r * ldw;
        int64x2_t s64 = vdupq_n_s64(0);
        int k = 0;
        for (int k0 = 0; k0 < K; k0 += OBN_Q8_KC) {
            const int k1 = K - k0 <= OBN_Q8_KC ? K : k0 + OBN_Q8_KC;
            int32x4_t c0 = vdupq_n_s32(0), c1 = c0;
            for (k = k0; k + 16 <= k1; k += 16) {
                int8x16_t wb = vld1q_s8(wr + k);
                int16x8_t wl = vmovl_s8(vget_low_s8(wb)), wh = vmovl_s8(vget_high_s8(wb));
                int16x8_t x0 = vld1q_s16(xq + k), x1 = vld1q_s16(xq + k + 8);
                c0 = vmlal_s16(c0, vget_low_s16(wl), vget_low_s16(x0));
                c1 = vmlal_s16(c1, vget_high_s16(wl), vget_high_s16(x0));
                c0 = vmlal_s16(c0, vget_low_s16(wh), vget_low_s16(x1));
                c1 = vmlal_s16(c1, vget_high_s16(wh), vget_high_s16(x1));
            }
            s64 = vaddq_s64(s64, vaddq_s64(vpaddlq_s32(c0), vpaddlq_s32(c1)));
        }
        int64_t s = vgetq_lane_s64(s64, 0) + vgetq_lane_s64(s64, 1);
        for (; k < K; k++) s += (int32_t)wr[k] * xq[k];
        y[r] = ob_out_q8(s, scale[r], a);
    }
}

/* ARMv7 NEON always flushes subnormals to zero, so there a subnormal x times an Inf half weight
 * gives NaN where the reference gives Inf: the f16 GEMV keeps the reference on ARMv7 (the f32
 * GEMV takes the flush: its weights are finite, and a flushed product stays inside the
 * tolerance). */
#if defined(OBN_F16) && defined(__aarch64__)
OBN_GEMV(obn_gemv_f16_s, uint16_t, obn_ld_f16, ob_f16_to_f32)
static void obn_gemv_f16(const uint16_t *w, size_t ldw, int K, const float *x, int r0, int r1, float *y) {
    obn_gemv_f16_s(w, NULL, ldw, K, x, r0, r1, y);
}
#endif

#if defined(OBN_F16) /* else the f16 conversions keep the scalar references */

/* f16 <-> f32, 4 at a time (fcvtl exact; fcvtn rounds per FPCR, round to nearest even by default). */
static void obn_f16_to_f32(const uint16_t *src, int n, float *dst) {
    int i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(dst + i, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(src + i))));
    for (; i < n; i++) dst[i] = ob_f16_to_f32(src[i]);
}
static void obn_f32_to_f16(const float *src, int n, uint16_t *dst) {
    int i = 0;
    for (; i + 4 <= n; i += 4) vst1_u16(dst + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(src + i))));
    for (; i < n; i++) dst[i] = ob_f32_to_f16(src[i]);
}
#endif

/* I4 (mixed models): the low nibbles of a 16-byte half block are weights 16h..16h+15, the high
 * nibbles weights 32+16h..; codes c = q + 8 <= 15 fit obn_dot's pairs.  The driver subtracts
 * 8 * sum(x). */
OB_NINL void obn_i4_tile(const uint8_t *w, size_t rb, int K, const int8_t *x, size_t xs,
                         int32_t *out, const int R, const int T) {
    const int nblk = (K + 63) / 64;
    const uint8x16_t m15 = vdupq_n_u8(15);
    int32x4_t acc[4 * 4];
    for (int i = 0; i < R * T; i++) acc[i] = vdupq_n_s32(0);
    for (int b = 0; b < nblk; b++)
        for (int h = 0; h < 2; h++) {
            int8x16_t lo[4], hi[4];
            for (int r = 0; r < R; r++) {
                uint8x16_t W = vld1q_u8(w + (size_t)r * rb + (size_t)b * 32 + 16 * h);
                lo[r] = vreinterpretq_s8_u8(vandq_u8(W, m15));
                hi[r] = vreinterpretq_s8_u8(vshrq_n_u8(W, 4));
            }
            for (int t = 0; t < T; t++) {
                const int8_t *xp = x + (size_t)t * xs + (size_t)b * 64 + 16 * h;
                int8x16_t x0 = vld1q_s8(xp), x1 = vld1q_s8(xp + 32);
                for (int r = 0; r < R; r++) {
                    acc[r * T + t] = obn_dot(acc[r * T + t], lo[r], x0);
                    acc[r * T + t] = obn_dot(acc[r * T + t], hi[r], x1);
                }
            }
        }
    for (int i = 0; i < R * T; i++) out[i] = obn_hadd_s32(acc[i]);
}

/* I8: signed x signed.  Without dotprod each product (|.| <= 128 * 128) is widened on its own:
 * two int8 products may not share an int16 (-128 * -128 twice overflows).  Rows are K bytes with
 * no padding: 16 at a time while inside the row, the last K % 16 in scalar. */
OB_NINL int32x4_t obn_dot_i8(int32x4_t acc, int8x16_t a, int8x16_t b) {
#if defined(__ARM_FEATURE_DOTPROD)
    return vdotq_s32(acc, a, b);
#else
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(a), vget_low_s8(b)));
    return vpadalq_s16(acc, obn_mull_hi_s8(a, b));
#endif
}

OB_NINL void obn_i8_tile(const uint8_t *w, size_t rb, int K, const int8_t *x, size_t xs,
                         int32_t *out, const int R, const int T) {
    int32x4_t acc[4 * 4];
    for (int i = 0; i < R * T; i++) acc[i] = vdupq_n_s32(0);
    int k = 0;
    for (; k + 16 <= K; k += 16) {
        int8x16_t W[4];
        for (int r = 0; r < R; r++) W[r] = vld1q_s8((const int8_t *)w + (size_t)r * rb + (size_t)k);
        for (int t = 0; t < T; t++) {
            int8x16_t xv = vld1q_s8(x + (size_t)t * xs + (size_t)k);
            for (int r = 0; r < R; r++) acc[r * T + t] = obn_dot_i8(acc[r * T + t], W[r], xv);
        }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) {
            const int8_t *wr = (const int8_t *)w + (size_t)r * rb, *xp = x + (size_t)t * xs;
            int32_t s = obn_hadd_s32(acc[r * T + t]);
            for (int j = k; j < K; j++) s += (int32_t)wr[j] * xp[j];
            out[r * T + t] = s;
        }
}

OB_DEF_TILES(OB_NEON_ATTR, obn_i4, 4, 4)
OB_DEF_TILES(OB_NEON_ATTR, obn_i8, 4, 4)
OB_DEF_MATMUL_RS(obn_i4, OB_IFMT_I4, 8)
OB_DEF_MATMUL_RS(obn_i8, OB_IFMT_I8, 0)

void ob_kernels_fill_neon(ob_kernels *k) {
    k->quantize = obn_quantize;
    k->matmul[OB_WFMT_T2] = obn_t2_matmul;
    k->matmul[OB_WFMT_T16] = obn_t16_matmul;
    k->matmul[OB_WFMT_B1] = obn_b1_matmul;
    k->gemv_f32 = obn_gemv_f32;
    k->gemv_q8 = obn_gemv_q8;
#if defined(OBN_F16) && defined(__aarch64__)
    k->gemv_f16 = obn_gemv_f16;
#endif
#if defined(OBN_F16)
    k->f16_to_f32 = obn_f16_to_f32;
    k->f32_to_f16 = obn_f32_to_f16;
#endif
    k->matmul_rs[OB_IFMT_I4] = obn_i4_matmul;
    k->matmul_rs[OB_IFMT_I8] = obn_i8_matmul;
}
#else
typedef int ob_kernels_neon_empty; /* ISO C wants a non-empty translation unit */
#endif /* OB_HAVE_NEON */
