/* kernels_dsp.c - Armv7E-M / Armv8-M DSP (SIMD32) kernels for Cortex-M cores without Helium, e.g.
 * the Cortex-M4: T2 with SMLAD.  The other entries keep the scalar references. */
#include "kernels_impl.h"

#if defined(OB_HAVE_DSP)
#include <arm_acle.h>
/* =================================================================== DSP (SIMD32)
 * Byte j of a T2 block holds weights j, j+32, j+64, j+96 in bit pairs 0-1 .. 6-7, so one 32-bit
 * word shifted by 2i and masked with 0x03030303 gives the codes of four consecutive weights of
 * slice i, lined up with a 32-bit word of the activations.  UXTB16 / SXTB16 (with a rotate of 8
 * for the odd bytes) spread both into pairs of halfwords and SMLAD adds two products at a time. */
#define OB_DINL static inline __attribute__((always_inline))

OB_DINL uint32_t obd_ror8(uint32_t v) { return (v >> 8) | (v << 24); } /* UXTB16/SXTB16 fold it in */

OB_DINL uint32_t obd_ld32(const void *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

OB_DINL void obd_t2_tile(const uint8_t *w, size_t rb, int K, const int8_t *x, size_t xs, int32_t *out,
                         const int R, const int T) {
    const int nblk = (K + 127) / 128;
    int32_t acc[2 * 4];
    for (int i = 0; i < R * T; i++) acc[i] = 0;
    for (int b = 0; b < nblk; b++)
        for (int j = 0; j < 32; j += 4) { /* bytes j .. j+3 of the block */
            uint32_t W[2];
            for (int r = 0; r < R; r++) W[r] = obd_ld32(w + (size_t)r * rb + (size_t)b * 32 + j);
            for (int t = 0; t < T; t++) {
                const int8_t *xp = x + (size_t)t * xs + (size_t)b * 128 + j;
#pragma GCC unroll 4 /* constant shifts, no loop counter */
                for (int i = 0; i < 4; i++) {
                    uint32_t xv = obd_ld32(xp + 32 * i);
                    int16x2_t x02 = __sxtb16(xv), x13 = __sxtb16(obd_ror8(xv));
                    for (int r = 0; r < R; r++) {
                        uint32_t c = (W[r] >> (2 * i)) & 0x03030303u;
                        acc[r * T + t] = __smlad((int16x2_t)__uxtb16(c), x02, acc[r * T + t]);
                        acc[r * T + t] = __smlad((int16x2_t)__uxtb16(obd_ror8(c)), x13, acc[r * T + t]);
                    }
                }
            }
        }
    for (int i = 0; i < R * T; i++) out[i] = acc[i];
}

#define OB_DSP_ATTR
OB_DEF_TILES(OB_DSP_ATTR, obd_t2, 2, 2)
OB_DEF_MATMUL(obd_t2, OB_WFMT_T2)

void ob_kernels_fill_dsp(ob_kernels *k) { k->matmul[OB_WFMT_T2] = obd_t2_matmul; }
#else
typedef int ob_kernels_dsp_empty; /* ISO C wants a non-empty translation unit */
#endif /* OB_HAVE_DSP */
