/* test_json.c - the strict metadata JSON reader: accepts RFC 8259, rejects the rest, never
 * reads out of bounds (run under ASan by `make test-asan`). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/internal.h"
#include "check.h"


static int valid(const char *s) {
    size_t n = strlen(s);
    char *copy = (char *)malloc(n ? n : 1); /* exact size, so ASan sees any over-read */
    memcpy(copy, s, n);
    char err[128];
    int r = ob_json_validate(copy, n, err, sizeof err) == 0;
    free(copy);
    return r;
}

static uint32_t rng_state = 12345;
static uint32_t rnd(void) {
    rng_state = rng_state * 1664525u + 1013904223u;
    return rng_state >> 8;
}

int main(void) {
    const char *good[] = {"{}", "[]", "0", "-0.5e+10", "\"a\\u00e9\\n\\\"\"", "true", " null ",
                          "{\"a\":[1,2,{\"b\":false}],\"c\":\"\\ud83d\\ude00\"}", "\"caf\xc3\xa9\"", "[[[[1]]]]"};
    const char *bad[] = {"", "{", "{\"a\":}", "[1,]", "{\"a\":1,}", "01", "1.", ".5", "-", "1e", "\"abc", "tru",
                         "nul", "[1 2]", "{\"a\" 1}", "{1:2}", "\"\\x\"", "\"\\u12g4\"", "\"a\x01\"", "\"\xff\"",
                         "\"\xc0\xaf\"", "\"\xed\xa0\x80\"", "{} {}", "NaN", "[1]x", "'a'"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) CHECK(valid(good[i]), "rejected %s", good[i]);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) CHECK(!valid(bad[i]), "accepted %s", bad[i]);

    char deep[200];
    memset(deep, '[', 100);
    memset(deep + 100, ']', 100);
    char *d = (char *)malloc(200);
    memcpy(d, deep, 200);
    CHECK(ob_json_validate(d, 200, NULL, 0) != 0, "accepted nesting depth 100");
    CHECK(ob_json_validate(d + 90, 20, NULL, 0) == 0, "rejected nesting depth 10");
    free(d);

    /* lookups */
    const char *doc = "{\"config\": {\"dim\": 128, \"eps\": 1e-05, \"ok\": true, \"name\": \"r\\u00e9\"}, \"x\": [1]}";
    CHECK(ob_json_validate(doc, strlen(doc), NULL, 0) == 0, "doc invalid");
    ob_json root = ob_json_root(doc, strlen(doc)), cfg, v;
    CHECK(ob_json_get(root, "config", &cfg) == 0 && ob_json_is_object(cfg), "config missing");
    long long dim = 0;
    CHECK(ob_json_get(cfg, "dim", &v) == 0 && ob_json_int(v, &dim) == 0 && dim == 128, "dim");
    double eps = 0;
    CHECK(ob_json_get(cfg, "eps", &v) == 0 && ob_json_number(v, &eps) == 0 && eps == 1e-05, "eps");
    CHECK(ob_json_get(cfg, "eps", &v) == 0 && ob_json_int(v, &dim) != 0, "eps read as an int");
    int ok = 0;
    CHECK(ob_json_get(cfg, "ok", &v) == 0 && ob_json_bool(v, &ok) == 0 && ok == 1, "ok");
    CHECK(ob_json_get(cfg, "name", &v) == 0 && ob_json_string_eq(v, "r\xc3\xa9"), "name");
    CHECK(ob_json_get(cfg, "missing", &v) != 0, "found a missing key");
    CHECK(ob_json_get(root, "dim", &v) != 0, "found a nested key at the top");

    /* fuzz: mutations of a valid document and random bytes; only memory safety is checked */
    size_t n = strlen(doc);
    char *buf = (char *)malloc(n);
    int accepted = 0;
    for (int trial = 0; trial < 20000; trial++) {
        memcpy(buf, doc, n);
        size_t len = trial % 3 == 0 ? rnd() % (n + 1) : n;
        for (int k = 0; k < 1 + (int)(rnd() % 4); k++) buf[rnd() % n] = trial % 5 ? "{}[]\",:\\0e.-u"[rnd() % 14] : (char)rnd();
        if (ob_json_validate(buf, len, NULL, 0) == 0) {
            accepted++;
            ob_json r = ob_json_root(buf, len), c, x;
            size_t cur = 0;
            ob_json key, val;
            while (ob_json_next(r, &cur, &key, &val) == 0) {
                char s[16];
                ob_json_string(key, s, sizeof s, NULL);
            }
            if (ob_json_get(r, "config", &c) == 0) ob_json_get(c, "dim", &x);
        }
    }
    free(buf);
    CHECK(accepted > 0, "fuzzing never produced a valid document");
    if (failures) {
        printf("%d failure(s)\n", failures);
        return 1;
    }
    printf("json: ok (%d fuzzed documents still valid)\n", accepted);
    return 0;
}
