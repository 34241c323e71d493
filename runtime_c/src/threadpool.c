/* threadpool.c - persistent pthread pool (see threadpool.h). */
#if !defined(_GNU_SOURCE)
#define _GNU_SOURCE 1
#endif
#include "threadpool.h"

/* OB_NO_THREADS: targets without pthreads (bare-metal MCU, wasm32-wasi).  A pool of n runs its
 * n parts one after another on the calling thread: the same results (they never depend on the
 * split), no speed-up. */
#if defined(OB_NO_THREADS)
#include <stdlib.h>

struct ob_threadpool {
    int n;
};

ob_threadpool *ob_threadpool_create(int n_threads) {
    ob_threadpool *p = (ob_threadpool *)malloc(sizeof *p);
    if (p) p->n = n_threads < 1 ? 1 : n_threads;
    return p;
}
void ob_threadpool_destroy(ob_threadpool *p) { free(p); }
int ob_threadpool_size(const ob_threadpool *p) { return p ? p->n : 1; }
void ob_threadpool_run(ob_threadpool *p, ob_task_fn fn, void *ctx) {
    int n = p ? p->n : 1;
    for (int i = 0; i < n; i++) fn(ctx, i, n);
}
#else
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>

#define OB_SPIN_ITERS 20000

static inline void ob_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __asm__ volatile("pause" ::: "memory");
#elif defined(__aarch64__)
    __asm__ volatile("yield" ::: "memory");
#endif
}

typedef struct {
    struct ob_threadpool *pool;
    int ith;
} ob_worker;

struct ob_threadpool {
    int n;
    pthread_t *threads;
    ob_worker *workers;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* shared state, accessed with __atomic builtins */
    unsigned gen;      /* bumped once per run */
    int sleeping;      /* workers blocked on cv */
    int pending;       /* workers still running the current task */
    int stop;
    ob_task_fn fn;
    void *ctx;
};

static void *ob_worker_main(void *arg) {
    ob_worker *w = (ob_worker *)arg;
    struct ob_threadpool *p = w->pool;
    unsigned seen = 0;
    for (;;) {
        unsigned g = __atomic_load_n(&p->gen, __ATOMIC_ACQUIRE);
        int spins = 0;
        while (g == seen && !__atomic_load_n(&p->stop, __ATOMIC_ACQUIRE)) {
            if (++spins < OB_SPIN_ITERS) {
                ob_cpu_relax();
                if ((spins & 255) == 0) sched_yield();
            } else {
                pthread_mutex_lock(&p->mu);
                __atomic_add_fetch(&p->sleeping, 1, __ATOMIC_SEQ_CST);
                while (__atomic_load_n(&p->gen, __ATOMIC_SEQ_CST) == seen &&
                       !__atomic_load_n(&p->stop, __ATOMIC_SEQ_CST))
                    pthread_cond_wait(&p->cv, &p->mu);
                __atomic_sub_fetch(&p->sleeping, 1, __ATOMIC_SEQ_CST);
                pthread_mutex_unlock(&p->mu);
                spins = 0;
            }
            g = __atomic_load_n(&p->gen, __ATOMIC_ACQUIRE);
        }
        if (__atomic_load_n(&p->stop, __ATOMIC_ACQUIRE)) break;
        seen = g;
        p->fn(p->ctx, w->ith, p->n);
        __atomic_sub_fetch(&p->pending, 1, __ATOMIC_ACQ_REL);
    }
    return NULL;
}

ob_threadpool *ob_threadpool_create(int n_threads) {
    if (n_threads < 1) n_threads = 1;
    struct ob_threadpool *p = (struct ob_threadpool *)calloc(1, sizeof(*p));
    if (!p) return NULL;
    p->n = n_threads;
    if (pthread_mutex_init(&p->mu, NULL) != 0) {
        free(p);
        return NULL;
    }
    if (pthread_cond_init(&p->cv, NULL) != 0) {
        pthread_mutex_destroy(&p->mu);
        free(p);
        return NULL;
    }
    if (n_threads > 1) {
        p->threads = (pthread_t *)calloc((size_t)n_threads, sizeof(pthread_t));
        p->workers = (ob_worker *)calloc((size_t)n_threads, sizeof(ob_worker));
        if (!p->threads || !p->workers) {
            p->n = 1;
            ob_threadpool_destroy(p);
            return NULL;
        }
        for (int i = 1; i < n_threads; i++) {
            p->workers[i].pool = p;
            p->workers[i].ith = i;
            if (pthread_create(&p->threads[i], NULL, ob_worker_main, &p->workers[i]) != 0) {
                p->n = i; /* join only those started */
                ob_threadpool_destroy(p);
                return NULL;
            }
        }
    }
    return p;
}

