/* test_crc.c - ob_crc32 (carry-less multiply / CRC32 instruction / slice-by-8, whichever this CPU
 * runs) against the bit-at-a-time definition: the check value, random lengths 0..4100 at every
 * alignment, and a CRC continued over pieces equal to the CRC of the whole. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/internal.h"
#include "check.h"

static uint32_t crc_bitwise(uint32_t crc, const uint8_t *p, size_t n) {
    crc = ~crc;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int b = 0; b < 8; b++) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}

static uint64_t g_rng = 0x9e3779b97f4a7c15ULL;
static uint32_t rnd32(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 16);
}

int main(void) {
    const uint8_t check[] = "123456789";
    CHECK(ob_crc32(0, check, 9) == 0xCBF43926u, "check value %08x", (unsigned)ob_crc32(0, check, 9));
    CHECK(ob_crc32(0, check, 0) == 0, "empty");
    enum { MAX = 4100 };
    uint8_t *buf = (uint8_t *)malloc(MAX + 64);
    for (int i = 0; i < MAX + 64; i++) buf[i] = (uint8_t)rnd32();
    int bad = 0;
    for (int rep = 0; rep < 3000; rep++) {
        size_t n = rep < 300 ? (size_t)rep : rnd32() % MAX, off = rnd32() % 64;
        uint32_t seed = rep % 3 ? rnd32() : 0;
        if (ob_crc32(seed, buf + off, n) != crc_bitwise(seed, buf + off, n)) bad++;
        size_t cut = n ? rnd32() % (n + 1) : 0;
        if (ob_crc32(ob_crc32(seed, buf + off, cut), buf + off + cut, n - cut) != crc_bitwise(seed, buf + off, n)) bad++;
    }
    CHECK(bad == 0, "%d random buffers differ from the bitwise CRC", bad);
    for (int i = 0; i < MAX; i++) buf[i] = 0xff; /* all ones: every fold carries */
    CHECK(ob_crc32(0, buf, MAX) == crc_bitwise(0, buf, MAX), "all ones");
    free(buf);
    printf("crc: %s\n", failures ? "FAILED" : "ok");
    return failures != 0;
}
