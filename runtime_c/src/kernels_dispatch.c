/* kernels_dispatch.c - choosing the kernels at run time: CPUID / XGETBV on x86-64, the
 * ONEBIT_ISA override, and the ob_kernels table (scalar references first, then the ISA's fill). */
#if !defined(_GNU_SOURCE)
#define _GNU_SOURCE 1
#endif
#include "kernels_impl.h"

#if defined(OB_HAVE_X86)
#include <cpuid.h>
#endif

static void ob_simd_fill(ob_kernels *k, ob_isa isa) {
    switch (isa) {
#if defined(OB_HAVE_X86)
    case OB_ISA_AVX512: ob_kernels_fill_avx512(k); break;
    case OB_ISA_AVX2: ob_kernels_fill_avx2(k); break;
#endif
#if defined(OB_HAVE_NEON)
    case OB_ISA_NEON: ob_kernels_fill_neon(k); break;
#endif
#if defined(OB_HAVE_MVE)
    case OB_ISA_MVE: ob_kernels_fill_mve(k); break;
#endif
#if defined(OB_HAVE_SIMD128)
    case OB_ISA_SIMD128: ob_kernels_fill_simd128(k); break;
#endif
#if defined(OB_HAVE_DSP)
    case OB_ISA_DSP: ob_kernels_fill_dsp(k); break;
#endif
    default: (void)k; break;
    }
}

/* ================================================================= ISA selection / dispatch */

#if defined(OB_HAVE_X86)
static uint64_t ob_xgetbv0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}
static int ob_x86_probe(void) { /* 0 scalar, 1 avx2, 2 avx512 */
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
/* CPUID traps to the hypervisor in a virtual machine (23 us a call on the development VM) and every
 * session asks, so the answer is kept: level + 1, 0 until first asked.  Relaxed atomics, since
 * sessions are created on several threads at once. */
static int ob_x86_level(void) {
    static int known;
    int k = __atomic_load_n(&known, __ATOMIC_RELAXED);
    if (!k) {
        k = ob_x86_probe() + 1;
        __atomic_store_n(&known, k, __ATOMIC_RELAXED);
    }
    return k - 1;
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
#if defined(OB_HAVE_MVE)
    case OB_ISA_MVE: return 1;
#endif
#if defined(OB_HAVE_SIMD128)
    case OB_ISA_SIMD128: return 1;
#endif
#if defined(OB_HAVE_DSP)
    case OB_ISA_DSP: return 1;
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
#elif defined(OB_HAVE_MVE)
    return OB_ISA_MVE;
#elif defined(OB_HAVE_SIMD128)
    return OB_ISA_SIMD128;
#elif defined(OB_HAVE_DSP)
    return OB_ISA_DSP;
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
    case OB_ISA_MVE: return "mve";
    case OB_ISA_SIMD128: return "simd128";
    case OB_ISA_DSP: return "dsp";
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
    k->matmul[OB_WFMT_T2X] = ob_matmul_t2x_ref;
    k->gemv_f32 = ob_gemv_f32_ref;
    k->gemv_f16 = ob_gemv_f16_ref;
    k->gemv_q8 = ob_gemv_q8_ref;
    k->f16_to_f32 = ob_row_f16_to_f32;
    k->f32_to_f16 = ob_row_f32_to_f16;
    k->dot_f32 = ob_dot_f32_ref;
    k->dot_f16 = ob_dot_f16_ref;
    k->axpy_f32 = ob_axpy_f32_ref;
    k->axpy_f16 = ob_axpy_f16_ref;
    k->matmul_rs[OB_IFMT_I4] = ob_matmul_i4_ref;
    k->matmul_rs[OB_IFMT_I8] = ob_matmul_i8_ref;
    k->scores_f32 = NULL; /* the caller loops over dot / axpy unless an ISA fills these */
    k->scores_f16 = NULL;
    k->mix_f32 = NULL;
    k->mix_f16 = NULL;
    k->exp_shift = ob_exp_shift_ref;
    k->softmax = ob_softmax_ref;
    k->silu = ob_silu_ref;
    k->relu2 = ob_relu2_ref;
    k->rmsnorm = ob_rmsnorm_ref;
    k->t16_to_t2 = ob_t16_to_t2_ref;
    if (!ob_isa_supported(isa)) return OB_ISA_EUNSUPPORTED;
    k->isa = isa;
    ob_simd_fill(k, isa);
    return 0;
}

int ob_t2x_wanted(void) {
    ob_isa isa;
    ob_isa_from_env(&isa); /* an unknown / unsupported ONEBIT_ISA leaves the detected one */
    return isa == OB_ISA_AVX2 || isa == OB_ISA_AVX512;
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
