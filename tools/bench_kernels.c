/* bench_kernels.c - microbenchmark of the onebit C runtime kernels (runtime_c/src/kernels_*.c).
 *
 *   make -C runtime_c bench && runtime_c/build/bench_kernels [--quick] [--reps N] [--isa NAME]
 *                                                            [--case SUBSTRING]
 *   runtime_c/build/bench_kernels --read-bw MIB [--threads N] [--reps N] [--streams S]
 *                                 (the read roofline only: S = 1, 2, 4, 8 or 16 parts of the buffer
 *                                  read 64 bytes in turn, 8 by default as bench_peers uses it)
 *   runtime_c/build/bench_kernels --gemv-t2 N K [--threads N] [--reps N] [--copies C] [--isa NAME]
 *                                 [--layout t2|t2x]          (one T2 GEMV shape; C copies: from DRAM;
 *                                                             the layout: the runtime's by default)
 *
 * Prints a markdown table: for each ISA path this CPU supports and each case, the best time per
 * call over --reps repetitions (each repetition runs the kernel for >= ~0.1 s, or once for slow
 * cases), GOPS (2 ops per weight per token), weight GB/s, % of a bandwidth roofline and the
 * speed-up over the scalar reference measured in the same run.  The roofline is the read
 * bandwidth this program measures on a buffer of the same size (a plain AVX2/NEON/scalar sum
 * loop), so "100%" means "as fast as streaming the weights through the core". */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels.h"
