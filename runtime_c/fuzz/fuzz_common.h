/* fuzz_common.h - shared by the libFuzzer harnesses: the input as a model file. */
#ifndef ONEBIT_FUZZ_COMMON_H
#define ONEBIT_FUZZ_COMMON_H

#include <stdlib.h>
#include <string.h>

#include "../src/internal.h"

/* A 64-byte aligned copy (tensors are read in place) whose file_size and CRC-32 fields are made
 * to agree with the bytes.  Random mutations would otherwise die at the checksum almost always
 * and never reach the directory, the metadata or the tokenizer tables; the checksum and size
 * checks themselves are covered by tests/test_model.c.  free(*raw) afterwards. */
static inline uint8_t *fuzz_model_bytes(const uint8_t *data, size_t size, void **raw) {
    *raw = malloc(size + 64);
    if (!*raw) return NULL;
    uint8_t *d = (uint8_t *)(((uintptr_t)*raw + 63) & ~(uintptr_t)63);
    memcpy(d, data, size);
    if (size >= 64) {
        for (int i = 0; i < 8; i++) d[8 + i] = (uint8_t)((uint64_t)size >> (8 * i));
        uint32_t body = ob_crc32(0, d + 64, size - 64);
        for (int i = 0; i < 4; i++) d[56 + i] = (uint8_t)(body >> (8 * i));
        uint32_t head = ob_crc32(0, d, 60);
        for (int i = 0; i < 4; i++) d[60 + i] = (uint8_t)(head >> (8 * i));
    }
    return d;
}

/* Every failure must come with a message: a crash-free but silent error is a bug too. */
#define FUZZ_ASSERT(cond)                                                                          \
    do {                                                                                           \
        if (!(cond)) abort();                                                                      \
    } while (0)

#endif
