/* kernels_ref.c - the scalar references every SIMD kernel is tested against, the packed-format
 * helpers (row sizes, f16 conversion, the reference packer).  Portable C99, no intrinsics. */
#include "kernels_impl.h"

/* ================================================================= small helpers */

size_t ob_row_bytes(ob_wfmt fmt, int K) {
    if (K < 0) return 0;
    switch (fmt) {
    case OB_WFMT_T2:
    case OB_WFMT_T2X: return (size_t)((K + 127) / 128) * 32; /* T2X: a row's bytes, placed elsewhere */
    case OB_WFMT_T16: {
        int r = K % 160;
        return (size_t)(K / 160) * 32 + (size_t)((r + 4) / 5);
    }
    case OB_WFMT_B1: return (size_t)((K + 127) / 128) * 16;
    default: return 0;
    }
}

size_t ob_irow_bytes(ob_ifmt fmt, int K) {
    if (K < 0) return 0;
    switch (fmt) {
    case OB_IFMT_I4: return (size_t)((K + 63) / 64) * 32;
    case OB_IFMT_I8: return (size_t)K;
    default: return 0;
    }
}

/* Covers T2 / B1 (K rounded up to 128), I4 / I8 (K rounded up to 64) and T1.6 (its tail reads up to 160*(K/160) + 5*L <= K+4).
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

void ob_row_f32_to_f16(const float *src, int K, uint16_t *dst) {
    for (int k = 0; k < K; k++) dst[k] = ob_f32_to_f16(src[k]);
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

int ob_pack_row_i4_ref(const int8_t *q, int K, uint8_t *out) {
    for (int k = 0; k < K; k++)
        if (q[k] < -8 || q[k] > 7) return -1;
    memset(out, 0x88, ob_irow_bytes(OB_IFMT_I4, K)); /* nibble 8 everywhere (padding = 0) */
    for (int k = 0; k < K; k++) {
        uint8_t *p = out + (k / 64) * 32 + k % 32;
        unsigned sh = (k % 64) < 32 ? 0u : 4u;
        *p = (uint8_t)((*p & ~(15u << sh)) | ((unsigned)(q[k] + 8) << sh));
    }
    return 0;
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
        xq[k] = ob_q8_round(x[k] * a);
        s += xq[k];
    }
    size_t st = ob_act_stride(K);
    memset(xq + K, 0, st - (size_t)K);
    *a_out = a;
    *sum_out = s;
}


/* One row's T2 dot product, its blocks bstride bytes apart (32 in a file's rows, T2X's group
 * stride in T2X), codes c = w + 1 against the activations: sum(c * xq). */
static int32_t t2_row_dot_ref(const uint8_t *wr, size_t bstride, int nblk, const int8_t *x) {
    int32_t acc = 0;
    for (int b = 0; b < nblk; b++) {
        const uint8_t *wb = wr + (size_t)b * bstride;
        const int8_t *xb = x + b * 128;
        for (int j = 0; j < 32; j++) {
            unsigned v = wb[j];
            acc += (int32_t)(v & 3u) * xb[j] + (int32_t)((v >> 2) & 3u) * xb[32 + j] +
                   (int32_t)((v >> 4) & 3u) * xb[64 + j] + (int32_t)(v >> 6) * xb[96 + j];
        }
    }
    return acc;
}

void ob_matmul_t2_ref(const uint8_t *w, int K, float wscale, const int8_t *xq, size_t xq_stride,
                      const float *a, const int32_t *xsum, int m, int r0, int r1, float *y,
                      size_t ldy) {
    size_t rb = ob_row_bytes(OB_WFMT_T2, K);
    int nblk = (K + 127) / 128;
    for (int r = r0; r < r1; r++)
        for (int t = 0; t < m; t++)
            y[(size_t)t * ldy + r] =
                ob_out(t2_row_dot_ref(w + (size_t)r * rb, 32, nblk, xq + (size_t)t * xq_stride) - xsum[t], wscale, a[t]);
}

void ob_matmul_t2x_ref(const uint8_t *w, int K, float wscale, const int8_t *xq, size_t xq_stride,
                       const float *a, const int32_t *xsum, int m, int r0, int r1, float *y,
                       size_t ldy) {
    int nblk = (K + 127) / 128;
    for (int r = r0; r < r1; r++)
        for (int t = 0; t < m; t++)
            y[(size_t)t * ldy + r] = ob_out(t2_row_dot_ref(w + ob_t2x_offset(nblk, r), OB_T2X_ROWS * 32, nblk,
                                                           xq + (size_t)t * xq_stride) - xsum[t],
                                            wscale, a[t]);
}

