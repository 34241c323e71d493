/* kernels_wasm.c - WebAssembly SIMD128 kernels (clang -msimd128): quantize, T2 and the f32 / f16 /
 * int8 GEMVs of the LM head.  The other entries keep the scalar references. */
#include "kernels_impl.h"

#if defined(OB_HAVE_SIMD128)
#include <wasm_simd128.h>
/* =================================================================== SIMD128
 * SIMD128 has no 8-bit dot product.  T2 codes c = w + 1 are 0..3, so c * x fits in int16
 * (|.| <= 384): i16x8.extmul gives the products, four slices of a 32-byte half-block are summed
 * in int16 (|.| <= 8 * 384), then widened once with extadd_pairwise into the int32 accumulator.
 * The float GEMVs have no FMA here: mul then add, 16 columns per step in four 4-lane sums. */
#define OB_WINL static inline __attribute__((always_inline))

OB_WINL int32_t obw_hsum(v128_t v) {
    return wasm_i32x4_extract_lane(v, 0) + wasm_i32x4_extract_lane(v, 1) + wasm_i32x4_extract_lane(v, 2) +
           wasm_i32x4_extract_lane(v, 3);
}

OB_WINL void obw_t2_tile(const uint8_t *w, size_t rb, int K, const int8_t *x, size_t xs, int32_t *out,
                         const int R, const int T) {
    const int nblk = (K + 127) / 128;
    const v128_t m3 = wasm_i8x16_splat(3);
    v128_t acc[4 * 4];
    for (int i = 0; i < R * T; i++) acc[i] = wasm_i32x4_splat(0);
    for (int b = 0; b < nblk; b++)
        for (int h = 0; h < 2; h++) { /* bytes 16h .. 16h+15 of the block */
            v128_t c[4][4];
            for (int r = 0; r < R; r++) {
                v128_t W = wasm_v128_load(w + (size_t)r * rb + (size_t)b * 32 + 16 * h);
                c[r][0] = wasm_v128_and(W, m3);
                c[r][1] = wasm_v128_and(wasm_u8x16_shr(W, 2), m3);
                c[r][2] = wasm_v128_and(wasm_u8x16_shr(W, 4), m3);
                c[r][3] = wasm_u8x16_shr(W, 6);
            }
            for (int t = 0; t < T; t++) {
                const int8_t *xp = x + (size_t)t * xs + (size_t)b * 128 + 16 * h;
                v128_t s16[4];
                for (int r = 0; r < R; r++) s16[r] = wasm_i16x8_splat(0);
                for (int i = 0; i < 4; i++) {
                    v128_t xv = wasm_v128_load(xp + 32 * i);
                    for (int r = 0; r < R; r++)
                        s16[r] = wasm_i16x8_add(s16[r], wasm_i16x8_add(wasm_i16x8_extmul_low_i8x16(c[r][i], xv),
                                                                       wasm_i16x8_extmul_high_i8x16(c[r][i], xv)));
                }
                for (int r = 0; r < R; r++)
                    acc[r * T + t] = wasm_i32x4_add(acc[r * T + t], wasm_i32x4_extadd_pairwise_i16x8(s16[r]));
            }
        }
    for (int i = 0; i < R * T; i++) out[i] = obw_hsum(acc[i]);
}

#define OB_SIMD128_ATTR
/* GEMV tiles of 2 rows: faster than 4 under Node (more live vectors than x86 has registers?) */
OB_DEF_TILES(OB_SIMD128_ATTR, obw_t2, 2, 4)

/* The decode GEMV (one token) in 16-bit lanes, where SIMD128 has a multiply-add (i32x4.dot_i16x8,
 * x86's pmaddwd): a 16-byte slice of a row read as eight 16-bit lanes holds in lane j the codes
 * of bytes 2j and 2j + 1, so (lane >> s) & 3 for s = 0, 2, .., 14 gives eight codes at once, no
 * widening.  Shift s = 2i + 8e reads byte 2j + e's slice i: weight 32i + 2j + e of the half-block
 * (the T2 layout).  The token's int8 activations are widened once per call into that order
 * (x16), so each 8 weights cost a shift, an and, one dot and one add, against the extending
 * multiplies of the tiles above.  The int32 sums are exact, so the result is the reference's. */
