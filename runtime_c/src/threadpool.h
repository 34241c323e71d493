/* threadpool.h - a small persistent pthread pool for splitting matmul rows (internal).
 *
 * Created once with n threads (the caller's thread counts as thread 0, so n - 1 workers are
 * spawned).  ob_threadpool_run() runs fn(ctx, ith, nth) on every thread and returns when all are
 * done; it allocates nothing.  Workers spin briefly for new work, then sleep on a condition
 * variable.  One run at a time per pool (calls from several threads must be serialized by the
 * caller).
 *
 * Determinism: the wrappers hand rows out in chunks (ob_take_rows), and every kernel computes a row
 * the same way whatever range it is in and whichever thread runs it, so results do not depend on n.
 */
#ifndef ONEBIT_THREADPOOL_H
#define ONEBIT_THREADPOOL_H

#include <stddef.h>
#include <stdint.h>

#include "kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ob_threadpool ob_threadpool;
typedef void (*ob_task_fn)(void *ctx, int ith, int nth);

/* n_threads >= 1 (values < 1 mean 1).  Returns NULL on failure. */
ob_threadpool *ob_threadpool_create(int n_threads);
void ob_threadpool_destroy(ob_threadpool *pool); /* NULL is fine */
int ob_threadpool_size(const ob_threadpool *pool); /* 1 for NULL */
/* Run fn(ctx, i, n) for i in 0..n-1, one per thread; the caller runs i = 0.  pool may be NULL
 * (runs fn(ctx, 0, 1) inline). */
void ob_threadpool_run(ob_threadpool *pool, ob_task_fn fn, void *ctx);

/* Rows [0, n) split into nth contiguous chunks, chunk boundaries multiples of `align` (>= 1)
 * except the last; thread ith gets [*r0, *r1) (possibly empty). */
void ob_split_rows(int n, int ith, int nth, int align, int *r0, int *r1);

/* Rows [0, n) of row_bytes each handed out in chunks of OB_ROW_ALIGN-aligned rows, first come first
 * served: the threads of one dispatch share *next (0 at the start) and each takes the next chunk
 * until none is left, so a core that streams faster does more of a big matrix.  (Fixed halves left
 * the faster one spinning: 12 % of the 2-thread CPU time at the 2B shape went to the barrier,
 * perf.)  A matrix of under OB_CHUNK_BYTES a thread (every 134m matrix) is one chunk a thread: more
 * chunks there cost more in handoffs than they balance.  A bigger one is handed out guided: each
 * chunk a 1 / (2 nth) share of the rows still left, and at least OB_TAIL_BYTES, so chunks are long
 * while the threads stream and short at the end, where the first thread done would otherwise wait
 * out the other's whole last chunk (the 2B head in 4 fixed chunks a thread: 41 MB each, about
 * 1.5 ms).  One thread takes everything at once.  Returns 0 when no rows are left.  Every row's
 * result is the same whoever computes it, so this changes no bit.  row_bytes is a row's work: its
 * weight bytes times the tokens it multiplies, so a prefill of 32 tokens through a 134m matrix
 * (32 times one token's work) is handed out guided too, and a core the neighbours slow down takes
 * fewer chunks instead of holding the other at the barrier. */
#define OB_ROW_ALIGN 16 /* 16 floats = one cache line of y per thread boundary */
#ifndef OB_CHUNK_BYTES
#define OB_CHUNK_BYTES (1 << 20)
#endif
#ifndef OB_TAIL_BYTES
#define OB_TAIL_BYTES (256 << 10)
#endif
int ob_take_rows(int *next, int n, size_t row_bytes, int nth, int *r0, int *r1);

/* Multi-threaded wrappers over an ob_kernels table: rows [0, N) split over the pool. */
void ob_matmul_mt(ob_threadpool *pool, const ob_kernels *k, ob_wfmt fmt, const uint8_t *w,
                  int N, int K, float wscale, const int8_t *xq, size_t xq_stride, const float *a,
                  const int32_t *xsum, int m, float *y, size_t ldy);
/* The same for int4 / int8 rows with per-row scales (kernels.h ob_matmul_rs_fn). */
void ob_matmul_rs_mt(ob_threadpool *pool, const ob_kernels *k, ob_ifmt fmt, const uint8_t *w,
                     int N, int K, const float *wscale, const int8_t *xq, size_t xq_stride,
                     const float *a, const int32_t *xsum, int m, float *y, size_t ldy);
void ob_gemv_f32_mt(ob_threadpool *pool, const ob_kernels *k, const float *w, size_t ldw, int N,
                    int K, const float *x, float *y);
void ob_gemv_f16_mt(ob_threadpool *pool, const ob_kernels *k, const uint16_t *w, size_t ldw,
                    int N, int K, const float *x, float *y);
/* The int8 head: xq, a from ob_quantize_i16 (kernels.h gemv_q8). */
void ob_gemv_q8_mt(ob_threadpool *pool, const ob_kernels *k, const int8_t *w, const float *scale,
                   size_t ldw, int N, int K, const int16_t *xq, float a, float *y);

#ifdef __cplusplus
}
#endif
#endif /* ONEBIT_THREADPOOL_H */
