/* fuzz_json.c - the metadata JSON reader: validation, then (for valid texts) every lookup and
 * conversion the loader uses, over every member of every object it can reach. */
#include "fuzz_common.h"

static void walk(ob_json v, int depth) {
    double d;
    long long i;
    int b;
    char buf[64];
    size_t len;
    ob_json_number(v, &d);
    ob_json_int(v, &i);
    ob_json_bool(v, &b);
    ob_json_string(v, buf, sizeof buf, &len);
    ob_json_string_eq(v, "config");
    if (!ob_json_is_object(v) || depth > 40) return;
    ob_json k, val, got;
    size_t cur = 0;
    while (ob_json_next(v, &cur, &k, &val) == 0) {
        walk(k, depth + 1);
        walk(val, depth + 1);
    }
    ob_json_get(v, "config", &got);
    ob_json_get(v, "tokenizer", &got);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* an exact-size copy, so that ASan sees any read past the end */
    char *text = (char *)malloc(size ? size : 1);
    if (!text) return 0;
    memcpy(text, data, size);
    char err[256] = "";
    if (ob_json_validate(text, size, err, sizeof err) == 0) walk(ob_json_root(text, size), 0);
    else FUZZ_ASSERT(err[0] != 0);
    free(text);
    return 0;
}
