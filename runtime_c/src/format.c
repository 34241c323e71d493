/* format.c - the .1bit container (docs/FORMAT.md): header, CRCs, tensor directory.
 * Parsed field by field, little-endian explicitly; every offset and length is checked against the
 * file size (overflow-safe) before anything is read through it. */
#include <math.h>
#include <string.h>

#include "internal.h"

#define HDR_SIZE 64
#define REC_SIZE 128
#define OB_MAX_TENSORS 65536

static const char *const dtype_names[OB_DT_COUNT] = {"F32", "F16", "I8", "T2", "T1_6", "B1", "U8", "I32", "I4"};

const char *ob_dtype_name(uint32_t dtype) { return dtype < OB_DT_COUNT ? dtype_names[dtype] : "?"; }

/* [off, off + len) inside [0, size)? */
static int in_file(uint64_t off, uint64_t len, uint64_t size) { return off <= size && len <= size - off; }

ob_status ob_file_parse(ob_file *f, const void *data, size_t size, char *err, size_t err_size) {
    const uint8_t *p = (const uint8_t *)data;
    memset(f, 0, sizeof *f);
    if (!data) {
        ob_set_msg(err, err_size, "no data");
        return OB_ERR_INVALID_ARG;
    }
    if (size < 4 || memcmp(p, "1BIT", 4) != 0) {
        ob_set_msg(err, err_size, "bad magic: not a .1bit file");
        return OB_ERR_FORMAT;
    }
    if (size < HDR_SIZE) {
        ob_set_msg(err, err_size, "file is truncated: %zu bytes, shorter than the 64-byte header", size);
        return OB_ERR_FORMAT;
    }
    f->data = p;
    f->size = size;
    f->version_major = ob_rd_u16(p + 4);
    f->version_minor = ob_rd_u16(p + 6);
    if (f->version_major > OB_VERSION_MAJOR) {
        ob_set_msg(err, err_size, "file format version %u.%u is newer than this reader (%d.%d); upgrade onebit",
                   f->version_major, f->version_minor, OB_VERSION_MAJOR, OB_VERSION_MINOR);
        return OB_ERR_VERSION;
    }
    if (f->version_major != OB_VERSION_MAJOR) {
        ob_set_msg(err, err_size, "bad version_major %u", f->version_major);
        return OB_ERR_FORMAT;
    }
    uint32_t hcrc = ob_rd_u32(p + 60), hgot = ob_crc32(0, p, 60);
    if (hgot != hcrc) {
        ob_set_msg(err, err_size, "header CRC-32 mismatch (stored %08x, computed %08x): header is corrupt", (unsigned)hcrc, (unsigned)hgot);
        return OB_ERR_CHECKSUM;
    }
    if (ob_rd_u32(p + 44) != 0) {
        ob_set_msg(err, err_size, "header reserved field at offset 44 is not zero");
        return OB_ERR_FORMAT;
    }
    uint64_t file_size = ob_rd_u64(p + 8);
    if (file_size != size) {
        ob_set_msg(err, err_size, "file is %s: header says %llu bytes, got %zu", file_size > size ? "truncated" : "the wrong size",
                   (unsigned long long)file_size, size);
        return OB_ERR_FORMAT;
    }
    f->meta_offset = ob_rd_u64(p + 16);
    f->meta_size = ob_rd_u64(p + 24);
    f->dir_offset = ob_rd_u64(p + 32);
    f->n_tensors = ob_rd_u32(p + 40);
    f->data_offset = ob_rd_u64(p + 48);
    if (f->meta_offset != HDR_SIZE || !in_file(f->meta_offset, f->meta_size, size) ||
        f->meta_offset + f->meta_size > f->dir_offset) {
        ob_set_msg(err, err_size, "metadata [%llu, +%llu) is not between the header and the directory",
                   (unsigned long long)f->meta_offset, (unsigned long long)f->meta_size);
        return OB_ERR_FORMAT;
    }
    if (f->n_tensors < 1 || f->n_tensors > OB_MAX_TENSORS) {
        ob_set_msg(err, err_size, "n_tensors %u is not in 1..%d", (unsigned)f->n_tensors, OB_MAX_TENSORS);
        return OB_ERR_FORMAT;
    }
    if (f->dir_offset % 64 || !in_file(f->dir_offset, (uint64_t)f->n_tensors * REC_SIZE, size) ||
        f->dir_offset + (uint64_t)f->n_tensors * REC_SIZE > f->data_offset) {
        ob_set_msg(err, err_size, "tensor directory at offset %llu (%u records) is misaligned or overlaps the data",
                   (unsigned long long)f->dir_offset, (unsigned)f->n_tensors);
        return OB_ERR_FORMAT;
    }
    if (f->data_offset % 64 || f->data_offset > size) {
        ob_set_msg(err, err_size, "data_offset %llu is misaligned or outside the file",
                   (unsigned long long)f->data_offset);
        return OB_ERR_FORMAT;
    }
    uint32_t bcrc = ob_rd_u32(p + 56), got = ob_crc32(0, p + HDR_SIZE, size - HDR_SIZE);
    if (got != bcrc) {
        ob_set_msg(err, err_size, "body CRC-32 mismatch (stored %08x, computed %08x): file is corrupt", (unsigned)bcrc, (unsigned)got);
        return OB_ERR_CHECKSUM;
    }
    if (ob_json_validate((const char *)p + f->meta_offset, (size_t)f->meta_size, err, err_size)) return OB_ERR_FORMAT;
    return OB_OK;
}

