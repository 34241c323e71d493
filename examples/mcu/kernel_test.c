/* kernel_test.c - a firmware that checks every kernel ISA this core runs (MVE on the Cortex-M55)
 * against the scalar references on seeded random inputs, as runtime_c/tests/test_kernels.c does
 * on a desktop: the packed matmuls bit for bit (1..5 tokens, odd row ranges, K not a multiple of
 * the block), quantize bit for bit, the int8 head GEMV bit for bit, the f32 GEMV within 1e-5 of
 * the sum of |w x|.
 * Prints one line and exits 0 when all agree.  Static buffers only. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "kernels.h"
#include "semihost.h"

#define MAX_K 736
#define MAX_N 37
#define MAX_M 5

static uint8_t w[MAX_N * MAX_K];
static int8_t q[MAX_K], wq8[MAX_N * MAX_K], xq[MAX_M * (MAX_K + 256)], xq2[MAX_M * (MAX_K + 256)];
static float x[MAX_M * MAX_K], a[MAX_M], a2[MAX_M], ws[MAX_N * MAX_K], scale[MAX_N];
static float y_ref[MAX_M * MAX_N], y_isa[MAX_M * MAX_N];
static int32_t xsum[MAX_M], xsum2[MAX_M];
static int16_t xh[MAX_K];
static int checks, failures;

static uint64_t rng = 0x0b17u;
static uint32_t rnd(void) { /* xorshift64* */
    rng ^= rng >> 12, rng ^= rng << 25, rng ^= rng >> 27;
    return (uint32_t)((rng * 0x2545F4914F6CDD1DULL) >> 32);
}
static float rndf(void) { return (float)(rnd() >> 8) * (2.0f / 16777216.0f) - 1.0f; }

static void check(int ok) {
    checks++;
    failures += !ok;
}

static void test_isa(const ob_kernels *ref, const ob_kernels *k) {
    static const int Ks[] = {128, 160, 256, 300, 640, 736};
    for (unsigned ki = 0; ki < sizeof Ks / sizeof Ks[0]; ki++) {
        int K = Ks[ki], N = MAX_N;
        size_t st = ob_act_stride(K);
        for (int m = 1; m <= MAX_M; m++) {
            for (int i = 0; i < m * K; i++) x[i] = rndf() * (i % 7 == 0 ? 4.0f : 1.0f);
            ob_quantize_rows(ref, x, (size_t)K, m, K, xq, st, a, xsum);
            ob_quantize_rows(k, x, (size_t)K, m, K, xq2, st, a2, xsum2);
            check(memcmp(xq, xq2, (size_t)m * st) == 0 && memcmp(a, a2, sizeof(float) * (size_t)m) == 0 &&
                  memcmp(xsum, xsum2, sizeof(int32_t) * (size_t)m) == 0);
            for (int f = 0; f < OB_WFMT_COUNT; f++) {
                size_t rb = ob_row_bytes((ob_wfmt)f, K);
                for (int r = 0; r < N; r++) {
                    for (int i = 0; i < K; i++) q[i] = (int8_t)(f == OB_WFMT_B1 ? (rnd() & 1 ? 1 : -1) : (int)(rnd() % 3) - 1);
                    ob_pack_row_ref((ob_wfmt)f, q, K, w + (size_t)r * rb);
                }
                int r0 = (int)(rnd() % 5), r1 = N - (int)(rnd() % 5);
                memset(y_ref, 0, sizeof y_ref);
                memset(y_isa, 0, sizeof y_isa);
                ref->matmul[f](w, K, 0.0173f, xq, st, a, xsum, m, r0, r1, y_ref, (size_t)N);
                k->matmul[f](w, K, 0.0173f, xq, st, a, xsum, m, r0, r1, y_isa, (size_t)N);
                check(memcmp(y_ref, y_isa, sizeof y_ref) == 0);
            }
        }
        /* the LM head's GEMVs: one token, every row; int8 (int16 activations) exact, f32 within 1e-5 */
        for (int i = 0; i < N * K; i++) wq8[i] = (int8_t)(rnd() & 0xff), ws[i] = rndf();
        for (int r = 0; r < N; r++) scale[r] = 0.01f + 0.001f * (float)r;
        float ah;
        ob_quantize_i16(x, K, xh, &ah);
        ref->gemv_q8(wq8, scale, (size_t)K, K, xh, ah, 0, N, y_ref);
        k->gemv_q8(wq8, scale, (size_t)K, K, xh, ah, 0, N, y_isa);
        check(memcmp(y_ref, y_isa, sizeof(float) * (size_t)N) == 0);
        ref->gemv_f32(ws, (size_t)K, K, x, 0, N, y_ref);
        k->gemv_f32(ws, (size_t)K, K, x, 0, N, y_isa);
        for (int r = 0; r < N; r++) {
            float mag = 0.0f;
            for (int i = 0; i < K; i++) mag += fabsf(ws[r * K + i] * x[i]);
            check(fabsf(y_ref[r] - y_isa[r]) <= 1e-5f * mag + 1e-6f);
        }
    }
}

int main(void) {
    int out = sh_open_console(0);
    char line[160], names[64] = "";
    ob_kernels ref;
    ob_kernels_init(&ref, OB_ISA_SCALAR);
    for (int i = 0; i < OB_ISA_COUNT; i++) {
        if (!ob_isa_supported((ob_isa)i)) continue;
        ob_kernels k;
        ob_kernels_init(&k, (ob_isa)i);
        test_isa(&ref, &k);
        strncat(names, " ", sizeof names - strlen(names) - 1);
        strncat(names, ob_isa_name((ob_isa)i), sizeof names - strlen(names) - 1);
    }
    int n = snprintf(line, sizeof line, "kernels: ISAs tested:%s; %d checks, %d failures\n", names, checks, failures);
    sh_write(out, line, (size_t)n);
    return failures != 0;
}
