/* kernels_mve.c - Armv8.1-M Helium (MVE) kernels, e.g. Cortex-M55 (-mcpu=cortex-m55): T2 and the
 * int8 / f32 GEMVs of the LM head.  The other entries keep the scalar references. */
#include "kernels_impl.h"

#if defined(OB_HAVE_MVE)
#include <arm_mve.h>
/* =================================================================== MVE (Helium)
 * VMLADAVA multiplies 16 int8 lanes and adds the sum to a general register, so T2 needs no
 * widening: codes c = w + 1 are decoded with a shift and a mask and fed straight into it.  MVE
 * has eight 128-bit registers, so the codes are decoded on the fly (one register per row for the
 * weight bytes, one for the activations, one for the codes) instead of being kept per slice. */
#define OB_MINL static inline __attribute__((always_inline))

OB_MINL void obm_t2_tile(const uint8_t *w, size_t rb, int K, const int8_t *x, size_t xs, int32_t *out,
                         const int R, const int T) {
    const int nblk = (K + 127) / 128;
    const uint8x16_t m3 = vdupq_n_u8(3);
    int32_t acc[4 * 4];
    for (int i = 0; i < R * T; i++) acc[i] = 0;
    for (int b = 0; b < nblk; b++)
        for (int h = 0; h < 2; h++) { /* bytes 16h .. 16h+15 of the block */
            uint8x16_t W[4];
            for (int r = 0; r < R; r++) W[r] = vld1q_u8(w + (size_t)r * rb + (size_t)b * 32 + 16 * h);
            for (int t = 0; t < T; t++) {
                const int8_t *xp = x + (size_t)t * xs + (size_t)b * 128 + 16 * h;
                int8x16_t x0 = vld1q_s8(xp), x1 = vld1q_s8(xp + 32), x2 = vld1q_s8(xp + 64), x3 = vld1q_s8(xp + 96);
                for (int r = 0; r < R; r++) {
                    int32_t a = acc[r * T + t];
                    a = vmladavaq_s8(a, vreinterpretq_s8_u8(vandq_u8(W[r], m3)), x0);
                    a = vmladavaq_s8(a, vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(W[r], 2), m3)), x1);
                    a = vmladavaq_s8(a, vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(W[r], 4), m3)), x2);
                    a = vmladavaq_s8(a, vreinterpretq_s8_u8(vshrq_n_u8(W[r], 6)), x3);
                    acc[r * T + t] = a;
                }
            }
        }
    for (int i = 0; i < R * T; i++) out[i] = acc[i];
}

#define OB_MVE_ATTR
OB_DEF_TILES(OB_MVE_ATTR, obm_t2, 4, 2)
OB_DEF_MATMUL(obm_t2, OB_WFMT_T2)

/* Float GEMVs: four 4-lane FMA sums over K & ~15 columns, then the last K % 16 in order. */
OB_MINL float32x4_t obm_ld_f32(const float *p) { return vld1q_f32(p); }
OB_MINL float obm_fsum(float32x4_t v) {
    return (vgetq_lane_f32(v, 0) + vgetq_lane_f32(v, 1)) + (vgetq_lane_f32(v, 2) + vgetq_lane_f32(v, 3));
}
#define OBM_GEMV(name, WT, LOAD4)                                                                   \
    static void name(const WT *w, const float *scale, size_t ldw, int K, const float *x, int r0,    \
                     int r1, float *y) {                                                            \
        int k16 = K & ~15;                                                                          \
        for (int r = r0; r < r1; r++) {                                                             \
            const WT *wr = w + (size_t)r * ldw;                                                     \
            float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0, a2 = a0, a3 = a0;                          \
            for (int k = 0; k < k16; k += 16) {                                                     \
                a0 = vfmaq_f32(a0, LOAD4(wr + k), vld1q_f32(x + k));                                \
                a1 = vfmaq_f32(a1, LOAD4(wr + k + 4), vld1q_f32(x + k + 4));                        \
                a2 = vfmaq_f32(a2, LOAD4(wr + k + 8), vld1q_f32(x + k + 8));                        \
                a3 = vfmaq_f32(a3, LOAD4(wr + k + 12), vld1q_f32(x + k + 12));                      \
            }                                                                                       \
            float s = obm_fsum(vaddq_f32(vaddq_f32(a0, a1), vaddq_f32(a2, a3)));                    \
            for (int k = k16; k < K; k++) s += (float)wr[k] * x[k];                                 \
            y[r] = scale ? scale[r] * s : s;                                                        \
        }                                                                                           \
    }
OBM_GEMV(obm_gemv_f32_s, float, obm_ld_f32)
static void obm_gemv_f32(const float *w, size_t ldw, int K, const float *x, int r0, int r1, float *y) {
    obm_gemv_f32_s(w, NULL, ldw, K, x, r0, r1, y);
}

void ob_kernels_fill_mve(ob_kernels *k) {
    k->matmul[OB_WFMT_T2] = obm_t2_matmul;
    k->gemv_f32 = obm_gemv_f32;
    /* gemv_q8 (the int8 head, exact integer sums) keeps the scalar reference */
}
#else
typedef int ob_kernels_mve_empty; /* ISO C wants a non-empty translation unit */
#endif /* OB_HAVE_MVE */
