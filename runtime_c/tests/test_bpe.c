/* test_bpe.c - BPE merging: the heap merge (long pre-tokens) against the rescan (short ones, the
 * simple reference) on random words and random merge tables, whole-text tokenization through
 * both paths, and 1 MB of one letter (a single pre-token) in linear-ish time; the same bound for
 * a SentencePiece-style tokenizer (a whole text is one word there), and its byte fallback and
 * decoding rules on a hand-made vocabulary.  tests/test_tokenizer_families.py compares real
 * tokenizer.json files with HF tokenizers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "fixture.h"

static uint32_t rng_state = 11;
static uint32_t rnd(void) {
    rng_state = rng_state * 1664525u + 1013904223u;
    return rng_state >> 8;
}

static double now_s(void) { return (double)clock() / CLOCKS_PER_SEC; }

/* The long texts: 1 MB, or 256 KB under WASI, where Node on our build VM aborts once wasm code
 * has touched ~32 MB of memory (the merge scratch of 1 MB is 36 MB; runtime_c/wasm.mk).  256 KB
 * still takes hours if the merge is quadratic. */
#ifdef __wasi__
#define BIG_TEXT ((size_t)1 << 18)
#else
#define BIG_TEXT ((size_t)1 << 20)
#endif

/* A BPE model over the given merges (rows whose merged id is 256 + row). */
static uint8_t *bpe_model(const int32_t (*merges)[3], int n_merges, ob_model **m, size_t *size, void **raw) {
    fx_config c = fx_default_config();
    c.bpe = 1;
    c.vocab_size = 256 + n_merges;
    c.merges = merges;
    c.n_merges = n_merges;
    fx f;
    fx_init(&f, &c);
    fx_model(&f);
    uint8_t *d = fx_write(&f, size, raw);
    fx_free(&f);
    char err[256];
    CHECK(ob_model_open_memory(m, d, *size, NULL, 0, err, sizeof err) == OB_OK, "open BPE: %s", err);
    return d;
}

/* Random merges over the letters a, b, c and the tokens merged so far: many ranks compete, and
 * the same pair can appear at several ranks (the lowest wins in both merges). */
static void test_heap_matches_rescan(void) {
    enum { N_MERGES = 300 };
    static int32_t merges[N_MERGES][3];
    for (int k = 0; k < N_MERGES; k++) {
        int pool = 3 + k;
        int32_t pick[2];
        for (int j = 0; j < 2; j++) {
            int r = (int)(rnd() % (uint32_t)pool);
            pick[j] = r < 3 ? 'a' + r : 256 + (r - 3);
        }
        merges[k][0] = pick[0];
        merges[k][1] = pick[1];
        merges[k][2] = 256 + k;
    }
    ob_model *m;
    size_t size;
    void *raw;
    bpe_model((const int32_t(*)[3])merges, N_MERGES, &m, &size, &raw);
    if (failures) return;
    int32_t *a = (int32_t *)malloc(sizeof(int32_t) * 2000), *b = (int32_t *)malloc(sizeof(int32_t) * 2000);
    for (int trial = 0; trial < 2200; trial++) {
        int n = 1 + (int)(rnd() % (trial < 2000 ? 40u : 1000u));
        int alphabet = 1 + (int)(rnd() % 3);
        for (int i = 0; i < n; i++) a[i] = b[i] = 'a' + (int32_t)(rnd() % (uint32_t)alphabet);
        int na = ob_bpe_merge_small(&m->tok, a, n), nb = ob_bpe_merge_heap(&m->tok, b, n);
        CHECK(na == nb && memcmp(a, b, sizeof(int32_t) * (size_t)na) == 0, "trial %d (n %d): %d vs %d tokens", trial,
              n, na, nb);
        if (failures) break;
    }
    /* whole texts: the short and the long path meet inside one call */
    char text[3000];
    int32_t ids[3000];
    char back[3000];
    for (int trial = 0; trial < 200 && !failures; trial++) {
        size_t len = 0, want = rnd() % 2900;
        while (len < want) text[len++] = "abc abc\n"[rnd() % 8];
        int n;
        char err[256];
        size_t blen;
        CHECK(ob_tokenize_ex(m, text, len, ids, (int)len, &n, err, sizeof err) == OB_OK, "tokenize: %s", err);
        CHECK(ob_detokenize_ex(m, ids, n, back, sizeof back, &blen, err, sizeof err) == OB_OK && blen == len &&
                  memcmp(back, text, len) == 0,
              "round trip of %zu bytes", len);
    }
    free(a);
    free(b);
    ob_model_free(m);
    free(raw);
}

/* 1 MB of 'a' is one pre-token; with merges a+a, aa+aa, ... it needs ~2^20 merges, each of which
 * the old rescan paid for with a pass over the whole word (hours).  The heap does it in well
 * under a second; the bound below is 10 s because ASan, UBSan and qemu slow it several-fold and
 * a test must not flake on a loaded machine: what it guards against is a quadratic, not a 2x. */
