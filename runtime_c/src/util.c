/* util.c - little-endian reads, messages, the bump arena and ob_strerror (the CRC-32 is crc32.c). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

uint16_t ob_rd_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

uint32_t ob_rd_u32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

uint64_t ob_rd_u64(const uint8_t *p) { return (uint64_t)ob_rd_u32(p) | ((uint64_t)ob_rd_u32(p + 4) << 32); }

int32_t ob_rd_i32(const uint8_t *p) {
    uint32_t u = ob_rd_u32(p);
    int32_t v;
    memcpy(&v, &u, 4);
    return v;
}

float ob_rd_f32(const uint8_t *p) {
    uint32_t u = ob_rd_u32(p);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

void ob_set_msg(char *err, size_t err_size, const char *fmt, ...) {
    if (!err || err_size == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_size, fmt, ap);
    va_end(ap);
}

size_t ob_arena_round(size_t bytes) { return (bytes + 63) & ~(size_t)63; }

void *ob_arena_alloc_raw(ob_arena *a, uint64_t bytes) {
    if (bytes > (uint64_t)(SIZE_MAX - 63) || a->overflow) {
        a->overflow = 1;
        return NULL;
    }
    size_t need = ob_arena_round((size_t)bytes);
    if (a->base == NULL) { /* measuring */
        if (need > SIZE_MAX - 64 - a->used) a->overflow = 1;
        else a->used += need;
        return NULL;
    }
    size_t start = ob_arena_round((size_t)(uintptr_t)(a->base + a->used)) - (size_t)(uintptr_t)a->base;
    if (start > a->size || need > a->size - start) return NULL;
    a->used = start + need;
    return a->base + start;
}

void *ob_arena_alloc(ob_arena *a, uint64_t bytes) {
    uint8_t *p = (uint8_t *)ob_arena_alloc_raw(a, bytes);
    if (p) memset(p, 0, ob_arena_round((size_t)bytes));
    return p;
}

const char *ob_strerror(ob_status s) {
    switch (s) {
    case OB_OK: return "ok";
    case OB_ERR_INVALID_ARG: return "invalid argument";
    case OB_ERR_IO: return "i/o error";
    case OB_ERR_FORMAT: return "not a valid .1bit file";
    case OB_ERR_VERSION: return "unsupported .1bit version";
    case OB_ERR_CHECKSUM: return "checksum mismatch";
    case OB_ERR_UNSUPPORTED: return "unsupported model option";
    case OB_ERR_NOMEM: return "out of memory";
    case OB_ERR_CONTEXT_FULL: return "context full";
    case OB_ERR_TOKEN: return "bad token or untokenizable text";
    case OB_ERR_ISA: return "instruction set unavailable";
    case OB_ERR_BUFFER: return "buffer too small";
    case OB_ERR_STOPPED: return "stopped by callback";
    }
    return "unknown status";
}