size_t ob_t2x_bytes(int N, int K) {
    if (N < 0 || K < 0) return 0;
    return (size_t)((N + OB_T2X_ROWS - 1) / OB_T2X_ROWS) * OB_T2X_ROWS * ob_row_bytes(OB_WFMT_T2, K);
}

/* T2 block b (32 bytes, weights 128b .. 128b + 127) of one T1.6 row.  Both formats cut a row into
 * slices of 32 weights (T1.6: 5 a block, byte j's slot i; T2: 4 a block, byte j's field i), so a
 * slice of the full T1.6 blocks decodes 32 bytes into one field; the tail (bytes L apart) and the
 * weights past K (code 1) go one at a time.  Every byte decodes to codes 0..2 (t16_decode), so the
 * copy computes what the T1.6 row does, for any file. */
static void t16_t2_block(const uint8_t *row, int K, int b, uint8_t *out) {
    static const uint8_t pow3[5] = {1, 3, 9, 27, 81};
    int nfull = K / 160, L = (K % 160 + 4) / 5;
    uint8_t acc[32] = {0}, in[32]; /* locals: no aliasing, so the compiler vectorizes the slices */
    for (int f = 0; f < 4; f++) {
        int s = 4 * b + f, sh = 2 * f;
        if (s < 5 * nfull) {
            memcpy(in, row + (size_t)(s / 5) * 32, 32);
            uint16_t p = pow3[s % 5];
            for (int j = 0; j < 32; j++) {
                uint16_t q = (uint16_t)((in[j] * p) & 255u);
                acc[j] |= (uint8_t)(((q * 3u) >> 8) << sh);
            }
        } else {
            for (int j = 0; j < 32; j++) {
                int k = 32 * s + j, idx = k - 160 * nfull;
                int c = k < K ? t16_decode(row[(size_t)nfull * 32 + (size_t)(idx % L)], idx / L) : 1;
                acc[j] |= (uint8_t)(c << sh);
            }
        }
    }
    memcpy(out, acc, 32);
}

void ob_t16_to_t2_from(const uint8_t *row, int K, int b0, uint8_t *out, size_t bs) {
    for (int b = b0; b < (K + 127) / 128; b++) t16_t2_block(row, K, b, out + (size_t)b * bs);
}

void ob_t16_to_t2_ref(const uint8_t *row, int K, uint8_t *out, size_t bs) { ob_t16_to_t2_from(row, K, 0, out, bs); }

