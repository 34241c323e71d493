/* kernels.h - internal compute kernels of the onebit C runtime (not installed).
 *
 * The math is docs/DESIGN.md's, bit for bit:
 *   activations  a = 127.0f / fmaxf(absmax, 1e-5f),  xq = clamp(nearbyintf(x * a), -128, 127)
 *   BitLinear    y[t][r] = (float)acc(t, r) * (wscale / a[t])     (factor first, then one multiply)
 * where acc is the exact int32 dot product of the int8 activations with the ternary / binary
 * weights.  Ternary kernels compute acc = sum(c * xq) - sum(xq) with c = w + 1 the stored code.
 *
 * Every kernel has a scalar reference and SIMD twins (AVX2, AVX-512 VNNI on x86-64, NEON on
 * aarch64 and ARMv7).  One x86-64 binary runs everywhere: the SIMD functions are compiled with
 * function-level target attributes and chosen once at run time (CPUID + XGETBV), or forced with
 * the environment variable ONEBIT_ISA=scalar|avx2|avx512|neon|mve|simd128|dsp.  MVE, SIMD128 and DSP are
 * compile-time choices (there is no run-time detection on those targets).
 *
 * Files (one job each, as in ggml):
 *   kernels_ref.c       scalar references, packed-format helpers, f16 conversion
 *   kernels_<isa>.c     one file per ISA: kernels_avx2.c, kernels_avx512.c, kernels_neon.c
 *   kernels_dispatch.c  CPU detection, ONEBIT_ISA, ob_kernels_init
 *   kernels_impl.h      what they share: the output step ob_out, the row x token tiling driver
 * To add an ISA "foo": add OB_ISA_FOO before OB_ISA_COUNT below and its name in ob_isa_name
 * (kernels_dispatch.c); write kernels_foo.c with its body inside #if <the compiler's macro for
 * foo> ... #else a typedef #endif, ending in ob_kernels_fill_foo(ob_kernels *k) that sets the
 * entries it accelerates (the others stay the scalar references); declare that function in
 * kernels_impl.h; add the case to ob_simd_fill, ob_isa_supported and ob_isa_detect.  The Makefile
 * compiles every src/ file by itself, and tests/test_kernels.c checks every supported ISA against the
 * references.
 *
 * No globals: ob_kernels_init() fills an ob_kernels table of function pointers that the runtime
 * keeps and passes around.
 *
 * Results:
 *  - quantize and the packed int matmuls (T2, T1.6, B1, and I4 / I8 with per-row scales) are
 *    bit-identical across every ISA, every row range split and every thread count.
 *  - the int8 LM head GEMV (gemv_q8, int16 activations from ob_quantize_i16) is exact integer math
 *    with one shared output step: bit-identical across every ISA, row range and thread count.
 *  - the float kernels (f32 / f16 GEMV for the LM head) accumulate in float in
 *    an ISA-dependent order (8 or 16 lanes, FMA).  They are deterministic for a given ISA (the
 *    result of row r never depends on r0/r1 or the thread count) but differ across ISAs by float
 *    rounding: |y_isa - y_ref| <= 1e-5 * sum_k |w[k] * x[k]| (+ 1e-6 absolute) is what the tests
 *    assert.
 *
 * Activation buffer (output of quantize, input of the packed matmuls): per token, ob_act_stride(K)
 * bytes: xq[0..K) in natural order, then zeros up to the stride.  The runtime should treat it as
 * opaque (always produce it with quantize, size it with ob_act_stride); no ISA permutes it today.
 */
#ifndef ONEBIT_KERNELS_H
#define ONEBIT_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- ISA selection */

typedef enum {
    OB_ISA_SCALAR = 0,
    OB_ISA_AVX2 = 1,   /* x86-64 AVX2 + FMA + F16C */
    OB_ISA_AVX512 = 2, /* x86-64 AVX-512 F/BW/VL/VNNI (+ F16C); OS must enable zmm state */
    OB_ISA_NEON = 3,   /* aarch64 (+ dotprod when compiled with it) or ARMv7 Advanced SIMD */
    OB_ISA_MVE = 4,    /* Armv8.1-M Helium (MVE), e.g. Cortex-M55: compiled in with -mcpu=cortex-m55 */
    OB_ISA_SIMD128 = 5, /* WebAssembly SIMD128: compiled in with -msimd128 */
    OB_ISA_DSP = 6,    /* Cortex-M DSP extension (SMLAD), e.g. Cortex-M4: compiled in with -mcpu */
    OB_ISA_COUNT = 7
} ob_isa;

