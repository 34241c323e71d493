/* kernels_avx512.c - x86-64 AVX-512 F/BW/VL/VNNI kernels.  Compiled with function-level target
 * attributes, so one binary still runs on CPUs without AVX-512 (the dispatch never calls these). */
#include "kernels_impl.h"

#if defined(OB_HAVE_X86)
#include <immintrin.h>

#define OB_T512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))
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

/* rb: bytes from a row to the next; bs: from a block to the next (32 in T2 rows, T2X's group stride). */
OB_T512 OB_INL void ob512_t2_tile_bs(const uint8_t *w, size_t rb, int K, const int8_t *x, size_t xs,
                                     int32_t *out, const int R, const int T, const size_t bs) {
    const int nblk = (K + 127) / 128;
    const __m512i m01 = _mm512_inserti64x4(_mm512_set1_epi8(0x03), _mm256_set1_epi8(0x0C), 1);
    const __m512i m23 = _mm512_inserti64x4(_mm512_set1_epi8(0x30), _mm256_set1_epi8((char)0xC0), 1);
    const __m512i sh01 = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi32(2), 1);
    const __m512i sh23 = _mm512_inserti64x4(_mm512_set1_epi32(4), _mm256_set1_epi32(6), 1);
    if (T == 1) { /* GEMV: each row a single sequential weight stream, one row after the other
                   * (rows are contiguous, so the tile reads one stream; see OB512_T2_RG), even
                   * and odd blocks in separate accumulators so that two vpdpbusd chains run in
                   * parallel; the int32 sums are exact in any order */
        for (int r = 0; r < R; r++) {
            const uint8_t *wr = w + (size_t)r * rb;
            __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
            int b = 0;
            for (; b + 2 <= nblk; b += 2) {
#if OB512_T2_PF > 0
                _mm_prefetch((const char *)(wr + (size_t)b * bs + OB512_T2_PF), _MM_HINT_T0);
#endif
                const __m512i W0 = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(wr + (size_t)b * bs)));
                const __m512i W1 =
                    _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(wr + (size_t)b * bs + bs)));
                OB_DP512(a0, _mm512_and_si512(W0, m01), _mm512_loadu_si512((const void *)(x + b * 128)));
                OB_DP512(a1, _mm512_and_si512(W0, m23), _mm512_loadu_si512((const void *)(x + b * 128 + 64)));
                OB_DP512(a2, _mm512_and_si512(W1, m01), _mm512_loadu_si512((const void *)(x + b * 128 + 128)));
                OB_DP512(a3, _mm512_and_si512(W1, m23), _mm512_loadu_si512((const void *)(x + b * 128 + 192)));
            }
            if (b < nblk) {
                const __m512i W0 = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(wr + (size_t)b * bs)));
                OB_DP512(a0, _mm512_and_si512(W0, m01), _mm512_loadu_si512((const void *)(x + b * 128)));
                OB_DP512(a1, _mm512_and_si512(W0, m23), _mm512_loadu_si512((const void *)(x + b * 128 + 64)));
            }
            out[r] = _mm512_reduce_add_epi32(_mm512_add_epi32(_mm512_srav_epi32(_mm512_add_epi32(a0, a2), sh01),
                                                              _mm512_srav_epi32(_mm512_add_epi32(a1, a3), sh23)));
        }
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
                _mm256_loadu_si256((const __m256i *)(w + (size_t)r * rb + (size_t)b * bs)));
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
OB_T512 OB_INL void ob512_t2_tile(const uint8_t *w, size_t rb, int K, const int8_t *x, size_t xs,
                                  int32_t *out, const int R, const int T) {
    ob512_t2_tile_bs(w, rb, K, x, xs, out, R, T, 32);
}
OB_T512 OB_INL void ob512_t2x_tile(const uint8_t *w, size_t rb, int K, const int8_t *x, size_t xs,
                                   int32_t *out, const int R, const int T) {
    ob512_t2_tile_bs(w, rb, K, x, xs, out, R, T, OB_T2X_ROWS * 32);
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

/* Rows per T2 tile call for a single-token tile of a GEMM (m % 4 == 1; the GEMV, m = 1, has
 * its own loop, ob512_t2_matmul below).  Each row is read as one sequential stream, row after row (8
 * interleaved rows, 8 streams 640-1728 bytes apart at the 2B shape, measured slower from DRAM
 * here, as for the int8 GEMV below); 8 rows a call only save the call and the loop overhead,
 * which at K = 768 (6 blocks a row) is a good part of a row's work. */
#ifndef OB512_T2_RG
#define OB512_T2_RG 8
#endif
/* Software prefetch this many bytes ahead along the weight stream (0: none).  On one 256 MB
 * matrix ("T2 GEMV, DRAM", tools/bench_kernels) 8 KB ahead ran 11.1 ms against 15.5-17.4
 * without, but whole-model decode did not gain (134m tg128 0.90x at 1 thread, 2b4t 0.98x;
 * tools/bench_ab.py, docs/BENCHMARKS.md "Speed"), so it is off. */
#ifndef OB512_T2_PF
#define OB512_T2_PF 0
#endif
OB_DEF_TILES(OB_T512, ob512_t2, OB512_T2_RG, 4)
OB_DEF_TILES(OB_T512, ob512_t2x, OB_T2X_ROWS, 4)
OB_DEF_TILES(OB_T512, ob512_t16, 4, 4)
OB_DEF_TILES(OB_T512, ob512_b1, 4, 4)

/* T2 GEMV (one token): the row range is cut into OB512_T2_NS segments of L rows and a call works
 * on NS rows at once, row i of every segment (NS weight streams L rows apart), block by block:
 * each activation load serves NS rows.  Leftover rows (fewer than NS) run one at a time.  Per
 * row two accumulators (the scale-1/4 and the scale-16/64 lanes); int32 sums are exact in any
 * order, so the result is the reference's whatever NS.  One sequential stream per thread was
 * limited by the hardware prefetcher, not by the memory: on Zen 4 (1 thread, tools/bench_kernels
 * --gemv-t2 32768 32768, 268 MB from DRAM, quiet) one row after the other took 42.6 ms (6.3 GB/s),
 * NS = 4 20.4 ms, NS = 8 17.8 ms (15.1 GB/s; the plain 8-stream read loop 18.5 GB/s); in cache
 * (2048 x 768) 20.7 / 14.4 / 13.3 us, the shared activation loads.  The runtime now mostly runs
 * the same rows function over T2X (kernels.h), where the NS rows of a call are one stream; this
 * segmented driver serves T2 read in place (ONEBIT_REPACK=0, ob_model_open_memory). */
#ifndef OB512_T2_NS
#define OB512_T2_NS 8
#endif
#if OB512_T2_NS > OB_T2_NS_MAX
#error "OB512_T2_NS exceeds OB_T2_NS_MAX"
#endif
OB_T512 OB_INL void ob512_t2_gemv_rows(const uint8_t *w, size_t stride, int nblk, const int8_t *x, int32_t *out,
                                       const int R, const size_t bs) {
    const __m512i m01 = _mm512_inserti64x4(_mm512_set1_epi8(0x03), _mm256_set1_epi8(0x0C), 1);
    const __m512i m23 = _mm512_inserti64x4(_mm512_set1_epi8(0x30), _mm256_set1_epi8((char)0xC0), 1);
    const __m512i sh01 = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi32(2), 1);
    const __m512i sh23 = _mm512_inserti64x4(_mm512_set1_epi32(4), _mm256_set1_epi32(6), 1);
    __m512i a0[OB_T2_NS_MAX], a1[OB_T2_NS_MAX];
#pragma GCC unroll 16
    for (int r = 0; r < R; r++) a0[r] = a1[r] = _mm512_setzero_si512();
    int b = 0;
    for (; b + 2 <= nblk; b += 2) {
        const __m512i x0 = _mm512_loadu_si512((const void *)(x + b * 128));
        const __m512i x1 = _mm512_loadu_si512((const void *)(x + b * 128 + 64));
        const __m512i x2 = _mm512_loadu_si512((const void *)(x + b * 128 + 128));
        const __m512i x3 = _mm512_loadu_si512((const void *)(x + b * 128 + 192));
#pragma GCC unroll 16
        for (int r = 0; r < R; r++) {
            const uint8_t *wr = w + (size_t)r * stride + (size_t)b * bs;
            const __m512i W0 = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)wr));
            const __m512i W1 = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(wr + bs)));
            OB_DP512(a0[r], _mm512_and_si512(W0, m01), x0);
            OB_DP512(a1[r], _mm512_and_si512(W0, m23), x1);
            OB_DP512(a0[r], _mm512_and_si512(W1, m01), x2);
            OB_DP512(a1[r], _mm512_and_si512(W1, m23), x3);
        }
    }
    if (b < nblk) {
        const __m512i x0 = _mm512_loadu_si512((const void *)(x + b * 128));
        const __m512i x1 = _mm512_loadu_si512((const void *)(x + b * 128 + 64));
#pragma GCC unroll 16
        for (int r = 0; r < R; r++) {
            const __m512i W0 =
                _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(w + (size_t)r * stride + (size_t)b * bs)));
            OB_DP512(a0[r], _mm512_and_si512(W0, m01), x0);
            OB_DP512(a1[r], _mm512_and_si512(W0, m23), x1);
        }
    }
    if (R == 8) { /* the 8 sums at once: halves folded, then hadd as a transpose (~50 ops, not ~90) */
        __m256i h[8];
#pragma GCC unroll 8
        for (int r = 0; r < 8; r++) {
            __m512i v = _mm512_add_epi32(_mm512_srav_epi32(a0[r], sh01), _mm512_srav_epi32(a1[r], sh23));
            h[r] = _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
        }
        const __m256i h01 = _mm256_hadd_epi32(h[0], h[1]), h23 = _mm256_hadd_epi32(h[2], h[3]);
        const __m256i h45 = _mm256_hadd_epi32(h[4], h[5]), h67 = _mm256_hadd_epi32(h[6], h[7]);
        const __m256i q0 = _mm256_hadd_epi32(h01, h23), q1 = _mm256_hadd_epi32(h45, h67);
        _mm256_storeu_si256((__m256i *)out, _mm256_add_epi32(_mm256_permute2x128_si256(q0, q1, 0x20),
                                                             _mm256_permute2x128_si256(q0, q1, 0x31)));
        return;
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; r++)
        out[r] = _mm512_reduce_add_epi32(_mm512_add_epi32(_mm512_srav_epi32(a0[r], sh01), _mm512_srav_epi32(a1[r], sh23)));
}
OB_T512 static void ob512_t2_gemv_ns(const uint8_t *w, size_t s, int nb, const int8_t *x, int32_t *o) {
    ob512_t2_gemv_rows(w, s, nb, x, o, OB512_T2_NS, 32);
}
OB_T512 static void ob512_t2_gemv_1(const uint8_t *w, size_t s, int nb, const int8_t *x, int32_t *o) {
    ob512_t2_gemv_rows(w, s, nb, x, o, 1, 32);
}
static void ob512_t2_matmul(const uint8_t *w, int K, float wscale, const int8_t *xq, size_t xs, const float *a,
                            const int32_t *xsum, int m, int r0, int r1, float *y, size_t ldy) {
    if (m != 1) {
        ob_run_tiles(&ob512_t2_tiles, OB_WFMT_T2, w, K, wscale, xq, xs, a, xsum, m, r0, r1, y, ldy);
        return;
    }
    ob_t2_gemv_segmented(ob512_t2_gemv_ns, ob512_t2_gemv_1, OB512_T2_NS, w, K, wscale, xq, a[0], xsum[0], r0, r1, y);
}
OB_DEF_T2X_GROUPS(OB_T512, ob512_t2x_gemv_groups, ob512_t2_gemv_rows)
OB_DEF_T2X(OB_T512, ob512)
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
        v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, v, _CMP_ORD_Q), v); /* NaN -> 0, as ob_q8_round */
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
 * never depend on the row range.  kind: 0 f32, 1 f16 (the int8 head has its own loop below). */
