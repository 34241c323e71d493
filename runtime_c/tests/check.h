/* check.h - the one assertion macro of the C tests: report and count, keep going. Each test is a
 * single translation unit, so the counter lives here; main() returns failures != 0. */
#ifndef ONEBIT_TESTS_CHECK_H
#define ONEBIT_TESTS_CHECK_H

#include <stdio.h>

static int failures = 0;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                            \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

#endif
