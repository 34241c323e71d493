/* profile_decode.c - where the time of a decoded token goes, per kernel, without perf.
 *
 *     make -C runtime_c profile
 *     runtime_c/build/profile_decode -m model.1bit [-n 128] [--prompt-tokens 1] [--ctx N]
 *                                    [--kv f32|f16] [--isa NAME] [--rounds 3]
 *
 * Linked against libonebit.a with `-Wl,--wrap=ob_kernels_init_env,--wrap=ob_kernels_init`: the
 * session's dispatch table is filled as usual, then (in the instrumented passes) every entry is
 * replaced by a shim that times the real kernel with CLOCK_MONOTONIC.  The runtime itself is not
 * changed or rebuilt.  One thread only (the shims' counters are not shared between threads).
 *
 * Each round decodes the same greedy sequence twice: plain (the table untouched) and instrumented.
 * The report gives the plain time per token, the instrumented one (the difference is the cost of
 * the timer calls), and for the fastest instrumented round each kernel's calls and microseconds per
 * token and its share of the instrumented decode + sample time; "sampling" is ob_session_sample
 * (greedy), "other" the rest of ob_session_decode: embedding, norms, RoPE, softmax, residual adds,
 * f16 widening outside the kernels, and the calls between.  The greedy tokens of both passes must
 * be equal (checked). */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

enum {
    OP_QUANTIZE, OP_T2, OP_T2X, OP_T16, OP_B1, OP_I4, OP_I8, OP_GEMV_F32, OP_GEMV_F16, OP_GEMV_Q8, OP_F16_TO_F32,
    OP_F32_TO_F16, OP_DOT_F32, OP_DOT_F16, OP_AXPY_F32, OP_AXPY_F16, OP_SCORES_F32, OP_SCORES_F16, OP_MIX_F32,
    OP_MIX_F16, OP_SOFTMAX, OP_COUNT
};
static const char *const op_names[OP_COUNT] = {
    "quantize (int8 activations)", "matmul T2 (BitLinear)", "matmul T2X (BitLinear, T2 / T1.6 repacked at load)",
    "matmul T1.6 (BitLinear)", "matmul B1 (BitLinear)",
    "matmul I4 (BitLinear)", "matmul I8 (BitLinear)", "gemv f32 (LM head)", "gemv f16 (LM head)",
    "gemv int8 (LM head)", "f16 -> f32", "f32 -> f16 (KV-cache writes)", "attention dot f32", "attention dot f16",
    "attention axpy f32", "attention axpy f16", "attention scores f32", "attention scores f16",
    "attention mix f32", "attention mix f16", "attention softmax"};

typedef struct {
    double seconds;
    long calls;
} op_acc;

/* the tool's own state (a benchmark program, not the library) */
static ob_kernels real;
static int instrument;
static op_acc acc[OP_COUNT];

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

#define TIMED(op, call)                                                                                            \
    do {                                                                                                           \
        double t0_ = now_s();                                                                                      \
        call;                                                                                                      \
        acc[op].seconds += now_s() - t0_;                                                                          \
        acc[op].calls++;                                                                                           \
    } while (0)

static void sh_quantize(const float *x, int K, int8_t *xq, float *a, int32_t *sum) {
    TIMED(OP_QUANTIZE, real.quantize(x, K, xq, a, sum));
}
#define MATMUL_SHIM(name, table, idx, op, wtype)                                                                   \
    static void name(const uint8_t *w, int K, wtype wscale, const int8_t *xq, size_t xs, const float *a,           \
                     const int32_t *xsum, int m, int r0, int r1, float *y, size_t ldy) {                           \
        TIMED(op, real.table[idx](w, K, wscale, xq, xs, a, xsum, m, r0, r1, y, ldy));                              \
    }