/* Best ISA this CPU (and OS) supports, among those compiled in. */
ob_isa ob_isa_detect(void);
/* 1 if this build has the ISA compiled in and the CPU/OS can run it, else 0. */
int ob_isa_supported(ob_isa isa);
/* "scalar", "avx2", "avx512", "neon" ("?" for out-of-range). */
const char *ob_isa_name(ob_isa isa);
/* Parse a name as above; returns 0 and sets *out, or -1 for an unknown name. */
int ob_isa_parse(const char *name, ob_isa *out);

#define OB_ISA_OK 0
#define OB_ISA_EUNKNOWN (-1)     /* ONEBIT_ISA holds an unknown name */
#define OB_ISA_EUNSUPPORTED (-2) /* ONEBIT_ISA names an ISA this CPU / build cannot run */

/* Reads the environment variable ONEBIT_ISA.  Unset or empty: *out = ob_isa_detect(), returns
 * OB_ISA_OK.  Set to a supported ISA: *out = that ISA, OB_ISA_OK.  Otherwise returns
 * OB_ISA_EUNKNOWN / OB_ISA_EUNSUPPORTED (and *out = ob_isa_detect() so callers may fall back). */
int ob_isa_from_env(ob_isa *out);

/* ---------------------------------------------------------------- packed formats */

typedef enum {
    OB_WFMT_T2 = 0,  /* ternary, 2 bits/weight, blocks of 128 weights in 32 bytes */
    OB_WFMT_T16 = 1, /* ternary, 5 trits/byte, blocks of 160 weights in 32 bytes + tail */
    OB_WFMT_B1 = 2,  /* binary, 1 bit/weight, rows padded to 128 weights */
    OB_WFMT_T2X = 3, /* T2 with rows interleaved in groups of OB_T2X_ROWS (below): never in a file */
    OB_WFMT_COUNT = 4
} ob_wfmt;
#define OB_WFMT_FILE_COUNT 3 /* the formats a .1bit file stores: T2, T1.6, B1 */

/* T2X: the T2 blocks of OB_T2X_ROWS consecutive rows interleaved, so that a GEMV that works on
 * those rows at once (one activation load per block serves all of them) reads one sequential
 * stream.  The plain layout makes it read OB_T2X_ROWS streams a row apart, or segments apart,
 * and one Zen 4 core streams those at 65-75 % of a plain read loop where one stream gets 90 %
 * (tools/bench_kernels, docs/BENCHMARKS.md).  Row r, block b (32 bytes) of an [N, K] matrix
 * (nblk = ceil(K / 128) blocks a row) is at byte
 *     ((r / OB_T2X_ROWS) * nblk + b) * (OB_T2X_ROWS * 32) + (r % OB_T2X_ROWS) * 32
 * The last group is padded with rows of code 1 (weight 0) up to OB_T2X_ROWS rows.  The runtime
 * repacks a file's T2 and T1.6 matrices into it at load (model.c) when the kernels have a fast T2X
 * GEMV (ob_t2x_wanted); the matmul contract is T2's, bit for bit (T1.6's, for a decoded T1.6). */
#define OB_T2X_ROWS 8
/* Bytes of an [N, K] matrix in T2X (whole groups). */
size_t ob_t2x_bytes(int N, int K);
/* T2 or T1.6 (fmt) [N, K] at src (row stride ob_row_bytes(fmt, K)) -> T2X at dst (ob_t2x_bytes(N,
 * K) bytes).  T1.6 rows are decoded by k->t16_to_t2 (k NULL: the reference), so the copy gives the
 * T1.6 matmul's integer sums, bit for bit, for every byte a file may hold, at 2 bits a weight
 * instead of 1.6. */
struct ob_kernels;
void ob_t2x_repack(const struct ob_kernels *k, ob_wfmt fmt, const uint8_t *src, int N, int K, uint8_t *dst);
/* 1 if the kernels this CPU runs by default (ONEBIT_ISA, else the best detected) have a fast T2X
 * matmul, so that repacking pays; the scalar reference runs T2X everywhere, only slowly. */
