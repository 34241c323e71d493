/* kernels_avx2.c - x86-64 AVX2 + FMA + F16C kernels (function-level target attributes). */
#include "kernels_impl.h"

#if defined(OB_HAVE_X86)
#include <immintrin.h>

#define OB_T256 __attribute__((target("avx2,fma,f16c")))

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

/* Lane i = the lane sum of v[i], i < 8, in one tree of vphaddd. */
OB_T256 OB_INL __m256i ob256_hsum8_epi32(const __m256i *v) {
    const __m256i a = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    const __m256i b = _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
    return _mm256_add_epi32(_mm256_permute2x128_si256(a, b, 0x20), _mm256_permute2x128_si256(a, b, 0x31));
}
/* One T2X group's 8 sums (acc, scaled by 4) finished as ob_out does, y[i] = (float)(sum - xsum) * f,
 * in registers and one store: summed one by one, the 8 int32s went through memory to scalar code. */
OB_T256 OB_INL void ob256_t2x_out8(const __m256i acc[OB_T2X_ROWS], int32_t xsum, float f, float *y) {
    const __m256i s = _mm256_sub_epi32(_mm256_srai_epi32(ob256_hsum8_epi32(acc), 2), _mm256_set1_epi32(xsum));
    _mm256_storeu_ps(y, _mm256_mul_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(f)));
}
/* rb: bytes from a row to the next; bs: from a block to the next (32 in T2 rows, T2X's group stride). */
OB_T256 OB_INL void ob256_t2_tile_bs(const uint8_t *w, size_t rb, int K, const int8_t *x, size_t xs,
                                     int32_t *out, const int R, const int T, const size_t bs) {
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
            const __m256i W = _mm256_loadu_si256((const __m256i *)(w + (size_t)r * rb + (size_t)b * bs));
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
OB_T256 OB_INL void ob256_t2_tile(const uint8_t *w, size_t rb, int K, const int8_t *x, size_t xs,
                                  int32_t *out, const int R, const int T) {
    ob256_t2_tile_bs(w, rb, K, x, xs, out, R, T, 32);
}
OB_T256 OB_INL void ob256_t2x_tile(const uint8_t *w, size_t rb, int K, const int8_t *x, size_t xs,
                                   int32_t *out, const int R, const int T) {
    ob256_t2_tile_bs(w, rb, K, x, xs, out, R, T, OB_T2X_ROWS * 32);
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
OB_DEF_TILES(OB_T256, ob256_t2x, 4, 2)
OB_DEF_TILES(OB_T256, ob256_t16, 2, 2)
OB_DEF_TILES(OB_T256, ob256_b1, 4, 1)

/* T2 GEMV (one token), as the AVX-512 one (kernels_avx512.c, ob512_t2_matmul): the row range is
 * cut into OB256_T2_NS segments of L rows and a call works on row i of every segment at once (NS
 * weight streams L rows apart), block by block, each activation load serving NS rows; leftover
 * rows one at a time.  Per row the block sums of the tile above, so the same exact int32 result. */
#ifndef OB256_T2_NS
#define OB256_T2_NS 8
#endif
#if OB256_T2_NS > OB_T2_NS_MAX
#error "OB256_T2_NS exceeds OB_T2_NS_MAX"
#endif
/* Software prefetch distance (bytes) along a T2X group's stream (0: none).  One interleaved stream
 * is what the hardware prefetcher of the Zen 3 VM of session 25 serves worst: a T2X GEMV from DRAM
 * ran at 13.7-14.4 GB/s against 16-17 for the 8-stream T2 layout and 26 for the read loop
 * (bench_kernels --gemv-t2 N K --copies 200).  With 8 KB: tools/bench_ab.py tg128, 134m 1.14x at 1
 * thread and 1.08x at 2, 2b4t 1.21x and 1.14x; 4 and 16 KB were the same within the noise, 0.5-1 KB
 * slower than none.  A prefetch never faults, so reading past the matrix is harmless. */
#ifndef OB256_T2X_PF
#define OB256_T2X_PF 8192
#endif
/* The GEMV sums a row's scale-1 and scale-4 halves in 16 bits over OB256_T2_NB blocks, then widens
 * each with one vpmaddwd (x4 and x1): per row and block 13 vector ops and 4 / NB for the widening,
 * where widening every block took 15.  Zen 3 of session 26, `bench_kernels --gemv-t2 2560 6912
 * --layout t2x`: in cache 22.9 -> 25.0 GB/s with 2 blocks (25.3 with 3), from DRAM (--copies 150)
 * 19.5-20 either way with 2 but 18.1-18.5 with 3, whose row-by-row walk over 768 bytes the
 * prefetchers follow worse.  Bounds for any byte (code 3 included) and any int8 activation: a
 * vpmaddubsw lane is at most 2 * 3 * 128 = 768 (scale 1) or 2 * 12 * 128 = 3072 (scale 4), so NB
 * blocks of two each stay inside int16 up to NB = 5 (test_kernels' extremes fail at 6). */
#ifndef OB256_T2_NB
#define OB256_T2_NB 2
#endif
#if OB256_T2_NB < 1 || OB256_T2_NB > 5
#error "OB256_T2_NB: 1..5 blocks keep the int16 sums exact"
#endif
/* Blocks b .. b + nb - 1 of R rows into acc; pfd: the prefetch distance (bytes) along a T2X group's
 * stream, 0 for none. */
OB_T256 OB_INL void ob256_t2_rows_blocks(const uint8_t *w, size_t stride, int b, const int8_t *x, __m256i *acc,
                                         const int R, const size_t bs, const int nb, const int pfd) {
    const __m256i m03 = _mm256_set1_epi8(0x03), m0c = _mm256_set1_epi8(0x0C);
    const __m256i ones16 = _mm256_set1_epi16(1), fours16 = _mm256_set1_epi16(4);
    if (pfd && R == OB_T2X_ROWS && bs == OB_T2X_ROWS * 32) {
        const char *pf = (const char *)w + (size_t)b * bs + pfd;
#pragma GCC unroll 40
        for (int c = 0; c < nb * OB_T2X_ROWS * 32; c += 64) _mm_prefetch(pf + c, _MM_HINT_T0);
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; r++) {
        __m256i s1 = _mm256_setzero_si256(), s4 = _mm256_setzero_si256();
#pragma GCC unroll 5
        for (int k = 0; k < nb; k++) {
            const int8_t *xp = x + (size_t)(b + k) * 128;
            const __m256i W = _mm256_loadu_si256((const __m256i *)(w + (size_t)r * stride + (size_t)(b + k) * bs));
            const __m256i Wh = _mm256_srli_epi16(W, 4);
            s1 = _mm256_add_epi16(s1, _mm256_add_epi16(
                _mm256_maddubs_epi16(_mm256_and_si256(W, m03), _mm256_loadu_si256((const __m256i *)xp)),
                _mm256_maddubs_epi16(_mm256_and_si256(Wh, m03), _mm256_loadu_si256((const __m256i *)(xp + 64)))));
            s4 = _mm256_add_epi16(s4, _mm256_add_epi16(
                _mm256_maddubs_epi16(_mm256_and_si256(W, m0c), _mm256_loadu_si256((const __m256i *)(xp + 32))),
                _mm256_maddubs_epi16(_mm256_and_si256(Wh, m0c), _mm256_loadu_si256((const __m256i *)(xp + 96)))));
        }
        acc[r] = _mm256_add_epi32(acc[r],
                                  _mm256_add_epi32(_mm256_madd_epi16(s1, fours16), _mm256_madd_epi16(s4, ones16)));
    }
}
/* acc[r] = row r's block sums over all nblk blocks (scaled by 4, lanes not yet summed). */
OB_T256 OB_INL void ob256_t2_rows_acc(const uint8_t *w, size_t stride, int nblk, const int8_t *x, __m256i *acc,
                                      const int R, const size_t bs) {
#pragma GCC unroll 16
    for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_si256();
    int b = 0;
    for (; b + OB256_T2_NB <= nblk; b += OB256_T2_NB)
        ob256_t2_rows_blocks(w, stride, b, x, acc, R, bs, OB256_T2_NB, OB256_T2X_PF);
    for (; b < nblk; b++) ob256_t2_rows_blocks(w, stride, b, x, acc, R, bs, 1, OB256_T2X_PF);
}
OB_T256 OB_INL void ob256_t2_gemv_rows(const uint8_t *w, size_t stride, int nblk, const int8_t *x, int32_t *out,
                                       const int R, const size_t bs) {
    __m256i acc[OB_T2_NS_MAX];
    ob256_t2_rows_acc(w, stride, nblk, x, acc, R, bs);
#pragma GCC unroll 16
    for (int r = 0; r < R; r++) out[r] = ob256_hsum_epi32(acc[r]) >> 2;
}
OB_T256 static void ob256_t2_gemv_ns(const uint8_t *w, size_t s, int nb, const int8_t *x, int32_t *o) {
    ob256_t2_gemv_rows(w, s, nb, x, o, OB256_T2_NS, 32);
}
OB_T256 static void ob256_t2_gemv_1(const uint8_t *w, size_t s, int nb, const int8_t *x, int32_t *o) {
    ob256_t2_gemv_rows(w, s, nb, x, o, 1, 32);
}

/* T2X, one token, several streams.  One sequential stream is the most a Zen 3 core reads from DRAM
 * with the least help: `bench_kernels --read-bw 800 --streams S` (session 26) got 19.8-20.7 GB/s
 * from one stream, 25.9-26.4 from 2, 27.8-28.4 from 4 and 8, 26.4-26.9 from 16.  So the groups of
 * a range are dealt to OB256_STREAMS streams of consecutive groups, each stream's group read
 * OB256_T2_NB blocks at a time in turn with the others, each prefetched OB256_MS_PF bytes ahead (4
 * streams x 2 KB; 8 KB each, as one stream has, overflowed the L1).  With short rows the four
 * groups' sums in memory cost more than the streams gain (768 x 768 in cache 0.95x; 134m, whose 46
 * MB the L3 partly holds, tg128 0.97x at 1 thread with its 16-block down_proj in streams), so rows
 * shorter than OB256_MS_MINBLK blocks keep one stream; 2B4T's rows have 20 and 54.  Measured,
 * bench_kernels --gemv-t2 2560 6912 --layout t2x --copies 150: 19.5-20 -> 22.3-22.5 GB/s at 1
 * thread, 30-31 -> 33-37 at 2; in cache unchanged (24.8-25.0). */
#ifndef OB256_STREAMS
#define OB256_STREAMS 4
#endif
#ifndef OB256_MS_PF
#define OB256_MS_PF 2048
#endif
#ifndef OB256_MS_MINBLK
#define OB256_MS_MINBLK 20
#endif
/* The groups one after the other (kernels_impl.h OB_DEF_T2X_GROUPS, its sums finished by ob256_t2x_out8). */
OB_T256 static void ob256_t2x_gemv_groups_seq(const uint8_t *w, int n, int nb, const int8_t *x, int32_t xsum, float f,
                                              float *y) {
    for (int g = 0; g < n; g++, w += (size_t)nb * OB_T2X_ROWS * 32, y += OB_T2X_ROWS) {
        __m256i acc[OB_T2X_ROWS];
        ob256_t2_rows_acc(w, 32, nb, x, acc, OB_T2X_ROWS, OB_T2X_ROWS * 32);
        ob256_t2x_out8(acc, xsum, f, y);
    }
}
OB_T256 static void ob256_t2x_gemv_groups(const uint8_t *w, int n, int nb, const int8_t *x, int32_t xsum, float f,
                                          float *y) {
    const size_t gb = (size_t)nb * OB_T2X_ROWS * 32; /* bytes of one group */
    const int S = OB256_STREAMS, per = nb >= OB256_MS_MINBLK ? n / S : 0;
    __m256i acc[OB256_STREAMS][OB_T2X_ROWS];
    for (int i = 0; i < per; i++) { /* stream s reads groups s * per .. s * per + per - 1 */
        for (int s = 0; s < S; s++)
            for (int r = 0; r < OB_T2X_ROWS; r++) acc[s][r] = _mm256_setzero_si256();
        int b = 0;
        for (; b + OB256_T2_NB <= nb; b += OB256_T2_NB)
            for (int s = 0; s < S; s++)
                ob256_t2_rows_blocks(w + (size_t)(s * per + i) * gb, 32, b, x, acc[s], OB_T2X_ROWS, OB_T2X_ROWS * 32,
                                     OB256_T2_NB, OB256_MS_PF);
        for (; b < nb; b++)
            for (int s = 0; s < S; s++)
                ob256_t2_rows_blocks(w + (size_t)(s * per + i) * gb, 32, b, x, acc[s], OB_T2X_ROWS, OB_T2X_ROWS * 32,
                                     1, OB256_MS_PF);
        for (int s = 0; s < S; s++) {
            float *ys = y + (size_t)(s * per + i) * OB_T2X_ROWS;
            ob256_t2x_out8(acc[s], xsum, f, ys);
        }
    }
    const int done = S * per; /* the groups left over, one after the other */
    ob256_t2x_gemv_groups_seq(w + (size_t)done * gb, n - done, nb, x, xsum, f, y + (size_t)done * OB_T2X_ROWS);
}
OB_DEF_T2X(OB_T256, ob256)

/* T2X GEMM (m >= OB256_GEMM_MIN tokens, prefill).  The tiles above unpack every weight block again
 * for each tile of tokens and widen every block's sums: about 11 vector ops per 128 weights of a
 * row and a token, on a Zen 3 that retires about 3 a cycle.  Here 4 rows of a group are unpacked
 * once per OB256_GEMM_TB tokens into bytes 0..3 (a stack buffer of 4 rows, which is why K is
 * bounded), and each 32 of their weights cost a token one vpmaddubsw and one int16 add (8 ops per
 * 128).  Int16 lanes: a step adds at most 2 * 3 * 128 = 768 (code 3, any int8 activation), so 32
 * steps fit, then vpmaddwd widens into int32.  Exact, so the same bits as the tiles; the output
 * step is ob_out's.  Rows a quad boundary cuts, and K past the buffer, go through the tiles.
 * Session 25 (Zen 3, tools/bench_ab.py --test pp128, 134m): 1.10x at 1 thread, 1.11x at 2. */
#ifndef OB256_GEMM_KMAX
#define OB256_GEMM_KMAX 8192
#endif
#define OB256_GEMM_MIN 4
#define OB256_GEMM_TB 32
#define OB256_GEMM_FLUSH 32
OB_T256 OB_INL void ob256_t2x_unpack4(const uint8_t *w, int nblk, uint8_t *dec, size_t kp) {
    const __m256i m03 = _mm256_set1_epi8(0x03);
    for (int b = 0; b < nblk; b++)
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) {
            const __m256i W = _mm256_loadu_si256((const __m256i *)(w + (size_t)b * OB_T2X_ROWS * 32 + 32 * r));
            uint8_t *d = dec + (size_t)r * kp + (size_t)b * 128;
            _mm256_store_si256((__m256i *)d, _mm256_and_si256(W, m03));
            _mm256_store_si256((__m256i *)(d + 32), _mm256_and_si256(_mm256_srli_epi16(W, 2), m03));
            _mm256_store_si256((__m256i *)(d + 64), _mm256_and_si256(_mm256_srli_epi16(W, 4), m03));
            _mm256_store_si256((__m256i *)(d + 96), _mm256_and_si256(_mm256_srli_epi16(W, 6), m03));
        }
}
/* The next quad's weights, which the unpack would otherwise wait for: they come from DRAM once per
 * forward when a model outgrows the L3 (134m's 46 MB), and the tiles of this quad, thousands of
 * cycles, hide the fetch. */
OB_T256 OB_INL void ob256_t2x_prefetch4(const uint8_t *w, int nblk) {
    for (int b = 0; b < nblk; b++) {
        _mm_prefetch((const char *)w + (size_t)b * OB_T2X_ROWS * 32, _MM_HINT_T0);
        _mm_prefetch((const char *)w + (size_t)b * OB_T2X_ROWS * 32 + 64, _MM_HINT_T0);
    }
}
#define OB256_UT_STEP(acc, wv, xv) acc = _mm256_add_epi16(_mm256_maddubs_epi16(wv, xv), acc)
#define OB256_UT_WIDEN(i, acc) wide[i] = _mm256_add_epi32(wide[i], _mm256_madd_epi16(acc, ones16))
#define OB256_UT_NEXT(end, kp) ((kp) - (end) < 32 * OB256_GEMM_FLUSH ? (kp) : (end) + 32 * OB256_GEMM_FLUSH)
/* Keeps v in a register: without it GCC loads each weight vector twice, once per token. */
#define OB_KEEP(v) __asm__("" : "+x"(v))
/* Rows r..r+3 (unpacked) times T = 2 or 1 tokens, written as ob_out does: y[t * ldy + i] =
 * (float)(sum - xsum[t]) * f[t].  Every OB256_GEMM_FLUSH steps the int16 sums are widened (vpmaddwd)
 * into int32 vectors, summed across lanes once at the end into one vector, [rows 0-3 of token 0 |
 * rows 0-3 of token 1], and finished there: written back as int32 and read one by one, the sums
 * stalled the loop after each call.  One loop with the flush inside and the accumulators named one
 * by one: with a loop per flush or an indexed array GCC copied every accumulator to another register
 * each step.  Not inlined: inside the caller GCC reached the stack buffer through the frame and
 * kept a pointer spilled in the loop. */
OB_T256 __attribute__((noinline)) static void ob256_unpacked_tile2(const uint8_t *dec, size_t kp, const int8_t *x,
                                                                 size_t xs, const int32_t *xsum, const float *f,
                                                                 float *y, size_t ldy) {
    const __m256i ones16 = _mm256_set1_epi16(1);
    const uint8_t *d0 = dec, *d1 = dec + kp, *d2 = dec + 2 * kp, *d3 = dec + 3 * kp;
    const int8_t *x0 = x, *x1 = x + xs;
    __m256i wide[8];
    for (int i = 0; i < 8; i++) wide[i] = _mm256_setzero_si256();
    __m256i a00 = _mm256_setzero_si256(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
    for (size_t st = 0, end = OB256_UT_NEXT(0, kp);;) {
        const __m256i xa = _mm256_loadu_si256((const __m256i *)(x0 + st));
        const __m256i xb = _mm256_loadu_si256((const __m256i *)(x1 + st));
        __m256i wv = _mm256_load_si256((const __m256i *)(d0 + st));
        OB_KEEP(wv);
        OB256_UT_STEP(a00, wv, xa);
        OB256_UT_STEP(a01, wv, xb);
        wv = _mm256_load_si256((const __m256i *)(d1 + st));
        OB_KEEP(wv);
        OB256_UT_STEP(a10, wv, xa);
        OB256_UT_STEP(a11, wv, xb);
        wv = _mm256_load_si256((const __m256i *)(d2 + st));
        OB_KEEP(wv);
        OB256_UT_STEP(a20, wv, xa);
        OB256_UT_STEP(a21, wv, xb);
        wv = _mm256_load_si256((const __m256i *)(d3 + st));
        OB_KEEP(wv);
        OB256_UT_STEP(a30, wv, xa);
        OB256_UT_STEP(a31, wv, xb);
        st += 32;
        if (st == end) {
            OB256_UT_WIDEN(0, a00); OB256_UT_WIDEN(1, a10); OB256_UT_WIDEN(2, a20); OB256_UT_WIDEN(3, a30);
            OB256_UT_WIDEN(4, a01); OB256_UT_WIDEN(5, a11); OB256_UT_WIDEN(6, a21); OB256_UT_WIDEN(7, a31);
            if (st == kp) break;
            a00 = a01 = a10 = a11 = a20 = a21 = a30 = a31 = _mm256_setzero_si256();
            end = OB256_UT_NEXT(end, kp);
        }
    }
    const __m256i xsv =
        _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_set1_epi32(xsum[0])), _mm_set1_epi32(xsum[1]), 1);
    const __m256 fv = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_set1_ps(f[0])), _mm_set1_ps(f[1]), 1);
    const __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(ob256_hsum8_epi32(wide), xsv)), fv);
    _mm_storeu_ps(y, _mm256_castps256_ps128(v));
    _mm_storeu_ps(y + ldy, _mm256_extractf128_ps(v, 1));
}
OB_T256 __attribute__((noinline)) static void ob256_unpacked_tile1(const uint8_t *dec, size_t kp, const int8_t *x,
                                                                 int32_t xsum, float f, float *y) {
    const __m256i ones16 = _mm256_set1_epi16(1);
    __m256i wide[4];
    for (int i = 0; i < 4; i++) wide[i] = _mm256_setzero_si256();
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t st = 0, end = OB256_UT_NEXT(0, kp);;) {
        const __m256i xa = _mm256_loadu_si256((const __m256i *)(x + st));
        OB256_UT_STEP(a0, _mm256_load_si256((const __m256i *)(dec + st)), xa);
        OB256_UT_STEP(a1, _mm256_load_si256((const __m256i *)(dec + kp + st)), xa);
        OB256_UT_STEP(a2, _mm256_load_si256((const __m256i *)(dec + 2 * kp + st)), xa);
        OB256_UT_STEP(a3, _mm256_load_si256((const __m256i *)(dec + 3 * kp + st)), xa);
        st += 32;
        if (st == end) {
            OB256_UT_WIDEN(0, a0); OB256_UT_WIDEN(1, a1); OB256_UT_WIDEN(2, a2); OB256_UT_WIDEN(3, a3);
            if (st == kp) break;
            a0 = a1 = a2 = a3 = _mm256_setzero_si256();
            end = OB256_UT_NEXT(end, kp);
        }
    }
    const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(wide[0], wide[1]), _mm256_hadd_epi32(wide[2], wide[3]));
    const __m128i sum = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
    _mm_storeu_ps(y, _mm_mul_ps(_mm_cvtepi32_ps(_mm_sub_epi32(sum, _mm_set1_epi32(xsum))), _mm_set1_ps(f)));
}
OB_T256 static void ob256_t2x_matmul_any(const uint8_t *w, int K, float wscale, const int8_t *xq, size_t xs, const float *a,
                                 const int32_t *xsum, int m, int r0, int r1, float *y, size_t ldy) {
    const int nblk = (K + 127) / 128;
    const size_t kp = (size_t)nblk * 128;
    const int q0 = (r0 + 3) / 4 * 4, q1 = r1 / 4 * 4; /* whole quads (4 | OB_T2X_ROWS: never across groups) */
    if (m < OB256_GEMM_MIN || kp > OB256_GEMM_KMAX || q1 <= q0) {
        ob256_t2x_matmul(w, K, wscale, xq, xs, a, xsum, m, r0, r1, y, ldy);
        return;
    }
    if (r0 < q0) ob_run_tiles(&ob256_t2x_tiles, OB_WFMT_T2X, w, K, wscale, xq, xs, a, xsum, m, r0, q0, y, ldy);
    if (q1 < r1) ob_run_tiles(&ob256_t2x_tiles, OB_WFMT_T2X, w, K, wscale, xq, xs, a, xsum, m, q1, r1, y, ldy);
    uint8_t dec[4 * OB256_GEMM_KMAX] __attribute__((aligned(32)));
    for (int t0 = 0; t0 < m; t0 += OB256_GEMM_TB) {
        const int tb = m - t0 < OB256_GEMM_TB ? m - t0 : OB256_GEMM_TB;
        float f[OB256_GEMM_TB]; /* ob_out's factor, divided once per token */
        for (int t = 0; t < tb; t++) f[t] = wscale / a[t0 + t];
        for (int r = q0; r < q1; r += 4) {
            ob256_t2x_unpack4(w + ob_t2x_offset(nblk, r), nblk, dec, kp);
            if (r + 4 < q1) ob256_t2x_prefetch4(w + ob_t2x_offset(nblk, r + 4), nblk);
            for (int t = 0; t < tb; t += 2) {
                const int8_t *x = xq + (size_t)(t0 + t) * xs;
                float *yt = y + (size_t)(t0 + t) * ldy + r;
                if (tb - t >= 2) ob256_unpacked_tile2(dec, kp, x, xs, xsum + t0 + t, f + t, yt, ldy);
                else ob256_unpacked_tile1(dec, kp, x, xsum[t0 + t], f[t], yt);
            }
        }
    }
}
static void ob256_t2_matmul(const uint8_t *w, int K, float wscale, const int8_t *xq, size_t xs, const float *a,
                            const int32_t *xsum, int m, int r0, int r1, float *y, size_t ldy) {
    if (m != 1) {
        ob_run_tiles(&ob256_t2_tiles, OB_WFMT_T2, w, K, wscale, xq, xs, a, xsum, m, r0, r1, y, ldy);
        return;
    }
    ob_t2_gemv_segmented(ob256_t2_gemv_ns, ob256_t2_gemv_1, OB256_T2_NS, w, K, wscale, xq, a[0], xsum[0], r0, r1, y);
}
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
            v = _mm256_and_ps(v, _mm256_cmp_ps(v, v, _CMP_ORD_Q)); /* NaN -> 0, as ob_q8_round */
            v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
            q[i] = _mm256_cvttps_epi32(v);
            s = _mm256_add_epi32(s, q[i]);
        }
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        _mm256_storeu_si256((__m256i *)(xq + k), _mm256_permutevar8x32_epi32(p, perm));
    }
    int32_t sum = ob256_hsum_epi32(s);
    for (; k < K; k++) {
        xq[k] = ob_q8_round(x[k] * a);
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
OB256_GEMV(ob256_gemv_f32_s, float, OB256_LD_F32, OB_CVT_F32)
OB256_GEMV(ob256_gemv_f16_s, uint16_t, OB256_LD_F16, OB_CVT_F16)
/* int8 head GEMV (kernels.h gemv_q8): per 16 weights one vpmovsxbw and one vpmaddwd (+ vpaddd)
 * into OB256_Q8_NA int32 accumulators per row, widened to int64 per K chunk, the last K % 16
 * products in scalar; exact, so the order does not matter, then ob_out_q8.  OB256_Q8_ROWS rows are
 * taken from as many segments of the row range (row i of each: streams L rows apart, as the T2
 * GEMV's segments and ob512_q8_rows), so one activation load serves that many rows.  A vpmaddwd adds
 * 2 products to each of 8 lanes, so a chunk of 8 * OB_Q8_LANE_PRODUCTS (4096) weights cannot
 * overflow a lane however it is spread over the accumulators.  Against one row at a time on the Zen 3
 * VM of session 25 (AVX2 only; tools/bench_kernels --case int8): 2B4T head 19.3 -> 12.4 ms (61 -> 94 %
 * of the read loop), 134m head 1.24 -> 0.60 ms; 8 or 6 segments, or 2, were slower than 4. */
#ifndef OB256_Q8_ROWS
#define OB256_Q8_ROWS 4
#endif
#ifndef OB256_Q8_NA
#define OB256_Q8_NA 2
#endif
#define OB256_Q8_KC (8 * OB_Q8_LANE_PRODUCTS)
#define OB256_W16(p) _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(p)))
OB_T256 OB_INL __m256i ob256_widen_add64(__m256i s, __m256i v) {
    s = _mm256_add_epi64(s, _mm256_cvtepi32_epi64(_mm256_castsi256_si128(v)));
    return _mm256_add_epi64(s, _mm256_cvtepi32_epi64(_mm256_extracti128_si256(v, 1)));
}
OB_T256 OB_INL void ob256_q8_rows(const int8_t *w, const float *scale, size_t ldw, int K, const int16_t *xq,
                                  float a, int r, int step, float *y, const int R) {
    enum { NA = OB256_Q8_NA };
    __m256i s64[OB256_Q8_ROWS];
    const int8_t *wr[OB256_Q8_ROWS];
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) {
        s64[i] = _mm256_setzero_si256();
        wr[i] = w + (size_t)(r + i * step) * ldw;
    }
    int k = 0;
    for (int k0 = 0; k0 < K; k0 += OB256_Q8_KC) {
        const int k1 = K - k0 <= OB256_Q8_KC ? K : k0 + OB256_Q8_KC;
        const int kb = k0 + (k1 - k0) / (16 * NA) * (16 * NA);
        __m256i acc[OB256_Q8_ROWS][NA];
#pragma GCC unroll 8
        for (int i = 0; i < R; i++)
#pragma GCC unroll 8
            for (int j = 0; j < NA; j++) acc[i][j] = _mm256_setzero_si256();
        for (k = k0; k < kb; k += 16 * NA) {
            __m256i xv[NA];
#pragma GCC unroll 8
            for (int j = 0; j < NA; j++) xv[j] = _mm256_loadu_si256((const __m256i *)(xq + k + 16 * j));
#pragma GCC unroll 8
            for (int i = 0; i < R; i++)
#pragma GCC unroll 8
                for (int j = 0; j < NA; j++)
                    acc[i][j] = _mm256_add_epi32(acc[i][j], _mm256_madd_epi16(OB256_W16(wr[i] + k + 16 * j), xv[j]));
        }
        for (; k + 16 <= k1; k += 16) {
            const __m256i xv = _mm256_loadu_si256((const __m256i *)(xq + k));
#pragma GCC unroll 8
            for (int i = 0; i < R; i++) acc[i][0] = _mm256_add_epi32(acc[i][0], _mm256_madd_epi16(OB256_W16(wr[i] + k), xv));
        }
#pragma GCC unroll 8
        for (int i = 0; i < R; i++)
#pragma GCC unroll 8
            for (int j = 0; j < NA; j++) s64[i] = ob256_widen_add64(s64[i], acc[i][j]);
    }
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) {
        __m128i h = _mm_add_epi64(_mm256_castsi256_si128(s64[i]), _mm256_extracti128_si256(s64[i], 1));
        int64_t s = _mm_cvtsi128_si64(h) + _mm_extract_epi64(h, 1);
        for (int j = k; j < K; j++) s += (int32_t)wr[i][j] * xq[j];
        y[r + i * step] = ob_out_q8(s, scale[r + i * step], a);
    }
}
OB_T256 static void ob256_gemv_q8(const int8_t *w, const float *scale, size_t ldw, int K, const int16_t *xq,
                                  float a, int r0, int r1, float *y) {
    const int L = (r1 - r0) / OB256_Q8_ROWS;
    for (int i = 0; i < L; i++) ob256_q8_rows(w, scale, ldw, K, xq, a, r0 + i, L, y, OB256_Q8_ROWS);
    for (int r = r0 + L * OB256_Q8_ROWS; r < r1; r++) ob256_q8_rows(w, scale, ldw, K, xq, a, r, 1, y, 1);
}
static void ob256_gemv_f32(const float *w, size_t ldw, int K, const float *x, int r0, int r1, float *y) {
    ob256_gemv_f32_s(w, NULL, ldw, K, x, r0, r1, y);
}
static void ob256_gemv_f16(const uint16_t *w, size_t ldw, int K, const float *x, int r0, int r1, float *y) {
    ob256_gemv_f16_s(w, NULL, ldw, K, x, r0, r1, y);
}

