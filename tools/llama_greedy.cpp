// llama_greedy: greedy token ids from llama.cpp for a GGUF and a prompt given as token ids, so that
// tests can compare llama.cpp's generation with onebit's token for token (tests/test_gguf.py).
//
//   llama_greedy MODEL.gguf N ID [ID ...]    prints the N generated ids on one line
//   llama_greedy MODEL.gguf 0 ID [ID ...]    prints the logits after the last id instead
//
// The KV-cache is F32 (llama.cpp's default F16 cache would round keys and values that onebit keeps
// in fp32), one thread, argmax over the logits with ties to the lowest id (docs/SAMPLING.md).
#include "llama.h"

#include <cstdio>
#include <cstdlib>
#include <vector>

static void quiet(enum ggml_log_level, const char *, void *) {}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL.gguf N ID [ID ...]\n", argv[0]);
        return 2;
    }
    llama_log_set(quiet, nullptr);
    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    llama_model *model = llama_model_load_from_file(argv[1], mp);
    if (!model) {
        fprintf(stderr, "error: llama.cpp cannot load %s\n", argv[1]);
        return 1;
    }
    int n_new = atoi(argv[2]);
    std::vector<llama_token> prompt;
    for (int i = 3; i < argc; i++) prompt.push_back((llama_token)atoi(argv[i]));

    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)(prompt.size() + (size_t)n_new + 1);
    cp.n_batch = cp.n_ctx;
    cp.n_threads = cp.n_threads_batch = 1;
    cp.type_k = cp.type_v = GGML_TYPE_F32;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED; // its CPU kernel rounds through F16
    llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        fprintf(stderr, "error: cannot create a llama.cpp context\n");
        return 1;
    }
    const llama_vocab *vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);
    llama_batch batch = llama_batch_get_one(prompt.data(), (int32_t)prompt.size());
    llama_token next = 0;
    if (n_new == 0) {
        if (llama_decode(ctx, batch)) {
            fprintf(stderr, "error: llama_decode failed\n");
            return 1;
        }
        const float *logits = llama_get_logits_ith(ctx, -1);
        for (int t = 0; t < n_vocab; t++) printf("%s%.9g", t ? " " : "", logits[t]);
    }
    for (int i = 0; i < n_new; i++) {
        if (llama_decode(ctx, batch)) {
            fprintf(stderr, "error: llama_decode failed\n");
            return 1;
        }
        const float *logits = llama_get_logits_ith(ctx, -1);
        next = 0;
        for (int t = 1; t < n_vocab; t++)
            if (logits[t] > logits[next]) next = t;
        printf("%s%d", i ? " " : "", next);
        batch = llama_batch_get_one(&next, 1);
    }
    printf("\n");
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