#ifndef OB512_GEMV_ROWS
#define OB512_GEMV_ROWS 4
#endif
OB_T512 OB_INL __m512 ob512_ldw(const void *w, size_t i, const int kind) {
    if (kind == 0) return _mm512_loadu_ps((const float *)w + i);
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)w + i)));
}
OB_T512 OB_INL __m512 ob512_ldw_m(const void *w, size_t i, __mmask16 k, const int kind) {
    if (kind == 0) return _mm512_maskz_loadu_ps(k, (const float *)w + i);
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, (const uint16_t *)w + i));
}
OB_T512 OB_INL void ob512_gemv_rows(const void *w, size_t ldw, int K, const float *x, int r, float *y,
                                    const int R, const int kind, const int pfd) {
    const int esz = kind == 0 ? 4 : 2;
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
    for (int i = 0; i < R; i++) y[r + i] = _mm512_reduce_add_ps(c[i]);
}
#define OB512_GEMV(name, kind, pfd)                                                                \
    OB_T512 static void name(const void *w, size_t ldw, int K, const float *x, int r0, int r1,    \
                             float *y) {                                                           \
        int r = r0;                                                                                \
        for (; r + OB512_GEMV_ROWS <= r1; r += OB512_GEMV_ROWS)                                    \
            ob512_gemv_rows(w, ldw, K, x, r, y, OB512_GEMV_ROWS, kind, pfd);                       \
        for (; r < r1; r++) ob512_gemv_rows(w, ldw, K, x, r, y, 1, kind, pfd);                     \
    }