void ob_threadpool_destroy(ob_threadpool *p) {
    if (!p) return;
    if (p->n > 1) {
        pthread_mutex_lock(&p->mu);
        __atomic_store_n(&p->stop, 1, __ATOMIC_SEQ_CST);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
        for (int i = 1; i < p->n; i++) pthread_join(p->threads[i], NULL);
    }
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p->threads);
    free(p->workers);
    free(p);
}

int ob_threadpool_size(const ob_threadpool *p) { return p ? p->n : 1; }

void ob_threadpool_run(ob_threadpool *p, ob_task_fn fn, void *ctx) {
    if (!p || p->n == 1) {
        fn(ctx, 0, 1);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    __atomic_store_n(&p->pending, p->n - 1, __ATOMIC_SEQ_CST);
    __atomic_add_fetch(&p->gen, 1, __ATOMIC_SEQ_CST); /* publishes fn / ctx */
    if (__atomic_load_n(&p->sleeping, __ATOMIC_SEQ_CST) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    fn(ctx, 0, p->n);
    int spins = 0;
    while (__atomic_load_n(&p->pending, __ATOMIC_ACQUIRE) != 0) {
        ob_cpu_relax();
        if ((++spins & 255) == 0) sched_yield();
    }
}

#endif /* OB_NO_THREADS */

void ob_split_rows(int n, int ith, int nth, int align, int *r0, int *r1) {
    if (align < 1) align = 1;
    if (nth < 1) nth = 1;
    int units = (n + align - 1) / align;
    int per = units / nth, extra = units % nth;
    int u0 = ith * per + (ith < extra ? ith : extra);
    int u1 = u0 + per + (ith < extra ? 1 : 0);
    int a = u0 * align, b = u1 * align;
    if (a > n) a = n;
    if (b > n) b = n;
    *r0 = a;
    *r1 = b;
}

/* ---------------------------------------------------------------- matmul wrappers */

static int ob_align_rows(size_t rows) {
    return (int)((rows + OB_ROW_ALIGN - 1) / OB_ROW_ALIGN * OB_ROW_ALIGN);
}

int ob_take_rows(int *next, int n, size_t row_bytes, int nth, int *r0, int *r1) {
    if (row_bytes < 1) row_bytes = 1;
    const int guided = nth > 1 && (size_t)n * row_bytes / (size_t)nth >= OB_CHUNK_BYTES;
    const int fixed = nth <= 1 ? n : ob_align_rows(((size_t)n + (size_t)nth - 1) / (size_t)nth);
    const size_t tail = (OB_TAIL_BYTES + row_bytes - 1) / row_bytes;
    int c = __atomic_load_n(next, __ATOMIC_RELAXED), chunk = fixed;
    do {
        if (c >= n) return 0;
        if (guided) {
            size_t share = ((size_t)(n - c) + 2 * (size_t)nth - 1) / (2 * (size_t)nth);
            chunk = ob_align_rows(share > tail ? share : tail);
        }
    } while (!__atomic_compare_exchange_n(next, &c, c + chunk, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    *r0 = c;
    *r1 = n - c > chunk ? c + chunk : n;
    return 1;
}

typedef struct {
    const ob_kernels *k;
    ob_wfmt fmt;
    const uint8_t *w;
    int N, K;
    float wscale;
    const int8_t *xq;
    size_t xq_stride;
    const float *a;
    const int32_t *xsum;
    int m;
    float *y;
    size_t ldy;
    int next; /* ob_take_rows */
} ob_mm_task;

static void ob_mm_run(void *ctx, int ith, int nth) {
    ob_mm_task *t = (ob_mm_task *)ctx;
    int r0, r1;
    (void)ith;
    while (ob_take_rows(&t->next, t->N, ob_row_bytes(t->fmt, t->K) * (size_t)t->m, nth, &r0, &r1))
        t->k->matmul[t->fmt](t->w, t->K, t->wscale, t->xq, t->xq_stride, t->a, t->xsum, t->m, r0,
                             r1, t->y, t->ldy);
}

void ob_matmul_mt(ob_threadpool *pool, const ob_kernels *k, ob_wfmt fmt, const uint8_t *w,
                  int N, int K, float wscale, const int8_t *xq, size_t xq_stride, const float *a,
                  const int32_t *xsum, int m, float *y, size_t ldy) {
    ob_mm_task t = {k, fmt, w, N, K, wscale, xq, xq_stride, a, xsum, m, y, ldy, 0};
    ob_threadpool_run(pool, ob_mm_run, &t);
}

typedef struct {
    const ob_kernels *k;
    ob_ifmt fmt;
    const uint8_t *w;
    int N, K;
    const float *wscale;
    const int8_t *xq;
    size_t xq_stride;
    const float *a;
    const int32_t *xsum;
    int m;
    float *y;
    size_t ldy;
    int next; /* ob_take_rows */
} ob_mm_rs_task;

static void ob_mm_rs_run(void *ctx, int ith, int nth) {
    ob_mm_rs_task *t = (ob_mm_rs_task *)ctx;
    int r0, r1;
    (void)ith;
    while (ob_take_rows(&t->next, t->N, ob_irow_bytes(t->fmt, t->K) * (size_t)t->m, nth, &r0, &r1))
        t->k->matmul_rs[t->fmt](t->w, t->K, t->wscale, t->xq, t->xq_stride, t->a, t->xsum, t->m, r0,
                                r1, t->y, t->ldy);
}

void ob_matmul_rs_mt(ob_threadpool *pool, const ob_kernels *k, ob_ifmt fmt, const uint8_t *w,
                     int N, int K, const float *wscale, const int8_t *xq, size_t xq_stride,
                     const float *a, const int32_t *xsum, int m, float *y, size_t ldy) {
    ob_mm_rs_task t = {k, fmt, w, N, K, wscale, xq, xq_stride, a, xsum, m, y, ldy, 0};
    ob_threadpool_run(pool, ob_mm_rs_run, &t);
}

typedef struct {
    const ob_kernels *k;
    int kind; /* 0 f32, 1 f16, 2 q8 */
    const void *w;
    const float *scale;
    size_t ldw;
    int N, K;
    const float *x;
    const int16_t *xq; /* q8: the int16 activations and their scale */
    float a;
    float *y;
    int next; /* ob_take_rows */
} ob_gemv_task;

static void ob_gemv_run(void *ctx, int ith, int nth) {
    ob_gemv_task *t = (ob_gemv_task *)ctx;
    int r0, r1;
    (void)ith;
    size_t rb = (size_t)t->K * (t->kind == 0 ? 4 : t->kind == 1 ? 2 : 1);
    while (ob_take_rows(&t->next, t->N, rb, nth, &r0, &r1)) {
        if (t->kind == 0)
            t->k->gemv_f32((const float *)t->w, t->ldw, t->K, t->x, r0, r1, t->y);
        else if (t->kind == 1)
            t->k->gemv_f16((const uint16_t *)t->w, t->ldw, t->K, t->x, r0, r1, t->y);
        else
            t->k->gemv_q8((const int8_t *)t->w, t->scale, t->ldw, t->K, t->xq, t->a, r0, r1, t->y);
    }
}

void ob_gemv_f32_mt(ob_threadpool *pool, const ob_kernels *k, const float *w, size_t ldw, int N,
                    int K, const float *x, float *y) {
    ob_gemv_task t = {k, 0, w, NULL, ldw, N, K, x, NULL, 0.0f, y, 0};
    ob_threadpool_run(pool, ob_gemv_run, &t);
}

void ob_gemv_f16_mt(ob_threadpool *pool, const ob_kernels *k, const uint16_t *w, size_t ldw,
                    int N, int K, const float *x, float *y) {
    ob_gemv_task t = {k, 1, w, NULL, ldw, N, K, x, NULL, 0.0f, y, 0};
    ob_threadpool_run(pool, ob_gemv_run, &t);
}

void ob_gemv_q8_mt(ob_threadpool *pool, const ob_kernels *k, const int8_t *w, const float *scale,
                   size_t ldw, int N, int K, const int16_t *xq, float a, float *y) {
    ob_gemv_task t = {k, 2, w, scale, ldw, N, K, NULL, xq, a, y, 0};
    ob_threadpool_run(pool, ob_gemv_run, &t);
}