static void test_one_megabyte(void) {
    enum { N_MERGES = 12 };
    int32_t merges[N_MERGES][3];
    for (int k = 0; k < N_MERGES; k++) {
        merges[k][0] = merges[k][1] = k == 0 ? 'a' : 256 + k - 1;
        merges[k][2] = 256 + k;
    }
    ob_model *m;
    size_t size;
    void *raw;
    bpe_model((const int32_t(*)[3])merges, N_MERGES, &m, &size, &raw);
    if (failures) return;
    size_t len = BIG_TEXT;
    char *text = (char *)malloc(len);
    memset(text, 'a', len);
    int32_t *ids = (int32_t *)malloc(sizeof(int32_t) * len);
    int n = 0;
    char err[256];
    double t0 = now_s();
    ob_status st = ob_tokenize_ex(m, text, len, ids, (int)len, &n, err, sizeof err);
    double dt = now_s() - t0;
    /* 2^20 = 256 tokens of 2^12 letters (the longest merge) */
    int want = (int)(len >> 12);
    CHECK(st == OB_OK && n == want && ids[0] == 256 + N_MERGES - 1 && ids[want - 1] == ids[0], "1 MB: %s, %d tokens", err,
          n);
    CHECK(dt < 10.0, "1 MB of one letter took %.1f s", dt);
    printf("%zu KB of one letter: %d tokens in %.3f s (CPU)\n", len >> 10, n, dt);
    free(text);
    free(ids);
    ob_model_free(m);
    free(raw);
}

/* Special tokens are tried at every byte of the text, so their length is capped (256 bytes). */
static void test_special_tokens(void) {
    enum { N_MERGES = 9 };
    int32_t merges[N_MERGES][3];
    for (int k = 0; k < N_MERGES; k++) {
        merges[k][0] = merges[k][1] = k == 0 ? 'a' : 256 + k - 1;
        merges[k][2] = 256 + k;
    }
    fx_config c = fx_default_config();
    c.bpe = 1;
    c.vocab_size = 256 + N_MERGES;
    c.merges = (const int32_t(*)[3])merges;
    c.n_merges = N_MERGES;
    static const char *const specials[] = {"{\"<|aaaa|>\": 257}", "{\"<|long|>\": 263}", "{\"<|longer|>\": 264}"};
    for (int i = 0; i < 3; i++) {
        c.special_tokens = specials[i];
        fx f;
        fx_init(&f, &c);
        fx_model(&f);
        size_t size;
        void *raw;
        uint8_t *d = fx_write(&f, &size, &raw);
        ob_model *m;
        char err[256];
        ob_status st = ob_model_open_memory(&m, d, size, NULL, 0, err, sizeof err);
        if (i < 2) { /* 4 and 256 bytes */
            CHECK(st == OB_OK, "special token %d: %s", i, err);
            if (st == OB_OK && i == 0) {
                int32_t ids[16];
                int n;
                /* "aaaaa": the special token "aaaa" is split out first, then "a" */
                CHECK(ob_tokenize_ex(m, "aaaaa", 5, ids, 16, &n, err, sizeof err) == OB_OK && n == 2 && ids[0] == 257 &&
                          ids[1] == 'a',
                      "special split: %s", err);
            }
            if (st == OB_OK) ob_model_free(m);
        } else { /* 512 bytes */
            CHECK(st == OB_ERR_UNSUPPORTED && strstr(err, "512 bytes"), "long special token: %s", err);
        }
        fx_free(&f);
        free(raw);
    }
}

/* A SentencePiece-style model over the 256 single-byte tokens and merges a+a, aa+aa, ...: bytes
 * 0x80.. are <0xNN> fallback tokens (flags), the rest plain characters, " " is the metaspace.
 * `bad` also flags the two-byte token "aa" as a byte token. */
static ob_status sp_model(const char *prepend, int bad, ob_model **m, void **raw, uint8_t *flags, char *err,
                          size_t es) {
    enum { N_MERGES = 12 };
    static int32_t merges[N_MERGES][3];
    for (int k = 0; k < N_MERGES; k++) {
        merges[k][0] = merges[k][1] = k == 0 ? 'a' : 256 + k - 1;
        merges[k][2] = 256 + k;
    }
    memset(flags, 0, 256 + N_MERGES);
    for (int b = 0x80; b < 256; b++) flags[b] = 1 | 2 | 4; /* byte, fallback, hidden */
    if (bad) flags[256] = 1;
    char extra[256];
    snprintf(extra, sizeof extra,
             ", \"sentencepiece\": {\"prepend\": \"%s\", \"split\": false, \"byte_fallback\": true, "
             "\"unk_token_id\": null, \"fuse_unk\": true, \"strip_leading_space\": 1}",
             prepend);
    fx_config c = fx_default_config();
    c.bpe = 1;
    c.vocab_size = 256 + N_MERGES;
    c.merges = (const int32_t(*)[3])merges;
    c.n_merges = N_MERGES;
    c.pretokenizer = "sentencepiece";
    c.tokenizer_extra = extra;
    c.tok_flags = flags;
    fx f;
    fx_init(&f, &c);
    fx_model(&f);
    size_t size;
    uint8_t *d = fx_write(&f, &size, raw);
    fx_free(&f);
    *m = NULL;
    return ob_model_open_memory(m, d, size, NULL, 0, err, es);
}