#define OBW_T2_KMAX 8192
OB_WINL void obw_t2_rows(const uint8_t *w, size_t rb, int nblk, const int16_t *x16, int32_t *out, const int R) {
    const v128_t m3 = wasm_i16x8_splat(3);
    v128_t acc[4];
    for (int r = 0; r < R; r++) acc[r] = wasm_i32x4_splat(0);
    for (int b = 0; b < nblk; b++)
        for (int h = 0; h < 2; h++) {
            const int16_t *xp = x16 + (size_t)b * 128 + 64 * h;
            v128_t W[4];
            for (int r = 0; r < R; r++) W[r] = wasm_v128_load(w + (size_t)r * rb + (size_t)b * 32 + 16 * h);
#pragma clang loop unroll(full) /* constant shifts: V8 turns a variable one into several instructions */
            for (int q = 0; q < 8; q++) { /* q = 2i + e: shift 2i + 8e */
                v128_t xv = wasm_v128_load(xp + 8 * q);
                int sh = 2 * (q >> 1) + 8 * (q & 1);
                for (int r = 0; r < R; r++) {
                    v128_t c = sh == 14 ? wasm_u16x8_shr(W[r], 14) : wasm_v128_and(wasm_u16x8_shr(W[r], sh), m3);
                    acc[r] = wasm_i32x4_add(acc[r], wasm_i32x4_dot_i16x8(c, xv));
                }
            }
        }
    for (int r = 0; r < R; r++) out[r] = obw_hsum(acc[r]);
}
static void obw_t2_gemv4(const uint8_t *w, size_t rb, int nblk, const int16_t *x16, int32_t *out) {
    obw_t2_rows(w, rb, nblk, x16, out, 4);
}
static void obw_t2_gemv1(const uint8_t *w, size_t rb, int nblk, const int16_t *x16, int32_t *out) {
    obw_t2_rows(w, rb, nblk, x16, out, 1);
}

static void obw_t2_matmul(const uint8_t *w, int K, float wscale, const int8_t *xq, size_t xs, const float *a,
                          const int32_t *xsum, int m, int r0, int r1, float *y, size_t ldy) {
    if (m != 1 || K > OBW_T2_KMAX) {
        ob_run_tiles(&obw_t2_tiles, OB_WFMT_T2, w, K, wscale, xq, xs, a, xsum, m, r0, r1, y, ldy);
        return;
    }
    int16_t x16[OBW_T2_KMAX] __attribute__((aligned(16)));
    int nblk = (K + 127) / 128;
    size_t rb = ob_row_bytes(OB_WFMT_T2, K);
    for (int b = 0; b < nblk; b++)
        for (int h = 0; h < 2; h++)
            for (int q = 0; q < 8; q++)
                for (int j = 0; j < 8; j++)
                    x16[b * 128 + 64 * h + 8 * q + j] = xq[b * 128 + 16 * h + 32 * (q >> 1) + 2 * j + (q & 1)];
    int32_t out[4];
    float f = wscale / a[0]; /* ob_out's factor, once per call */
    for (int r = r0; r < r1;) {
        int nr = r1 - r >= 4 ? 4 : 1;
        (nr == 4 ? obw_t2_gemv4 : obw_t2_gemv1)(w + (size_t)r * rb, rb, nblk, x16, out);
        for (int i = 0; i < nr; i++) y[r + i] = (float)(out[i] - xsum[0]) * f; /* = ob_out */
        r += nr;
    }
}

OB_WINL v128_t obw_ld_f32(const float *p) { return wasm_v128_load(p); }
/* Four IEEE halves as four floats, exactly as ob_f16_to_f32: the magnitude bits shifted into a
 * float's place and scaled by 2^112 (exact for normal and subnormal halves), then the exponent of
 * infinities and NaNs set to all ones, then the sign. */
