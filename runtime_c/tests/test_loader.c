/* test_loader.c - the loader's resource bounds (issue "Reliability"): directory checks in n log n,
 * dimensions range-checked before any cast, sizes that cannot wrap (also on 32-bit targets), the
 * default context, and the memory budget refusing before it allocates. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "fixture.h"

static double now_s(void) { return (double)clock() / CLOCKS_PER_SEC; }

static ob_status open_fx(fx *f, ob_model **m, char *err, size_t es) {
    size_t size;
    void *raw;
    uint8_t *d = fx_write(f, &size, &raw);
    ob_status st = ob_model_open_memory(m, d, size, NULL, 0, err, es);
    if (st == OB_OK) ob_model_free(*m);
    free(raw);
    return st;
}

/* 65,536 records (the format's limit) out of offset order: the old pairwise checks took minutes. */
static void test_big_directory(void) {
    fx_config c = fx_default_config();
    fx f;
    fx_init(&f, &c);
    fx_model(&f);
    char name[64], err[256];
    int base = f.n;
    for (int i = base; i < 65536; i++) {
        snprintf(name, sizeof name, "extra.%d", i);
        fx_add(&f, name, OB_DT_U8, 1, 0, NULL);
    }
    f.reverse = 1;
    size_t size;
    void *raw;
    uint8_t *d = fx_write(&f, &size, &raw);
    ob_model *m;
    double t0 = now_s();
    ob_status st = ob_model_open_memory(&m, d, size, NULL, 0, err, sizeof err);
    double dt = now_s() - t0;
    CHECK(st == OB_OK, "65536 records: %s", err);
    if (st == OB_OK) ob_model_free(m);
    /* A bound about 100x above the time it takes under ASan (0.1 s), so that a loaded CI machine
     * or an emulator cannot make it flake; the quadratic checks it guards against took minutes. */
    CHECK(dt < 10.0, "65536 records took %.1f s to check", dt);
    printf("65536-record directory opened in %.3f s (CPU)\n", dt);

    /* a repeated name far from its twin, and two tensors sharing bytes, are still found */
    snprintf(f.t[60000].name, sizeof f.t[60000].name, "extra.%d", 100);
    CHECK(open_fx(&f, &m, err, sizeof err) == OB_ERR_FORMAT && strstr(err, "extra.100") && strstr(err, "twice"),
          "duplicate: %s", err);
    snprintf(f.t[60000].name, sizeof f.t[60000].name, "extra.%d", 60000);
    f.t[50000].fixed_offset = 1;
    f.t[50000].offset = f.t[base + 7].offset; /* written before: fx_write kept the offsets */
    CHECK(open_fx(&f, &m, err, sizeof err) == OB_ERR_FORMAT && strstr(err, "overlap"), "overlap: %s", err);
    fx_free(&f);
    free(raw);
}

/* Dimensions near and past 2^31 in the metadata and in tensor records. */
static void test_huge_dimensions(void) {
    char err[256];
    ob_model *m;
    fx f;
    fx_config c = fx_default_config();

    /* the metadata: every config integer is range-checked before it becomes an int */
    c.dim = 2147483647;
    fx_init(&f, &c);
    fx_add(&f, "embed.weight", OB_DT_F32, 1, 1, NULL);
    CHECK(open_fx(&f, &m, err, sizeof err) == OB_ERR_FORMAT && strstr(err, "config.dim must be an integer in [1, 65536]") &&
              strstr(err, "2147483647"),
          "dim 2^31-1: %s", err);
    fx_free(&f);

    /* a record whose packed row is 2^31 weights: its size is computed in 64 bits, never as an int */
    static const uint64_t dims[] = {(uint64_t)1 << 31, ((uint64_t)1 << 31) - 1, ((uint64_t)1 << 32) - 1,
                                    (uint64_t)1 << 32, (uint64_t)1 << 40, ~(uint64_t)0};
    static const uint32_t dtypes[] = {OB_DT_T2, OB_DT_T16, OB_DT_B1, OB_DT_F32, OB_DT_U8};
    for (size_t k = 0; k < sizeof dims / sizeof dims[0]; k++)
        for (size_t j = 0; j < sizeof dtypes / sizeof dtypes[0]; j++) {
            c = fx_default_config();
            fx_init(&f, &c);
            fx_model(&f);
            fx_tensor *t = fx_add(&f, "huge", dtypes[j], 2, 1, NULL);
            t->shape[1] = dims[k];
            t->size = dims[k] < ((uint64_t)1 << 32) ? fx_bytes(dtypes[j], 2, dims[k]) : 64;
            t->fixed_offset = 1;
            t->offset = 0;
            ob_status st = open_fx(&f, &m, err, sizeof err);
            CHECK(st == OB_ERR_FORMAT && strstr(err, "'huge'"), "dim %llu dtype %u: %d %s",
                  (unsigned long long)dims[k], dtypes[j], st, err);
            if (dims[k] >= ((uint64_t)1 << 32))
                CHECK(strstr(err, "[1, 2^32)") != NULL, "dim %llu: %s", (unsigned long long)dims[k], err);
            fx_free(&f);
        }
    /* element counts past 2^40 are refused even when every dimension is in range */
    c = fx_default_config();
    fx_init(&f, &c);
    fx_model(&f);
    fx_tensor *t = fx_add(&f, "huge", OB_DT_F32, 1, 1, NULL);
    t->n_dims = 3;
    t->shape[0] = t->shape[1] = t->shape[2] = (uint64_t)1 << 20;
    CHECK(open_fx(&f, &m, err, sizeof err) == OB_ERR_FORMAT && strstr(err, "2^40"), "2^60 elements: %s", err);
    fx_free(&f);
}

