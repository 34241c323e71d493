/* test_tokenizer_bounds.c - the tokenizer's work and memory stay bounded on hostile input
 * (issue "Reliability"):
 *  - hash flooding: a file whose tokens or merges were chosen to collide under the unkeyed hash
 *    (key 0) must not make loading or lookups quadratic.  Work is counted, not timed: the probes
 *    that inserting every entry costs (its displacement from its home slot, plus one) and the
 *    longest run of occupied slots (a bound on any lookup's probes).  Under key 0 the same tables
 *    are shown to be quadratic, so the crafted sets really collide and the test can fail.
 *  - scratch: a text of a thousand pre-tokens longer than the in-place limit allocates merge
 *    scratch a logarithmic number of times, not once per pre-token. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "fixture.h"

/* Probes to insert every entry (displacement + 1 each) and the longest run of occupied slots. */
typedef struct {
    uint64_t probes;
    uint32_t longest_run;
} table_work;

static table_work vocab_work(const ob_tokenizer *t) {
    table_work w = {0, 0};
    uint32_t cap = t->vocab_hash_mask + 1, run = 0;
    for (uint32_t s = 0; s < 2 * cap; s++) { /* twice round: a run may wrap past the end */
        int32_t e = t->vocab_hash[s & t->vocab_hash_mask];
        run = e ? run + 1 : 0;
        if (run > w.longest_run) w.longest_run = run;
        if (e && s < cap) {
            const uint8_t *b;
            int len = ob_tok_len(t, e - 1, &b);
            uint32_t home = ob_tok_bytes_hash(t->hash_key, b, (size_t)len) & t->vocab_hash_mask;
            w.probes += ((s - home) & t->vocab_hash_mask) + 1;
        }
    }
    return w;
}

static table_work merge_work(const ob_tokenizer *t) {
    table_work w = {0, 0};
    uint32_t cap = t->merge_hash_mask + 1, run = 0;
    for (uint32_t s = 0; s < 2 * cap; s++) {
        int32_t e = t->merge_hash[s & t->merge_hash_mask];
        run = e ? run + 1 : 0;
        if (run > w.longest_run) w.longest_run = run;
        if (e && s < cap) {
            int32_t a = ob_rd_i32(t->merges + 12 * (size_t)(e - 1)), b = ob_rd_i32(t->merges + 12 * (size_t)(e - 1) + 4);
            uint32_t home = ob_tok_pair_hash(t->hash_key, a, b) & t->merge_hash_mask;
            w.probes += ((s - home) & t->merge_hash_mask) + 1;
        }
    }
    return w;
}

