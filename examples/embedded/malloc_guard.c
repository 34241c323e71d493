/* Linked with -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc (make check): any allocation made by
 * the program or libonebit.a ends the run with a message, proving that none happens. */
#include <stdio.h>
#include <stdlib.h>

void *__real_malloc(size_t n);

static void caught(const char *fn) {
    fprintf(stderr, "error: %s called: the embedded build must not allocate\n", fn);
    abort();
}

void *__wrap_malloc(size_t n) {
    (void)n;
    caught("malloc");
    return NULL;
}

void *__wrap_calloc(size_t n, size_t m) {
    (void)n;
    (void)m;
    caught("calloc");
    return NULL;
}

void *__wrap_realloc(void *p, size_t n) {
    (void)p;
    (void)n;
    caught("realloc");
    return NULL;
}