OB_WINL v128_t obw_ld_f16(const uint16_t *p) {
    v128_t h = wasm_u32x4_extend_low_u16x8(wasm_v128_load64_zero(p));
    v128_t mag = wasm_v128_and(h, wasm_i32x4_splat(0x7fff));
    v128_t f = wasm_f32x4_mul(wasm_i32x4_shl(mag, 13), wasm_f32x4_splat(0x1p112f));
    v128_t special = wasm_i32x4_ge(mag, wasm_i32x4_splat(0x7c00));
    f = wasm_v128_or(f, wasm_v128_and(special, wasm_i32x4_splat(0x7f800000)));
    return wasm_v128_or(f, wasm_i32x4_shl(wasm_v128_and(h, wasm_i32x4_splat(0x8000)), 16));
}
OB_WINL float obw_fsum(v128_t v) {
    return (wasm_f32x4_extract_lane(v, 0) + wasm_f32x4_extract_lane(v, 1)) +
           (wasm_f32x4_extract_lane(v, 2) + wasm_f32x4_extract_lane(v, 3));
}
#define OBW_GEMV(name, WT, LOAD4, CVT1)                                                             \
    static void name(const WT *w, const float *scale, size_t ldw, int K, const float *x, int r0,    \
                     int r1, float *y) {                                                            \
        int k16 = K & ~15;                                                                          \
        for (int r = r0; r < r1; r++) {                                                             \
            const WT *wr = w + (size_t)r * ldw;                                                     \
            v128_t a0 = wasm_f32x4_splat(0), a1 = a0, a2 = a0, a3 = a0;                             \
            for (int k = 0; k < k16; k += 16) {                                                     \
                a0 = wasm_f32x4_add(a0, wasm_f32x4_mul(LOAD4(wr + k), wasm_v128_load(x + k)));      \
                a1 = wasm_f32x4_add(a1, wasm_f32x4_mul(LOAD4(wr + k + 4), wasm_v128_load(x + k + 4))); \
                a2 = wasm_f32x4_add(a2, wasm_f32x4_mul(LOAD4(wr + k + 8), wasm_v128_load(x + k + 8))); \
                a3 = wasm_f32x4_add(a3, wasm_f32x4_mul(LOAD4(wr + k + 12), wasm_v128_load(x + k + 12))); \
            }                                                                                       \
            float s = obw_fsum(wasm_f32x4_add(wasm_f32x4_add(a0, a1), wasm_f32x4_add(a2, a3)));     \
            for (int k = k16; k < K; k++) s += CVT1(wr[k]) * x[k];                                  \
            y[r] = scale ? scale[r] * s : s;                                                        \
        }                                                                                           \
    }
OBW_GEMV(obw_gemv_f32_s, float, obw_ld_f32, OB_CVT_F32)
OBW_GEMV(obw_gemv_f16_s, uint16_t, obw_ld_f16, ob_f16_to_f32)
static void obw_gemv_f32(const float *w, size_t ldw, int K, const float *x, int r0, int r1, float *y) {
    obw_gemv_f32_s(w, NULL, ldw, K, x, r0, r1, y);
}

/* The f16 GEMV of the LM head reads 2 bytes per weight and is most of a decode step, so its
 * widening must be cheap.  A half's sign-extended bits shifted left by 13 and masked with
 * 0x8fffe000 are the float w * 2^-112 (sign in place, exponent and mantissa shifted into a
 * float's, exact for normal and subnormal halves): 2-3 operations for 4 weights.  x is multiplied
 * by 2^112 once (exact while |x| < 2^15), so each product is exactly the reference's
 * f32(w) * x.  The same shifts on 32-bit lanes of 8 packed halves give the even halves
 * ((v << 16) >> 3) and the odd ones (v >> 3) without any shuffle; x is stored split the same way.
 * Infinities and NaNs do not survive the mask: a row holding one is computed again by the exact
 * widening above, and so is every row when x is out of range (so a row's result depends only on
 * the row and x, never on r0 / r1). */
