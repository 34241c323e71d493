/* main.c - a onebit model in microcontroller firmware: the model is a const array in flash (a
 * header from `onebit-export --emit-c-header`), memory is one static arena, output goes over
 * semihosting.  Prints the prompt and its greedy continuation on stdout, then a few measurements
 * on stderr.
 *
 *     command line (QEMU: -append "[isa=NAME] N_NEW PROMPT"): N_NEW, one space, then the prompt
 *     verbatim; isa=scalar runs the reference kernels on a core with MVE */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "board.h"
#include "onebit.h"
#include "semihost.h"

#include MODEL_HEADER /* -DMODEL_HEADER='"model.h"' */

#ifndef ARENA_BYTES
#define ARENA_BYTES (2u << 20)
#endif
#ifndef N_BATCH
#define N_BATCH 4
#endif
#define MAX_PROMPT_BYTES 512

static unsigned char arena[ARENA_BYTES] __attribute__((section(".arena"), aligned(64)));
static int32_t prompt_ids[MAX_PROMPT_BYTES + 1];
static char cmdline[MAX_PROMPT_BYTES + 256];

typedef struct {
    int out;
    int n;
    uint64_t first, last; /* tick counts when the first and the latest token came out */
} emit_state;

static int emit(void *user, int32_t token, const uint8_t *bytes, size_t len) {
    emit_state *e = (emit_state *)user;
    (void)token;
    e->last = cycles_now();
    if (e->n++ == 0) e->first = e->last;
    sh_write(e->out, bytes, len);
    return 0;
}

static int say(int handle, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int say(int handle, const char *fmt, ...) {
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    sh_write(handle, line, n < (int)sizeof line ? (size_t)n : sizeof line - 1);
    return 1;
}

/* A loop of known length (two instructions per turn) gives instructions per SysTick tick: under
 * QEMU -icount shift=0 one instruction is one nanosecond of the clock SysTick counts. */
static double instructions_per_tick(void) {
    uint32_t turns = 1u << 20;
    uint64_t t0 = cycles_now();
    __asm__ volatile("1: subs %0, %0, #1\n\tbne 1b" : "+r"(turns) : : "cc");
    return (double)(2u << 20) / (double)(cycles_now() - t0);
}

int main(void) {
    int out = sh_open_console(0), err = sh_open_console(1);
    if (sh_cmdline(cmdline, sizeof cmdline)) return say(err, "error: command line too long\n");
    char *p = strchr(cmdline, ' '); /* skip the program name */
    if (!p) return say(err, "error: usage: -append \"[isa=NAME] N_NEW PROMPT\"\n");
    const char *isa = NULL;
    if (strncmp(p + 1, "isa=", 4) == 0) {
        isa = p + 5;
        p = strchr(p + 1, ' ');
        if (!p) return say(err, "error: usage: -append \"[isa=NAME] N_NEW PROMPT\"\n");
        *p = 0;
    }
    int n_new = (int)strtol(p + 1, &p, 10);
    if (n_new < 0) return say(err, "error: N_NEW must be >= 0\n");
    const char *prompt = *p == ' ' ? p + 1 : "\n";

    ob_session_params params = ob_session_params_default();
    params.n_threads = 1;
    params.isa = isa;
    params.n_batch = N_BATCH; /* prompt tokens per batched forward: RAM for speed */
    params.kv_type = OB_KV_F32; /* onebit-sample's exact twin (make test compares); OB_KV_F16 halves the cache */
    size_t model_bytes, session_bytes;
    ob_status st = ob_memory_required(onebit_model, ONEBIT_MODEL_SIZE, &params, &model_bytes, &session_bytes);
    if (st) return say(err, "error: model: %s\n", ob_strerror(st));
    if (model_bytes + session_bytes > sizeof arena)
        return say(err, "error: arena: %zu bytes needed, %zu available (raise ARENA_BYTES)\n",
                   model_bytes + session_bytes, sizeof arena);
    memset(arena, 0, model_bytes + session_bytes);

    char msg[256];
    ob_model *model;
    ob_session *session;
    st = ob_model_open_memory(&model, onebit_model, ONEBIT_MODEL_SIZE, arena, model_bytes, msg, sizeof msg);
    if (st) return say(err, "error: model: %s\n", msg);
    st = ob_session_create(&session, model, &params, arena + model_bytes, sizeof arena - model_bytes, msg,
                           sizeof msg);
    if (st) return say(err, "error: session: %s\n", msg);

    size_t len = strlen(prompt);
    int n_prompt = 0;
    if (len > MAX_PROMPT_BYTES) return say(err, "error: prompt longer than %d bytes\n", MAX_PROMPT_BYTES);
    st = ob_tokenize(model, prompt, len, prompt_ids, MAX_PROMPT_BYTES + 1, &n_prompt);
    if (st) return say(err, "error: prompt: %s\n", ob_model_error(model));
    sh_write(out, prompt, len);

    ob_sampler_params greedy = ob_sampler_params_default();
    greedy.temperature = 0.0f;
    emit_state e = {out, 0, 0, 0};
    cycles_start();
    double ipt = instructions_per_tick();
    uint64_t t0 = cycles_now();
    st = ob_generate(session, prompt_ids, n_prompt, n_new, &greedy, emit, &e, NULL, NULL);
    if (st) return say(err, "\nerror: generate: %s\n", ob_session_error(session));

    say(err, "\nmcu: isa %s, %d prompt tokens, %d new\n", ob_session_isa(session), n_prompt, e.n);
    say(err, "mcu: arena %zu bytes (model %zu, session %zu), stack high-water %zu of %zu bytes\n",
        model_bytes + session_bytes, model_bytes, session_bytes, stack_used(), stack_size());
    if (e.n >= 2) { /* the first token carries the prefill; the rest are one decode step each */
        double prefill = (double)(e.first - t0) * ipt;
        double decode = (double)(e.last - e.first) * ipt / (e.n - 1);
        say(err, "mcu: instructions (QEMU -icount): prefill+first token %.0f, per decoded token %.0f\n",
            prefill, decode);
    }
    ob_session_free(session);
    ob_model_free(model);
    return 0;
}