MATMUL_SHIM(sh_t2, matmul, OB_WFMT_T2, OP_T2, float)
MATMUL_SHIM(sh_t2x, matmul, OB_WFMT_T2X, OP_T2X, float)
MATMUL_SHIM(sh_t16, matmul, OB_WFMT_T16, OP_T16, float)
MATMUL_SHIM(sh_b1, matmul, OB_WFMT_B1, OP_B1, float)
MATMUL_SHIM(sh_i4, matmul_rs, OB_IFMT_I4, OP_I4, const float *)
MATMUL_SHIM(sh_i8, matmul_rs, OB_IFMT_I8, OP_I8, const float *)
static void sh_gemv_f32(const float *w, size_t ldw, int K, const float *x, int r0, int r1, float *y) {
    TIMED(OP_GEMV_F32, real.gemv_f32(w, ldw, K, x, r0, r1, y));
}
static void sh_gemv_f16(const uint16_t *w, size_t ldw, int K, const float *x, int r0, int r1, float *y) {
    TIMED(OP_GEMV_F16, real.gemv_f16(w, ldw, K, x, r0, r1, y));
}
static void sh_gemv_q8(const int8_t *w, const float *scale, size_t ldw, int K, const int16_t *xq, float a, int r0,
                       int r1, float *y) {
    TIMED(OP_GEMV_Q8, real.gemv_q8(w, scale, ldw, K, xq, a, r0, r1, y));
}
static void sh_f16_to_f32(const uint16_t *src, int n, float *dst) { TIMED(OP_F16_TO_F32, real.f16_to_f32(src, n, dst)); }
static void sh_f32_to_f16(const float *src, int n, uint16_t *dst) { TIMED(OP_F32_TO_F16, real.f32_to_f16(src, n, dst)); }
static float sh_dot_f32(const float *a, const float *b, int n) {
    float r;
    TIMED(OP_DOT_F32, r = real.dot_f32(a, b, n));
    return r;
}
static float sh_dot_f16(const float *a, const uint16_t *b, int n) {
    float r;
    TIMED(OP_DOT_F16, r = real.dot_f16(a, b, n));
    return r;
}
static void sh_axpy_f32(float *y, float a, const float *x, int n) { TIMED(OP_AXPY_F32, real.axpy_f32(y, a, x, n)); }
static void sh_axpy_f16(float *y, float a, const uint16_t *x, int n) { TIMED(OP_AXPY_F16, real.axpy_f16(y, a, x, n)); }
static void sh_scores_f32(const float *q, int G, const float *rows, int hd, int n, float scale, float *out, size_t ldo) {
    TIMED(OP_SCORES_F32, real.scores_f32(q, G, rows, hd, n, scale, out, ldo));
}
static void sh_scores_f16(const float *q, int G, const uint16_t *rows, int hd, int n, float scale, float *out,
                          size_t ldo) {
    TIMED(OP_SCORES_F16, real.scores_f16(q, G, rows, hd, n, scale, out, ldo));
}
static void sh_mix_f32(float *y, int G, const float *p, size_t ldp, const float *rows, int hd, int n) {
    TIMED(OP_MIX_F32, real.mix_f32(y, G, p, ldp, rows, hd, n));
}
static void sh_softmax(float *x, size_t ldx, const int *n, int rows) { TIMED(OP_SOFTMAX, real.softmax(x, ldx, n, rows)); }
static void sh_mix_f16(float *y, int G, const float *p, size_t ldp, const uint16_t *rows, int hd, int n) {
    TIMED(OP_MIX_F16, real.mix_f16(y, G, p, ldp, rows, hd, n));
}

/* Keep the real table, hand the session the shims (an entry that is NULL stays NULL). */
static void wrap_table(ob_kernels *k) {
    if (!instrument || k->quantize == sh_quantize) return;
    real = *k;
#define SET(field, shim) k->field = k->field ? shim : NULL
    SET(quantize, sh_quantize);
    SET(matmul[OB_WFMT_T2], sh_t2);
    SET(matmul[OB_WFMT_T2X], sh_t2x);
    SET(matmul[OB_WFMT_T16], sh_t16);
    SET(matmul[OB_WFMT_B1], sh_b1);
    SET(matmul_rs[OB_IFMT_I4], sh_i4);
    SET(matmul_rs[OB_IFMT_I8], sh_i8);
    SET(gemv_f32, sh_gemv_f32);
    SET(gemv_f16, sh_gemv_f16);
    SET(gemv_q8, sh_gemv_q8);
    SET(f16_to_f32, sh_f16_to_f32);
    SET(f32_to_f16, sh_f32_to_f16);
    SET(dot_f32, sh_dot_f32);
    SET(dot_f16, sh_dot_f16);
    SET(axpy_f32, sh_axpy_f32);
    SET(axpy_f16, sh_axpy_f16);
    SET(scores_f32, sh_scores_f32);
    SET(scores_f16, sh_scores_f16);
    SET(mix_f32, sh_mix_f32);
    SET(mix_f16, sh_mix_f16);
    SET(softmax, sh_softmax);
#undef SET
}

