/* test_model.c - loader, sessions and generation on tests/data/tiny.1bit (from gen_tiny.py):
 * caller arenas, bit-identical results for any batch size / thread count, clean errors for bad
 * requests, and a corruption fuzz that must never crash (run under ASan by make test-asan). */
#if !defined(_GNU_SOURCE)
#define _GNU_SOURCE 1 /* setenv */
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/internal.h"
#include "check.h"


#define MODEL_PATH "tests/data/tiny.1bit"

static uint32_t rng_state = 7;
static uint32_t rnd(void) {
    rng_state = rng_state * 1664525u + 1013904223u;
    return rng_state >> 8;
}

static void *aligned64(size_t n, void **raw) {
    *raw = malloc(n + 64);
    return (void *)(((uintptr_t)*raw + 63) & ~(uintptr_t)63);
}

static uint8_t *read_model(size_t *size, void **raw) {
    FILE *f = fopen(MODEL_PATH, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *size = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = (uint8_t *)aligned64(*size, raw);
    if (fread(p, 1, *size, f) != *size) p = NULL;
    fclose(f);
    return p;
}

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void fix_crcs(uint8_t *d, size_t size) {
    put_u32(d + 56, ob_crc32(0, d + 64, size - 64));
    put_u32(d + 60, ob_crc32(0, d, 60));
}

static int count_tokens(void *user, int32_t token, const uint8_t *bytes, size_t len) {
    (void)token;
    (void)bytes;
    (void)len;
    return ++*(int *)user >= 3; /* stop after the third */
}

static void test_sessions(ob_model *m) {
    ob_model_info info;
    CHECK(ob_model_get_info(m, &info) == OB_OK && info.vocab_size > 10 && info.qk_norm == 1, "info");
    int V = info.vocab_size, T = 20;
    int32_t toks[20];
    for (int i = 0; i < T; i++) toks[i] = (int32_t)(rnd() % (uint32_t)V);
    float *a = (float *)malloc(sizeof(float) * (size_t)V * T), *b = (float *)malloc(sizeof(float) * (size_t)V * T);
    char err[256];
    ob_session *s1, *s2;
    ob_session_params p = ob_session_params_default();
    CHECK(p.kv_type == OB_KV_F16, "the default KV-cache is f16");
    p.n_batch = 64;
    p.kv_type = OB_KV_F32;
    CHECK(ob_session_create(&s1, m, &p, NULL, 0, err, sizeof err) == OB_OK, "session: %s", err);
    p.n_batch = 1;
    p.n_threads = 3;
    CHECK(ob_session_create(&s2, m, &p, NULL, 0, err, sizeof err) == OB_OK, "session: %s", err);
    CHECK(ob_session_eval(s1, toks, T, a, 1) == OB_OK, "eval: %s", ob_session_error(s1));
    CHECK(ob_session_eval(s2, toks, T, b, 1) == OB_OK, "eval: %s", ob_session_error(s2));
    CHECK(memcmp(a, b, sizeof(float) * (size_t)V * T) == 0, "prefill x 1 thread != decode x 3 threads");
    CHECK(memcmp(ob_session_logits(s1), a + (size_t)(T - 1) * V, sizeof(float) * (size_t)V) == 0, "last logits");
    int nonzero = 0;
    for (int i = 0; i < V * T; i++) nonzero += a[i] != 0.0f;
    CHECK(nonzero > V * T / 2, "logits are mostly zero");

    /* context: 20 + 29 > 48 fails and evaluates nothing */
    int32_t many[29] = {0};
    CHECK(ob_session_eval(s1, many, 29, NULL, 0) == OB_ERR_CONTEXT_FULL, "overrun accepted");
    CHECK(ob_session_pos(s1) == T, "a failed eval moved the position");
    CHECK(strstr(ob_session_error(s1), "context") != NULL, "message: %s", ob_session_error(s1));
    int32_t badtok = V;
    CHECK(ob_session_eval(s1, &badtok, 1, NULL, 0) == OB_ERR_TOKEN, "bad token accepted");

    /* generation: exact count, callback stop, context check before any work */
    ob_session_reset(s1);
    ob_sampler_params sp = ob_sampler_params_default();
    sp.seed = 5;
    int32_t out1[10], out2[10];
    int n1 = 0, n2 = 0;
    CHECK(ob_generate(s1, toks, 5, 10, &sp, NULL, NULL, out1, &n1) == OB_OK && n1 == 10, "generate");
    ob_session_reset(s2);
    CHECK(ob_generate(s2, many, 29, 5, &sp, NULL, NULL, out2, &n2) == OB_OK && n2 == 5, "generate");
    CHECK(ob_generate(s2, toks, 20, 1, &sp, NULL, NULL, out2, &n2) == OB_ERR_CONTEXT_FULL && n2 == 0,
          "a prompt past the context accepted");
    CHECK(ob_session_pos(s2) == 33, "a refused prompt moved the position");
    CHECK(strstr(ob_session_error(s2), "prompt") != NULL, "message: %s", ob_session_error(s2));

    /* the sliding window (docs/SAMPLING.md): 150 greedy tokens on a 48-token context equal a
       from-scratch prefill of the window that sits in the cache, and the same across batch/threads */
    {
        enum { NP = 5, NN = 150, CTX = 48, KEEP = CTX / 2 };
        int32_t seq[NP + NN], got1[NN], got2[NN];
        int g1 = 0, g2 = 0, start = 0, len = NP;
        ob_sampler_params greedy = ob_sampler_params_default();
        greedy.temperature = 0.0f;
        ob_session_reset(s1);
        ob_session_reset(s2);
        CHECK(ob_generate(s1, toks, NP, NN, &greedy, NULL, NULL, got1, &g1) == OB_OK && g1 == NN, "slide generate");
        CHECK(ob_generate(s2, toks, NP, NN, &greedy, NULL, NULL, got2, &g2) == OB_OK && g2 == NN, "slide generate 2");
        CHECK(memcmp(got1, got2, sizeof got1) == 0, "sliding generation differs across batch sizes / threads");
        memcpy(seq, toks, sizeof(int32_t) * NP);
        for (int i = 0; i < NN; i++) { /* window = seq[start .. start + len) at positions 0.. */
            ob_session_reset(s2);
            CHECK(ob_session_eval(s2, seq + start, len, NULL, 0) == OB_OK, "window eval");
            const float *lg = ob_session_logits(s2);
            int32_t best = 0;
            for (int v = 1; v < V; v++)
                if (lg[v] > lg[best]) best = v;
            CHECK(best == got1[i], "token %d: %d != %d after a slide", i, (int)got1[i], (int)best);
            seq[NP + i] = best;
            if (len == CTX) {
                start = NP + i + 1 - KEEP;
                len = KEEP;
            } else {
                len++;
            }
        }
    }
    ob_session_reset(s2);
    CHECK(ob_generate(s2, toks, 5, 10, &sp, NULL, NULL, out2, &n2) == OB_OK, "generate 2");
    CHECK(memcmp(out1, out2, sizeof out1) == 0, "seeded generation differs across sessions");
    ob_session_reset(s2);
    int seen = 0;
    CHECK(ob_generate(s2, toks, 5, 10, &sp, count_tokens, &seen, NULL, &n2) == OB_ERR_STOPPED && seen == 3 && n2 == 3,
          "callback stop");

    /* f16 KV-cache: close to f32 */
    ob_session *s3;
    p.kv_type = OB_KV_F16;
    p.n_threads = 1;
    p.n_ctx = 24;
    CHECK(ob_session_create(&s3, m, &p, NULL, 0, err, sizeof err) == OB_OK, "f16 session: %s", err);
    CHECK(ob_session_eval(s3, toks, T, b, 1) == OB_OK, "f16 eval");
    float maxdiff = 0, maxabs = 0;
    for (int i = 0; i < V * T; i++) {
        float dlt = a[i] > b[i] ? a[i] - b[i] : b[i] - a[i], ab = a[i] > 0 ? a[i] : -a[i];
        maxdiff = dlt > maxdiff ? dlt : maxdiff;
        maxabs = ab > maxabs ? ab : maxabs;
    }
    CHECK(maxdiff <= 0.05f * maxabs, "f16 cache too far from f32: %g of %g", maxdiff, maxabs);
    p.n_ctx = 49;
    ob_session *bad;
    CHECK(ob_session_create(&bad, m, &p, NULL, 0, err, sizeof err) == OB_ERR_INVALID_ARG, "n_ctx > max_seq_len");
    p.n_ctx = 0;
    p.isa = "vax";
    CHECK(ob_session_create(&bad, m, &p, NULL, 0, err, sizeof err) == OB_ERR_ISA, "unknown ISA accepted");
    ob_session_free(s1);
    ob_session_free(s2);
    ob_session_free(s3);
    free(a);
    free(b);
}

static void test_tokenizer(ob_model *m) {
    const char *text = "Speak, speak.\nAll:";
    int32_t ids[64];
    int n = 0;
    CHECK(ob_tokenize(m, text, strlen(text), ids, 64, &n) == OB_OK && n == (int)strlen(text), "char encode");
    char back[64];
    size_t len = 0;
    CHECK(ob_detokenize(m, ids, n, back, sizeof back, &len) == OB_OK && len == strlen(text) &&
              memcmp(back, text, len) == 0,
          "round trip");
    CHECK(ob_detokenize(m, ids, n, back, 3, &len) == OB_ERR_BUFFER && len == strlen(text), "small decode buffer");
    CHECK(ob_tokenize(m, text, strlen(text), ids, 4, &n) == OB_ERR_BUFFER, "small encode buffer");
    CHECK(ob_tokenize(m, "Zebra", 5, ids, 64, &n) == OB_ERR_TOKEN && strstr(ob_model_error(m), "U+005A"),
          "unknown char: %s", ob_model_error(m));
    CHECK(ob_tokenize(m, "\xff", 1, ids, 64, &n) == OB_ERR_TOKEN, "invalid UTF-8 accepted");
}

static void test_arena(const uint8_t *data, size_t size) {
    size_t mb = 0, sb = 0;
    ob_session_params p = ob_session_params_default();
    p.n_ctx = 32;
    CHECK(ob_memory_required(data, size, &p, &mb, &sb) == OB_OK && mb > 0 && sb > 0, "memory_required");
    void *raw1, *raw2;
    uint8_t *ma = (uint8_t *)aligned64(mb, &raw1), *sa = (uint8_t *)aligned64(sb, &raw2);
    ob_model *m;
    ob_session *s;
    char err[256];
    CHECK(ob_model_open_memory(&m, data, size, ma, mb - 64 - 1, err, sizeof err) == OB_ERR_NOMEM, "small arena");
    CHECK(ob_model_open_memory(&m, data, size, ma + 1, mb, err, sizeof err) == OB_OK, "model arena: %s", err);
    CHECK(ob_session_create(&s, m, &p, sa + 3, sb - 3, err, sizeof err) == OB_ERR_NOMEM, "small session arena");
    CHECK(ob_session_create(&s, m, &p, sa + 3, sb, err, sizeof err) == OB_OK, "session arena: %s", err);
    int32_t prompt[3] = {1, 2, 3}, out[20];
    int n = 0;
    ob_sampler_params sp = ob_sampler_params_default();
    sp.temperature = 0.0f;
    CHECK(ob_generate(s, prompt, 3, 20, &sp, NULL, NULL, out, &n) == OB_OK && n == 20, "arena generate");
    ob_session_free(s);
    ob_model_free(m);
    free(raw1);
    free(raw2);
}

/* The KV-cache is not zeroed (session.c, layout): every position is written before attention
 * reads it.  A session whose arena starts as all-ones bytes (NaN as f32 and as f16) must give the
 * bits of a fresh session: every logit of a prefill, then a greedy run that slides past the
 * context twice; then the same after the cache was filled with another sequence and reset (stale
 * rows instead of NaNs).  (A NaN read is not always a NaN logit: int8 activation quantization can
 * turn it into a finite code, so the comparison of the bits is what decides.) */
static void test_dirty_arena(const uint8_t *data, size_t size) {
    enum { CTX = 24, T = 20, NN = 60 };
    ob_model *m;
    char err[256];
    if (ob_model_open_memory(&m, data, size, NULL, 0, err, sizeof err) != OB_OK) {
        CHECK(0, "open: %s", err);
        return;
    }
    ob_model_info info;
    ob_model_get_info(m, &info);
    int V = info.vocab_size;
    int32_t toks[T];
    for (int i = 0; i < T; i++) toks[i] = (int32_t)(rnd() % (uint32_t)V);
    float *a = (float *)malloc(sizeof(float) * (size_t)V * T), *b = (float *)malloc(sizeof(float) * (size_t)V * T);
    ob_sampler_params greedy = ob_sampler_params_default();
    greedy.temperature = 0.0f;
    for (int kv = 0; kv < 2; kv++) {
        ob_session_params p = ob_session_params_default();
        p.n_ctx = CTX;
        p.n_batch = 7;
        p.kv_type = kv ? OB_KV_F16 : OB_KV_F32;
        size_t mb = 0, sb = 0;
        CHECK(ob_memory_required(data, size, &p, &mb, &sb) == OB_OK, "memory_required");
        void *raw;
        uint8_t *arena = (uint8_t *)aligned64(sb, &raw);
        memset(arena, 0xff, sb);
        ob_session *dirty = NULL, *clean = NULL;
        ob_status st = ob_session_create(&dirty, m, &p, arena, sb, err, sizeof err);
        if (st == OB_OK) st = ob_session_create(&clean, m, &p, NULL, 0, err, sizeof err);
        if (st != OB_OK) {
            CHECK(0, "session: %s", err);
            ob_session_free(dirty);
            free(raw);
            break;
        }
        for (int round = 0; round < 2; round++) {
            if (round == 1) { /* fill the whole cache with rows of another sequence: stale, not NaN */
                int32_t other[CTX];
                for (int i = 0; i < CTX; i++) other[i] = (int32_t)((toks[i % T] + 1 + i) % V);
                ob_session_reset(dirty);
                CHECK(ob_session_eval(dirty, other, CTX, NULL, 0) == OB_OK, "other eval");
            }
            ob_session_reset(dirty);
            ob_session_reset(clean);
            CHECK(ob_session_eval(dirty, toks, T, a, 1) == OB_OK && ob_session_eval(clean, toks, T, b, 1) == OB_OK,
                  "eval");
            int finite = 1;
            for (int i = 0; i < V * T; i++) finite &= a[i] == a[i] && a[i] - a[i] == 0.0f;
            CHECK(finite, "kv %s round %d: a logit is NaN or Inf: the cache was read before it was written",
                  kv ? "f16" : "f32", round);
            CHECK(memcmp(a, b, sizeof(float) * (size_t)V * T) == 0, "kv %s round %d: prefill logits differ",
                  kv ? "f16" : "f32", round);
            int32_t o1[NN], o2[NN];
            int n1 = 0, n2 = 0;
            ob_session_reset(dirty);
            ob_session_reset(clean);
            CHECK(ob_generate(dirty, toks, 3, NN, &greedy, NULL, NULL, o1, &n1) == OB_OK && n1 == NN, "generate");
            CHECK(ob_generate(clean, toks, 3, NN, &greedy, NULL, NULL, o2, &n2) == OB_OK && n2 == NN, "generate");
            CHECK(memcmp(o1, o2, sizeof o1) == 0, "kv %s round %d: greedy tokens differ", kv ? "f16" : "f32", round);
        }
        ob_session_free(dirty);
        ob_session_free(clean);
        free(raw);
    }
    free(a);
    free(b);
    ob_model_free(m);
}

static void fuzz(const uint8_t *data, size_t size) {
    void *raw;
    uint8_t *d = (uint8_t *)aligned64(size, &raw);
    uint64_t data_offset = ob_rd_u64(data + 48);
    int opened = 0, trials = 400;
    for (int t = 0; t < trials; t++) {
        memcpy(d, data, size);
        size_t len = size;
        if (t % 10 == 0) len = rnd() % size; /* truncation */
        int flips = 1 + (int)(rnd() % 4);
        for (int k = 0; k < flips; k++) d[64 + rnd() % (data_offset - 64)] ^= (uint8_t)(1u << (rnd() % 8));
        if (t % 2 && len >= 64) fix_crcs(d, len); /* get past the checksums half of the time */
        ob_model *m;
        char err[256];
        if (ob_model_open_memory(&m, d, len, NULL, 0, err, sizeof err) == OB_OK) {
            opened++;
            ob_session *s;
            ob_session_params p = ob_session_params_default();
            p.n_ctx = 8;
            if (ob_session_create(&s, m, &p, NULL, 0, err, sizeof err) == OB_OK) {
                int32_t tok[2] = {1, 2}, ids[16];
                int n;
                ob_session_eval(s, tok, 2, NULL, 0);
                ob_tokenize(m, "All:", 4, ids, 16, &n);
                ob_session_free(s);
            }
            ob_model_free(m);
        } else {
            CHECK(err[0] != 0, "an error without a message");
        }
    }
    printf("fuzz: %d of %d corrupted files still opened\n", opened, trials);
    free(raw);
}

/* All 20 positions' logits of one prompt, prefill of m tokens at a time over n_threads. */
static void eval_all(const ob_model *m, const int32_t *toks, int T, int n_batch, int n_threads, float *out) {
    char err[256];
    ob_session *s;
    ob_session_params p = ob_session_params_default();
    p.n_batch = n_batch;
    p.n_threads = n_threads;
    CHECK(ob_session_create(&s, m, &p, NULL, 0, err, sizeof err) == OB_OK, "session: %s", err);
    if (!s) return;
    CHECK(ob_session_eval(s, toks, T, out, 1) == OB_OK, "eval: %s", ob_session_error(s));
    ob_session_free(s);
}

/* The load-time T2X repack (model.c, kernels.h) changes where the weights sit, never a result: the
 * repacked model, the file's layout (ONEBIT_REPACK=0) and the in-memory open (never repacked) give
 * the same logits bit for bit, prefill and decode, 1 and 2 threads. */
static void test_repack(const uint8_t *data, size_t size) {
    ob_model *mr = NULL, *mf = NULL, *mm = NULL;
    char err[256];
    CHECK(ob_model_open(&mr, MODEL_PATH, err, sizeof err) == OB_OK, "open: %s", err);
    setenv("ONEBIT_REPACK", "0", 1);
    CHECK(ob_model_open(&mf, MODEL_PATH, err, sizeof err) == OB_OK, "open: %s", err);
    unsetenv("ONEBIT_REPACK");
    CHECK(ob_model_open_memory(&mm, data, size, NULL, 0, err, sizeof err) == OB_OK, "open: %s", err);
    if (!mr || !mf || !mm) return;
    int t2 = mr->layers[0].q_proj.fmt == OB_WFMT_T2X || mf->layers[0].q_proj.fmt == OB_WFMT_T2;
    CHECK(t2, "tiny.1bit should be a T2 model");
    CHECK((mr->repacked != NULL) == ob_t2x_wanted() && mf->repacked == NULL && mm->repacked == NULL,
          "repacked where T2X pays (%d), and only there", ob_t2x_wanted());
    if (mr->repacked) {
        const ob_linear *l = &mr->layers[0].down_proj;
        CHECK(l->fmt == OB_WFMT_T2X && (const uint8_t *)l->w >= (const uint8_t *)mr->repacked &&
                  (const uint8_t *)l->w < (const uint8_t *)mr->repacked + mr->repacked_size,
              "down_proj moved into the repacked mapping");
    }
    enum { T = 20 };
    int V = mr->cfg.vocab_size;
    int32_t toks[T];
    for (int i = 0; i < T; i++) toks[i] = (int32_t)(rnd() % (uint32_t)V);
    float *ref = (float *)malloc(sizeof(float) * (size_t)V * T), *got = (float *)malloc(sizeof(float) * (size_t)V * T);
    eval_all(mm, toks, T, 64, 1, ref);
    const ob_model *ms[2] = {mr, mf};
    for (int i = 0; i < 2; i++)
        for (int nt = 1; nt <= 2; nt++)
            for (int nb = 1; nb <= 64; nb += 63) {
                memset(got, 0, sizeof(float) * (size_t)V * T);
                eval_all(ms[i], toks, T, nb, nt, got);
                CHECK(memcmp(ref, got, sizeof(float) * (size_t)V * T) == 0, "%s model, %d thread(s), batch %d: logits differ",
                      i ? "file-layout" : "repacked", nt, nb);
            }
    free(ref);
    free(got);
    ob_model_free(mr);
    ob_model_free(mf);
    ob_model_free(mm);
}

int main(void) {
    void *raw;
    size_t size;
    uint8_t *data = read_model(&size, &raw);
    if (!data) {
        printf("FAIL: cannot read %s (run from runtime_c/)\n", MODEL_PATH);
        return 1;
    }
    ob_model *m;
    char err[256];
    CHECK(ob_model_open(&m, MODEL_PATH, err, sizeof err) == OB_OK, "open: %s", err);
    if (!failures) {
        test_sessions(m);
        test_tokenizer(m);
        ob_model_free(m);
    }
    test_arena(data, size);
    test_dirty_arena(data, size);
    test_repack(data, size);
    CHECK(ob_model_open(&m, "tests/data/missing.1bit", err, sizeof err) == OB_ERR_IO && strstr(err, "missing.1bit"),
          "missing file: %s", err);
    CHECK(ob_model_open_memory(&m, data, 63, NULL, 0, err, sizeof err) == OB_ERR_FORMAT && strstr(err, "truncated"),
          "short: %s", err);
    for (int s = 0; s <= OB_ERR_STOPPED; s++) CHECK(ob_strerror((ob_status)s)[0] != 0, "strerror %d", s);
    fuzz(data, size);
    free(raw);
    if (failures) {
        printf("%d failure(s)\n", failures);
        return 1;
    }
    printf("model: ok\n");
    return 0;
}