#include "threadpool.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t g_rng = 12345;
static uint64_t rnd(void) {
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void *xalloc(size_t n) {
    void *p = NULL;
    if (posix_memalign(&p, 64, n ? n : 64) != 0) {
        fprintf(stderr, "out of memory (%zu bytes)\n", n);
        exit(2);
    }
    return p;
}

/* ---------------------------------------------------------------- read bandwidth roofline */
static volatile uint64_t g_sink;
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
/* S interleaved streams (8: like an 8-row GEMV tile), 64 bytes per stream per step.  S is a
 * constant in each instance, so the roofline's 8-stream loop compiles as it always has. */
__attribute__((target("avx2"), always_inline)) static inline uint64_t read_streams(const uint8_t *buf, size_t n,
                                                                                  const int S) {
    __m256i s0 = _mm256_setzero_si256(), s1 = s0;
    size_t part = n / (size_t)S / 64 * 64;
    for (size_t i = 0; i < part; i += 64)
        for (int j = 0; j < S; j++) {
            const uint8_t *p = buf + (size_t)j * part + i;
            s0 = _mm256_add_epi64(s0, _mm256_load_si256((const __m256i *)p));
            s1 = _mm256_add_epi64(s1, _mm256_load_si256((const __m256i *)(p + 32)));
        }
    __m256i s = _mm256_add_epi64(s0, s1);
    uint64_t o[4];
    _mm256_storeu_si256((__m256i *)o, s);
    return o[0] + o[1] + o[2] + o[3];
}
__attribute__((target("avx2"))) static uint64_t read_pass_s(const uint8_t *buf, size_t n, int streams) {
    switch (streams) {
    case 1: return read_streams(buf, n, 1);
    case 2: return read_streams(buf, n, 2);
    case 4: return read_streams(buf, n, 4);
    case 16: return read_streams(buf, n, 16);
    default: return read_streams(buf, n, 8);
    }
}
#else
static uint64_t read_pass_s(const uint8_t *buf, size_t n, int streams) { /* one stream */
    (void)streams;
    const uint64_t *p = (const uint64_t *)buf;
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (size_t i = 0; i + 4 <= n / 8; i += 4) {
        s0 += p[i];
        s1 += p[i + 1];
        s2 += p[i + 2];
        s3 += p[i + 3];
    }
    return s0 + s1 + s2 + s3;
}
#endif
static uint64_t read_pass(const uint8_t *buf, size_t n) { return read_pass_s(buf, n, 8); }
/* buf must be 64-byte aligned */
/* ---------------------------------------------------------------- cases */
typedef struct {
    const char *name;
    int kind; /* 0 packed matmul, 1 gemv f32, 2 gemv f16, 3 gemv q8, 4 int4 (per-row scales),
                 5 attention scores f16, 6 attention mix f16 */
    ob_wfmt fmt;
    int N, K, m, threads; /* attention: N cached rows of K values, m query heads on a KV head */
    const char *level;    /* roofline buffer */
    int heads;            /* attention: KV heads a call walks, one after the other (a decode step) */
} bcase;

typedef struct {
    const ob_kernels *k;
    const bcase *c;
    ob_threadpool *pool;
    const void *w;
    const float *scale;
    const int8_t *xq;
    size_t xs;
    const float *a;
    const int32_t *xsum;
    const float *xf;
    const int16_t *xq16; /* q8: the int16 activations (ob_quantize_i16) and their scale */
    float a16;
    float *y;
    float *p; /* attention: the probabilities, m rows of N */
} bctx;

static void run_once(bctx *b) {
    const bcase *c = b->c;
    switch (c->kind) {
    case 0:
        ob_matmul_mt(b->pool, b->k, c->fmt, (const uint8_t *)b->w, c->N, c->K, 0.01f, b->xq, b->xs, b->a,
                     b->xsum, c->m, b->y, (size_t)c->N);
        break;
    case 1: ob_gemv_f32_mt(b->pool, b->k, (const float *)b->w, (size_t)c->K, c->N, c->K, b->xf, b->y); break;
    case 2: ob_gemv_f16_mt(b->pool, b->k, (const uint16_t *)b->w, (size_t)c->K, c->N, c->K, b->xf, b->y); break;
    case 3:
        ob_gemv_q8_mt(b->pool, b->k, (const int8_t *)b->w, b->scale, (size_t)c->K, c->N, c->K, b->xq16, b->a16, b->y);
        break;
    case 4:
        b->k->matmul_rs[OB_IFMT_I4]((const uint8_t *)b->w, c->K, b->scale, b->xq, b->xs, b->a, b->xsum, c->m, 0, c->N,
                                    b->y, (size_t)c->N);
        break;
    default: /* the KV heads of a decode step, as session.c calls them; xf: the m query heads */
        for (int h = 0; h < c->heads; h++) {
            const uint16_t *rows = (const uint16_t *)b->w + (size_t)h * c->N * c->K;
            if (c->kind == 5)
                (b->k->scores_f16 ? b->k->scores_f16 : ob_scores_f16_ref)(b->xf, c->m, rows, c->K, c->N, 0.125f, b->y,
                                                                         (size_t)c->N);
            else (b->k->mix_f16 ? b->k->mix_f16 : ob_mix_f16_ref)(b->y, c->m, b->p, (size_t)c->N, rows, c->K, c->N);
        }
        break;
    }
}

/* Best time per call: calls are grouped in batches of ~2 ms (at least one call); batches run
 * until min_time has passed, reps times over; the fastest batch wins.  Short batches make the
 * minimum robust to the time slices other processes take on a shared machine.  The roofline
 * (read bandwidth of the very same weight buffer) is measured interleaved with the batches, so
 * both see the same cache / DRAM contention; *bw gets its best value in GB/s. */
static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double time_case(bctx *b, int reps, double min_time, const uint8_t *wbuf, size_t wbytes, double *bw,
                        double *pair_median) {
    double t0 = now();
    run_once(b); /* warm up + estimate */
    double est = now() - t0;
    int batch = est > 2e-3 ? 1 : (int)(2e-3 / (est > 1e-7 ? est : 1e-7)) + 1;
    double best = 1e30, best_rd = 1e30;
    size_t rbytes = wbytes / 1024 * 1024;
    double ratios[4096];
    int nr = 0;
    for (int r = 0; r < reps; r++) {
        double start = now();
        do {
            double r0 = now();
            for (int i = 0; i < batch; i++) g_sink += read_pass(wbuf, rbytes);
            double tr = (now() - r0) / batch;
            if (tr < best_rd) best_rd = tr;
            double b0 = now();
            for (int i = 0; i < batch; i++) run_once(b);
            double t = (now() - b0) / batch;
            if (t < best) best = t;
            /* weight bytes / s over read bytes / s for this adjacent pair */
            if (nr < 4096) ratios[nr++] = ((double)wbytes / t) / ((double)rbytes / tr);
        } while (now() - start < min_time);
    }
    qsort(ratios, (size_t)nr, sizeof(double), cmp_double);
    *pair_median = nr ? ratios[nr / 2] : 0;
    *bw = (double)rbytes / best_rd / 1e9;
    return best;
}

static size_t weight_bytes(const bcase *c) {
    switch (c->kind) {
    case 0: return ob_row_bytes(c->fmt, c->K) * (size_t)c->N;
    case 1: return (size_t)c->N * c->K * 4;
    case 2: return (size_t)c->N * c->K * 2;
    case 3: return (size_t)c->N * c->K + (size_t)c->N * 4;
    case 4: return ob_irow_bytes(OB_IFMT_I4, c->K) * (size_t)c->N + (size_t)c->N * 4;
    default: return (size_t)c->heads * c->N * c->K * 2;
    }
}

/* ---------------------------------------------------------------- --read-bw: the roofline alone
 * The plain read loop over a buffer of the given size, split into contiguous parts over the
 * thread pool (as the runtime splits a GEMV's rows); tools/bench_peers.py uses it for the
 * memory roofline of a whole model. */
typedef struct {
    const uint8_t *buf;
    size_t n;
    int streams;
    uint64_t sink[64];
} rbw_ctx;

static void rbw_task(void *ctx, int ith, int nth) {
    rbw_ctx *c = (rbw_ctx *)ctx;
    size_t part = c->n / (size_t)nth / 512 * 512;
    c->sink[ith & 63] += read_pass_s(c->buf + part * (size_t)ith, part, c->streams);
}

static int read_bw_main(size_t mib, int threads, int reps, int streams) {
    size_t n = mib << 20;
    uint8_t *buf = xalloc(n);
    for (size_t i = 0; i < n; i += 8) {
        uint64_t v = rnd();
        memcpy(buf + i, &v, 8);
    }
    ob_threadpool *pool = ob_threadpool_create(threads);
    if (!pool) {
        fprintf(stderr, "cannot start %d threads\n", threads);
        return 1;
    }
    rbw_ctx c = {buf, n, streams, {0}};
    ob_threadpool_run(pool, rbw_task, &c); /* warm up: pages touched, threads awake */
    double *t = malloc(sizeof(double) * (size_t)(reps > 0 ? reps : 1));
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        ob_threadpool_run(pool, rbw_task, &c);
        t[r] = now() - t0;
    }
    qsort(t, (size_t)reps, sizeof(double), cmp_double);
    size_t done = n / (size_t)threads / 512 * 512 * (size_t)threads;
    printf("read_bw bytes=%zu threads=%d streams=%d reps=%d best_gbs=%.2f median_gbs=%.2f\n", done, threads, streams, reps,
           (double)done / t[0] / 1e9, (double)done / t[reps / 2] / 1e9);
    for (int i = 0; i < 64; i++) g_sink += c.sink[i];
    free(t);
    ob_threadpool_destroy(pool);
    free(buf);
    return 0;
}