/* Bytes that dtype and shape imply, or 0 (with *why set) when a dimension is out of range or the
 * element count passes 2^40.  Everything stays in uint64_t and every product is checked before
 * it is formed, so no field can wrap a size or reach an int cast. */
static uint64_t expected_size(const ob_tensor_rec *r, const char **why) {
    const uint64_t max_elems = (uint64_t)1 << 40;
    uint64_t n = 1;
    *why = NULL;
    for (uint32_t d = 0; d < r->n_dims; d++) {
        if (r->shape[d] == 0 || r->shape[d] > UINT32_MAX) {
            *why = "a dimension is not in [1, 2^32)";
            return 0;
        }
        if (r->shape[d] > max_elems / n) {
            *why = "more than 2^40 elements";
            return 0;
        }
        n *= r->shape[d];
    }
    uint64_t K = r->shape[r->n_dims - 1], rows = n / K, row_bytes;
    switch (r->dtype) {
    case OB_DT_F32:
    case OB_DT_I32: return n * 4;
    case OB_DT_F16: return n * 2;
    case OB_DT_I8:
    case OB_DT_U8: return n;
    /* docs/FORMAT.md's row strides, here in 64 bits: ob_row_bytes takes an int */
    case OB_DT_T2: row_bytes = (K + 127) / 128 * 32; break;
    case OB_DT_B1: row_bytes = (K + 127) / 128 * 16; break;
    case OB_DT_I4: row_bytes = (K + 63) / 64 * 32; break;
    default: row_bytes = 32 * (K / 160) + (K % 160 + 4) / 5; break;
    }
    return rows * row_bytes; /* <= 2^40 * 8 / 5 + rows: no wrap */
}