/* A file may claim a 2^20-token context; the default session takes 4096, and a budget refuses
 * what would not fit before allocating anything. */
static void test_context_and_budget(void) {
    fx_config c = fx_default_config();
    c.max_seq_len = 1 << 20;
    fx f;
    fx_init(&f, &c);
    fx_model(&f);
    size_t size;
    void *raw;
    uint8_t *d = fx_write(&f, &size, &raw);
    ob_model *m;
    ob_session *s;
    char err[256];
    CHECK(ob_model_open_memory(&m, d, size, NULL, 0, err, sizeof err) == OB_OK, "open: %s", err);
    ob_session_params p = ob_session_params_default();
    CHECK(ob_session_create(&s, m, &p, NULL, 0, err, sizeof err) == OB_OK && ob_session_n_ctx(s) == 4096,
          "default context: %s", err);
    if (!err[0]) {
        int32_t toks[3] = {0, 1, 2};
        CHECK(ob_session_eval(s, toks, 3, NULL, 0) == OB_OK, "eval: %s", ob_session_error(s));
        ob_session_free(s);
    }
    p.n_ctx = 1 << 20;
    p.max_memory = (uint64_t)64 << 20;
    CHECK(ob_session_create(&s, m, &p, NULL, 0, err, sizeof err) == OB_ERR_NOMEM && strstr(err, "needs") &&
              strstr(err, "budget of 64.0 MiB") && strstr(err, "1048576 tokens"),
          "budget: %s", err);
    size_t mb, sb;
    CHECK(ob_memory_required(d, size, &p, &mb, &sb) == OB_ERR_NOMEM, "memory_required over budget");
    p.max_memory = 0;
    CHECK(ob_memory_required(d, size, &p, &mb, &sb) == OB_OK && sb > (size_t)(1 << 20) * 2 * 16 * 4,
          "memory_required without budget");
    ob_model_free(m);
    fx_free(&f);
    free(raw);

    /* 1024 layers x 2^20 positions: a KV-cache of 2^39 bytes, which a 32-bit size_t cannot even
     * express; the size is refused (as too large or over the budget), never wrapped */
    c = fx_default_config();
    c.max_seq_len = 1 << 20;
    c.n_layers = 1024;
    c.n_heads = c.n_kv_heads = 1;
    c.dim = 64;
    fx_init(&f, &c);
    fx_model(&f);
    d = fx_write(&f, &size, &raw);
    CHECK(ob_model_open_memory(&m, d, size, NULL, 0, err, sizeof err) == OB_OK, "open 1024 layers: %s", err);
    p = ob_session_params_default();
    p.n_ctx = 1 << 20;
    p.max_memory = (uint64_t)1 << 38;
    ob_status st = ob_session_create(&s, m, &p, NULL, 0, err, sizeof err);
    if (sizeof(size_t) < 8)
        CHECK(st == OB_ERR_NOMEM && strstr(err, "more memory than this machine can address"), "32-bit: %s", err);
    else
        CHECK(st == OB_ERR_NOMEM && strstr(err, "budget of 256.0 GiB") && strstr(err, "KV-cache 256.0 GiB") &&
                  !strstr(err, "f16"), "64-bit, default f16 cache: %s", err);
    p.kv_type = OB_KV_F32; /* twice the bytes, and the hint that f16 would halve them */
    st = ob_session_create(&s, m, &p, NULL, 0, err, sizeof err);
    if (sizeof(size_t) < 8)
        CHECK(st == OB_ERR_NOMEM && strstr(err, "more memory than this machine can address"), "32-bit: %s", err);
    else
        CHECK(st == OB_ERR_NOMEM && strstr(err, "KV-cache 512.0 GiB") && strstr(err, "or use an f16 KV-cache"),
              "64-bit, f32 cache: %s", err);
    ob_model_free(m);
    fx_free(&f);
    free(raw);
}

/* Every pack and embedding dtype the fixture writer knows loads: keeps fixture.h honest. */
static void test_fixture_variants(void) {
    static const char *const packs[] = {"t2", "t1.6", "b1"}, *const embeds[] = {"f32", "f16", "i8"};
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            fx_config c = fx_default_config();
            c.pack = packs[i];
            c.embed = embeds[j];
            fx f;
            fx_init(&f, &c);
            fx_model(&f);
            ob_model *m;
            char err[256];
            CHECK(open_fx(&f, &m, err, sizeof err) == OB_OK, "%s/%s: %s", packs[i], embeds[j], err);
            fx_free(&f);
        }
}

int main(void) {
    test_fixture_variants();
    test_huge_dimensions();
    test_context_and_budget();
    test_big_directory();
    if (failures) {
        printf("%d failure(s)\n", failures);
        return 1;
    }
    printf("loader: ok\n");
    return 0;
}
