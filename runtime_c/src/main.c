/* onebit-run - generate text or measure perplexity with a .1bit model (the C twin of onebit-sample).
 *
 *   onebit-run -m model.1bit -p "ROMEO:" -n 200 [--temperature T --top-k K --top-p P
 *              --repeat-penalty R --repeat-window W --seed S --threads N --ctx N --kv f32|f16
 *              --isa NAME --batch N --max-memory BYTES --chat --ignore-eos] [--bench [--prompt-tokens N]]
 *   onebit-run -m model.1bit --ppl FILE [--ctx N --threads N]
 *   onebit-run --help | --version
 *
 * stdout carries only the prompt and the generated text (token bytes as they come); statistics and
 * errors go to stderr; an error is one line and a non-zero exit. */
#if !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#include <errno.h>
#include <math.h>
#if !defined(__wasi__) /* WASI has no signals (and no Ctrl-C to catch) */
#include <signal.h>
#endif
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "onebit.h"

typedef struct {
    const char *model, *prompt, *ppl_file, *isa;
    int n, threads, ctx, batch, bench, prompt_tokens, kv_f16, chat;
    uint64_t max_memory;
    ob_sampler_params sp;
} options;

/* Ctrl-C: the generation loop stops at the next token and the program ends with one error line.
 * A signal handler can only set a flag; this one is the CLI's, the library has no such state. */
#if !defined(__wasi__)
static volatile sig_atomic_t interrupted = 0;

static void on_sigint(int sig) {
    (void)sig;
    interrupted = 1;
}

static void catch_sigint(void) { signal(SIGINT, on_sigint); }
#else
static const int interrupted = 0;
static void catch_sigint(void) {}
#endif

/* Flags that take a value: any other word that starts with '-' is an unknown option, even last. */
static int takes_value(const char *a) {
    static const char *const flags[] = {"-m", "--model", "-p", "--prompt", "--ppl", "--isa", "-n",
                                        "--max-new-tokens", "--threads", "-t", "--ctx", "--batch",
                                        "--prompt-tokens", "--max-memory", "--top-k", "--repeat-window",
                                        "--temperature", "--top-p", "--repeat-penalty", "--seed", "--kv"};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
        if (!strcmp(a, flags[i])) return 1;
    return 0;
}

static int fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* VERSION from the Makefile (-DONEBIT_VERSION); a build that does not pass it says so. */
#ifndef ONEBIT_VERSION
#define ONEBIT_VERSION "unknown (built without -DONEBIT_VERSION)"
#endif

/* One line per flag with its default; the sampler defaults come from the library itself. */
static void usage(FILE *f) {
    ob_sampler_params d = ob_sampler_params_default();
    ob_session_params s = ob_session_params_default();
    fprintf(f,
            "usage: onebit-run -m MODEL.1bit [options]       generate text (temperature 0 = greedy)\n"
            "       onebit-run -m MODEL.1bit --ppl FILE      perplexity of a text file\n"
            "Text goes to stdout, statistics and errors to stderr.\n\n"
            "  -m, --model FILE            the .1bit model (required)\n"
            "  -p, --prompt TEXT           prompt to continue (default: a newline)\n"
            "  -n, --max-new-tokens N      tokens to generate (default: 200)\n"
            "      --temperature T         sampling temperature, 0 = greedy (default: %g)\n"
            "      --top-k K               keep the K most likely tokens, 0 = off (default: %d)\n"
            "      --top-p P               nucleus sampling mass in (0, 1], 1 = off (default: %g)\n"
            "      --repeat-penalty R      penalty on recent tokens, 1 = off (default: %g)\n"
            "      --repeat-window W       how many recent tokens the penalty sees (default: %d)\n"
            "      --seed S                sampler seed, an unsigned integer (default: %llu)\n"
            "  -t, --threads N             worker threads, 1..256; same output for any N (default: %d)\n"
            "      --ctx N                 context length in tokens (default: min(max_seq_len, %d))\n"
            "      --kv f16|f32            KV-cache element type (default: f16)\n"
            "      --isa NAME              kernels: scalar, avx2 or avx512 (x86-64), neon (aarch64, armv7),\n"
            "                              simd128 (wasm), mve or dsp (Cortex-M); those compiled in\n"
            "                              (default: $ONEBIT_ISA, else the best this CPU has)\n"
            "      --batch N               tokens per prefill matrix multiply (default: %d)\n"
            "      --max-memory BYTES      fail early if the model and session need more, e.g. 512M, 2G\n"
            "                              (default: no limit)\n"
            "      --chat                  the prompt is a user message: wrap it in the model's chat\n"
            "                              template (default: off)\n"
            "      --ignore-eos            keep generating after an end-of-sequence token (default: stop\n"
            "                              there; always on with --bench)\n"
            "      --bench                 print load time, prefill and decode speeds (default: off)\n"
            "      --prompt-tokens N       with --bench: N pseudo-random prompt ids instead of -p (default: off)\n"
            "      --ppl FILE              compute perplexity over FILE instead of generating (default: off)\n"
            "      --version               print the version and exit\n"
            "  -h, --help                  print this help and exit\n"
            "environment: ONEBIT_ISA=NAME as --isa; ONEBIT_REPACK=0 reads the T2 weights in place instead\n"
            "of repacking them at load for the AVX2 / AVX-512 GEMV (faster load, slower decode; same output);\n"
            "ONEBIT_HUGEPAGES=1 puts the repacked weights in transparent huge pages (faster decode, slower\n"
            "load in some VMs; same output)\n",
            (double)d.temperature, d.top_k, (double)d.top_p, (double)d.repeat_penalty, d.repeat_window,
            (unsigned long long)d.seed, s.n_threads, OB_DEFAULT_CTX, s.n_batch);
}