int ob_t2x_wanted(void);

/* Bytes of one packed row of K weights (the row stride; DESIGN.md; T2X: a row's bytes, whose
 * matrix takes ob_t2x_bytes). */
size_t ob_row_bytes(ob_wfmt fmt, int K);
/* Bytes of one token's quantized activation buffer for rows of K weights (all formats). */
size_t ob_act_stride(int K);

/* Reference packers (used by tests and the benchmark; the .1bit compiler is onebit/quant.py).
 * q: K values, in {-1, 0, 1} for T2 / T1.6, in {-1, 1} for B1 (any q > 0 is +1 for B1).
 * out: ob_row_bytes(fmt, K) bytes.  Returns 0, or -1 for a bad value / format. */
int ob_pack_row_ref(ob_wfmt fmt, const int8_t *q, int K, uint8_t *out);

/* int4 / int8 BitLinears of mixed models (FORMAT.md "I4", DESIGN.md "Mixed precision"): one f32
 * scale per output row instead of one per matrix.
 *   I4: codes q in [-8, 7] stored as nibbles c = q + 8; per 64-weight block 32 bytes, byte j holds
 *       weight j (low nibble) and weight 32 + j (high nibble); rows padded to 64 with nibble 8.
 *   I8: one signed byte per weight, rows of exactly K bytes (not padded, not aligned).
 * The exporter writes q in [-7, 7] (int4) and [-127, 127] (int8); the kernels are exact for every
 * stored byte (nibble 0, int8 -128), so a hostile file cannot make two ISAs disagree. */
typedef enum {
    OB_IFMT_I4 = 0,
    OB_IFMT_I8 = 1,
    OB_IFMT_COUNT = 2
} ob_ifmt;

/* Bytes of one row of K weights: I4 ceil(K / 64) * 32, I8 K. */
size_t ob_irow_bytes(ob_ifmt fmt, int K);
/* Reference I4 packer: q[0..K) in [-8, 7] -> ob_irow_bytes(OB_IFMT_I4, K) bytes; -1 on a bad value. */
int ob_pack_row_i4_ref(const int8_t *q, int K, uint8_t *out);

/* IEEE half <-> float (round to nearest even; NaN / Inf / subnormals handled). */
float ob_f16_to_f32(uint16_t h);
uint16_t ob_f32_to_f16(float f);

/* ---------------------------------------------------------------- kernel signatures */

/* Quantize one token: x[0..K) -> xq[0..ob_act_stride(K)) (zero padded), *a = the scale
 * 127 / max(absmax, 1e-5), *sum = sum of xq (int32, exact). */
typedef void (*ob_quantize_fn)(const float *x, int K, int8_t *xq, float *a, int32_t *sum);

/* Packed matmul over m tokens and rows [r0, r1) of a [N, K] packed matrix w (row stride
 * ob_row_bytes(fmt, K); w points at row 0).  xq: m token buffers, xq_stride bytes apart
 * (>= ob_act_stride(K)); a, xsum: m values from quantize.  Writes
 *   y[t * ldy + r] = (float)acc(t, r) * (wscale / a[t])   for t < m, r0 <= r < r1.
 * m == 1 is the decode GEMV; m > 1 tiles rows x tokens so each weight block is decoded once per
 * tile.  Any m >= 1 works. */
typedef void (*ob_matmul_fn)(const uint8_t *w, int K, float wscale, const int8_t *xq,
                             size_t xq_stride, const float *a, const int32_t *xsum, int m,
                             int r0, int r1, float *y, size_t ldy);

/* The same for int4 / int8 rows with per-row scales: wscale[r] for row r (wscale points at row 0's),
 *   y[t * ldy + r] = (float)acc(t, r) * (wscale[r] / a[t])
 * with acc the exact int32 dot product of the activations and the codes q (I4: sum(c * xq) - 8 *
 * xsum).  Same tiling and the same bit-identity across ISAs, row ranges and thread counts. */
typedef void (*ob_matmul_rs_fn)(const uint8_t *w, int K, const float *wscale, const int8_t *xq,
                                size_t xq_stride, const float *a, const int32_t *xsum, int m,
                                int r0, int r1, float *y, size_t ldy);