OB512_GEMV(ob512_gemv_f32_s, 0, 0)
OB512_GEMV(ob512_gemv_f16_s, 1, 0)
/* int8 head GEMV (kernels.h gemv_q8): int16 activations, per 32 weights one vpmovsxbw and one
 * vpdpwssd into OB512_Q8_NA (2) int32 accumulators per row (exact: the sum does not depend on the
 * order), widened to int64 per K chunk, then ob_out_q8.  OB512_Q8_ROWS rows are taken from as many
 * segments of the row range (row i of each, streams L rows apart, as the T2 GEMV above; leftovers
 * one at a time).  Measured for the f32-activation loop this replaced (vpmovsxbd + vcvtdq2ps + FMA
 * per 16 weights): 134m tg128 at 1 thread (6 interleaved rounds, quiet but loaded) median ~278
 * tok/s with 4 segments, ~252 with 1; of adjacent rows rather than segments (Zen 4, 32000 x 2048,
 * from DRAM): one row at a time ~26 GB/s against a ~32 GB/s plain read, 2 or 4 interleaved rows
 * 7-11 GB/s whatever the prefetch distance (0.5-4 KB).  This loop against that one
 * (tools/bench_kernels, BENCHMARKS.md "LM head: int8 with int16 activations"): 1.7x in L2, the same
 * speed from DRAM (both at the read bandwidth one core gets). */