/* f16 <-> f32 with F16C (vcvtph2ps is exact; vcvtps2ph with imm 0 rounds to nearest even, as
 * ob_f32_to_f16), 8 at a time, the tail through the scalar conversion. */
OB_T256 static void ob256_f16_to_f32(const uint16_t *src, int n, float *dst) {
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++) dst[i] = ob_f16_to_f32(src[i]);
}
OB_T256 static void ob256_f32_to_f16(const float *src, int n, uint16_t *dst) {
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) dst[i] = ob_f32_to_f16(src[i]);
}

/* Attention dot / axpy (kernels.h's order): the 8 partial sums are one ymm, the product and the
 * sum two instructions (no FMA, so the bits of the reference); f16 rows widened in registers. */
OB_T256 OB_INL float ob256_dot_tail(__m256 acc, const float *a, const float *b, const uint16_t *h, int i, int n) {
    float s[8];
    _mm256_storeu_ps(s, acc);
    for (; i < n; i++) s[i & 7] += a[i] * (b ? b[i] : ob_f16_to_f32(h[i]));
    return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
}
OB_T256 static float ob256_dot_f32(const float *a, const float *b, int n) {
    __m256 acc = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
    return ob256_dot_tail(acc, a, b, NULL, i, n);
}
OB_T256 static float ob256_dot_f16(const float *a, const uint16_t *b, int n) {
    __m256 acc = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8)
        acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_loadu_ps(a + i), OB256_LD_F16(b + i)));
    return ob256_dot_tail(acc, a, NULL, b, i, n);
}
OB_T256 static void ob256_axpy_f32(float *y, float a, const float *x, int n) {
    const __m256 va = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_mul_ps(va, _mm256_loadu_ps(x + i))));
    for (; i < n; i++) y[i] += a * x[i];
}
OB_T256 static void ob256_axpy_f16(float *y, float a, const uint16_t *x, int n) {
    const __m256 va = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_mul_ps(va, OB256_LD_F16(x + i))));
    for (; i < n; i++) y[i] += a * ob_f16_to_f32(x[i]);
}