/* GEMVs for the LM head / tied embedding, rows [r0, r1) of a row-major [N, ldw] matrix:
 *   f32: y[r] = sum_k w[r*ldw + k] * x[k]            (float sums, ISA-dependent order)
 *   f16: same with IEEE-half weights
 *   q8 : int8 weights with per-row scales times the row quantized to int16 by ob_quantize_i16
 *        (xq in [-32767, 32767], scale a):
 *          S[r] = sum_k w[r*ldw + k] * xq[k]   exact (int64; SIMD kernels keep int32 lanes only
 *                                              while no lane can overflow, then widen)
 *          y[r] = (float)S[r] * (scale[r] / a)  (ob_out_q8: the factor first, then one multiply)
 *        so every ISA gives the reference's bits (FORMAT.md "LM head").                        */
typedef void (*ob_gemv_f32_fn)(const float *w, size_t ldw, int K, const float *x, int r0,
                               int r1, float *y);
typedef void (*ob_gemv_f16_fn)(const uint16_t *w, size_t ldw, int K, const float *x, int r0,
                               int r1, float *y);
typedef void (*ob_gemv_q8_fn)(const int8_t *w, const float *scale, size_t ldw, int K,
                              const int16_t *xq, float a, int r0, int r1, float *y);

/* IEEE half <-> float over n values (the f16 KV-cache).  Exact bit operations (round to nearest
 * even one way, exact the other), so every ISA gives the bits of ob_f16_to_f32 / ob_f32_to_f16. */
typedef void (*ob_f16_to_f32_fn)(const uint16_t *src, int n, float *dst);
typedef void (*ob_f32_to_f16_fn)(const float *src, int n, uint16_t *dst);

/* Attention over the KV-cache (f32 or f16 rows; f16 is widened exactly):
 *   dot : 8 partial sums, sum l takes a[i] * b[i] for i = l (mod 8) in order (each product rounded,
 *         then added; no FMA), then ((s0 + s4) + (s1 + s5)) + ((s2 + s6) + (s3 + s7))
 *   axpy: y[i] += a * x[i], the product rounded, then the sum
 * A fixed order, so every ISA returns the bits of the reference. */
typedef float (*ob_dot_f32_fn)(const float *a, const float *b, int n);
typedef float (*ob_dot_f16_fn)(const float *a, const uint16_t *b, int n);
typedef void (*ob_axpy_f32_fn)(float *y, float a, const float *x, int n);
typedef void (*ob_axpy_f16_fn)(float *y, float a, const uint16_t *x, int n);

/* Attention of G query heads that share one KV head, over its n cached rows of hd values (rows hd
 * apart: the cache layout), fused so that a decode step makes one call per KV head instead of two
 * per head and key, and a kernel may read each row once for several heads (AVX2's scores for up to
 * 4, AVX-512's mix for 2 of 128 values or 4 of 64):
 *   scores: out[h * ldo + j] = dot(q + h * hd, row j) * scale       (dot as above, then one multiply)
 *   mix   : y[h * hd + i] = 0, then += p[h * ldp + j] * row_j[i] for j = 0..n-1   (the axpy sequence)
 * for h = 0..G-1.  The same operations in the same order as the per-head, per-row loop, so the bits
 * of the references.  An entry may be NULL (an ISA without them): the caller then loops over dot /
 * axpy. */
typedef void (*ob_scores_f32_fn)(const float *q, int G, const float *rows, int hd, int n, float scale, float *out,
                                 size_t ldo);
typedef void (*ob_scores_f16_fn)(const float *q, int G, const uint16_t *rows, int hd, int n, float scale, float *out,
                                 size_t ldo);
typedef void (*ob_mix_f32_fn)(float *y, int G, const float *p, size_t ldp, const float *rows, int hd, int n);
typedef void (*ob_mix_f16_fn)(float *y, int G, const float *p, size_t ldp, const uint16_t *rows, int hd, int n);

/* Elementwise exp for the softmax and SiLU for the MLP, on kernels_impl.h's ob_expf (not libm's
 * expf, which rounds differently from one C library to the next):
 *   exp_shift: x[i] = exp(x[i] - m)
 *   silu     : g[i] = silu(g[i]) * up[i], or silu(g[i]) when up is NULL; silu(x) = x / (1 + exp(-x))
 * Each lane runs the scalar steps, so every ISA returns the bits of the references. */