#ifndef OB512_Q8_ROWS
#define OB512_Q8_ROWS 4
#endif
/* Software prefetch distance (bytes) along each segment's row stream; 0: none, the hardware
 * prefetcher alone.  16 KB was the default while it paid on a Zen 5 VM (the f32-activation loop,
 * one stream: 134m tg128 1.25x at 1 thread); with today's 4 segments on the Zen 4 VM of sessions
 * 18-21, dropping it was faster in whole-model decode (tools/bench_ab.py, BENCHMARKS.md "Session
 * 21"): 134m tg128 1.10x and 1.18x at 1 thread, 1.02x / 1.03x at 2; 2b4t 1.03x / 1.06x. */
#ifndef OB512_Q8_PF
#define OB512_Q8_PF 0
#endif
#ifndef OB512_Q8_NA
#define OB512_Q8_NA 2
#endif
/* K chunk: a vpdpwssd adds 2 products to each of 16 lanes, so 16 * OB_Q8_LANE_PRODUCTS weights
 * (8192) cannot overflow a lane, however they are spread over the NA accumulators. */
#define OB512_Q8_KC (16 * OB_Q8_LANE_PRODUCTS)
#define OB512_W16(p) _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(p)))
OB_T512 OB_INL __m512i ob512_widen_add64(__m512i s, __m512i v) {
    s = _mm512_add_epi64(s, _mm512_cvtepi32_epi64(_mm512_castsi512_si256(v)));
    return _mm512_add_epi64(s, _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(v, 1)));
}
OB_T512 OB_INL void ob512_q8_rows(const int8_t *w, const float *scale, size_t ldw, int K, const int16_t *xq,
                                  float a, int r, int step, float *y, const int R) {
    enum { NA = OB512_Q8_NA };
    __m512i s64[OB512_Q8_ROWS];
    const int8_t *wr[OB512_Q8_ROWS];
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) {
        s64[i] = _mm512_setzero_si512();
        wr[i] = w + (size_t)(r + i * step) * ldw;
    }
    for (int k0 = 0; k0 < K; k0 += OB512_Q8_KC) {
        const int k1 = K - k0 <= OB512_Q8_KC ? K : k0 + OB512_Q8_KC;
        const int kb = k0 + (k1 - k0) / (32 * NA) * (32 * NA);
        __m512i acc[OB512_Q8_ROWS][NA];
#pragma GCC unroll 8
        for (int i = 0; i < R; i++)
#pragma GCC unroll 8
            for (int j = 0; j < NA; j++) acc[i][j] = _mm512_setzero_si512();
        int k = k0;
        for (; k < kb; k += 32 * NA) {
            __m512i xv[NA];
#pragma GCC unroll 8
            for (int j = 0; j < NA; j++) xv[j] = _mm512_loadu_si512((const void *)(xq + k + 32 * j));
#pragma GCC unroll 8
            for (int i = 0; i < R; i++) {
                const int8_t *p = wr[i] + k;
                if (OB512_Q8_PF) _mm_prefetch((const char *)p + OB512_Q8_PF, _MM_HINT_T0);
#pragma GCC unroll 8
                for (int j = 0; j < NA; j++) acc[i][j] = _mm512_dpwssd_epi32(acc[i][j], OB512_W16(p + 32 * j), xv[j]);
            }
        }
        /* remainder (< 32 * NA): 32-chunks, then the masked tail, into acc[.][0] (a constant index keeps
         * the accumulators in registers; the sum is exact, so where a product goes does not matter) */
        for (; k + 32 <= k1; k += 32) {
            const __m512i xv = _mm512_loadu_si512((const void *)(xq + k));
#pragma GCC unroll 8
            for (int i = 0; i < R; i++) acc[i][0] = _mm512_dpwssd_epi32(acc[i][0], OB512_W16(wr[i] + k), xv);
        }
        if (k < k1) {
            const __mmask32 kt = (__mmask32)((1u << (k1 - k)) - 1u);
            const __m512i xv = _mm512_maskz_loadu_epi16(kt, xq + k);
#pragma GCC unroll 8
            for (int i = 0; i < R; i++)
                acc[i][0] = _mm512_dpwssd_epi32(acc[i][0], _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(kt, wr[i] + k)), xv);
        }