void ob_t2x_repack(const ob_kernels *k, ob_wfmt fmt, const uint8_t *src, int N, int K, uint8_t *dst) {
    int nblk = (K + 127) / 128, G = OB_T2X_ROWS;
    size_t rb = ob_row_bytes(fmt, K);
    ob_t16_to_t2_fn t16 = k ? k->t16_to_t2 : ob_t16_to_t2_ref;
    for (int g = 0; g < (N + G - 1) / G; g++) {
        uint8_t *grp = dst + (size_t)g * nblk * G * 32;
        if (fmt == OB_WFMT_T16) /* row by row into the group's blocks */
            for (int j = 0; j < G && g * G + j < N; j++) t16(src + (size_t)(g * G + j) * rb, K, grp + (size_t)j * 32, (size_t)G * 32);
        for (int b = 0; b < nblk; b++) /* T2: grp in order, one write stream */
            for (int j = 0; j < G; j++) {
                int r = g * G + j;
                uint8_t *d = grp + ((size_t)b * G + (size_t)j) * 32;
                if (r >= N) memset(d, 0x55, 32); /* code 1 = weight 0 */
                else if (fmt != OB_WFMT_T16) memcpy(d, src + (size_t)r * rb + (size_t)b * 32, 32);
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

void ob_matmul_i4_ref(const uint8_t *w, int K, const float *wscale, const int8_t *xq, size_t xq_stride,
                      const float *a, const int32_t *xsum, int m, int r0, int r1, float *y,
                      size_t ldy) {
    size_t rb = ob_irow_bytes(OB_IFMT_I4, K);
    int nblk = (K + 63) / 64;
    for (int r = r0; r < r1; r++) {
        const uint8_t *wr = w + (size_t)r * rb;
        for (int t = 0; t < m; t++) {
            const int8_t *x = xq + (size_t)t * xq_stride;
            int32_t acc = 0;
            for (int b = 0; b < nblk; b++)
                for (int j = 0; j < 32; j++) {
                    unsigned v = wr[b * 32 + j];
                    acc += (int32_t)(v & 15u) * x[b * 64 + j] + (int32_t)(v >> 4) * x[b * 64 + 32 + j];
                }
            y[(size_t)t * ldy + r] = ob_out(acc - 8 * xsum[t], wscale[r], a[t]);
        }
    }
}

void ob_matmul_i8_ref(const uint8_t *w, int K, const float *wscale, const int8_t *xq, size_t xq_stride,
                      const float *a, const int32_t *xsum, int m, int r0, int r1, float *y,
                      size_t ldy) {
    (void)xsum;
    for (int r = r0; r < r1; r++) {
        const int8_t *wr = (const int8_t *)w + (size_t)r * (size_t)K;
        for (int t = 0; t < m; t++) {
            const int8_t *x = xq + (size_t)t * xq_stride;
            int32_t acc = 0;
            for (int k = 0; k < K; k++) acc += (int32_t)wr[k] * x[k];
            y[(size_t)t * ldy + r] = ob_out(acc, wscale[r], a[t]);
        }
    }
}

/* Attention dot / axpy (kernels.h).  With GCC / Clang the 8 partial sums are two 4-lane vectors
 * (SSE / NEON without any flags): the same multiplies and adds in the same order as the plain loop,
 * so the same bits (ISO C mode: no FMA contraction).  The f16 versions widen 8 values at a time
 * into a local row (exact) and run the same code. */
#if defined(__GNUC__)
#define OB_VEC4 1
typedef float ob_f4 __attribute__((vector_size(16)));
static inline ob_f4 ob_ld4(const float *p) {
    ob_f4 v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void ob_st4(float *p, ob_f4 v) { memcpy(p, &v, sizeof v); }
#endif

static inline void ob_dot8(float acc[8], const float *a, const float *b) {
#if defined(OB_VEC4)
    ob_f4 lo = ob_ld4(acc) + ob_ld4(a) * ob_ld4(b), hi = ob_ld4(acc + 4) + ob_ld4(a + 4) * ob_ld4(b + 4);
    ob_st4(acc, lo);
    ob_st4(acc + 4, hi);
#else
    for (int l = 0; l < 8; l++) acc[l] += a[l] * b[l];
#endif
}

static inline float ob_dot_sum(const float acc[8]) {
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

float ob_dot_f32_ref(const float *a, const float *b, int n) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int i = 0;
    for (; i + 8 <= n; i += 8) ob_dot8(acc, a + i, b + i);
    for (; i < n; i++) acc[i & 7] += a[i] * b[i];
    return ob_dot_sum(acc);
}

float ob_dot_f16_ref(const float *a, const uint16_t *b, int n) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0}, row[8];
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        ob_row_f16_to_f32(b + i, 8, row);
        ob_dot8(acc, a + i, row);
    }
    for (; i < n; i++) acc[i & 7] += a[i] * ob_f16_to_f32(b[i]);
    return ob_dot_sum(acc);
}

void ob_axpy_f32_ref(float *y, float a, const float *x, int n) {
    int i = 0;
#if defined(OB_VEC4)
    const ob_f4 va = {a, a, a, a};
    for (; i + 4 <= n; i += 4) ob_st4(y + i, ob_ld4(y + i) + va * ob_ld4(x + i));
#endif
    for (; i < n; i++) y[i] += a * x[i];
}

void ob_axpy_f16_ref(float *y, float a, const uint16_t *x, int n) {
    float row[8];
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        ob_row_f16_to_f32(x + i, 8, row);
        ob_axpy_f32_ref(y + i, a, row, 8);
    }
    for (; i < n; i++) y[i] += a * ob_f16_to_f32(x[i]);
}

void ob_scores_f32_ref(const float *q, int G, const float *rows, int hd, int n, float scale, float *out, size_t ldo) {
    for (int h = 0; h < G; h++)
        for (int j = 0; j < n; j++) out[(size_t)h * ldo + j] = ob_dot_f32_ref(q + (size_t)h * hd, rows + (size_t)j * hd, hd) * scale;
}

void ob_scores_f16_ref(const float *q, int G, const uint16_t *rows, int hd, int n, float scale, float *out,
                       size_t ldo) {
    for (int h = 0; h < G; h++)
        for (int j = 0; j < n; j++) out[(size_t)h * ldo + j] = ob_dot_f16_ref(q + (size_t)h * hd, rows + (size_t)j * hd, hd) * scale;
}