#define OBW_F16_KMAX 4096
OB_WINL v128_t obw_f16_scaled(v128_t v) { return wasm_v128_and(wasm_i32x4_shr(v, 3), wasm_i32x4_splat((int32_t)0x8fffe000)); }
static void obw_gemv_f16(const uint16_t *w, size_t ldw, int K, const float *x, int r0, int r1, float *y) {
    float xs[OBW_F16_KMAX] __attribute__((aligned(16))); /* per 8: x[even] * 2^112, then x[odd] * 2^112 */
    int k8 = K & ~7, k16 = K & ~15;
    int ok = K <= OBW_F16_KMAX;
    for (int k = 0; ok && k < K; k++) ok = fabsf(x[k]) < 0x1p15f;
    if (!ok) {
        obw_gemv_f16_s(w, NULL, ldw, K, x, r0, r1, y);
        return;
    }
    for (int k = 0; k < k8; k += 8)
        for (int i = 0; i < 4; i++) {
            xs[k + i] = x[k + 2 * i] * 0x1p112f;
            xs[k + 4 + i] = x[k + 2 * i + 1] * 0x1p112f;
        }
    for (int r = r0; r < r1; r++) {
        const uint16_t *wr = w + (size_t)r * ldw;
        v128_t top = wasm_i16x8_splat(0); /* the largest (half << 1), as unsigned 16-bit: >= 0xf800 is Inf/NaN */
        v128_t a0 = wasm_f32x4_splat(0), a1 = a0, a2 = a0, a3 = a0;
        int k = 0;
        for (; k < k16; k += 16) {
            v128_t v0 = wasm_v128_load(wr + k), v1 = wasm_v128_load(wr + k + 8);
            top = wasm_u16x8_max(top, wasm_u16x8_max(wasm_i16x8_shl(v0, 1), wasm_i16x8_shl(v1, 1)));
            a0 = wasm_f32x4_add(a0, wasm_f32x4_mul(obw_f16_scaled(wasm_i32x4_shl(v0, 16)), wasm_v128_load(xs + k)));
            a1 = wasm_f32x4_add(a1, wasm_f32x4_mul(obw_f16_scaled(v0), wasm_v128_load(xs + k + 4)));
            a2 = wasm_f32x4_add(a2, wasm_f32x4_mul(obw_f16_scaled(wasm_i32x4_shl(v1, 16)), wasm_v128_load(xs + k + 8)));
            a3 = wasm_f32x4_add(a3, wasm_f32x4_mul(obw_f16_scaled(v1), wasm_v128_load(xs + k + 12)));
        }
        if (k < k8) {
            v128_t v0 = wasm_v128_load(wr + k);
            top = wasm_u16x8_max(top, wasm_i16x8_shl(v0, 1));
            a0 = wasm_f32x4_add(a0, wasm_f32x4_mul(obw_f16_scaled(wasm_i32x4_shl(v0, 16)), wasm_v128_load(xs + k)));
            a1 = wasm_f32x4_add(a1, wasm_f32x4_mul(obw_f16_scaled(v0), wasm_v128_load(xs + k + 4)));
        }
        float s = obw_fsum(wasm_f32x4_add(wasm_f32x4_add(a0, a1), wasm_f32x4_add(a2, a3)));
        for (k = k8; k < K; k++) s += ob_f16_to_f32(wr[k]) * x[k];
        y[r] = s;
        if (wasm_v128_any_true(wasm_u16x8_ge(top, wasm_i16x8_splat((int16_t)0xf800))))
            obw_gemv_f16_s(w, NULL, ldw, K, x, r, r + 1, y);
    }
}

/* int8 head GEMV (kernels.h gemv_q8): per 8 weights one i16x8.load8x8_s and one
 * i32x4.dot_i16x8_s into two int32 accumulators, widened to int64 per K chunk, the last K % 16
 * products in scalar; exact, then ob_out_q8.  A dot adds 2 products to each of 4 lanes, so a chunk
 * of 4 * OB_Q8_LANE_PRODUCTS (2048) weights cannot overflow a lane. */