#pragma GCC unroll 8
        for (int i = 0; i < R; i++)
#pragma GCC unroll 8
            for (int t = 0; t < NA; t++) s64[i] = ob512_widen_add64(s64[i], acc[i][t]);
    }
#pragma GCC unroll 8
    for (int i = 0; i < R; i++)
        y[r + i * step] = ob_out_q8((int64_t)_mm512_reduce_add_epi64(s64[i]), scale[r + i * step], a);
}
OB_T512 static void ob512_gemv_q8(const int8_t *w, const float *scale, size_t ldw, int K, const int16_t *xq,
                                  float a, int r0, int r1, float *y) {
    const int L = (r1 - r0) / OB512_Q8_ROWS;
    for (int i = 0; i < L; i++) ob512_q8_rows(w, scale, ldw, K, xq, a, r0 + i, L, y, OB512_Q8_ROWS);
    for (int r = r0 + L * OB512_Q8_ROWS; r < r1; r++) ob512_q8_rows(w, scale, ldw, K, xq, a, r, 1, y, 1);
}
static void ob512_gemv_f32(const float *w, size_t ldw, int K, const float *x, int r0, int r1, float *y) {
    ob512_gemv_f32_s(w, ldw, K, x, r0, r1, y);
}
static void ob512_gemv_f16(const uint16_t *w, size_t ldw, int K, const float *x, int r0, int r1, float *y) {
    ob512_gemv_f16_s(w, ldw, K, x, r0, r1, y);
}