/* I4 (mixed models): a 32-byte block gives weights 0..31 (W & 0x0F) and 32..63 ((W >> 4) & 0x0F)
 * as unsigned nibbles c = q + 8; vpmaddubsw pairs stay below 2 * 15 * 128, the block's two sum to
 * at most 7680 in 16 bits, then vpmaddwd widens.  The driver subtracts 8 * sum(x). */
OB_T256 OB_INL void ob256_i4_tile(const uint8_t *w, size_t rb, int K, const int8_t *x, size_t xs,
                                  int32_t *out, const int R, const int T) {
    const int nblk = (K + 63) / 64;
    const __m256i m0f = _mm256_set1_epi8(0x0F), ones16 = _mm256_set1_epi16(1);
    __m256i acc[4 * 4];
#pragma GCC unroll 16
    for (int i = 0; i < R * T; i++) acc[i] = _mm256_setzero_si256();
    for (int b = 0; b < nblk; b++) {
        __m256i lo[4], hi[4];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const __m256i W = _mm256_loadu_si256((const __m256i *)(w + (size_t)r * rb + (size_t)b * 32));
            lo[r] = _mm256_and_si256(W, m0f);
            hi[r] = _mm256_and_si256(_mm256_srli_epi16(W, 4), m0f);
        }
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            const int8_t *xp = x + (size_t)t * xs + (size_t)b * 64;
            const __m256i x0 = _mm256_loadu_si256((const __m256i *)xp);
            const __m256i x1 = _mm256_loadu_si256((const __m256i *)(xp + 32));
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) {
                __m256i s = _mm256_add_epi16(_mm256_maddubs_epi16(lo[r], x0), _mm256_maddubs_epi16(hi[r], x1));
                acc[r * T + t] = _mm256_add_epi32(acc[r * T + t], _mm256_madd_epi16(s, ones16));
            }
        }
    }