/* ---------------------------------------------------------------- --gemv-t2: one T2 GEMV shape
 * One token through an N x K T2 matrix with the detected ISA (or --isa) and the thread pool, the
 * time of each call; tools/bench_kernels.py --vs-ort runs it beside onnxruntime's MatMulNBits.
 * --copies C: C copies of the matrix, called in turn, so that with C x the matrix's size well over
 * the last-level cache every call reads its weights from DRAM (as decode does); the time is per
 * call. */
static int gemv_t2_main(int N, int K, int threads, int reps, int copies, const char *isa_name, const char *layout) {
    size_t rb = ob_row_bytes(OB_WFMT_T2, K), xs = ob_act_stride(K), pb = rb * (size_t)N;
    if (copies < 1) copies = 1;
    /* the layout the runtime loads T2 matrices in (model.c), unless --layout says otherwise */
    ob_wfmt fmt = layout ? (strcmp(layout, "t2x") ? OB_WFMT_T2 : OB_WFMT_T2X) : ob_t2x_wanted() ? OB_WFMT_T2X : OB_WFMT_T2;
    size_t mb = fmt == OB_WFMT_T2X ? ob_t2x_bytes(N, K) : pb;
    uint8_t *w = xalloc(mb * (size_t)copies), *plain = xalloc(pb);
    for (int c = 0; c < copies; c++) {
        for (size_t i = 0; i < pb; i++) {
            uint8_t b = (uint8_t)rnd(), o = 0;
            for (int sft = 0; sft < 8; sft += 2) o |= (uint8_t)((((b >> sft) & 3) % 3) << sft);
            plain[i] = o;
        }
        if (fmt == OB_WFMT_T2X) ob_t2x_repack(NULL, OB_WFMT_T2, plain, N, K, w + mb * (size_t)c);
        else memcpy(w + mb * (size_t)c, plain, pb);
    }
    free(plain);
    float *x = xalloc((size_t)K * 4), *y = xalloc((size_t)N * 4), a;
    int8_t *xq = xalloc(xs);
    int32_t xsum;
    for (int k = 0; k < K; k++) x[k] = (float)((int)(rnd() % 2001) - 1000) * 1e-3f;
    ob_kernels kern;
    if (isa_name) {
        ob_isa isa;
        if (ob_isa_parse(isa_name, &isa) != 0 || ob_kernels_init(&kern, isa) != 0) {
            fprintf(stderr, "ISA '%s' is unknown or not available on this CPU\n", isa_name);
            return 2;
        }
    } else {
        ob_kernels_init_env(&kern);
    }
    ob_threadpool *pool = ob_threadpool_create(threads);
    int calls = reps * copies;
    double *t = malloc(sizeof(double) * (size_t)reps);
    if (!pool || !t) return 1;
    for (int c = -copies; c < calls; c++) { /* c < 0: warm-up pass over every copy */
        const uint8_t *wc = w + mb * (size_t)((c + copies) % copies);
        double t0 = now();
        kern.quantize(x, K, xq, &a, &xsum);
        ob_matmul_mt(pool, &kern, fmt, wc, N, K, 0.01f, xq, xs, &a, &xsum, 1, y, (size_t)N);
        double dt = now() - t0;
        if (c >= 0 && c % copies == 0) t[c / copies] = 0.0;
        if (c >= 0) t[c / copies] += dt / copies;
    }
    qsort(t, (size_t)reps, sizeof(double), cmp_double);
    printf("gemv_t2 isa=%s layout=%s N=%d K=%d threads=%d copies=%d best_us=%.2f median_us=%.2f best_gbs=%.2f\n",
           ob_isa_name(kern.isa), fmt == OB_WFMT_T2X ? "t2x" : "t2", N, K, threads, copies, t[0] * 1e6,
           t[reps / 2] * 1e6, (double)pb / t[0] / 1e9);
    free(t);
    ob_threadpool_destroy(pool);
    free(w);
    free(x);
    free(y);
    free(xq);
    return 0;
}

