/* crc32.c - CRC-32 (ISO-HDLC / zlib, reflected polynomial 0xEDB88320) of the .1bit checks.
 *
 * Opening a file checks the CRC of every byte, so at the 2B shape (0.9 GB) the CRC is a load-time
 * cost of its own.  Three ways, same result:
 *  - x86-64 with PCLMULQDQ (checked at run time with CPUID): carry-less multiplication folds four
 *    16-byte lanes at a time (each lane is multiplied by x^(512+-32) mod P and added to the
 *    data 64 bytes on), then the lanes into one, then 128 -> 64 -> 32 bits with a Barrett
 *    reduction.  The constants are x^n mod P for the distances folded over, bit-reflected and
 *    shifted left by one; they were derived with a few lines of Python (polynomial
 *    exponentiation modulo P) rather than copied.  Several GB/s: about the speed of reading.
 *  - aarch64 with the CRC32 extension (__ARM_FEATURE_CRC32): the crc32x instruction is this CRC.
 *  - everywhere: slice-by-8 tables (crc32_table.h), which also finish the tails of the above. */
#include <string.h>

#include "internal.h"

#include "crc32_table.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#define OB_CRC_CLMUL 1
#endif
#if defined(__aarch64__) && defined(__ARM_FEATURE_CRC32)
#include <arm_acle.h>
#define OB_CRC_ARM 1
#endif

static uint32_t crc_slice8(uint32_t crc, const uint8_t *p, size_t n) { /* crc: already inverted */
    while (n >= 8) {
        uint32_t lo = crc ^ ob_rd_u32(p), hi = ob_rd_u32(p + 4);
        crc = ob_crc_table[7][lo & 0xff] ^ ob_crc_table[6][(lo >> 8) & 0xff] ^
              ob_crc_table[5][(lo >> 16) & 0xff] ^ ob_crc_table[4][lo >> 24] ^
              ob_crc_table[3][hi & 0xff] ^ ob_crc_table[2][(hi >> 8) & 0xff] ^
              ob_crc_table[1][(hi >> 16) & 0xff] ^ ob_crc_table[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n--) crc = ob_crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return crc;
}

#if defined(OB_CRC_CLMUL)
#define OB_TCLMUL __attribute__((target("pclmul,sse4.1")))

/* CPUID traps to the hypervisor in a virtual machine (23 us a call measured on the development VM,
 * the time slice-by-8 takes over 40 KB), so it is asked once and the answer kept: 0 not yet asked,
 * 1 no, 2 yes.  Relaxed atomics, since sessions may open models on several threads at once. */
static int have_clmul(void) {
    static int known;
    int k = __atomic_load_n(&known, __ATOMIC_RELAXED);
    if (!k) {
        unsigned a, b, c, d;
        k = __get_cpuid(1, &a, &b, &c, &d) && ((c >> 1) & 1) && ((c >> 19) & 1) ? 2 : 1; /* PCLMULQDQ, SSE4.1 */
        __atomic_store_n(&known, k, __ATOMIC_RELAXED);
    }
    return k == 2;
}

/* v * (k_lo, k_hi): the low half times k_lo plus the high half times k_hi (carry-less). */
OB_TCLMUL static inline __m128i fold16(__m128i v, __m128i k) {
    return _mm_xor_si128(_mm_clmulepi64_si128(v, k, 0x00), _mm_clmulepi64_si128(v, k, 0x11));
}

/* n >= 64 and a multiple of 16; crc already inverted; returns the inverted CRC. */
OB_TCLMUL static uint32_t crc_clmul(uint32_t crc, const uint8_t *p, size_t n) {
    const __m128i k512 = _mm_set_epi64x(0x1c6e41596LL, 0x154442bd4LL); /* lo: x^544, hi: x^480 */
    const __m128i k128 = _mm_set_epi64x(0x0ccaa009eLL, 0x1751997d0LL); /* lo: x^160, hi: x^96 */
    const __m128i k64 = _mm_set_epi64x(0, 0x163cd6124LL);              /* x^64 */
    const __m128i barrett = _mm_set_epi64x(0x1f7011641LL, 0x1db710641LL); /* lo: P', hi: mu' */
    const __m128i low32 = _mm_setr_epi32(-1, 0, -1, 0);
    __m128i x[4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) x[i] = _mm_loadu_si128((const __m128i *)(p + 16 * i));
    x[0] = _mm_xor_si128(x[0], _mm_cvtsi32_si128((int)crc));
    p += 64;
    n -= 64;
    for (; n >= 64; p += 64, n -= 64)
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) x[i] = _mm_xor_si128(fold16(x[i], k512), _mm_loadu_si128((const __m128i *)(p + 16 * i)));
    __m128i v = x[0];
#pragma GCC unroll 4
    for (int i = 1; i < 4; i++) v = _mm_xor_si128(fold16(v, k128), x[i]);
    for (; n >= 16; p += 16, n -= 16) v = _mm_xor_si128(fold16(v, k128), _mm_loadu_si128((const __m128i *)p));
    /* 128 -> 64 bits: the low 64 bits times x^96 into the high 64 */
    v = _mm_xor_si128(_mm_clmulepi64_si128(v, k128, 0x10), _mm_srli_si128(v, 8));
    /* 96 -> 64: the low 32 bits times x^64 into the rest */
    v = _mm_xor_si128(_mm_clmulepi64_si128(_mm_and_si128(v, low32), k64, 0x00), _mm_srli_si128(v, 4));
    /* Barrett: q = (v mod x^32) * mu, r = v + (q mod x^32) * P; the CRC is bits 32..63 of r */
    __m128i q = _mm_clmulepi64_si128(_mm_and_si128(v, low32), barrett, 0x10);
    q = _mm_clmulepi64_si128(_mm_and_si128(q, low32), barrett, 0x00);
    return (uint32_t)_mm_extract_epi32(_mm_xor_si128(v, q), 1);
}
#endif

uint32_t ob_crc32(uint32_t crc, const uint8_t *p, size_t n) {
    crc = ~crc;
#if defined(OB_CRC_CLMUL)
    if (n >= 64 && have_clmul()) {
        size_t m = n & ~(size_t)15;
        crc = crc_clmul(crc, p, m);
        p += m;
        n -= m;
    }
#elif defined(OB_CRC_ARM)
    for (; n >= 8; p += 8, n -= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        crc = __crc32d(crc, v); /* little-endian aarch64: the bytes in file order */
    }
#endif
    return ~crc_slice8(crc, p, n);
}