#pragma GCC unroll 16
    for (int i = 0; i < R * T; i++) out[i] = ob256_hsum_epi32(acc[i]);
}

/* I8: both operands are signed, which vpmaddubsw cannot take whole (|-128 * -128| pairs saturate),
 * so weights and activations are sign-extended to 16 bits and vpmaddwd sums pairs into 32 bits:
 * exact for every byte.  Rows are K bytes with no padding: 32 and 16 bytes at a time while they
 * lie inside the row, the last K % 16 in scalar. */
OB_T256 OB_INL void ob256_i8_tile(const uint8_t *w, size_t rb, int K, const int8_t *x, size_t xs,
                                  int32_t *out, const int R, const int T) {
    __m256i acc[4 * 4];
#pragma GCC unroll 16
    for (int i = 0; i < R * T; i++) acc[i] = _mm256_setzero_si256();
    int k = 0;
    for (; k + 32 <= K; k += 32) {
        __m256i wl[4], wh[4];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const __m256i W = _mm256_loadu_si256((const __m256i *)(w + (size_t)r * rb + (size_t)k));
            wl[r] = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(W));
            wh[r] = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(W, 1));
        }
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            const __m256i X = _mm256_loadu_si256((const __m256i *)(x + (size_t)t * xs + (size_t)k));
            const __m256i xl = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(X));
            const __m256i xh = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(X, 1));