static int parse_int(const char *flag, const char *s, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return fail("%s needs an integer in [%ld, %ld], got '%s'", flag, lo, hi, s);
    *out = (int)v;
    return 0;
}

static int parse_float(const char *flag, const char *s, float *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) return fail("%s needs a number, got '%s'", flag, s);
    *out = (float)v;
    return 0;
}

/* A byte count with an optional K, M or G suffix (powers of 1024, "B" or "iB" may follow): "512M", "2GiB". */
static int parse_bytes(const char *flag, const char *s, uint64_t *out) {
    static const char units[] = "KMG";
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    int shift = 0;
    const char *u = *end ? strchr(units, *end & ~0x20) : NULL;
    if (u) {
        shift = 10 * (int)(u - units + 1);
        end++;
        if (!strcmp(end, "B") || !strcmp(end, "iB")) end += strlen(end);
    }
    if (errno || end == s || *end || s[0] == '-' || v == 0 || v > (UINT64_MAX >> shift))
        return fail("%s needs a positive byte count such as 512M or 2G, got '%s'", flag, s);
    *out = (uint64_t)v << shift;
    return 0;
}

static int parse_args(int argc, char **argv, options *o) {
    memset(o, 0, sizeof *o);
    o->prompt = "\n";
    o->n = 200;
    o->kv_f16 = 1;
    o->threads = 1;
    o->sp = ob_sampler_params_default();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        }
        if (!strcmp(a, "--version")) {
            printf("onebit-run %s (reads .1bit format %d.%d)\n", ONEBIT_VERSION, OB_VERSION_MAJOR, OB_VERSION_MINOR);
            exit(0);
        }
        if (!strcmp(a, "--bench")) {
            o->bench = 1;
            continue;
        }
        if (!strcmp(a, "--chat")) {
            o->chat = 1;
            continue;
        }
        if (!strcmp(a, "--ignore-eos")) {
            o->sp.ignore_eos = 1;
            continue;
        }
        if (!takes_value(a)) return fail("unknown option '%s' (see --help)", a);
        if (i + 1 >= argc) return fail("%s needs a value (see --help)", a);
        const char *v = argv[++i];
        int r = 0;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) o->model = v;
        else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) o->prompt = v;
        else if (!strcmp(a, "--ppl")) o->ppl_file = v;
        else if (!strcmp(a, "--isa")) o->isa = v;
        else if (!strcmp(a, "-n") || !strcmp(a, "--max-new-tokens")) r = parse_int(a, v, 0, 1 << 24, &o->n);
        else if (!strcmp(a, "--threads") || !strcmp(a, "-t")) r = parse_int(a, v, 1, 256, &o->threads);
        else if (!strcmp(a, "--ctx")) r = parse_int(a, v, 1, 1 << 24, &o->ctx);
        else if (!strcmp(a, "--batch")) r = parse_int(a, v, 1, 1 << 16, &o->batch);
        else if (!strcmp(a, "--prompt-tokens")) r = parse_int(a, v, 1, 1 << 24, &o->prompt_tokens);
        else if (!strcmp(a, "--max-memory")) r = parse_bytes(a, v, &o->max_memory);
        else if (!strcmp(a, "--top-k")) r = parse_int(a, v, 0, 1 << 30, &o->sp.top_k);
        else if (!strcmp(a, "--repeat-window")) r = parse_int(a, v, 0, 1 << 30, &o->sp.repeat_window);
        else if (!strcmp(a, "--temperature")) r = parse_float(a, v, &o->sp.temperature);
        else if (!strcmp(a, "--top-p")) r = parse_float(a, v, &o->sp.top_p);
        else if (!strcmp(a, "--repeat-penalty")) r = parse_float(a, v, &o->sp.repeat_penalty);
        else if (!strcmp(a, "--seed")) {
            char *end;
            errno = 0;
            unsigned long long s = strtoull(v, &end, 10);
            if (errno || end == v || *end || v[0] == '-') return fail("--seed needs an unsigned integer, got '%s'", v);
            o->sp.seed = (uint64_t)s;
        } else if (!strcmp(a, "--kv")) {
            if (!strcmp(v, "f32")) o->kv_f16 = 0;
            else if (strcmp(v, "f16")) return fail("--kv must be f32 or f16, got '%s'", v);
        } else return fail("unknown option '%s' (see --help)", a);
        if (r) return r;
    }
    if (!o->model) return fail("no model: pass -m MODEL.1bit");
    if (!(o->sp.temperature >= 0)) return fail("--temperature must be >= 0");
    if (!(o->sp.top_p > 0 && o->sp.top_p <= 1)) return fail("--top-p must be in (0, 1]");
    if (!(o->sp.repeat_penalty > 0)) return fail("--repeat-penalty must be > 0");
    if (o->chat && (o->prompt_tokens || o->ppl_file)) return fail("--chat needs a text prompt (-p), not --prompt-tokens or --ppl");
    if (o->bench) o->sp.ignore_eos = 1; /* a benchmark measures the full count */
    return 0;
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = (char *)malloc(cap);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (n < cap) break;
        char *nb = (char *)realloc(buf, cap * 2);
        if (!nb) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