typedef void (*ob_exp_shift_fn)(float *x, int n, float m);
/* The attention softmax in place, of rows rows, row r at x + r * ldx with n[r] entries: m = the max
 * of the row (NaN never taken), x[i] = exp(x[i] - m) as exp_shift, s = x[0] + x[1] + ... added in
 * order, x[i] = x[i] / s.  The max and the divisions are exact in any order, so a SIMD version
 * takes them 8 at a time; each sum stays in order (the bits of the scalar loop this replaced), but
 * the sums of several rows may run side by side: one alone waits on each add's latency. */
typedef void (*ob_softmax_fn)(float *x, size_t ldx, const int *n, int rows);
typedef void (*ob_silu_fn)(float *g, const float *up, size_t n);
/* The other per-token elementwise work, vectorized where the scalar loops were a few percent of a
 * token (the 2B shape's ReLU^2 and RMSNorms: 0.7 % and 1 % in perf):
 *   relu2  : g[i] = (r * r) * up[i], or r * r when up is NULL; r = g[i] > 0 ? g[i] : +0 (NaN, -0: +0)
 *   rmsnorm: y[i] = (x[i] * r) * w[i], r = 1 / sqrtf((float)(ss / n) + eps), ss the double sum of
 *            x[i]^2 in four partial sums s[i % 4] over the largest multiple of 4, ((s0 + s1) + (s2 +
 *            s3)), then the rest added in order; y may be x.
 * The same steps on every ISA, so the bits of the references. */
typedef void (*ob_relu2_fn)(float *g, const float *up, size_t n);
typedef void (*ob_rmsnorm_fn)(const float *x, const float *w, int n, float eps, float *y);
/* One T1.6 row of K weights into T2: its ceil(K / 128) blocks of 32 bytes, block b at out + b * bs,
 * holding the codes t16 decodes (0..2 for every byte), code 1 past K (the loader's T2X repack). */
typedef void (*ob_t16_to_t2_fn)(const uint8_t *row, int K, uint8_t *out, size_t bs);

/* The dispatch table.  Fill once with ob_kernels_init; plain data, copy freely. */
typedef struct ob_kernels {
    ob_isa isa;
    ob_quantize_fn quantize;
    ob_matmul_fn matmul[OB_WFMT_COUNT]; /* indexed by ob_wfmt */
    ob_gemv_f32_fn gemv_f32;
    ob_gemv_f16_fn gemv_f16;
    ob_gemv_q8_fn gemv_q8;
    ob_f16_to_f32_fn f16_to_f32;
    ob_f32_to_f16_fn f32_to_f16;
    ob_dot_f32_fn dot_f32;
    ob_dot_f16_fn dot_f16;
    ob_axpy_f32_fn axpy_f32;
    ob_axpy_f16_fn axpy_f16;
    ob_matmul_rs_fn matmul_rs[OB_IFMT_COUNT]; /* int4 / int8 BitLinears, indexed by ob_ifmt */
    ob_scores_f32_fn scores_f32; /* may be NULL, see above */
    ob_scores_f16_fn scores_f16;
    ob_mix_f32_fn mix_f32;
    ob_mix_f16_fn mix_f16;
    ob_exp_shift_fn exp_shift;
    ob_softmax_fn softmax;
    ob_silu_fn silu;
    ob_relu2_fn relu2;
    ob_rmsnorm_fn rmsnorm;
    ob_t16_to_t2_fn t16_to_t2;
} ob_kernels;

/* Fill *k for the given ISA.  Returns 0, or OB_ISA_EUNSUPPORTED if the ISA is not runnable. */
int ob_kernels_init(ob_kernels *k, ob_isa isa);
/* ob_isa_from_env + ob_kernels_init.  Returns ob_isa_from_env's code; on error *k is still
 * filled with the detected ISA so the caller may choose to continue. */
int ob_kernels_init_env(ob_kernels *k);

/* Convenience: quantize m tokens (x rows ldx floats apart) into xq (xq_stride bytes apart). */
void ob_quantize_rows(const ob_kernels *k, const float *x, size_t ldx, int m, int K, int8_t *xq,
                      size_t xq_stride, float *a, int32_t *xsum);