#pragma GCC unroll 4
            for (int r = 0; r < R; r++)
                acc[r * T + t] = _mm256_add_epi32(acc[r * T + t], _mm256_add_epi32(_mm256_madd_epi16(wl[r], xl),
                                                                                   _mm256_madd_epi16(wh[r], xh)));
        }
    }
    if (k + 16 <= K) {
        __m256i wl[4];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++)
            wl[r] = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + (size_t)r * rb + (size_t)k)));
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            const __m256i xl = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(x + (size_t)t * xs + (size_t)k)));
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) acc[r * T + t] = _mm256_add_epi32(acc[r * T + t], _mm256_madd_epi16(wl[r], xl));
        }
        k += 16;
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) {
            const int8_t *wr = (const int8_t *)w + (size_t)r * rb, *xp = x + (size_t)t * xs;
            int32_t s = ob256_hsum_epi32(acc[r * T + t]);
            for (int j = k; j < K; j++) s += (int32_t)wr[j] * xp[j];
            out[r * T + t] = s;
        }
}

OB_DEF_TILES(OB_T256, ob256_i4, 4, 2)
OB_DEF_TILES(OB_T256, ob256_i8, 4, 2)
/* I4 GEMV (m = 1: decode of int4 layers, and the int4 LM head).  The 4-row tile reads 4 rows side
 * by side: at the head's 1280-byte rows a new set of 4 short streams every 5 KB, which this Zen 3's
 * prefetchers never catch up with (`bench_kernels --case int4`, session 27: 10 GB/s, 37 % of the
 * read loop, slower than the int8 head for half the bytes).  So, as the int8 head GEMV, R rows come
 * from R segments of the row range, each segment one long sequential stream, one activation load
 * serving all of them; two blocks' products are summed in int16 before widening (|.| <= 2 * 2 * 15
 * * 128 * 2 = 15360).  Exact int32 sums and the tiles' ob_out step: the same bits. */