static void cpu_model(char *out, size_t n) {
    snprintf(out, n, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) == 0 || strncmp(line, "Model", 5) == 0) {
            char *p = strchr(line, ':');
            if (p) {
                p++;
                while (*p == ' ') p++;
                p[strcspn(p, "\n")] = 0;
                snprintf(out, n, "%s", p);
                break;
            }
        }
    }
    fclose(f);
}

static int is_stream_count(const char *a) { /* read_pass_s's instances: 1, 2, 4, 8, 16 */
    char *end;
    long v = strtol(a, &end, 10);
    return *a && !*end && (v == 1 || v == 2 || v == 4 || v == 8 || v == 16);
}

int main(int argc, char **argv) {
    int quick = 0, reps = 5;
    const char *only = NULL, *match = NULL, *layout = NULL;
    int read_bw_mib = 0, bw_threads = 1, gemv_n = 0, gemv_k = 0, copies = 1, streams = 8;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) quick = 1;
        else if (!strcmp(argv[i], "--read-bw") && i + 1 < argc) read_bw_mib = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) bw_threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--streams") && i + 1 < argc && is_stream_count(argv[i + 1]))
            streams = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--gemv-t2") && i + 2 < argc) {
            gemv_n = atoi(argv[++i]);
            gemv_k = atoi(argv[++i]);
        }
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--copies") && i + 1 < argc) copies = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--isa") && i + 1 < argc) only = argv[++i];
        else if (!strcmp(argv[i], "--case") && i + 1 < argc) match = argv[++i];
        else if (!strcmp(argv[i], "--layout") && i + 1 < argc && (!strcmp(argv[i + 1], "t2") || !strcmp(argv[i + 1], "t2x")))
            layout = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--quick] [--reps N] [--isa scalar|avx2|avx512|neon] [--case SUBSTRING]\n"
                            "       %s --read-bw MIB [--threads N] [--reps N] [--streams 1|2|4|8|16]\n"
                            "       %s --gemv-t2 N K [--threads N] [--reps N] [--copies C] [--isa NAME] [--layout t2|t2x]\n", argv[0], argv[0], argv[0]);
            return 2;
        }
    }
    if (gemv_n > 0 && gemv_k > 0) return gemv_t2_main(gemv_n, gemv_k, bw_threads < 1 ? 1 : bw_threads, reps > 0 ? reps : 5, copies, only, layout);
    if (read_bw_mib > 0) return read_bw_main((size_t)read_bw_mib, bw_threads < 1 ? 1 : bw_threads, reps > 0 ? reps : 5, streams);
    const int big_k = quick ? 16384 : 32768; /* big T2 case: big_k x big_k weights (256 MB at 32768) */
    const bcase cases[] = {
        {"T2 GEMV, in cache", 0, OB_WFMT_T2, 2048, 2048, 1, 1, "1M", 0},
        {"T2 GEMV, DRAM", 0, OB_WFMT_T2, big_k, big_k, 1, 1, "big", 0},
        {"T1.6 GEMV, in cache", 0, OB_WFMT_T16, 2048, 2048, 1, 1, "1M", 0},
        {"B1 GEMV, in cache", 0, OB_WFMT_B1, 2048, 2048, 1, 1, "1M", 0},
        {"T2 GEMM m=64 (prefill)", 0, OB_WFMT_T2, 2048, 2048, 64, 1, "1M", 0},
        {"T2X GEMM m=64 (prefill, the load-time repack)", 0, OB_WFMT_T2X, 2048, 2048, 64, 1, "1M", 0},
        {"T1.6 GEMM m=64 (prefill)", 0, OB_WFMT_T16, 2048, 2048, 64, 1, "1M", 0},
        {"B1 GEMM m=64 (prefill)", 0, OB_WFMT_B1, 2048, 2048, 64, 1, "1M", 0},
        {"f16 GEMV (LM head 32000x2048)", 2, OB_WFMT_T2, 32000, 2048, 1, 1, "f16", 0},
        {"int8 GEMV (LM head 32000x2048)", 3, OB_WFMT_T2, 32000, 2048, 1, 1, "q8", 0},
        {"int8 GEMV, in L2 (512x768)", 3, OB_WFMT_T2, 512, 768, 1, 1, "q8", 0},
        {"int8 GEMV (LM head 32000x768, 134m)", 3, OB_WFMT_T2, 32000, 768, 1, 1, "q8", 0},
        {"int8 GEMV (LM head 128256x2560, 2B4T)", 3, OB_WFMT_T2, 128256, 2560, 1, 1, "q8", 0},
        {"int4 GEMV, in L2 (512x768)", 4, OB_WFMT_T2, 512, 768, 1, 1, "i4", 0},
        {"int4 GEMV (LM head 128256x2560, 2B4T, --head-dtype i4)", 4, OB_WFMT_T2, 128256, 2560, 1, 1, "i4", 0},
        {"f32 GEMV (2048x2048)", 1, OB_WFMT_T2, 2048, 2048, 1, 1, "f32", 0},
        /* a decode step over an f16 KV-cache: every KV head of the model, one after the other (GOPS:
         * 2 per cached value and query head); 37-39 MB, more than this machine's 32 MB L3, which
         * still holds part of it between calls (in a model the weights evict all of it) */
        {"attention scores f16 (2B4T: 30 x 5 KV heads, 4 query heads of 128 each, 1024 rows)", 5, OB_WFMT_T2,
         1024, 128, 4, 1, "kv", 150},
        {"attention mix f16 (2B4T: 30 x 5 KV heads, 4 query heads of 128 each, 1024 rows)", 6, OB_WFMT_T2,
         1024, 128, 4, 1, "kv", 150},
        {"attention scores f16 (134m: 12 x 12 heads of 64, 2048 rows)", 5, OB_WFMT_T2, 2048, 64, 1, 1, "kv", 144},
        {"attention mix f16 (134m: 12 x 12 heads of 64, 2048 rows)", 6, OB_WFMT_T2, 2048, 64, 1, 1, "kv", 144},
    };
    const int ncases = (int)(sizeof(cases) / sizeof(cases[0]));

    char cpu[256];
    cpu_model(cpu, sizeof cpu);
    printf("machine: %s; detected ISA: %s; ", cpu, ob_isa_name(ob_isa_detect()));
    printf("command: `");
    for (int i = 0; i < argc; i++) printf("%s%s", i ? " " : "", argv[i]);
    printf("`\n\n");
    fflush(stdout);

    /* buffers: the big case dominates memory */
    size_t maxw = 0;
    for (int i = 0; i < ncases; i++)
        if (weight_bytes(&cases[i]) > maxw) maxw = weight_bytes(&cases[i]);
    uint8_t *wbuf = xalloc(maxw + 64);
    for (size_t i = 0; i < maxw + 64; i += 8) {
        uint64_t v = rnd();
        memcpy(wbuf + i, &v, 8);
    }
    /* T2 bytes: keep codes in {0,1,2} for realism (code 3 never occurs in a valid file) */
    uint8_t *wt2 = xalloc(maxw + 64);
    for (size_t i = 0; i < maxw + 64; i++) {
        uint8_t b = wbuf[i], o = 0;
        for (int s = 0; s < 8; s += 2) o |= (uint8_t)((((b >> s) & 3) % 3) << s);
        wt2[i] = o;
    }
    /* the T2X case's weights: the first 2048 x 2048 T2 weights as the loader repacks them */
    uint8_t *wt2x = xalloc(ob_t2x_bytes(2048, 2048));
    ob_t2x_repack(NULL, OB_WFMT_T2, wt2, 2048, 2048, wt2x);
    float *scale = xalloc(128256 * 4);
    for (int i = 0; i < 128256; i++) scale[i] = 0.01f;
    int maxk = big_k, maxm = 64;
    size_t xs = ob_act_stride(maxk);
    float *xf = xalloc((size_t)maxk * maxm * 4);
    for (size_t i = 0; i < (size_t)maxk * maxm; i++) xf[i] = (float)((int)(rnd() % 2001) - 1000) * 1e-3f;
    int8_t *xq = xalloc(xs * maxm);
    int16_t *xq16 = xalloc((size_t)maxk * 2);
    float a[64];
    int32_t xsum[64];
    float *y = xalloc((size_t)128256 * 64 * 4);
    /* f16 weights */
    uint16_t *wf16 = (uint16_t *)xalloc((size_t)32000 * 2048 * 2);
    for (size_t i = 0; i < (size_t)32000 * 2048; i++) wf16[i] = ob_f32_to_f16((float)((int)(rnd() % 2001) - 1000) * 1e-3f);
    /* the attention cases' f16 KV rows (as many as the largest case walks) and probabilities */
    size_t kvn = 0;
    for (int i = 0; i < ncases; i++)
        if (cases[i].kind >= 5 && weight_bytes(&cases[i]) / 2 > kvn) kvn = weight_bytes(&cases[i]) / 2;
    uint16_t *kv16 = (uint16_t *)xalloc(kvn * 2 + 64);
    for (size_t i = 0; i < kvn; i++) kv16[i] = ob_f32_to_f16((float)((int)(rnd() % 2001) - 1000) * 1e-3f);
    float *prob = xalloc((size_t)4 * 2048 * 4);
    for (int i = 0; i < 4 * 2048; i++) prob[i] = (float)(rnd() % 1000) * 1e-6f;
    float *wf32 = xalloc((size_t)2048 * 2048 * 4);
    for (size_t i = 0; i < (size_t)2048 * 2048; i++) wf32[i] = (float)((int)(rnd() % 2001) - 1000) * 1e-3f;

    printf("%% of roofline = weight bytes per second / read bandwidth of the same weight buffer by a "
           "plain 8-stream AVX2 load loop, measured interleaved with the kernel: best kernel time vs best "
           "read time, and in parentheses the median over adjacent (read, kernel) pairs.\n\n");
    printf("| ISA | case | N x K | m | time / call | GOPS | weight GB/s | read GB/s (roofline) | %% of roofline | vs scalar |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|\n");
    fflush(stdout);

    double scalar_t[32];
    for (int i = 0; i < 32; i++) scalar_t[i] = 0;
    ob_threadpool *pool2 = ob_threadpool_create(2);
    for (int isa = 0; isa < OB_ISA_COUNT; isa++) {
        if (!ob_isa_supported((ob_isa)isa)) continue;
        if (only && strcmp(only, ob_isa_name((ob_isa)isa)) && isa != OB_ISA_SCALAR) continue;
        ob_kernels k;
        ob_kernels_init(&k, (ob_isa)isa);
        for (int ci = 0; ci < ncases; ci++) {
            const bcase *c = &cases[ci];
            if (only && !strcmp(only, "scalar") && isa != OB_ISA_SCALAR) continue;
            if (match && !strstr(c->name, match)) continue;
            bctx b;
            memset(&b, 0, sizeof b);
            b.k = &k;
            b.c = c;
            b.pool = c->threads > 1 ? pool2 : NULL;
            b.w = c->kind == 0 ? (c->fmt == OB_WFMT_T2    ? (const void *)wt2
                                  : c->fmt == OB_WFMT_T2X ? (const void *)wt2x
                                                          : (const void *)wbuf)
                  : c->kind == 1 ? (const void *)wf32
                  : c->kind == 2 ? (const void *)wf16
                  : c->kind >= 5 ? (const void *)kv16
                                 : (const void *)wbuf;
            b.p = prob;
            b.scale = scale;
            b.xs = ob_act_stride(c->K);
            ob_quantize_rows(&k, xf, (size_t)c->K, c->m, c->K, xq, b.xs, a, xsum);
            b.xq = xq;
            b.a = a;
            b.xsum = xsum;
            b.xf = xf;
            ob_quantize_i16(xf, c->K, xq16, &b.a16);
            b.xq16 = xq16;
            b.y = y;
            int big = weight_bytes(c) > (64u << 20);
            int slow = isa == OB_ISA_SCALAR;
            double roof = 0, pmed = 0;
            const uint8_t *wraw = (const uint8_t *)b.w;
            double t = time_case(&b, slow ? (big ? 1 : 2) : (big ? (quick ? 2 : 4) : reps), big ? 0.5 : 0.1,
                                 wraw, weight_bytes(c), &roof, &pmed);
            double ops = 2.0 * c->N * (double)c->K * c->m * (c->kind >= 5 ? c->heads : 1);
            double gbs = (double)weight_bytes(c) / t / 1e9;
            if (isa == OB_ISA_SCALAR) scalar_t[ci] = t;
            char tbuf[32], rbuf[32], sbuf[32];
            if (t >= 1e-3) snprintf(tbuf, sizeof tbuf, "%.2f ms", t * 1e3);
            else snprintf(tbuf, sizeof tbuf, "%.1f us", t * 1e6);
            if (roof > 0) snprintf(rbuf, sizeof rbuf, "%.0f%% (%.0f%%)", 100.0 * gbs / roof, 100.0 * pmed);
            else snprintf(rbuf, sizeof rbuf, "-");
            if (scalar_t[ci] > 0) snprintf(sbuf, sizeof sbuf, "%.1fx", scalar_t[ci] / t);
            else snprintf(sbuf, sizeof sbuf, "-");
            printf("| %s | %s | %dx%d | %d | %s | %.1f | %.1f | %.1f | %s | %s |\n", ob_isa_name((ob_isa)isa), c->name,
                   c->N, c->K, c->m, tbuf, ops / t / 1e9, gbs, roof, rbuf, sbuf);
            fflush(stdout);
        }
    }
    ob_threadpool_destroy(pool2);
    free(wbuf); free(wt2); free(wt2x); free(scale); free(xf); free(xq); free(xq16); free(y); free(wf16); free(wf32); free(kv16); free(prob);
    return 0;
}