/* Perplexity over non-overlapping windows: window w covers tokens [w*T, w*T + T] (T = the context),
 * predicting tokens w*T+1 .. w*T+T from a fresh cache; the last window may be shorter (>= 2 tokens).
 * ppl = exp(total negative log-likelihood / number of predicted tokens).  run_c.py has the twin. */
static int run_ppl(ob_model *m, ob_session *s, const options *o) {
    size_t len;
    char *text = read_file(o->ppl_file, &len);
    if (!text) return fail("%s: %s", o->ppl_file, strerror(errno ? errno : EIO));
    int32_t *ids = (int32_t *)malloc(sizeof(int32_t) * (len + 1));
    int n = 0;
    char err[256] = "out of memory";
    if (len >= 0x7fffffff) {
        free(text);
        free(ids);
        return fail("%s: %zu bytes is more than perplexity reads (2 GiB)", o->ppl_file, len);
    }
    ob_status st = ids ? ob_tokenize_ex(m, text, len, ids, (int)(len + 1), &n, err, sizeof err) : OB_ERR_NOMEM;
    free(text);
    if (st) {
        free(ids);
        return fail("%s: %s", o->ppl_file, err);
    }
    if (n < 2) {
        free(ids);
        return fail("%s: perplexity needs at least 2 tokens, the file has %d", o->ppl_file, n);
    }
    ob_model_info info;
    ob_model_get_info(m, &info);
    int T = ob_session_n_ctx(s), V = info.vocab_size;
    float *logits = (float *)malloc(sizeof(float) * (size_t)T * (size_t)V);
    if (!logits) {
        free(ids);
        return fail("out of memory");
    }
    double nll = 0.0;
    long long count = 0;
    double t0 = now_s();
    for (int start = 0; start + 1 < n && !interrupted; start += T) {
        int w = n - 1 - start < T ? n - 1 - start : T;
        ob_session_reset(s);
        st = ob_session_eval(s, ids + start, w, logits, 1);
        if (st) break;
        for (int j = 0; j < w; j++) {
            const float *row = logits + (size_t)j * V;
            float mx = row[0];
            for (int v = 1; v < V; v++) mx = row[v] > mx ? row[v] : mx;
            double sum = 0.0;
            for (int v = 0; v < V; v++) sum += exp((double)row[v] - (double)mx);
            nll += log(sum) + (double)mx - (double)row[ids[start + j + 1]];
            count++;
        }
    }
    double dt = now_s() - t0;
    free(logits);
    free(ids);
    if (st) return fail("%s", ob_session_error(s));
    if (interrupted) {
        fail("interrupted after %lld scored tokens", count);
        return 130;
    }
    printf("ppl %.6f nll %.6f tokens %lld\n", exp(nll / (double)count), nll / (double)count, count);
    fprintf(stderr, "%lld tokens scored in %.2fs (%.1f tokens/s), context %d\n", count, dt, (double)count / dt, T);
    return 0;
}