OB_T256 OB_INL void ob256_i4_rows(const uint8_t *w, size_t rb, int nblk, const int8_t *x, int r, int step,
                                  int32_t *out, const int R) {
    const __m256i m0f = _mm256_set1_epi8(0x0F), ones16 = _mm256_set1_epi16(1);
    __m256i acc[OB256_Q8_ROWS];
    const uint8_t *wr[OB256_Q8_ROWS];
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) {
        acc[i] = _mm256_setzero_si256();
        wr[i] = w + (size_t)(r + i * step) * rb;
    }
    int b = 0;
    for (; b < nblk; b += 2) {
        const int two = b + 1 < nblk;
        const __m256i x0 = _mm256_loadu_si256((const __m256i *)(x + (size_t)b * 64));
        const __m256i x1 = _mm256_loadu_si256((const __m256i *)(x + (size_t)b * 64 + 32));
        const __m256i x2 = two ? _mm256_loadu_si256((const __m256i *)(x + (size_t)b * 64 + 64)) : _mm256_setzero_si256();
        const __m256i x3 = two ? _mm256_loadu_si256((const __m256i *)(x + (size_t)b * 64 + 96)) : _mm256_setzero_si256();
#pragma GCC unroll 8
        for (int i = 0; i < R; i++) {
            const __m256i W0 = _mm256_loadu_si256((const __m256i *)(wr[i] + (size_t)b * 32));
            const __m256i W1 = two ? _mm256_loadu_si256((const __m256i *)(wr[i] + (size_t)b * 32 + 32)) : _mm256_setzero_si256();
            __m256i s = _mm256_add_epi16(_mm256_maddubs_epi16(_mm256_and_si256(W0, m0f), x0),
                                         _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(W0, 4), m0f), x1));
            s = _mm256_add_epi16(s, _mm256_add_epi16(_mm256_maddubs_epi16(_mm256_and_si256(W1, m0f), x2),
                                                     _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(W1, 4), m0f), x3)));
            acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(s, ones16));
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) out[i] = ob256_hsum_epi32(acc[i]);
}
OB_T256 static void ob256_i4_gemv(const uint8_t *w, int K, const float *wscale, const int8_t *xq, float a,
                                  int32_t xsum, int r0, int r1, float *y) {
    const int nblk = (K + 63) / 64, R = OB256_Q8_ROWS, L = (r1 - r0) / R;
    const size_t rb = ob_irow_bytes(OB_IFMT_I4, K);
    int32_t out[OB256_Q8_ROWS];
    for (int i = 0; i < L; i++) {
        ob256_i4_rows(w, rb, nblk, xq, r0 + i, L, out, R);
        for (int j = 0; j < R; j++) y[r0 + i + j * L] = ob_out(out[j] - 8 * xsum, wscale[r0 + i + j * L], a);
    }
    for (int r = r0 + L * R; r < r1; r++) {
        ob256_i4_rows(w, rb, nblk, xq, r, 0, out, 1);
        y[r] = ob_out(out[0] - 8 * xsum, wscale[r], a);
    }
}
OB_DEF_MATMUL_RS_GEMV(ob256_i4, OB_IFMT_I4, 8, ob256_i4_gemv)
OB_DEF_MATMUL_RS(ob256_i8, OB_IFMT_I8, 0)
/* Fused attention (kernels.h: scores / mix) for the G query heads that share one KV head, each cached
 * row widened once for all of them (vcvtph2ps runs about one a cycle here, as many as the products
 * it feeds).  Heads go in blocks of g = 4, 2 or 1 (then 2, 1 for what is left).
 * scores: 8 accumulators, one per (row, head) pair of 8 / g rows and g heads, each with a row's 8
 * partial sums exactly as ob256_dot_*; an 8x8 transpose puts lane l of every pair in one register,
 * and kernels.h's tree ((s0 + s4) + (s1 + s5)) + ((s2 + s6) + (s3 + s7)) runs for the 8 at once.
 * The pairs go head-major, so that a head's scores leave in one store of 8 / g lanes: through a
 * stack array and scalar copies, bench_kernels --case attention took 3.18 ms, not 2.91, for 2B4T's.
 * Each query vector is loaded once for the 8 / g rows (OB_KEEP: GCC folded it into every multiply,
 * 10 loads a step instead of 6), and the rows are prefetched OB256_ATTN_PF bytes ahead.
 * mix: 8 / g vectors of y for each of the g heads in registers, the rows in tiles of
 * OB256_MIX_TILE bytes, a pass over a tile for each 8 * 8 / g values of a row, y stored after a
 * tile and reloaded for the next (the order of the sums is the axpy sequence's).  Head by head
 * over all rows, as before, an f16 row was widened once for each head; tiles of 16 KB and more ran
 * slower from DRAM than 4 KB ones (strided passes the prefetchers follow worse).  The first pass
 * over a tile prefetches each row OB256_MIX_PF bytes ahead, whole, for the passes after it.
 * Measured: bench_kernels --case attention (docs/BENCHMARKS.md).
 * Both need hd % 8 == 0 (any head_dim of a real model); otherwise they loop over dot / axpy. */