#define OBW_Q8_KC (4 * OB_Q8_LANE_PRODUCTS)
OB_WINL v128_t obw_widen_add64(v128_t s, v128_t v) {
    return wasm_i64x2_add(wasm_i64x2_add(s, wasm_i64x2_extend_low_i32x4(v)), wasm_i64x2_extend_high_i32x4(v));
}
static void obw_gemv_q8(const int8_t *w, const float *scale, size_t ldw, int K, const int16_t *xq, float a,
                        int r0, int r1, float *y) {
    for (int r = r0; r < r1; r++) {
        const int8_t *wr = w + (size_t)r * ldw;
        v128_t s64 = wasm_i64x2_splat(0);
        int k = 0;
        for (int k0 = 0; k0 < K; k0 += OBW_Q8_KC) {
            const int k1 = K - k0 <= OBW_Q8_KC ? K : k0 + OBW_Q8_KC;
            v128_t c0 = wasm_i32x4_splat(0), c1 = c0;
            for (k = k0; k + 16 <= k1; k += 16) {
                c0 = wasm_i32x4_add(c0, wasm_i32x4_dot_i16x8(wasm_i16x8_load8x8(wr + k), wasm_v128_load(xq + k)));
                c1 = wasm_i32x4_add(c1, wasm_i32x4_dot_i16x8(wasm_i16x8_load8x8(wr + k + 8), wasm_v128_load(xq + k + 8)));
            }
            s64 = obw_widen_add64(obw_widen_add64(s64, c0), c1);
        }
        int64_t s = wasm_i64x2_extract_lane(s64, 0) + wasm_i64x2_extract_lane(s64, 1);
        for (; k < K; k++) s += (int32_t)wr[k] * xq[k];
        y[r] = ob_out_q8(s, scale[r], a);
    }
}

/* Quantize as ob_quantize_ref, 16 values a step: pmax skips a NaN as the reference's `>` does,
 * f32x4.nearest rounds half to even as nearbyintf, and the clamp leaves integers that the
 * saturating conversions and narrowings keep exactly. */
static void obw_quantize(const float *x, int K, int8_t *xq, float *a_out, int32_t *sum_out) {
    v128_t mx = wasm_f32x4_splat(0.0f);
    int k = 0;
    for (; k + 4 <= K; k += 4) mx = wasm_f32x4_pmax(mx, wasm_f32x4_abs(wasm_v128_load(x + k)));
    float amax = 0.0f;
    for (int i = 0; i < 4; i++) {
        float v = wasm_f32x4_extract_lane(mx, 0);
        mx = wasm_i32x4_shuffle(mx, mx, 1, 2, 3, 0);
        if (v > amax) amax = v;
    }
    for (; k < K; k++) {
        float v = fabsf(x[k]);
        if (v > amax) amax = v;
    }
    float a = 127.0f / fmaxf(amax, 1e-5f);
    const v128_t va = wasm_f32x4_splat(a), lo = wasm_f32x4_splat(-128.0f), hi = wasm_f32x4_splat(127.0f);
    v128_t s = wasm_i32x4_splat(0);
    for (k = 0; k + 16 <= K; k += 16) {
        v128_t q[4];
        for (int i = 0; i < 4; i++) {
            v128_t v = wasm_f32x4_nearest(wasm_f32x4_mul(wasm_v128_load(x + k + 4 * i), va));
            q[i] = wasm_i32x4_trunc_sat_f32x4(wasm_f32x4_pmin(wasm_f32x4_pmax(v, lo), hi));
            s = wasm_i32x4_add(s, q[i]);
        }
        wasm_v128_store(xq + k, wasm_i8x16_narrow_i16x8(wasm_i16x8_narrow_i32x4(q[0], q[1]),
                                                        wasm_i16x8_narrow_i32x4(q[2], q[3])));
    }
    int32_t sum = obw_hsum(s);
    for (; k < K; k++) {
        xq[k] = ob_q8_round(x[k] * a);
        sum += xq[k];
    }
    size_t st = ob_act_stride(K);
    memset(xq + K, 0, st - (size_t)K);
    *a_out = a;
    *sum_out = sum;
}

void ob_kernels_fill_simd128(ob_kernels *k) {
    k->quantize = obw_quantize;
    k->matmul[OB_WFMT_T2] = obw_t2_matmul;
    k->gemv_f32 = obw_gemv_f32;
    k->gemv_f16 = obw_gemv_f16;
    k->gemv_q8 = obw_gemv_q8;
}
#else
typedef int ob_kernels_simd128_empty; /* ISO C wants a non-empty translation unit */
#endif /* OB_HAVE_SIMD128 */