void ob_mix_f32_ref(float *y, int G, const float *p, size_t ldp, const float *rows, int hd, int n) {
    for (int h = 0; h < G; h++) {
        float *yh = y + (size_t)h * hd;
        for (int i = 0; i < hd; i++) yh[i] = 0.0f;
        for (int j = 0; j < n; j++) ob_axpy_f32_ref(yh, p[(size_t)h * ldp + j], rows + (size_t)j * hd, hd);
    }
}

void ob_mix_f16_ref(float *y, int G, const float *p, size_t ldp, const uint16_t *rows, int hd, int n) {
    for (int h = 0; h < G; h++) {
        float *yh = y + (size_t)h * hd;
        for (int i = 0; i < hd; i++) yh[i] = 0.0f;
        for (int j = 0; j < n; j++) ob_axpy_f16_ref(yh, p[(size_t)h * ldp + j], rows + (size_t)j * hd, hd);
    }
}

void ob_exp_shift_ref(float *x, int n, float m) {
    for (int i = 0; i < n; i++) x[i] = ob_expf(x[i] - m);
}

void ob_softmax_ref(float *x, size_t ldx, const int *n, int rows) {
    for (int r = 0; r < rows; r++, x += ldx) {
        float m = -INFINITY, s = 0.0f;
        for (int i = 0; i < n[r]; i++)
            if (x[i] > m) m = x[i];
        ob_exp_shift_ref(x, n[r], m);
        for (int i = 0; i < n[r]; i++) s += x[i];
        for (int i = 0; i < n[r]; i++) x[i] = x[i] / s;
    }
}

void ob_silu_ref(float *g, const float *up, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float a = ob_silu1(g[i]);
        g[i] = up ? a * up[i] : a;
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

void ob_quantize_i16(const float *x, int K, int16_t *xq, float *a_out) {
    float amax = 0.0f;
    for (int k = 0; k < K; k++) {
        float v = fabsf(x[k]);
        if (v > amax) amax = v;
    }
    float a = 32767.0f / fmaxf(amax, 1e-5f);
    for (int k = 0; k < K; k++) {
        float v = nearbyintf(x[k] * a);
        if (v > 32767.0f) v = 32767.0f;
        else if (v < -32767.0f) v = -32767.0f;
        else if (v != v) v = 0.0f; /* NaN */
        xq[k] = (int16_t)v;
    }
    *a_out = a;
}

void ob_gemv_q8_ref(const int8_t *w, const float *scale, size_t ldw, int K, const int16_t *xq, float a,
                    int r0, int r1, float *y) {
    for (int r = r0; r < r1; r++) {
        const int8_t *wr = w + (size_t)r * ldw;
        int64_t s = 0;
        for (int k = 0; k < K; k++) s += (int32_t)wr[k] * xq[k];
        y[r] = ob_out_q8(s, scale[r], a);
    }
}

void ob_relu2_ref(float *g, const float *up, size_t n) {
    for (size_t i = 0; i < n; i++) { /* r = x > 0 ? x : 0 (NaN and -0 give +0) as a bit mask, not a branch */
        float x = g[i], r;
        uint32_t b, keep = 0u - (uint32_t)(x > 0.0f);
        memcpy(&b, &x, sizeof b);
        b &= keep;
        memcpy(&r, &b, sizeof r);
        g[i] = r * r;
    }
    if (up) /* a loop of its own rather than a test per value: the hot path where no SIMD version exists */
        for (size_t i = 0; i < n; i++) g[i] = g[i] * up[i];
}

/* kernels.h rmsnorm's sum of squares, shared with the vector kernels' tails */
double ob_sumsq_tail(double s0, double s1, double s2, double s3, const float *x, int i, int n) {
    double ss = (s0 + s1) + (s2 + s3);
    for (; i < n; i++) ss += (double)x[i] * (double)x[i];
    return ss;
}

void ob_rmsnorm_ref(const float *x, const float *w, int n, float eps, float *y) {
    double s4[4] = {0.0, 0.0, 0.0, 0.0};
    int i = 0;
    for (; i + 4 <= n; i += 4)
        for (int j = 0; j < 4; j++) s4[j] += (double)x[i + j] * (double)x[i + j];
    float r = 1.0f / sqrtf((float)(ob_sumsq_tail(s4[0], s4[1], s4[2], s4[3], x, i, n) / n) + eps);
    for (int k = 0; k < n; k++) y[k] = (x[k] * r) * w[k];
}