static int emit_token(void *user, int32_t token, const uint8_t *bytes, size_t len) {
    (void)user;
    (void)token;
    fwrite(bytes, 1, len, stdout);
    fflush(stdout);
    return 0;
}

/* The prompt text: -p itself, or with --chat the model's chat template around it (malloc'ed). */
static char *prompt_text(const ob_model *m, const options *o, size_t *len) {
    size_t plen = strlen(o->prompt), need = 0;
    char err[256];
    if (!o->chat) {
        char *t = (char *)malloc(plen + 1);
        if (t) memcpy(t, o->prompt, plen + 1);
        else fail("out of memory");
        *len = plen;
        return t;
    }
    ob_status st = ob_chat_prompt(m, o->prompt, plen, NULL, 0, &need, err, sizeof err);
    char *t = NULL;
    if (st == OB_ERR_BUFFER) { /* the size query */
        t = (char *)malloc(need);
        st = t ? ob_chat_prompt(m, o->prompt, plen, t, need, len, err, sizeof err) : OB_ERR_NOMEM;
        if (!t) snprintf(err, sizeof err, "out of memory");
    }
    if (st) {
        free(t);
        fail("--chat: %s", err);
        return NULL;
    }
    return t;
}

static int run_generate(ob_model *m, ob_session *s, const options *o, double load_s) {
    int n_prompt = 0;
    int32_t *ids;
    size_t plen = 0;
    char *text = o->prompt_tokens ? NULL : prompt_text(m, o, &plen);
    if (!o->prompt_tokens && !text) return 1;
    ob_model_info info;
    ob_model_get_info(m, &info);
    if (o->prompt_tokens) { /* benchmark prompt: fixed pseudo-random ids */
        ids = (int32_t *)malloc(sizeof(int32_t) * (size_t)o->prompt_tokens);
        if (!ids) return fail("out of memory");
        uint32_t x = 12345;
        for (int i = 0; i < o->prompt_tokens; i++) {
            x = x * 1664525u + 1013904223u;
            ids[i] = (int32_t)((x >> 8) % (uint32_t)info.vocab_size);
        }
        n_prompt = o->prompt_tokens;
    } else {
        ids = plen < 0x7fffffff ? (int32_t *)malloc(sizeof(int32_t) * (plen + 1)) : NULL;
        char err[256] = "out of memory";
        ob_status st = ids ? ob_tokenize_ex(m, text, plen, ids, (int)plen + 1, &n_prompt, err, sizeof err) : OB_ERR_NOMEM;
        if (st) {
            free(ids);
            free(text);
            return fail("prompt: %s", err);
        }
    }
    if (n_prompt < 1) {
        free(ids);
        free(text);
        return fail("the prompt is empty: generation needs at least one token");
    }
    int n_ctx = ob_session_n_ctx(s);
    if (n_prompt > n_ctx) { /* the new tokens may go past the context: ob_session_decode slides */
        free(ids);
        free(text);
        return fail("the prompt (%d tokens) is longer than the context of %d tokens (the prompt itself must fit)",
                    n_prompt, n_ctx);
    }
    if (text) {
        fwrite(text, 1, plen, stdout);
        fflush(stdout);
        free(text);
    }
    ob_status st = ob_session_set_sampler(s, &o->sp);
    double t0 = now_s(), t1 = t0, t2 = t0;
    int made = 0;
    if (!st && o->n > 0) {
        st = ob_session_eval(s, ids, n_prompt, NULL, 0); /* prefill */
        t1 = now_s();
        for (int i = 0; !st; i++) {
            int32_t tok;
            st = ob_session_sample(s, &tok);
            if (st) break;
            const uint8_t *b;
            size_t len;
            made++;
            if (!o->sp.ignore_eos && ob_token_is_eos(m, tok)) break; /* counted, not printed */
            ob_token_bytes(m, tok, &b, &len);
            emit_token(NULL, tok, b, len);
            if (made == o->n || interrupted) break;
            st = ob_session_decode(s, tok); /* decode, sliding past the context */
        }
        t2 = now_s();
    }
    free(ids);
    if (st) return fail("%s", ob_session_error(s));
    if (interrupted) {
        fail("interrupted after %d new tokens", made);
        return 130;
    }
    double prefill = t1 - t0, decode = t2 - t1, total = t2 - t0;
    fprintf(stderr, "\n%d prompt + %d new tokens in %.2fs (%.1f tokens/s)\n", n_prompt, made, total,
            made / (total > 1e-9 ? total : 1e-9));
    if (o->bench) {
        double pf = n_prompt / (prefill > 1e-9 ? prefill : 1e-9);
        /* every decode step but the last runs the model; count those forwards */
        int steps = made > 1 ? made - 1 : 0;
        double dc = steps / (decode > 1e-9 ? decode : 1e-9);
        fprintf(stderr, "load: %.2f ms (open the model, create the session)\n", load_s * 1e3);
        fprintf(stderr, "prefill: %d tokens in %.2f ms: %.1f tok/s, %.3f ms/token\n", n_prompt, prefill * 1e3, pf,
                prefill * 1e3 / n_prompt);
        fprintf(stderr, "decode: %d tokens in %.2f ms: %.1f tok/s, %.3f ms/token\n", steps, decode * 1e3, dc,
                steps ? decode * 1e3 / steps : 0.0);
        fprintf(stderr, "isa %s, kv %s, context %d, ternary weights %s\n", ob_session_isa(s), o->kv_f16 ? "f16" : "f32", n_ctx,
                info.repacked_bytes ? "repacked to T2X at load" : "read in place from the file");
        fprintf(stderr, "bench: prefill_tok_s=%.1f decode_tok_s=%.1f threads=%d\n", pf, dc, o->threads);
    }
    return 0;
}

int main(int argc, char **argv) {
    options o;
    if (parse_args(argc, argv, &o)) return 1;
    catch_sigint();
    ob_model *m;
    char err[512];
    double t0 = now_s();
    ob_status st = ob_model_open(&m, o.model, err, sizeof err);
    if (st) return fail("%s", err);
    ob_session_params sp = ob_session_params_default();
    sp.n_ctx = o.ctx;
    sp.n_threads = o.threads;
    sp.kv_type = o.kv_f16 ? OB_KV_F16 : OB_KV_F32;
    sp.isa = o.isa;
    if (o.batch) sp.n_batch = o.batch;
    sp.max_memory = o.max_memory;
    ob_session *s;
    st = ob_session_create(&s, m, &sp, NULL, 0, err, sizeof err);
    if (st) {
        ob_model_free(m);
        return fail("%s", err);
    }
    double load_s = now_s() - t0;
    int rc = o.ppl_file ? run_ppl(m, s, &o) : run_generate(m, s, &o, load_s);
    ob_session_free(s);
    ob_model_free(m);
    return rc;
}