/* f16 <-> f32, 16 at a time, masked tail (vcvtph2ps exact, vcvtps2ph round to nearest even).  The
 * main loop stores full vectors: the attention reads the row back at once, and a masked store
 * does not forward to those loads. */
OB_T512 static void ob512_f16_to_f32(const uint16_t *src, int n, float *dst) {
    int i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + i))));
    if (i < n) {
        __mmask16 km = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(dst + i, km, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(km, src + i)));
    }
}
OB_T512 static void ob512_f32_to_f16(const float *src, int n, uint16_t *dst) {
    int i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(dst + i), _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    if (i < n) {
        __mmask16 km = (__mmask16)((1u << (n - i)) - 1);
        _mm256_mask_storeu_epi16(dst + i, km, _mm512_cvtps_ph(_mm512_maskz_loadu_ps(km, src + i), _MM_FROUND_TO_NEAREST_INT));
    }
}

/* I4 (mixed models): as T2, one 32-byte block is broadcast to both halves of a zmm; masking with
 * [0x0F x32 | 0xF0 x32] gives the nibbles of weights 0..31 against x[0..31] and 16 times those of
 * weights 32..63 against x[32..63].  vpdpbusd (u8 x s8 -> i32, no saturation) sums them; the upper
 * eight i32 lanes only ever hold multiples of 16, removed exactly by one shift before the sum. */
OB_T512 OB_INL void ob512_i4_tile(const uint8_t *w, size_t rb, int K, const int8_t *x, size_t xs,
                                  int32_t *out, const int R, const int T) {
    const int nblk = (K + 63) / 64;
    const __m512i m = _mm512_inserti64x4(_mm512_set1_epi8(0x0F), _mm256_set1_epi8((char)0xF0), 1);
    const __m512i sh = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi32(4), 1);
    __m512i acc[4 * 4];
#pragma GCC unroll 16
    for (int i = 0; i < R * T; i++) acc[i] = _mm512_setzero_si512();
    for (int b = 0; b < nblk; b++) {
        __m512i c[4];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++)
            c[r] = _mm512_and_si512(
                _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(w + (size_t)r * rb + (size_t)b * 32))), m);
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            const __m512i xv = _mm512_loadu_si512((const void *)(x + (size_t)t * xs + (size_t)b * 64));
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) OB_DP512(acc[r * T + t], c[r], xv);
        }
    }
#pragma GCC unroll 16
    for (int i = 0; i < R * T; i++) out[i] = ob512_hsum_shift(acc[i], sh);
}

/* I8: vpdpbusd wants one unsigned operand, so the weights are fed as w + 128 (a sign-bit flip) and
 * the driver subtracts 128 * sum(x): exact for every byte.  Rows are K bytes with no padding; the
 * last K % 64 are a masked load (masked-off bytes never fault and meet zero activations). */
OB_T512 OB_INL void ob512_i8_tile(const uint8_t *w, size_t rb, int K, const int8_t *x, size_t xs,
                                  int32_t *out, const int R, const int T) {
    const int n64 = (K + 63) / 64, rem = K % 64;
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    __m512i acc[4 * 4];
#pragma GCC unroll 16
    for (int i = 0; i < R * T; i++) acc[i] = _mm512_setzero_si512();
    for (int c = 0; c < n64; c++) {
        const __mmask64 km = (c == n64 - 1 && rem) ? (((__mmask64)1 << rem) - 1) : ~(__mmask64)0;
        __m512i W[4];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++)
            W[r] = _mm512_xor_si512(_mm512_maskz_loadu_epi8(km, w + (size_t)r * rb + (size_t)c * 64), flip);
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            const __m512i xv = _mm512_loadu_si512((const void *)(x + (size_t)t * xs + (size_t)c * 64));
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) OB_DP512(acc[r * T + t], W[r], xv);
        }
    }
#pragma GCC unroll 16
    for (int i = 0; i < R * T; i++) out[i] = _mm512_reduce_add_epi32(acc[i]);
}