OB_T256 OB_INL __m256 ob256_tree8(const __m256 a[8]) {
    __m256 t0 = _mm256_unpacklo_ps(a[0], a[1]), t1 = _mm256_unpackhi_ps(a[0], a[1]);
    __m256 t2 = _mm256_unpacklo_ps(a[2], a[3]), t3 = _mm256_unpackhi_ps(a[2], a[3]);
    __m256 t4 = _mm256_unpacklo_ps(a[4], a[5]), t5 = _mm256_unpackhi_ps(a[4], a[5]);
    __m256 t6 = _mm256_unpacklo_ps(a[6], a[7]), t7 = _mm256_unpackhi_ps(a[6], a[7]);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    __m256 s0 = _mm256_permute2f128_ps(u0, u4, 0x20), s4 = _mm256_permute2f128_ps(u0, u4, 0x31);
    __m256 s1 = _mm256_permute2f128_ps(u1, u5, 0x20), s5 = _mm256_permute2f128_ps(u1, u5, 0x31);
    __m256 s2 = _mm256_permute2f128_ps(u2, u6, 0x20), s6 = _mm256_permute2f128_ps(u2, u6, 0x31);
    __m256 s3 = _mm256_permute2f128_ps(u3, u7, 0x20), s7 = _mm256_permute2f128_ps(u3, u7, 0x31);
    return _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(s0, s4), _mm256_add_ps(s1, s5)),
                         _mm256_add_ps(_mm256_add_ps(s2, s6), _mm256_add_ps(s3, s7)));
}
#define OB256_LD_F32(p) _mm256_loadu_ps(p)
#ifndef OB256_ATTN_PF
#define OB256_ATTN_PF 2048
#endif
#ifndef OB256_MIX_PF
#define OB256_MIX_PF 2048
#endif
#ifndef OB256_MIX_TILE
#define OB256_MIX_TILE 4096
#endif
#define OB256_ATTN(T, sfx, LD, dot, axpy)                                                              \
    OB_T256 OB_INL void ob256_scores_blk_##sfx(const float *q, const T *rows, int hd, int n, float scale, \
                                               float *out, size_t ldo, const int g) {                  \
        const int kb = 8 / g; /* rows a block; accumulator h * kb + k: head h, row k */                \
        int j = 0;                                                                                     \
        if ((hd & 7) == 0)                                                                             \
            for (; j + kb <= n; j += kb) {                                                             \
                const T *r = rows + (size_t)j * hd;                                                    \
                __m256 acc[8];                                                                         \
                _Pragma("GCC unroll 8") for (int t = 0; t < 8; t++) acc[t] = _mm256_setzero_ps();      \
                if (OB256_ATTN_PF)                                                                     \
                    for (size_t c = 0; c < (size_t)kb * hd * sizeof(T); c += 64)                       \
                        _mm_prefetch((const char *)r + OB256_ATTN_PF + c, _MM_HINT_T0);                \
                for (int i = 0; i < hd; i += 8) {                                                      \
                    __m256 kv[8];                                                                      \
                    _Pragma("GCC unroll 8") for (int k = 0; k < kb; k++) kv[k] = LD(r + (size_t)k * hd + i); \
                    _Pragma("GCC unroll 4") for (int h = 0; h < g; h++) {                              \
                        __m256 qv = _mm256_loadu_ps(q + (size_t)h * hd + i);                           \
                        OB_KEEP(qv); /* one load for the kb rows, not one each */                      \
                        _Pragma("GCC unroll 8") for (int k = 0; k < kb; k++)                           \
                            acc[h * kb + k] = _mm256_add_ps(acc[h * kb + k], _mm256_mul_ps(qv, kv[k])); \
                    }                                                                                  \
                }                                                                                      \
                const __m256 s = _mm256_mul_ps(ob256_tree8(acc), _mm256_set1_ps(scale));               \
                if (g == 1) { /* lane h * kb + k: head h's score of row j + k */                       \
                    _mm256_storeu_ps(out + j, s);                                                      \
                } else if (g == 2) {                                                                   \
                    _mm_storeu_ps(out + j, _mm256_castps256_ps128(s));                                 \
                    _mm_storeu_ps(out + ldo + j, _mm256_extractf128_ps(s, 1));                         \
                } else {                                                                               \
                    const __m128 lo = _mm256_castps256_ps128(s), hi = _mm256_extractf128_ps(s, 1);     \
                    _mm_storel_pi((__m64 *)(out + j), lo);                                             \
                    _mm_storeh_pi((__m64 *)(out + ldo + j), lo);                                       \
                    _mm_storel_pi((__m64 *)(out + 2 * ldo + j), hi);                                   \
                    _mm_storeh_pi((__m64 *)(out + 3 * ldo + j), hi);                                   \
                }                                                                                      \
            }                                                                                          \
        for (; j < n; j++)                                                                             \
            for (int h = 0; h < g; h++)                                                                \
                out[(size_t)h * ldo + j] = dot(q + (size_t)h * hd, rows + (size_t)j * hd, hd) * scale; \
    }                                                                                                  \
    OB_T256 static void ob256_scores_##sfx(const float *q, int G, const T *rows, int hd, int n, float scale, \
                                           float *out, size_t ldo) {                                   \
        for (int h = 0; h < G;) {                                                                      \
            const float *qh = q + (size_t)h * hd;                                                      \
            float *oh = out + (size_t)h * ldo;                                                         \
            if (G - h >= 4) ob256_scores_blk_##sfx(qh, rows, hd, n, scale, oh, ldo, 4), h += 4;        \
            else if (G - h >= 2) ob256_scores_blk_##sfx(qh, rows, hd, n, scale, oh, ldo, 2), h += 2;   \
            else ob256_scores_blk_##sfx(qh, rows, hd, n, scale, oh, ldo, 1), h += 1;                   \
        }                                                                                              \
    }                                                                                                  \
    /* acc[h * 8 / g + t] += p[h * ldp + j] * row j's vector t, rows j < m; pf: prefetch ahead (an     \
     * instance of its own: the test inside the loop made GQA's blocks 1.8x slower) */                 \
    OB_T256 OB_INL void ob256_mix_rows_##sfx(__m256 *acc, const T *r, const float *pj, size_t ldp, int hd, int m, \
                                             const int g, const int pf) {                              \
        const int nv = 8 / g;                                                                          \
        /* a row's first 4 lines, written out: as a loop, GCC spilled acc */                           \
        const size_t rb = (size_t)hd * sizeof(T), o1 = rb > 64 ? 64 : 0, o2 = rb > 128 ? 128 : 0,      \
                     o3 = rb > 192 ? 192 : 0;                                                          \
        for (int j = 0; j < m; j++, r += hd, pj++) {                                                   \
            if (pf) {                                                                                  \
                const char *a = (const char *)r + OB256_MIX_PF;                                        \
                _mm_prefetch(a, _MM_HINT_T0);                                                          \
                _mm_prefetch(a + o1, _MM_HINT_T0);                                                     \
                _mm_prefetch(a + o2, _MM_HINT_T0);                                                     \
                _mm_prefetch(a + o3, _MM_HINT_T0);                                                     \
            }                                                                                          \
            __m256 v[8];                                                                               \
            _Pragma("GCC unroll 8") for (int t = 0; t < nv; t++) v[t] = LD(r + 8 * t);                 \
            _Pragma("GCC unroll 4") for (int h = 0; h < g; h++) {                                      \
                const __m256 ph = _mm256_broadcast_ss(pj + (size_t)h * ldp);                           \
                _Pragma("GCC unroll 8") for (int t = 0; t < nv; t++)                                   \
                    acc[h * nv + t] = _mm256_add_ps(acc[h * nv + t], _mm256_mul_ps(ph, v[t]));         \
            }                                                                                          \
        }                                                                                              \
    }                                                                                                  \
    /* heads h < g (g = 4, 2, 1) of a block, 8 / g vectors of each in registers a pass */              \
    OB_T256 OB_INL void ob256_mix_blk_##sfx(float *y, const float *p, size_t ldp, const T *rows, int hd, int n, \
                                            const int g) {                                             \
        const int nv = 8 / g, per = OB256_MIX_TILE / (hd * (int)sizeof(T)); /* rows a tile */          \
        const int tr = hd <= 8 * nv ? n : per > 8 ? per : 8; /* one pass a row: no tiles needed */     \
        for (int j0 = 0; j0 < n; j0 += tr) {                                                           \
            const int m = n - j0 < tr ? n - j0 : tr;                                                   \
            for (int d = 0; d < hd; d += 8 * nv) {                                                     \
                const T *r = rows + (size_t)j0 * hd + d;                                               \
                const float *pj = p + j0;                                                              \
                if (hd - d < 8 * nv) { /* the last values of a head size 8 * nv does not divide */     \
                    for (int h = 0; h < g; h++) {                                                      \
                        float *yh = y + (size_t)h * hd + d;                                            \
                        if (!j0) memset(yh, 0, sizeof(float) * (size_t)(hd - d));                      \
                        for (int j = 0; j < m; j++) axpy(yh, pj[(size_t)h * ldp + j], r + (size_t)j * hd, hd - d); \
                    }                                                                                  \
                    continue;                                                                          \
                }                                                                                      \
                __m256 acc[8]; /* constant indices only, so that acc stays in registers */             \
                _Pragma("GCC unroll 8") for (int a = 0; a < 8; a++)                                    \
                    acc[a] = j0 ? _mm256_loadu_ps(y + (size_t)(a / nv) * hd + d + 8 * (a % nv))            \
                                : _mm256_setzero_ps();                                                 \
                if (OB256_MIX_PF && d == 0) /* the first pass over a tile takes its rows in */         \
                    ob256_mix_rows_##sfx(acc, r, pj, ldp, hd, m, g, 1);                                \
                else                                                                                   \
                    ob256_mix_rows_##sfx(acc, r, pj, ldp, hd, m, g, 0);                                \
                _Pragma("GCC unroll 8") for (int a = 0; a < 8; a++)                                    \
                    _mm256_storeu_ps(y + (size_t)(a / nv) * hd + d + 8 * (a % nv), acc[a]);            \
            }                                                                                          \
        }                                                                                              \
    }                                                                                                  \
    OB_T256 static void ob256_mix_##sfx(float *y, int G, const float *p, size_t ldp, const T *rows, int hd, \
                                        int n) {                                                       \
        if (hd & 7) {                                                                                  \
            for (int h = 0; h < G; h++, y += hd, p += ldp) {                                           \
                for (int i = 0; i < hd; i++) y[i] = 0.0f;                                              \
                for (int j = 0; j < n; j++) axpy(y, p[j], rows + (size_t)j * hd, hd);                  \
            }                                                                                          \
            return;                                                                                    \
        }                                                                                              \
        if (n == 0) {                                                                                  \
            memset(y, 0, sizeof(float) * (size_t)G * (size_t)hd);                                      \
            return;                                                                                    \
        }                                                                                              \
        for (int h = 0; h < G;) {                                                                      \
            float *yh = y + (size_t)h * hd;                                                            \
            const float *ph = p + (size_t)h * ldp;                                                     \
            if (G - h >= 4) ob256_mix_blk_##sfx(yh, ph, ldp, rows, hd, n, 4), h += 4;                  \
            else if (G - h >= 2) ob256_mix_blk_##sfx(yh, ph, ldp, rows, hd, n, 2), h += 2;             \
            else ob256_mix_blk_##sfx(yh, ph, ldp, rows, hd, n, 1), h += 1;                             \
        }                                                                                              \
    }
OB256_ATTN(float, f32, OB256_LD_F32, ob256_dot_f32, ob256_axpy_f32)
OB256_ATTN(uint16_t, f16, OB256_LD_F16, ob256_dot_f16, ob256_axpy_f16)

/* ob_expf (kernels_impl.h) on 8 lanes, step for step: _mm256_min_ps / _mm256_max_ps are the
 * scalar "x < hi ? x : hi" / "x > lo ? x : lo" (a NaN takes the bound), floor, separate multiplies
 * and adds, the exponent bits from the integral n. */
OB_T256 OB_INL __m256 ob256_expf(__m256 x) {
    x = _mm256_min_ps(x, _mm256_set1_ps(OB_EXP_HI));
    x = _mm256_max_ps(x, _mm256_set1_ps(OB_EXP_LO));
    __m256 t = _mm256_mul_ps(x, _mm256_set1_ps(OB_EXP_LOG2E));
    t = _mm256_add_ps(t, _mm256_set1_ps(0.5f));
    const __m256 fn = _mm256_floor_ps(t);
    __m256 r = _mm256_sub_ps(x, _mm256_mul_ps(fn, _mm256_set1_ps(OB_EXP_C1)));
    r = _mm256_sub_ps(r, _mm256_mul_ps(fn, _mm256_set1_ps(OB_EXP_C2)));
    const __m256 r2 = _mm256_mul_ps(r, r);
    __m256 p = _mm256_mul_ps(_mm256_set1_ps(OB_EXP_P0), r);
    p = _mm256_add_ps(p, _mm256_set1_ps(OB_EXP_P1));
    p = _mm256_mul_ps(p, r);
    p = _mm256_add_ps(p, _mm256_set1_ps(OB_EXP_P2));
    p = _mm256_mul_ps(p, r);
    p = _mm256_add_ps(p, _mm256_set1_ps(OB_EXP_P3));
    p = _mm256_mul_ps(p, r);
    p = _mm256_add_ps(p, _mm256_set1_ps(OB_EXP_P4));
    p = _mm256_mul_ps(p, r);
    p = _mm256_add_ps(p, _mm256_set1_ps(OB_EXP_P5));
    p = _mm256_mul_ps(p, r2);
    p = _mm256_add_ps(p, r);
    p = _mm256_add_ps(p, _mm256_set1_ps(1.0f));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(fn), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

OB_T256 static void ob256_exp_shift(float *x, int n, float m) {
    const __m256 vm = _mm256_set1_ps(m);
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, ob256_expf(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm)));
    for (; i < n; i++) x[i] = ob_expf(x[i] - m);
}