ob_status ob_file_tensor(const ob_file *f, uint32_t i, ob_tensor_rec *r, char *err, size_t err_size) {
    const uint8_t *p = f->data + f->dir_offset + (uint64_t)i * REC_SIZE;
    uint64_t rec_off = f->dir_offset + (uint64_t)i * REC_SIZE;
    memset(r, 0, sizeof *r);
    size_t len = 0;
    while (len < OB_NAME_MAX && p[len]) len++;
    if (len == 0 || len >= OB_NAME_MAX) {
        ob_set_msg(err, err_size, "tensor record %u (file offset %llu): name is empty or not NUL-terminated", (unsigned)i,
                   (unsigned long long)rec_off);
        return OB_ERR_FORMAT;
    }
    for (size_t k = len; k < OB_NAME_MAX; k++)
        if (p[k]) {
            ob_set_msg(err, err_size, "tensor record %u: name is not NUL-padded", (unsigned)i);
            return OB_ERR_FORMAT;
        }
    for (size_t k = 0; k < len;) {
        int n = ob_utf8_len(p + k, len - k);
        if (n == 0 || p[k] < 0x20 || p[k] == 0x7f) {
            ob_set_msg(err, err_size, "tensor record %u: name is not printable UTF-8", (unsigned)i);
            return OB_ERR_FORMAT;
        }
        k += (size_t)n;
    }
    memcpy(r->name, p, len);
    r->dtype = ob_rd_u32(p + 64);
    r->n_dims = ob_rd_u32(p + 68);
    for (int d = 0; d < 4; d++) r->shape[d] = ob_rd_u64(p + 72 + 8 * d);
    r->offset = ob_rd_u64(p + 104);
    r->size = ob_rd_u64(p + 112);
    r->scale = ob_rd_f32(p + 120);
    if (r->dtype >= OB_DT_COUNT) {
        ob_set_msg(err, err_size, "tensor '%s': unknown dtype %u", r->name, (unsigned)r->dtype);
        return OB_ERR_FORMAT;
    }
    if (r->n_dims < 1 || r->n_dims > 4) {
        ob_set_msg(err, err_size, "tensor '%s': n_dims %u not in 1..4", r->name, (unsigned)r->n_dims);
        return OB_ERR_FORMAT;
    }
    for (uint32_t d = r->n_dims; d < 4; d++)
        if (r->shape[d] != 1) {
            ob_set_msg(err, err_size, "tensor '%s': unused dim %u is %llu, not 1", r->name, (unsigned)d,
                       (unsigned long long)r->shape[d]);
            return OB_ERR_FORMAT;
        }
    if (ob_rd_u32(p + 124) != 0) {
        ob_set_msg(err, err_size, "tensor '%s': reserved field is not zero", r->name);
        return OB_ERR_FORMAT;
    }
    const char *why;
    uint64_t want = expected_size(r, &why);
    if (why) {
        ob_set_msg(err, err_size, "tensor '%s': bad shape [%llu, %llu, %llu, %llu]: %s", r->name,
                   (unsigned long long)r->shape[0], (unsigned long long)r->shape[1],
                   (unsigned long long)r->shape[2], (unsigned long long)r->shape[3], why);
        return OB_ERR_FORMAT;
    }
    if (r->size != want) {
        ob_set_msg(err, err_size, "tensor '%s': size %llu bytes, but dtype %s and its shape need %llu", r->name,
                   (unsigned long long)r->size, ob_dtype_name(r->dtype), (unsigned long long)want);
        return OB_ERR_FORMAT;
    }
    if (r->offset % 64 || !in_file(r->offset, r->size, f->size - f->data_offset)) {
        ob_set_msg(err, err_size, "tensor '%s': data [%llu, +%llu) is misaligned or beyond the end of the file",
                   r->name, (unsigned long long)(f->data_offset + r->offset), (unsigned long long)r->size);
        return OB_ERR_FORMAT;
    }
    int packed = r->dtype == OB_DT_T2 || r->dtype == OB_DT_T16 || r->dtype == OB_DT_B1;
    if (!isfinite(r->scale) || (packed && !(r->scale > 0.0f))) {
        ob_set_msg(err, err_size, "tensor '%s': bad scale %g", r->name, (double)r->scale);
        return OB_ERR_FORMAT;
    }
    return OB_OK;
}

/* ---------------------------------------------------------------- directory checks */

static const uint8_t *rec_at(const ob_file *f, uint32_t i) { return f->data + f->dir_offset + (uint64_t)i * REC_SIZE; }

/* Record order for the sorts: by data offset (key 0) or by the 64 NUL-padded name bytes (key 1);
 * ties by record number, so the order is total and the same on every platform. */
static int rec_less(const ob_file *f, int key, uint32_t a, uint32_t b) {
    int c;
    if (key == 0) {
        uint64_t oa = ob_rd_u64(rec_at(f, a) + 104), ob = ob_rd_u64(rec_at(f, b) + 104);
        c = oa < ob ? -1 : oa > ob;
    } else {
        c = memcmp(rec_at(f, a), rec_at(f, b), OB_NAME_MAX);
    }
    return c < 0 || (c == 0 && a < b);
}