static void test_sentencepiece(void) {
    uint8_t flags[256 + 12];
    void *raw;
    ob_model *m;
    char err[256], text[64];
    CHECK(sp_model("always", 0, &m, &raw, flags, err, sizeof err) == OB_OK, "open SentencePiece: %s", err);
    if (failures) return;
    int32_t ids[64];
    int n;
    size_t len;
    /* "é" is not a token: its two bytes fall back; " " and U+2581 are both the metaspace */
    CHECK(ob_tokenize_ex(m, "a\xc3\xa9 \xe2\x96\x81", 7, ids, 64, &n, err, sizeof err) == OB_OK && n == 6 &&
              ids[0] == ' ' && ids[1] == 'a' && ids[2] == 0xc3 && ids[3] == 0xa9 && ids[4] == ' ' && ids[5] == ' ',
          "fallback and metaspaces: %s (%d ids)", err, n);
    /* decoding strips the leading space; a byte run that is not UTF-8 is one U+FFFD per token */
    CHECK(ob_detokenize_ex(m, ids, 4, text, sizeof text, &len, err, sizeof err) == OB_OK && len == 3 &&
              memcmp(text, "a\xc3\xa9", 3) == 0,
          "decode: %s", err);
    int32_t broken[4] = {'x', 0xc3, 0xc3, 'y'};
    CHECK(ob_detokenize_ex(m, broken, 4, text, sizeof text, &len, err, sizeof err) == OB_OK && len == 8 &&
              memcmp(text, "x\xef\xbf\xbd\xef\xbf\xbdy", 8) == 0,
          "broken run: %s", err);
    /* the size query agrees with the text, and a short buffer is refused */
    CHECK(ob_detokenize_ex(m, broken, 4, NULL, 0, &len, err, sizeof err) == OB_ERR_BUFFER && len == 8, "size query");
    CHECK(ob_detokenize_ex(m, ids, 1, text, sizeof text, &len, err, sizeof err) == OB_OK && len == 0, "lone space");
    /* 1 MB of one letter is one word after the metaspace; 1 MB of spaces is 2^20 + 1 metaspaces,
     * so len + 1 ids are needed and suffice */
    size_t big = BIG_TEXT;
    char *t = (char *)malloc(big);
    int32_t *out = (int32_t *)malloc(sizeof(int32_t) * (big + 1));
    memset(t, 'a', big);
    double t0 = now_s();
    ob_status st = ob_tokenize_ex(m, t, big, out, (int)big + 1, &n, err, sizeof err);
    double dt = now_s() - t0;
    CHECK(st == OB_OK && n == (int)(big >> 12) + 1 && out[0] == ' ' && out[1] == 256 + 11, "1 MB SentencePiece: %s, %d ids",
          err, n);
    CHECK(dt < 10.0, "1 MB of one letter (SentencePiece) took %.1f s", dt);
    memset(t, ' ', big);
    CHECK(ob_tokenize_ex(m, t, big, out, (int)big, &n, err, sizeof err) == OB_ERR_BUFFER && n == (int)big + 1,
          "spaces with len ids: %d", n);
    CHECK(ob_tokenize_ex(m, t, big, out, (int)big + 1, &n, err, sizeof err) == OB_OK && n == (int)big + 1,
          "spaces with len + 1 ids: %s", err);
    free(t);
    free(out);
    ob_model_free(m);
    free(raw);
    /* a byte token must be one byte: decoding reads it */
    CHECK(sp_model("always", 1, &m, &raw, flags, err, sizeof err) == OB_ERR_FORMAT && strstr(err, "token 256"),
          "a two-byte token flagged as a byte: %s", err);
    free(raw);
    /* "first-unless-space": no metaspace before a text that starts with a space */
    CHECK(sp_model("first-unless-space", 0, &m, &raw, flags, err, sizeof err) == OB_OK, "open: %s", err);
    if (failures) return;
    CHECK(ob_tokenize_ex(m, " a", 2, ids, 64, &n, err, sizeof err) == OB_OK && n == 2 && ids[0] == ' ' && ids[1] == 'a',
          "first-unless-space: %d ids", n);
    ob_model_free(m);
    free(raw);
}

int main(void) {
    test_special_tokens();
    test_sentencepiece();
    test_heap_matches_rescan();
    test_one_megabyte();
    if (failures) {
        printf("%d failure(s)\n", failures);
        return 1;
    }
    printf("bpe: ok\n");
    return 0;
}