/* kernels.h softmax: max_ps(x, m) keeps m where x is NaN, as the reference's x > m does.  The sums
 * of 4 rows at a time run side by side, each in its own order: one add of a row's sum must wait for
 * the one before (3 cycles here), and 4 sums fill that wait. */
OB_T256 static void ob256_softmax_exp(float *x, int n) {
    __m256 m8 = _mm256_set1_ps(-INFINITY);
    int i = 0;
    for (; i + 8 <= n; i += 8) m8 = _mm256_max_ps(_mm256_loadu_ps(x + i), m8);
    float l[8], m = -INFINITY;
    _mm256_storeu_ps(l, m8);
    for (int j = 0; j < 8; j++)
        if (l[j] > m) m = l[j];
    for (; i < n; i++)
        if (x[i] > m) m = x[i];
    ob256_exp_shift(x, n, m);
}
OB_T256 static void ob256_softmax_div(float *x, int n, float s) {
    const __m256 s8 = _mm256_set1_ps(s);
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_div_ps(_mm256_loadu_ps(x + i), s8));
    for (; i < n; i++) x[i] = x[i] / s;
}
OB_T256 static void ob256_softmax(float *x, size_t ldx, const int *n, int rows) {
    for (int r0 = 0; r0 < rows; r0 += 4) {
        const int nr = rows - r0 < 4 ? rows - r0 : 4;
        float *xr[4];
        int len[4], common = n[r0];
        for (int r = 0; r < 4; r++) { /* rows past the last: the last again, its sum not used */
            const int rr = r0 + (r < nr ? r : nr - 1);
            xr[r] = x + (size_t)rr * ldx, len[r] = n[rr];
            if (len[r] < common) common = len[r];
        }
        for (int r = 0; r < nr; r++) ob256_softmax_exp(xr[r], len[r]);
        float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
        for (int i = 0; i < common; i++) s0 += xr[0][i], s1 += xr[1][i], s2 += xr[2][i], s3 += xr[3][i];
        float s[4] = {s0, s1, s2, s3};
        for (int r = 0; r < nr; r++) {
            for (int i = common; i < len[r]; i++) s[r] += xr[r][i];
            ob256_softmax_div(xr[r], len[r], s[r]);
        }
    }
}

OB_T256 static void ob256_silu(float *g, const float *up, size_t n) {
    const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 x = _mm256_loadu_ps(g + i);
        const __m256 e = ob256_expf(_mm256_xor_ps(x, sign)); /* -x: the sign flipped, exact */
        __m256 a = _mm256_div_ps(x, _mm256_add_ps(one, e));
        if (up) a = _mm256_mul_ps(a, _mm256_loadu_ps(up + i));
        _mm256_storeu_ps(g + i, a);
    }
    for (; i < n; i++) {
        float a = ob_silu1(g[i]);
        g[i] = up ? a * up[i] : a;
    }
}

OB_T256 static void ob256_relu2(float *g, const float *up, size_t n) {
    const __m256 zero = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 x = _mm256_loadu_ps(g + i);
        __m256 r = _mm256_and_ps(x, _mm256_cmp_ps(x, zero, _CMP_GT_OQ)); /* false for NaN: +0 */
        r = _mm256_mul_ps(r, r);
        if (up) r = _mm256_mul_ps(r, _mm256_loadu_ps(up + i));
        _mm256_storeu_ps(g + i, r);
    }
    if (i < n) ob_relu2_ref(g + i, up ? up + i : NULL, n - i);
}

/* The four partial sums of the reference are the four double lanes of one register. */
OB_T256 static void ob256_rmsnorm(const float *x, const float *w, int n, float eps, float *y) {
    __m256d s = _mm256_setzero_pd();
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        const __m256d v = _mm256_cvtps_pd(_mm_loadu_ps(x + i));
        s = _mm256_add_pd(s, _mm256_mul_pd(v, v));
    }
    double s4[4];
    _mm256_storeu_pd(s4, s);
    const float r = 1.0f / sqrtf((float)(ob_sumsq_tail(s4[0], s4[1], s4[2], s4[3], x, i, n) / n) + eps);
    const __m256 vr = _mm256_set1_ps(r);
    int k = 0;
    for (; k + 8 <= n; k += 8)
        _mm256_storeu_ps(y + k, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + k), vr), _mm256_loadu_ps(w + k)));
    for (; k < n; k++) y[k] = (x[k] * r) * w[k];
}

/* kernels.h t16_to_t2: the T2 blocks made of full T1.6 slices, 32 weights a step as the T1.6 GEMV
 * decodes them (q = b * 3^i by byte additions, trit = min(q -sat 85, 1) + min(q -sat 170, 1)),
 * each shifted into its 2-bit field (codes <= 2: no bit leaves its byte); the rest in scalar. */
OB_T256 static void ob256_t16_to_t2(const uint8_t *row, int K, uint8_t *out, size_t bs) {
    const int nb = 5 * (K / 160) / 4; /* blocks of full slices only */
    const __m256i c85 = _mm256_set1_epi8(85), c170 = _mm256_set1_epi8((char)170), one8 = _mm256_set1_epi8(1);
    __m256i acc = _mm256_setzero_si256(), q = acc;
    for (int s = 0; s < 4 * nb; s++) {
        if (s % 5 == 0) q = _mm256_loadu_si256((const __m256i *)(row + (size_t)(s / 5) * 32));
        else q = _mm256_add_epi8(q, _mm256_add_epi8(q, q));
        const __m256i c = _mm256_add_epi8(_mm256_min_epu8(_mm256_subs_epu8(q, c85), one8),
                                          _mm256_min_epu8(_mm256_subs_epu8(q, c170), one8));
        acc = _mm256_or_si256(acc, _mm256_sll_epi16(c, _mm_cvtsi32_si128(2 * (s % 4))));
        if (s % 4 == 3) {
            _mm256_storeu_si256((__m256i *)(out + (size_t)(s / 4) * bs), acc);
            acc = _mm256_setzero_si256();
        }
    }
    ob_t16_to_t2_from(row, K, nb, out, bs);
}

void ob_kernels_fill_avx2(ob_kernels *k) {
    k->quantize = ob256_quantize;
    k->matmul[OB_WFMT_T2] = ob256_t2_matmul;
    k->matmul[OB_WFMT_T2X] = ob256_t2x_matmul_any;
    k->matmul[OB_WFMT_T16] = ob256_t16_matmul;
    k->matmul[OB_WFMT_B1] = ob256_b1_matmul;
    k->gemv_f32 = ob256_gemv_f32;
    k->gemv_f16 = ob256_gemv_f16;
    k->gemv_q8 = ob256_gemv_q8;
    k->f16_to_f32 = ob256_f16_to_f32;
    k->f32_to_f16 = ob256_f32_to_f16;
    k->dot_f32 = ob256_dot_f32;
    k->dot_f16 = ob256_dot_f16;
    k->axpy_f32 = ob256_axpy_f32;
    k->axpy_f16 = ob256_axpy_f16;
    k->matmul_rs[OB_IFMT_I4] = ob256_i4_matmul;
    k->matmul_rs[OB_IFMT_I8] = ob256_i8_matmul;
    k->scores_f32 = ob256_scores_f32;
    k->scores_f16 = ob256_scores_f16;
    k->mix_f32 = ob256_mix_f32;
    k->mix_f16 = ob256_mix_f16;
    k->exp_shift = ob256_exp_shift;
    k->softmax = ob256_softmax;
    k->silu = ob256_silu;
    k->relu2 = ob256_relu2;
    k->rmsnorm = ob256_rmsnorm;
    k->t16_to_t2 = ob256_t16_to_t2;
}
#else
typedef int ob_kernels_avx2_empty; /* ISO C wants a non-empty translation unit */
#endif /* OB_HAVE_X86 */