/* The int8 head's activations (scalar; K values once per token): per row, symmetric int16,
 *   a = 32767 / max(absmax, 1e-5),  xq[k] = clamp(nearbyintf(x[k] * a), -32767, 32767)
 * nearbyintf rounds half to even (the default rounding mode); a NaN x[k] gives 0.  A zero row gives
 * xq = 0, hence logits 0. */
void ob_quantize_i16(const float *x, int K, int16_t *xq, float *a);

/* Embedding rows (scalar; not hot): dst[0..K) from a stored row. */
void ob_row_f16_to_f32(const uint16_t *src, int K, float *dst);
void ob_row_f32_to_f16(const float *src, int K, uint16_t *dst);
void ob_row_q8_to_f32(const int8_t *src, float scale, int K, float *dst);

/* Scalar references, always available (tests compare the SIMD paths against these). */
void ob_quantize_ref(const float *x, int K, int8_t *xq, float *a, int32_t *sum);
void ob_matmul_t2_ref(const uint8_t *w, int K, float wscale, const int8_t *xq, size_t xq_stride,
                      const float *a, const int32_t *xsum, int m, int r0, int r1, float *y,
                      size_t ldy);
void ob_t16_to_t2_ref(const uint8_t *row, int K, uint8_t *out, size_t bs);
void ob_matmul_t16_ref(const uint8_t *w, int K, float wscale, const int8_t *xq, size_t xq_stride,
                       const float *a, const int32_t *xsum, int m, int r0, int r1, float *y,
                       size_t ldy);
void ob_matmul_t2x_ref(const uint8_t *w, int K, float wscale, const int8_t *xq, size_t xq_stride,
                       const float *a, const int32_t *xsum, int m, int r0, int r1, float *y,
                       size_t ldy);
void ob_matmul_b1_ref(const uint8_t *w, int K, float wscale, const int8_t *xq, size_t xq_stride,
                      const float *a, const int32_t *xsum, int m, int r0, int r1, float *y,
                      size_t ldy);
void ob_matmul_i4_ref(const uint8_t *w, int K, const float *wscale, const int8_t *xq, size_t xq_stride,
                      const float *a, const int32_t *xsum, int m, int r0, int r1, float *y,
                      size_t ldy);
void ob_matmul_i8_ref(const uint8_t *w, int K, const float *wscale, const int8_t *xq, size_t xq_stride,
                      const float *a, const int32_t *xsum, int m, int r0, int r1, float *y,
                      size_t ldy);
float ob_dot_f32_ref(const float *a, const float *b, int n);
float ob_dot_f16_ref(const float *a, const uint16_t *b, int n);
void ob_axpy_f32_ref(float *y, float a, const float *x, int n);
void ob_axpy_f16_ref(float *y, float a, const uint16_t *x, int n);
void ob_scores_f32_ref(const float *q, int G, const float *rows, int hd, int n, float scale, float *out, size_t ldo);
void ob_scores_f16_ref(const float *q, int G, const uint16_t *rows, int hd, int n, float scale, float *out,
                       size_t ldo);
void ob_mix_f32_ref(float *y, int G, const float *p, size_t ldp, const float *rows, int hd, int n);
void ob_mix_f16_ref(float *y, int G, const float *p, size_t ldp, const uint16_t *rows, int hd, int n);
void ob_exp_shift_ref(float *x, int n, float m);
void ob_softmax_ref(float *x, size_t ldx, const int *n, int rows);
void ob_silu_ref(float *g, const float *up, size_t n);
void ob_relu2_ref(float *g, const float *up, size_t n);
void ob_rmsnorm_ref(const float *x, const float *w, int n, float eps, float *y);
void ob_gemv_f32_ref(const float *w, size_t ldw, int K, const float *x, int r0, int r1, float *y);
void ob_gemv_f16_ref(const uint16_t *w, size_t ldw, int K, const float *x, int r0, int r1,
                     float *y);
void ob_gemv_q8_ref(const int8_t *w, const float *scale, size_t ldw, int K, const int16_t *xq, float a,
                    int r0, int r1, float *y);

#ifdef __cplusplus
}
#endif
#endif /* ONEBIT_KERNELS_H */
