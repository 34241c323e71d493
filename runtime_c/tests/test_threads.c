/* test_threads.c - the thread contract of onebit.h: one ob_model shared by sessions on several
 * threads (each session on one thread, some with worker pools of their own), generating with
 * different seeds while other threads tokenize and detokenize through the same model; every
 * result must equal the same run done alone.  `make test-tsan` runs it under ThreadSanitizer,
 * which reports any write to shared state, not just the ones that change a result. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../include/onebit.h"
#include "check.h"

#define MODEL_PATH "tests/data/tiny.1bit"
#define N_THREADS 6
#define N_NEW 40

static const char *const prompts[] = {"All:", "Speak, speak.\n", "First Citizen:\nBefore", "hear me",
                                      "we proceed", "\n\nAll:"};

typedef struct job {
    const ob_model *model;
    int index;
    int32_t out[N_NEW];
    int n_out;
    char text[256];
    size_t text_len;
    ob_status st;
    char err[256];
} job;

static void *run_job(void *arg) {
    job *j = (job *)arg;
    const char *prompt = prompts[j->index % 6];
    int32_t ids[64];
    int n = 0;
    j->st = ob_tokenize_ex(j->model, prompt, strlen(prompt), ids, 64, &n, j->err, sizeof j->err);
    if (j->st) return NULL;
    /* a failing call on the shared model must not write to it either */
    int32_t bad = -5;
    size_t len;
    if (ob_detokenize_ex(j->model, &bad, 1, j->text, sizeof j->text, &len, j->err, sizeof j->err) != OB_ERR_TOKEN) {
        j->st = OB_ERR_INVALID_ARG;
        return NULL;
    }
    ob_session_params sp = ob_session_params_default();
    sp.n_ctx = 32; /* smaller than prompt + N_NEW: the sliding window runs too */
    sp.n_threads = 1 + j->index % 2;
    ob_session *s;
    j->st = ob_session_create(&s, j->model, &sp, NULL, 0, j->err, sizeof j->err);
    if (j->st) return NULL;
    ob_sampler_params p = ob_sampler_params_default();
    p.seed = 1000 + (uint64_t)j->index;
    p.top_k = 20;
    j->st = ob_generate(s, ids, n, N_NEW, &p, NULL, NULL, j->out, &j->n_out);
    if (j->st) snprintf(j->err, sizeof j->err, "%s", ob_session_error(s));
    ob_session_free(s);
    if (j->st) return NULL;
    j->st = ob_detokenize_ex(j->model, j->out, j->n_out, j->text, sizeof j->text, &j->text_len, j->err, sizeof j->err);
    return NULL;
}

int main(void) {
    ob_model *m;
    char err[256];
    if (ob_model_open(&m, MODEL_PATH, err, sizeof err)) {
        printf("FAIL: %s (run from runtime_c/)\n", err);
        return 1;
    }
    static job alone[N_THREADS], together[N_THREADS];
    for (int i = 0; i < N_THREADS; i++) {
        alone[i].model = together[i].model = m;
        alone[i].index = together[i].index = i;
        run_job(&alone[i]);
        CHECK(alone[i].st == OB_OK && alone[i].n_out == N_NEW, "job %d alone: %s", i, alone[i].err);
    }
    CHECK(memcmp(alone[0].out, alone[2].out, sizeof alone[0].out) != 0, "different seeds gave the same tokens");
    pthread_t th[N_THREADS];
    for (int i = 0; i < N_THREADS; i++)
        CHECK(pthread_create(&th[i], NULL, run_job, &together[i]) == 0, "pthread_create %d", i);
    for (int i = 0; i < N_THREADS; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < N_THREADS; i++) {
        CHECK(together[i].st == OB_OK, "job %d on a thread: %s", i, together[i].err);
        CHECK(together[i].n_out == alone[i].n_out && memcmp(together[i].out, alone[i].out, sizeof alone[i].out) == 0 &&
                  together[i].text_len == alone[i].text_len &&
                  memcmp(together[i].text, alone[i].text, alone[i].text_len) == 0,
              "job %d: threaded result differs from the run alone", i);
    }
    CHECK(ob_model_error(m)[0] == 0, "the _ex calls wrote the model's error: %s", ob_model_error(m));
    ob_model_free(m);
    if (failures) {
        printf("%d failure(s)\n", failures);
        return 1;
    }
    printf("threads: %d sessions over one model, identical to the runs alone\n", N_THREADS);
    return 0;
}