static size_t utf8(uint32_t cp, char *out) {
    if (cp < 0x80) return out[0] = (char)cp, 1;
    if (cp < 0x800) return out[0] = (char)(0xc0 | (cp >> 6)), out[1] = (char)(0x80 | (cp & 0x3f)), 2;
    if (cp < 0x10000)
        return out[0] = (char)(0xe0 | (cp >> 12)), out[1] = (char)(0x80 | ((cp >> 6) & 0x3f)),
               out[2] = (char)(0x80 | (cp & 0x3f)), 3;
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

static ob_model *open_fx(fx *f, void **raw) {
    size_t size;
    uint8_t *d = fx_write(f, &size, raw);
    ob_model *m = NULL;
    char err[256];
    ob_status st = ob_model_open_memory(&m, d, size, NULL, 0, err, sizeof err);
    CHECK(st == OB_OK, "open: %s", err);
    return st == OB_OK ? m : NULL;
}

/* A char vocabulary of V characters whose unkeyed hashes all land in the first W slots. */
static void test_vocab_flood(void) {
    enum { V = 2048, W = 32 };
    uint32_t mask = 2 * V - 1; /* the loader's table: the power of two >= 2 V */
    static char store[V][5];
    static const char *tokens[V];
    int n = 0;
    for (uint32_t cp = 0x80; cp < 0x110000 && n < V; cp++) {
        if (cp >= 0xd800 && cp < 0xe000) continue;
        char b[4];
        size_t l = utf8(cp, b);
        if ((ob_tok_bytes_hash(0, (const uint8_t *)b, l) & mask) < W) {
            memcpy(store[n], b, l);
            store[n][l] = 0;
            tokens[n] = store[n];
            n++;
        }
    }
    CHECK(n == V, "found only %d colliding characters", n);
    if (n < V) return;
    fx_config c = fx_default_config();
    c.vocab_size = V;
    c.dim = 8;
    c.ffn_dim = 16;
    c.tokens = tokens;
    fx f;
    fx_init(&f, &c);
    fx_model(&f);
    void *raw;
    ob_model *m = open_fx(&f, &raw);
    if (m) {
        ob_tokenizer *t = &m->tok;
        CHECK(t->vocab_hash_mask == mask, "vocab table of %u slots, the test assumes %u", t->vocab_hash_mask + 1, mask + 1);
        table_work keyed = vocab_work(t);
        /* every character once, in id order: every lookup finds its entry */
        char *text = (char *)malloc(5 * V);
        size_t len = 0;
        for (int i = 0; i < V; i++) len += (size_t)sprintf(text + len, "%s", tokens[i]);
        int32_t *ids = (int32_t *)malloc(sizeof(int32_t) * V);
        int n_ids = 0, bad = 0;
        char err[256];
        CHECK(ob_tokenize_ex(m, text, len, ids, V, &n_ids, err, sizeof err) == OB_OK && n_ids == V, "tokenize: %s", err);
        for (int i = 0; i < n_ids; i++) bad += ids[i] != i;
        CHECK(bad == 0, "%d characters got another id", bad);
        ob_tokenizer_index(t, 0); /* the same file without the key */
        table_work unkeyed = vocab_work(t);
        printf("vocab flood: %d tokens, probes to load %llu keyed / %llu unkeyed, longest run %u / %u\n", V,
               (unsigned long long)keyed.probes, (unsigned long long)unkeyed.probes, keyed.longest_run,
               unkeyed.longest_run);
        CHECK(unkeyed.longest_run >= V && unkeyed.probes >= (uint64_t)V * V / 4,
              "the crafted vocabulary does not collide without the key (run %u, %llu probes)", unkeyed.longest_run,
              (unsigned long long)unkeyed.probes);
        /* linear probing at load 1/2 with a random hash: about 1.5 probes an entry, runs of tens */
        CHECK(keyed.probes <= 4 * (uint64_t)V && keyed.longest_run <= 128,
              "keyed vocabulary table: %llu probes for %d entries, a run of %u", (unsigned long long)keyed.probes, V,
              keyed.longest_run);
        free(text);
        free(ids);
        ob_model_free(m);
    }
    free(raw);
    fx_free(&f);
}

/* M merges of byte pairs whose unkeyed hashes all land in the first few slots. */
static void test_merge_flood(void) {
    enum { M = 1024 };
    uint32_t mask = 2 * M - 1;
    static int32_t merges[M][3];
    int n = 0;
    uint32_t window = 16;
    while (n < M && window <= 256) { /* the narrowest window that holds M of the 65,536 pairs */
        n = 0;
        for (int a = 0; a < 256 && n < M; a++)
            for (int b = 0; b < 256 && n < M; b++)
                if ((ob_tok_pair_hash(0, a, b) & mask) < window) {
                    merges[n][0] = a;
                    merges[n][1] = b;
                    merges[n][2] = 256 + n;
                    n++;
                }
        if (n < M) window *= 2;
    }
    CHECK(n == M, "found only %d colliding pairs", n);
    if (n < M) return;
    fx_config c = fx_default_config();
    c.vocab_size = 256 + M;
    c.dim = 8;
    c.ffn_dim = 16;
    c.bpe = 1;
    c.merges = (const int32_t(*)[3])merges;
    c.n_merges = M;
    fx f;
    fx_init(&f, &c);
    fx_model(&f);
    void *raw;
    ob_model *m = open_fx(&f, &raw);
    if (m) {
        ob_tokenizer *t = &m->tok;
        CHECK(t->merge_hash_mask == mask, "merge table of %u slots, the test assumes %u", t->merge_hash_mask + 1, mask + 1);
        table_work keyed = merge_work(t);
        int bad = 0;
        for (int i = 0; i < M; i++) { /* each pair merges into its own token */
            int32_t w[2] = {merges[i][0], merges[i][1]};
            bad += ob_bpe_merge_small(t, w, 2) != 1 || w[0] != 256 + i;
        }
        CHECK(bad == 0, "%d pairs did not merge into their token", bad);
        ob_tokenizer_index(t, 0);
        table_work unkeyed = merge_work(t);
        printf("merge flood: %d merges in a window of %u slots, probes to load %llu keyed / %llu unkeyed, "
               "longest run %u / %u\n",
               M, window, (unsigned long long)keyed.probes, (unsigned long long)unkeyed.probes, keyed.longest_run,
               unkeyed.longest_run);
        CHECK(unkeyed.longest_run >= M && unkeyed.probes >= (uint64_t)M * M / 4,
              "the crafted merges do not collide without the key (run %u, %llu probes)", unkeyed.longest_run,
              (unsigned long long)unkeyed.probes);
        CHECK(keyed.probes <= 4 * (uint64_t)M && keyed.longest_run <= 128,
              "keyed merge table: %llu probes for %d entries, a run of %u", (unsigned long long)keyed.probes, M,
              keyed.longest_run);
        ob_model_free(m);
    }
    free(raw);
    fx_free(&f);
}

/* A thousand pre-tokens of 65 to 4,096 letters: the merge scratch is allocated a few times (it
 * grows by doubling to the longest so far), and the tokens equal those of ob_tokenize_ex. */
static void test_scratch_allocations(void) {
    enum { WORDS = 1000, LONGEST = 4096 };
    static const int32_t merges[2][3] = {{'a', 'a', 256}, {256, 256, 257}};
    fx_config c = fx_default_config();
    c.vocab_size = 258;
    c.dim = 8;
    c.ffn_dim = 16;
    c.bpe = 1;
    c.merges = merges;
    c.n_merges = 2;
    fx f;
    fx_init(&f, &c);
    fx_model(&f);
    void *raw;
    ob_model *m = open_fx(&f, &raw);
    if (m) {
        char *text = (char *)malloc((size_t)WORDS * (LONGEST + 1));
        size_t len = 0;
        uint64_t rng = 12345;
        for (int i = 0; i < WORDS; i++) {
            rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
            size_t n = 65 + (size_t)(rng >> 33) % (LONGEST - 64);
            if (i == WORDS / 2) n = LONGEST;
            if (i) text[len++] = ' ';
            memset(text + len, 'a', n);
            len += n;
        }
        int cap = (int)len;
        int32_t *a = (int32_t *)malloc(sizeof(int32_t) * (size_t)cap), *b = (int32_t *)malloc(sizeof(int32_t) * (size_t)cap);
        int na = 0, nb = 0;
        char err[256];
        ob_bpe_scratch s = {NULL, 0, 0};
        CHECK(ob_tokenize_in(m, text, len, a, cap, &na, &s, err, sizeof err) == OB_OK, "tokenize: %s", err);
        CHECK(ob_tokenize_ex(m, text, len, b, cap, &nb, err, sizeof err) == OB_OK && na == nb &&
                  memcmp(a, b, sizeof(int32_t) * (size_t)na) == 0,
              "ob_tokenize_in and ob_tokenize_ex differ");
        int bound = 1; /* one allocation, then doublings from 65 bytes up to the longest */
        for (int n = 65; n < LONGEST; n *= 2) bound++;
        printf("scratch: %d long pre-tokens, %d allocations (bound %d), %zu bytes\n", WORDS, s.n_alloc, bound, s.cap);
        CHECK(s.n_alloc >= 1 && s.n_alloc <= bound, "%d scratch allocations for %d long pre-tokens (bound %d)",
              s.n_alloc, WORDS, bound);
        free(s.p);
        free(a);
        free(b);
        free(text);
        ob_model_free(m);
    }
    free(raw);
    fx_free(&f);
}

int main(void) {
    test_vocab_flood();
    test_merge_flood();
    test_scratch_allocations();
    printf("tokenizer bounds: %s\n", failures ? "FAILED" : "ok");
    return failures != 0;
}