/* Heapsort: n log n in the worst case and no memory beyond the index itself. */
static void sift_down(const ob_file *f, int key, uint32_t *ix, size_t root, size_t n) {
    for (;;) {
        size_t child = 2 * root + 1;
        if (child >= n) return;
        if (child + 1 < n && rec_less(f, key, ix[child], ix[child + 1])) child++;
        if (!rec_less(f, key, ix[root], ix[child])) return;
        uint32_t t = ix[root];
        ix[root] = ix[child];
        ix[child] = t;
        root = child;
    }
}

static void sort_records(const ob_file *f, int key, uint32_t *ix, size_t n) {
    for (size_t i = n / 2; i-- > 0;) sift_down(f, key, ix, i, n);
    for (size_t end = n; end-- > 1;) {
        uint32_t t = ix[0];
        ix[0] = ix[end];
        ix[end] = t;
        sift_down(f, key, ix, 0, end);
    }
}

ob_status ob_file_check_directory(ob_file *f, uint32_t *index, char *err, size_t err_size) {
    ob_tensor_rec r;
    uint32_t n = f->n_tensors;
    f->by_name = NULL;
    for (uint32_t i = 0; i < n; i++) {
        ob_status st = ob_file_tensor(f, i, &r, err, err_size);
        if (st != OB_OK) return st;
        index[i] = i;
    }
    /* sorted by start, a tensor overlaps an earlier one iff it starts before the furthest end so far */
    sort_records(f, 0, index, n);
    uint64_t max_end = 0;
    uint32_t max_rec = 0;
    for (uint32_t k = 0; k < n; k++) {
        const uint8_t *p = rec_at(f, index[k]);
        uint64_t off = ob_rd_u64(p + 104), end = off + ob_rd_u64(p + 112); /* checked in ob_file_tensor */
        if (k > 0 && off < max_end) {
            ob_set_msg(err, err_size, "tensors '%s' and '%s' overlap", (const char *)rec_at(f, max_rec), (const char *)p);
            return OB_ERR_FORMAT;
        }
        if (end > max_end) {
            max_end = end;
            max_rec = index[k];
        }
    }
    /* duplicate names would make lookups ambiguous; sorted by name, duplicates are neighbours */
    sort_records(f, 1, index, n);
    for (uint32_t k = 1; k < n; k++)
        if (memcmp(rec_at(f, index[k - 1]), rec_at(f, index[k]), OB_NAME_MAX) == 0) {
            ob_set_msg(err, err_size, "tensor '%s' appears twice in the directory", (const char *)rec_at(f, index[k]));
            return OB_ERR_FORMAT;
        }
    f->by_name = index;
    return OB_OK;
}

int ob_file_find(const ob_file *f, const char *name, ob_tensor_rec *rec, char *err, size_t err_size) {
    size_t len = strlen(name);
    if (len >= OB_NAME_MAX) return -1;
    uint8_t key[OB_NAME_MAX] = {0};
    memcpy(key, name, len);
    int64_t found = -1;
    if (f->by_name) {
        size_t lo = 0, hi = f->n_tensors;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            int c = memcmp(rec_at(f, f->by_name[mid]), key, OB_NAME_MAX);
            if (c == 0) {
                found = f->by_name[mid];
                break;
            }
            if (c < 0) lo = mid + 1;
            else hi = mid;
        }
    } else {
        for (uint32_t i = 0; i < f->n_tensors && found < 0; i++)
            if (memcmp(rec_at(f, i), key, OB_NAME_MAX) == 0) found = i;
    }
    if (found < 0) return -1;
    ob_status st = ob_file_tensor(f, (uint32_t)found, rec, err, err_size);
    return st == OB_OK ? 0 : (int)st;
}

const uint8_t *ob_file_tensor_data(const ob_file *f, const ob_tensor_rec *rec) {
    return f->data + f->data_offset + rec->offset;
}