OB_DEF_TILES(OB_T512, ob512_i4, 4, 4)
OB_DEF_TILES(OB_T512, ob512_i8, 4, 4)

/* I4 GEMV (m = 1: decode, and the int4 LM head): rows one after the other, each a single sequential
 * stream prefetched OB512_I4_PF bytes ahead, as the int8 head GEMV does (the 4-row tile reads four
 * interleaved streams, which this VM's DRAM serves slowly: see ob512_q8_rows).  The same exact int32
 * sums and the same ob_out step as the tiles, so the same bits. */
#ifndef OB512_I4_PF
#define OB512_I4_PF 16384
#endif
OB_T512 static void ob512_i4_gemv(const uint8_t *w, int K, const float *wscale, const int8_t *xq, float a,
                                  int32_t xsum, int r0, int r1, float *y) {
    const int nblk = (K + 63) / 64;
    const size_t rb = ob_irow_bytes(OB_IFMT_I4, K);
    const __m512i m = _mm512_inserti64x4(_mm512_set1_epi8(0x0F), _mm256_set1_epi8((char)0xF0), 1);
    const __m512i sh = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi32(4), 1);
    for (int r = r0; r < r1; r++) {
        const uint8_t *wr = w + (size_t)r * rb;
        __m512i acc0 = _mm512_setzero_si512(), acc1 = _mm512_setzero_si512();
        int b = 0;
        for (; b + 2 <= nblk; b += 2) {
            if (OB512_I4_PF) _mm_prefetch((const char *)(wr + (size_t)b * 32) + OB512_I4_PF, _MM_HINT_T0);
            const __m512i c0 = _mm512_and_si512(_mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(wr + (size_t)b * 32))), m);
            const __m512i c1 =
                _mm512_and_si512(_mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(wr + (size_t)b * 32 + 32))), m);
            OB_DP512(acc0, c0, _mm512_loadu_si512((const void *)(xq + (size_t)b * 64)));
            OB_DP512(acc1, c1, _mm512_loadu_si512((const void *)(xq + (size_t)b * 64 + 64)));
        }
        if (b < nblk) {
            const __m512i c0 = _mm512_and_si512(_mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(wr + (size_t)b * 32))), m);
            OB_DP512(acc0, c0, _mm512_loadu_si512((const void *)(xq + (size_t)b * 64)));
        }
        /* both accumulators' upper lanes hold multiples of 16: shift each, then add (exact in int32) */
        int32_t acc = ob512_hsum_shift(acc0, sh) + ob512_hsum_shift(acc1, sh);
        y[r] = ob_out(acc - 8 * xsum, wscale[r], a);
    }
}

OB_DEF_MATMUL_RS_GEMV(ob512_i4, OB_IFMT_I4, 8, ob512_i4_gemv)
OB_DEF_MATMUL_RS(ob512_i8, OB_IFMT_I8, 128)

/* Attention mix (kernels.h) for the G query heads of one KV head: y_h = sum_j p_h[j] * row_j, each
 * value a multiply then an add, row after row, as ob_axpy_*_ref, so the bits are the reference's.
 * 32 registers hold the sums of 2 heads x 128 values (or 4 heads x 64): a row is read once for a
 * block of heads, in one contiguous pass.  AVX2's 16 registers take a pass per head and 64 values,
 * and reread every row that often (8 times for 4 heads of 128 values, 2b4t).  Rows of c vectors;
 * a partial last vector is loaded and stored under a mask (any hd). */