int __real_ob_kernels_init_env(ob_kernels *k);
int __real_ob_kernels_init(ob_kernels *k, ob_isa isa);
int __wrap_ob_kernels_init_env(ob_kernels *k) {
    int r = __real_ob_kernels_init_env(k);
    if (r == OB_ISA_OK) wrap_table(k);
    return r;
}
int __wrap_ob_kernels_init(ob_kernels *k, ob_isa isa) {
    int r = __real_ob_kernels_init(k, isa);
    if (r == 0) wrap_table(k);
    return r;
}

typedef struct {
    double decode, sample; /* seconds over the n decoded tokens */
    op_acc ops[OP_COUNT];
} pass_result;

static int die(const char *fmt, const char *arg) {
    fprintf(stderr, "profile_decode: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    return 1;
}

/* One pass: prefill the prompt, then n times greedy-sample and decode; tokens[] receives the samples. */
static int run_pass(const ob_model *m, const ob_session_params *sp, const int32_t *prompt, int n_prompt, int n,
                    int32_t *tokens, pass_result *res) {
    ob_session *s;
    char err[256];
    if (ob_session_create(&s, m, sp, NULL, 0, err, sizeof err) != OB_OK) return die("%s", err);
    ob_sampler_params greedy = ob_sampler_params_default();
    greedy.temperature = 0.0f;
    if (ob_session_set_sampler(s, &greedy) != OB_OK || ob_session_eval(s, prompt, n_prompt, NULL, 0) != OB_OK) {
        int r = die("%s", ob_session_error(s));
        ob_session_free(s);
        return r;
    }
    memset(acc, 0, sizeof acc);
    memset(res, 0, sizeof *res);
    for (int i = 0; i < n; i++) {
        double t0 = now_s();
        ob_session_sample(s, &tokens[i]);
        double t1 = now_s();
        ob_status st = ob_session_decode(s, tokens[i]);
        double t2 = now_s();
        if (st != OB_OK) {
            int r = die("%s", ob_session_error(s));
            ob_session_free(s);
            return r;
        }
        res->sample += t1 - t0;
        res->decode += t2 - t1;
    }
    memcpy(res->ops, acc, sizeof acc);
    ob_session_free(s);
    return 0;
}

int main(int argc, char **argv) {
    const char *path = NULL, *isa = NULL, *kv = "f32";
    int n = 128, n_prompt = 1, ctx = 0, rounds = 3;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            printf("usage: profile_decode -m MODEL [-n TOKENS=128] [--prompt-tokens P=1] [--ctx N=P+TOKENS] "
                   "[--kv f32|f16] [--isa NAME] [--rounds R=3]\n");
            return 0;
        }
        if (!v) return die("%s needs a value", a);
        i++;
        if (!strcmp(a, "-m")) path = v;
        else if (!strcmp(a, "-n")) n = atoi(v);
        else if (!strcmp(a, "--prompt-tokens")) n_prompt = atoi(v);
        else if (!strcmp(a, "--ctx")) ctx = atoi(v);
        else if (!strcmp(a, "--kv")) kv = v;
        else if (!strcmp(a, "--isa")) isa = v;
        else if (!strcmp(a, "--rounds")) rounds = atoi(v);
        else return die("unknown option %s", a);
    }
    if (!path) return die("%s", "-m MODEL is required");
    if (n < 1 || n_prompt < 1 || rounds < 1 || (strcmp(kv, "f32") && strcmp(kv, "f16")))
        return die("%s", "-n, --prompt-tokens and --rounds must be >= 1, --kv f32 or f16");
    ob_model *m;
    char err[256];
    if (ob_model_open(&m, path, err, sizeof err) != OB_OK) return die("%s", err);
    ob_model_info info;
    ob_model_get_info(m, &info);
    ob_session_params sp = ob_session_params_default();
    sp.n_ctx = ctx ? ctx : n_prompt + n;
    sp.n_threads = 1;
    sp.kv_type = strcmp(kv, "f16") ? OB_KV_F32 : OB_KV_F16;
    sp.isa = isa;
    if (sp.n_ctx < n_prompt + n || sp.n_ctx > info.max_seq_len) {
        ob_model_free(m);
        return die("%s", "--ctx must hold the prompt and the decoded tokens (no slide) and fit max_seq_len");
    }
    int32_t *prompt = (int32_t *)malloc(sizeof(int32_t) * (size_t)n_prompt);
    int32_t *plain_tok = (int32_t *)malloc(sizeof(int32_t) * (size_t)n), *inst_tok = (int32_t *)malloc(sizeof(int32_t) * (size_t)n);
    uint32_t rng = 12345;
    for (int i = 0; i < n_prompt; i++) {
        rng = rng * 1664525u + 1013904223u;
        prompt[i] = (int32_t)((rng >> 8) % (uint32_t)info.vocab_size);
    }
    pass_result best_plain, best_inst, r;
    const char *isa_name = "?";
    int rc = 0;
    for (int round = 0; round < rounds && !rc; round++) {
        instrument = 0;
        rc = run_pass(m, &sp, prompt, n_prompt, n, plain_tok, &r);
        if (rc) break;
        if (round == 0 || r.decode + r.sample < best_plain.decode + best_plain.sample) best_plain = r;
        instrument = 1;
        rc = run_pass(m, &sp, prompt, n_prompt, n, inst_tok, &r);
        if (rc) break;
        if (round == 0 || r.decode + r.sample < best_inst.decode + best_inst.sample) best_inst = r;
        if (memcmp(plain_tok, inst_tok, sizeof(int32_t) * (size_t)n)) {
            fprintf(stderr, "profile_decode: the instrumented pass generated other tokens\n");
            rc = 1;
        }
    }
    if (!rc) {
        ob_session *s;
        instrument = 0;
        if (ob_session_create(&s, m, &sp, NULL, 0, err, sizeof err) == OB_OK) {
            isa_name = ob_session_isa(s);
            ob_session_free(s);
        }
        double plain = (best_plain.decode + best_plain.sample) / n, inst = (best_inst.decode + best_inst.sample) / n;
        printf("profile_decode: %s (dim %d, %d layers, vocab %d), isa %s, 1 thread, kv %s, ctx %d, %d prompt "
               "token(s), %d greedy tokens decoded, best of %d rounds\n",
               path, info.dim, info.n_layers, info.vocab_size, isa_name, kv, sp.n_ctx, n_prompt, n, rounds);
        printf("decode + sample: %.3f ms/token plain (%.1f tok/s), %.3f ms/token instrumented (%+.1f %%: the timer "
               "calls)\n\n",
               1e3 * plain, 1.0 / plain, 1e3 * inst, 100.0 * (inst / plain - 1.0));
        printf("| part | calls / token | us / token | share |\n|---|---:|---:|---:|\n");
        double kernels = 0.0;
        for (int op = 0; op < OP_COUNT; op++) {
            const op_acc *o = &best_inst.ops[op];
            if (!o->calls) continue;
            kernels += o->seconds;
            printf("| %s | %.1f | %.1f | %.1f %% |\n", op_names[op], (double)o->calls / n, 1e6 * o->seconds / n,
                   100.0 * o->seconds / (inst * n));
        }
        double other = best_inst.decode - kernels;
        printf("| sampling (greedy, ob_session_sample) | 1.0 | %.1f | %.1f %% |\n", 1e6 * best_inst.sample / n,
               100.0 * best_inst.sample / (inst * n));
        printf("| other (embedding, norms, RoPE, residuals, calls) | - | %.1f | %.1f %% |\n", 1e6 * other / n,
               100.0 * other / (inst * n));
    }
    free(prompt);
    free(plain_tok);
    free(inst_tok);
    ob_model_free(m);
    return rc;
}
