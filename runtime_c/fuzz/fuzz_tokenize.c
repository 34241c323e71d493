/* fuzz_tokenize.c - the four tokenizer kinds of make_corpus.py's exports (fuzz/models/: a GPT-2
 * byte-level BPE, a char vocabulary, a Llama-3 byte-level BPE with special tokens and a
 * SentencePiece-style BPE with byte fallback; or the folder $ONEBIT_FUZZ_MODELS) over arbitrary
 * input.  Byte 0 picks the model (byte0 / 2 % 4) and the mode: even encodes the rest as text (any
 * bytes, invalid UTF-8 included), odd decodes the rest as int32 ids (any values).  Encoding checks
 * the round trip (byte-level BPE and a char vocabulary that holds every character are lossless; a
 * SentencePiece-style decode is valid UTF-8, since unknown characters may become unk; a char
 * missing from a char vocabulary is one clear error), and short buffers must report the size they
 * need. */
#include <stdio.h>

#include "fuzz_common.h"

static const char *const names[4] = {"bpe", "char", "llama3", "sp"};
static ob_model *models[4];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    const char *dir = getenv("ONEBIT_FUZZ_MODELS");
    for (int i = 0; i < 4; i++) {
        char path[1024], err[256];
        snprintf(path, sizeof path, "%s/%s.1bit", dir ? dir : "fuzz/models", names[i]);
        if (ob_model_open(&models[i], path, err, sizeof err) != OB_OK) {
            fprintf(stderr, "fuzz_tokenize: %s (run from runtime_c/ or set ONEBIT_FUZZ_MODELS)\n", err);
            exit(1);
        }
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const ob_model *model = models[(data[0] / 2) % 4];
    char err[256] = "";
    const uint8_t *rest = data + 1;
    size_t n = size - 1;
    if (data[0] % 2 == 0) {
        char *text = (char *)malloc(n ? n : 1);
        int32_t *ids = (int32_t *)malloc(sizeof(int32_t) * (n + 1));
        memcpy(text, rest, n);
        int n_ids = 0;
        ob_status st = ob_tokenize_ex(model, text, n, ids, (int)n + 1, &n_ids, err, sizeof err);
        if (st == OB_OK) {
            size_t len = 0;
            char *back = (char *)malloc(n + 1);
            if (model->tok.pretok == OB_PRE_SENTENCEPIECE) {
                size_t need = 0;
                ob_status ds = ob_detokenize_ex(model, ids, n_ids, NULL, 0, &need, err, sizeof err);
                FUZZ_ASSERT(ds == OB_OK || ds == OB_ERR_BUFFER);
                char *sp = (char *)malloc(need ? need : 1);
                FUZZ_ASSERT(ob_detokenize_ex(model, ids, n_ids, sp, need, &len, err, sizeof err) == OB_OK);
                for (size_t k = 0; k < len;) {
                    int u = ob_utf8_len((const unsigned char *)sp + k, len - k);
                    FUZZ_ASSERT(u > 0);
                    k += (size_t)u;
                }
                free(sp);
            } else {
                FUZZ_ASSERT(ob_detokenize_ex(model, ids, n_ids, back, n + 1, &len, err, sizeof err) == OB_OK);
                FUZZ_ASSERT(len == n && memcmp(back, text, n) == 0); /* lossless when it encodes at all */
            }
            free(back);
            if (n_ids > 0) {
                int need = 0;
                FUZZ_ASSERT(ob_tokenize_ex(model, text, n, ids, n_ids - 1, &need, err, sizeof err) == OB_ERR_BUFFER);
            }
        } else {
            FUZZ_ASSERT(st == OB_ERR_TOKEN && err[0] != 0); /* invalid UTF-8, or a char not in the vocabulary */
        }
        free(text);
        free(ids);
    } else {
        int n_ids = (int)(n / 4);
        int32_t *ids = (int32_t *)malloc(sizeof(int32_t) * (size_t)(n_ids ? n_ids : 1));
        memcpy(ids, rest, sizeof(int32_t) * (size_t)n_ids);
        size_t need = 0, len = 0;
        ob_status st = ob_detokenize_ex(model, ids, n_ids, NULL, 0, &need, err, sizeof err);
        if (st == OB_OK || st == OB_ERR_BUFFER) {
            char *buf = (char *)malloc(need ? need : 1);
            FUZZ_ASSERT(ob_detokenize_ex(model, ids, n_ids, buf, need, &len, err, sizeof err) == OB_OK && len == need);
            free(buf);
        } else {
            FUZZ_ASSERT(st == OB_ERR_TOKEN && err[0] != 0);
        }
        free(ids);
    }
    return 0;
}