#define OB512_LD_F32(p, m) _mm512_maskz_loadu_ps((m), (p))
#define OB512_LD_F16(p, m) _mm512_cvtph_ps(_mm256_maskz_loadu_epi16((m), (p)))
#define OB512_MIX(T, sfx, LD)                                                                          \
    OB_T512 OB_INL void ob512_mix_blk_##sfx(float *y, const float *p, size_t ldp, const T *rows, int hd, \
                                            int n, int d, const int g, const int c) {                 \
        __mmask16 m[8];                                                                                \
        _Pragma("GCC unroll 8") for (int t = 0; t < c; t++) {                                          \
            const int left = hd - d - 16 * t;                                                          \
            m[t] = (__mmask16)(left >= 16 ? 0xFFFF : left > 0 ? (1u << left) - 1 : 0);                 \
        }                                                                                              \
        __m512 acc[16];                                                                                \
        _Pragma("GCC unroll 16") for (int i = 0; i < g * c; i++) acc[i] = _mm512_setzero_ps();         \
        for (int j = 0; j < n; j++) {                                                                  \
            const T *r = rows + (size_t)j * hd + d;                                                    \
            __m512 pj[4];                                                                              \
            _Pragma("GCC unroll 4") for (int h = 0; h < g; h++) pj[h] = _mm512_set1_ps(p[(size_t)h * ldp + j]); \
            _Pragma("GCC unroll 8") for (int t = 0; t < c; t++) {                                      \
                const __m512 v = LD(r + 16 * t, m[t]);                                                 \
                _Pragma("GCC unroll 4") for (int h = 0; h < g; h++)                                    \
                    acc[h * c + t] = _mm512_add_ps(acc[h * c + t], _mm512_mul_ps(pj[h], v));           \
            }                                                                                          \
        }                                                                                              \
        _Pragma("GCC unroll 4") for (int h = 0; h < g; h++)                                            \
            _Pragma("GCC unroll 8") for (int t = 0; t < c; t++)                                        \
                _mm512_mask_storeu_ps(y + (size_t)h * hd + d + 16 * t, m[t], acc[h * c + t]);         \
    }                                                                                                  \
    OB_T512 static void ob512_mix_##sfx(float *y, int G, const float *p, size_t ldp, const T *rows, int hd, \
                                        int n) {                                                       \
        for (int d = 0; d < hd; d += 128) {                                                            \
            const int wide = hd - d > 64; /* 8 vectors, 2 heads a block; else 4 vectors, 4 heads */   \
            for (int h = 0; h < G;) {                                                                  \
                float *yh = y + (size_t)h * hd;                                                        \
                const float *ph = p + (size_t)h * ldp;                                                 \
                if (wide && G - h >= 2) ob512_mix_blk_##sfx(yh, ph, ldp, rows, hd, n, d, 2, 8), h += 2; \
                else if (wide) ob512_mix_blk_##sfx(yh, ph, ldp, rows, hd, n, d, 1, 8), h += 1;        \
                else if (G - h >= 4) ob512_mix_blk_##sfx(yh, ph, ldp, rows, hd, n, d, 4, 4), h += 4;  \
                else if (G - h >= 2) ob512_mix_blk_##sfx(yh, ph, ldp, rows, hd, n, d, 2, 4), h += 2;  \
                else ob512_mix_blk_##sfx(yh, ph, ldp, rows, hd, n, d, 1, 4), h += 1;                  \
            }                                                                                          \
        }                                                                                              \
    }
OB512_MIX(float, f32, OB512_LD_F32)
OB512_MIX(uint16_t, f16, OB512_LD_F16)

void ob_kernels_fill_avx512(ob_kernels *k) {
    ob_kernels_fill_avx2(k); /* what AVX-512 does not replace below (the attention dot / axpy / scores) */
    k->quantize = ob512_quantize;
    k->matmul[OB_WFMT_T2] = ob512_t2_matmul;
    k->matmul[OB_WFMT_T2X] = ob512_t2x_matmul;
    k->matmul[OB_WFMT_T16] = ob512_t16_matmul;
    k->matmul[OB_WFMT_B1] = ob512_b1_matmul;
    k->gemv_f32 = ob512_gemv_f32;
    k->gemv_f16 = ob512_gemv_f16;
    k->gemv_q8 = ob512_gemv_q8;
    k->f16_to_f32 = ob512_f16_to_f32;
    k->f32_to_f16 = ob512_f32_to_f16;
    k->matmul_rs[OB_IFMT_I4] = ob512_i4_matmul;
    k->matmul_rs[OB_IFMT_I8] = ob512_i8_matmul;
    k->mix_f32 = ob512_mix_f32;
    k->mix_f16 = ob512_mix_f16;
}
#else
typedef int ob_kernels_avx512_empty; /* ISO C wants a non-empty translation unit */
#endif /* OB_HAVE_X86 */
