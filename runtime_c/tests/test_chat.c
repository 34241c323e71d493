/* test_chat.c - end-of-sequence ids from the metadata (ob_generate stops after one unless
 * ignore_eos) and ob_chat_prompt (the chat template's stored pieces, Python's str.strip when
 * chat_trim), on fixture models with zero weights: every logit is 0, so greedy picks token 0. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "fixture.h"

static ob_model *open_with(const char *extra, void **raw, char *err, size_t es, ob_status *st) {
    fx_config c = fx_default_config();
    c.tokenizer_extra = extra;
    fx f;
    fx_init(&f, &c);
    fx_model(&f);
    size_t size;
    uint8_t *d = fx_write(&f, &size, raw);
    fx_free(&f);
    ob_model *m = NULL;
    *st = ob_model_open_memory(&m, d, size, NULL, 0, err, es);
    return *st ? NULL : m;
}

static void test_eos(void) {
    char err[256];
    void *raw;
    ob_status st;
    ob_model *m = open_with(", \"eos_token_ids\": [2, 0]", &raw, err, sizeof err, &st);
    CHECK(m, "open: %s", err);
    if (!m) {
        free(raw);
        return;
    }
    ob_model_info info;
    ob_model_get_info(m, &info);
    CHECK(info.n_eos_tokens == 2 && info.eos_tokens[0] == 2 && info.eos_tokens[1] == 0, "info eos");
    CHECK(ob_token_is_eos(m, 0) && ob_token_is_eos(m, 2) && !ob_token_is_eos(m, 1) && !ob_token_is_eos(m, -1),
          "is_eos");
    ob_session_params sp = ob_session_params_default();
    ob_session *s;
    CHECK(ob_session_create(&s, m, &sp, NULL, 0, err, sizeof err) == OB_OK, "session: %s", err);
    ob_sampler_params p = ob_sampler_params_default();
    p.temperature = 0;
    int32_t prompt[2] = {1, 3}, out[8];
    int n = -1;
    CHECK(ob_generate(s, prompt, 2, 8, &p, NULL, NULL, out, &n) == OB_OK && n == 1 && out[0] == 0,
          "stops after the eos: n=%d", n);
    p.ignore_eos = 1;
    ob_session_reset(s);
    CHECK(ob_generate(s, prompt, 2, 8, &p, NULL, NULL, out, &n) == OB_OK && n == 8 && out[7] == 0,
          "ignore_eos: n=%d", n);
    ob_session_free(s);
    ob_model_free(m);
    free(raw);

    static const char *const bad[] = {", \"eos_token_ids\": 2", ", \"eos_token_ids\": [4]", ", \"eos_token_ids\": [-1]",
                                      ", \"eos_token_ids\": [\"a\"]", ", \"eos_token_ids\": [0,0,0,0,0,0,0,0,0]"};
    for (int i = 0; i < 5; i++) {
        m = open_with(bad[i], &raw, err, sizeof err, &st);
        CHECK(!m && st != OB_OK && strstr(err, "eos_token_ids"), "bad eos %d: %s", i, err);
        ob_model_free(m);
        free(raw);
    }
    m = open_with("", &raw, err, sizeof err, &st); /* a model trained by onebit: no eos, the full count */
    ob_model_get_info(m, &info);
    CHECK(m && info.n_eos_tokens == 0 && !ob_token_is_eos(m, 0), "no eos");
    ob_model_free(m);
    free(raw);
}

/* prompt of message under the pieces "<\u00e9>\n" + message + "\t</>" */
static int chat(const ob_model *m, const char *msg, size_t len, char *buf, size_t cap) {
    size_t need;
    char err[256];
    ob_status st = ob_chat_prompt(m, msg, len, buf, cap, &need, err, sizeof err);
    if (st) printf("  ob_chat_prompt: %s\n", err);
    return st == OB_OK && strlen(buf) == need;
}

static void test_chat_prompt(void) {
    char err[256], buf[256];
    void *raw;
    ob_status st;
    const char *pieces = ", \"chat_prefix\": \"<\\u00e9>\\n\", \"chat_suffix\": \"\\t</>\", \"chat_trim\": true";
    ob_model *m = open_with(pieces, &raw, err, sizeof err, &st);
    CHECK(m, "open: %s", err);
    if (!m) {
        free(raw);
        return;
    }
    CHECK(chat(m, "hi", 2, buf, sizeof buf) && !strcmp(buf, "<\xc3\xa9>\nhi\t</>"), "plain: %s", buf);
    /* Python's whitespace: ASCII, \x1c-\x1f, U+0085, U+00A0, U+2000.., U+3000; not U+200B */
    const char *msg = " \t\x1c\xc2\x85\xe3\x80\x80" "a b\xe2\x80\x8b\xc2\xa0\xe2\x80\x8a\n";
    CHECK(chat(m, msg, strlen(msg), buf, sizeof buf) && !strcmp(buf, "<\xc3\xa9>\na b\xe2\x80\x8b\t</>"),
          "unicode strip: %s", buf);
    CHECK(chat(m, " \n ", 3, buf, sizeof buf) && !strcmp(buf, "<\xc3\xa9>\n\t</>"), "all space: %s", buf);
    CHECK(chat(m, "", 0, buf, sizeof buf) && !strcmp(buf, "<\xc3\xa9>\n\t</>"), "empty: %s", buf);
    /* a stray lead or continuation byte at either end is no whitespace (the tokenizer rejects it later) */
    CHECK(chat(m, "\x80 x \xe3", 5, buf, sizeof buf) && !strcmp(buf, "<\xc3\xa9>\n\x80 x \xe3\t</>"), "invalid: %s",
          buf);
    size_t need = 0;
    CHECK(ob_chat_prompt(m, "hi", 2, buf, 8, &need, err, sizeof err) == OB_ERR_BUFFER && need > 8, "small buffer");
    CHECK(ob_chat_prompt(m, "hi", 2, NULL, 0, &need, err, sizeof err) == OB_ERR_BUFFER && need <= sizeof buf,
          "size query");
    ob_model_free(m);
    free(raw);

    m = open_with(", \"chat_prefix\": \"[\", \"chat_suffix\": \"]\"", &raw, err, sizeof err, &st);
    CHECK(m && chat(m, " x ", 3, buf, sizeof buf) && !strcmp(buf, "[ x ]"), "no trim: %s", buf);
    ob_model_free(m);
    free(raw);

    m = open_with("", &raw, err, sizeof err, &st);
    CHECK(m && ob_chat_prompt(m, "x", 1, buf, sizeof buf, NULL, err, sizeof err) == OB_ERR_UNSUPPORTED &&
              strstr(err, "no chat template"),
          "no pieces: %s", err);
    ob_model_free(m);
    free(raw);

    m = open_with(", \"chat_prefix\": 1, \"chat_suffix\": \"]\"", &raw, err, sizeof err, &st);
    CHECK(m && ob_chat_prompt(m, "x", 1, buf, sizeof buf, NULL, err, sizeof err) == OB_ERR_FORMAT, "bad prefix");
    ob_model_free(m);
    free(raw);
}

int main(void) {
    test_eos();
    test_chat_prompt();
    if (failures) printf("test_chat: %d failure(s)\n", failures);
    else printf("test_chat: ok\n");
    return failures != 0;
}
