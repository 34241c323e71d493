/* An embedded onebit program: the model is compiled in (a header from `onebit-export
 * --emit-c-header`), memory is one static arena, and nothing is allocated or read from a file.
 *
 *     usage: embedded [PROMPT] [N_NEW] [TEMPERATURE] [SEED] [THREADS]   (greedy, 1 thread by default)
 *
 * stdout: the prompt and the generated text; errors: one line on stderr, exit 1. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "onebit.h"

#include MODEL_HEADER /* e.g. -DMODEL_HEADER='"model.h"' */

#ifndef ARENA_BYTES
#define ARENA_BYTES (16u << 20)
#endif
#define MAX_PROMPT_BYTES 1024

/* One static block for the model's bookkeeping and the session (KV-cache, buffers). */
static unsigned char arena[ARENA_BYTES];
static int32_t prompt_ids[MAX_PROMPT_BYTES + 1];
static char out_buf[1 << 12]; /* stdout's buffer, so stdio does not allocate one */

static int emit(void *user, int32_t token, const uint8_t *bytes, size_t len) {
    (void)user;
    (void)token;
    fwrite(bytes, 1, len, stdout);
    return 0;
}

static int fail(const char *what, const char *detail) {
    fflush(stdout);
    fprintf(stderr, "error: %s: %s\n", what, detail);
    return 1;
}

int main(int argc, char **argv) {
    const char *prompt = argc > 1 ? argv[1] : "\n";
    int n_new = argc > 2 ? atoi(argv[2]) : 100;
    ob_sampler_params sampler = ob_sampler_params_default();
    sampler.temperature = argc > 3 ? (float)atof(argv[3]) : 0.0f;
    sampler.seed = argc > 4 ? strtoull(argv[4], NULL, 10) : 0;
    setvbuf(stdout, out_buf, _IOFBF, sizeof out_buf);

    ob_session_params params = ob_session_params_default();
    params.n_threads = argc > 5 ? atoi(argv[5]) : 1; /* > 1 starts threads: they allocate */
    params.kv_type = OB_KV_F32; /* onebit-sample's exact twin (the test compares); OB_KV_F16 halves the cache */
    size_t model_bytes, session_bytes;
    ob_status st = ob_memory_required(onebit_model, ONEBIT_MODEL_SIZE, &params, &model_bytes, &session_bytes);
    if (st) return fail("model", ob_strerror(st));
    if (model_bytes + session_bytes > sizeof arena) return fail("arena", "too small: raise ARENA_BYTES");

    char err[256];
    ob_model *model;
    ob_session *session;
    st = ob_model_open_memory(&model, onebit_model, ONEBIT_MODEL_SIZE, arena, model_bytes, err, sizeof err);
    if (st) return fail("model", err);
    st = ob_session_create(&session, model, &params, arena + model_bytes, sizeof arena - model_bytes, err, sizeof err);
    if (st) return fail("session", err);

    size_t len = strlen(prompt);
    int n_prompt = 0;
    if (len > MAX_PROMPT_BYTES) return fail("prompt", "too long");
    st = ob_tokenize(model, prompt, len, prompt_ids, MAX_PROMPT_BYTES + 1, &n_prompt);
    if (st) return fail("prompt", ob_model_error(model));
    fwrite(prompt, 1, len, stdout);
    st = ob_generate(session, prompt_ids, n_prompt, n_new, &sampler, emit, NULL, NULL, NULL);
    if (st) return fail("generate", ob_session_error(session));
    fflush(stdout);
    ob_session_free(session); /* arena memory: nothing to free, but the calls stay symmetric */
    ob_model_free(model);
    return 0;
}
