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

/* @@SIMD@@ */

static void ob_simd_fill(ob_kernels *k, ob_isa isa) {
    OB_UNUSED(k);
    OB_UNUSED(isa);
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
