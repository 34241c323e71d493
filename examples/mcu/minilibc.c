/* minilibc.c - the few C library functions libonebit needs whose newlib versions would link
 * newlib's heap: snprintf / vsnprintf (newlib's float formatting allocates big numbers) and strtod
 * (same); and time / clock, which newlib leaves to an OS.  Plus allocation traps: libonebit only allocates when given no arena, which this
 * firmware never does; a call would stop the firmware with a message (and the Makefile checks
 * that no heap allocator, _sbrk included, is in the image at all). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "semihost.h"

/* ---------------------------------------------------------------- clocks */

/* No calendar and no process clock on this board: C's answer for "not available" is -1. */
time_t time(time_t *t) {
    if (t) *t = (time_t)-1;
    return (time_t)-1;
}
clock_t clock(void) { return (clock_t)-1; }

/* ---------------------------------------------------------------- allocation traps */

static void no_heap(const char *fn) {
    static const char tail[] = " called: this firmware has no heap\n";
    int err = sh_open_console(1);
    sh_write(err, "mcu: ", 5);
    sh_write(err, fn, strlen(fn));
    sh_write(err, tail, sizeof tail - 1);
    sh_exit(0);
}

void *malloc(size_t n) {
    (void)n;
    no_heap("malloc");
    return NULL;
}
void *calloc(size_t n, size_t m) {
    (void)n, (void)m;
    no_heap("calloc");
    return NULL;
}
void *realloc(void *p, size_t n) {
    (void)p, (void)n;
    no_heap("realloc");
    return NULL;
}
void free(void *p) {
    if (p) no_heap("free");
}

/* ---------------------------------------------------------------- strtod */

/* Decimal to double for JSON numbers.  With at most 19 significant digits and a mantissa below
 * 2^53 scaled by 10^k, |k| <= 22, both operands are exact doubles and the one multiply or divide
 * rounds correctly (Clinger's fast path): that covers every number onebit-export writes.  Other
 * inputs get a product of powers of ten, off by a few units in the last place at most. */
double strtod(const char *s, char **end) {
    static const double pow10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                     1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                     1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    const char *p = s;
    int neg = 0, digits = 0, exp10 = 0;
    uint64_t m = 0;
    if (*p == '-' || *p == '+') neg = *p++ == '-';
    for (; *p >= '0' && *p <= '9'; p++, digits++) {
        if (m < 1000000000000000000ull) m = m * 10 + (uint64_t)(*p - '0');
        else exp10++;
    }
    if (*p == '.')
        for (p++; *p >= '0' && *p <= '9'; p++, digits++)
            if (m < 1000000000000000000ull) m = m * 10 + (uint64_t)(*p - '0'), exp10--;
    if (digits == 0) {
        if (end) *end = (char *)s;
        return 0.0;
    }
    if (*p == 'e' || *p == 'E') {
        const char *q = p + 1;
        int eneg = 0, e = 0;
        if (*q == '-' || *q == '+') eneg = *q++ == '-';
        if (*q >= '0' && *q <= '9') {
            for (; *q >= '0' && *q <= '9'; q++)
                if (e < 100000) e = e * 10 + (*q - '0');
            exp10 += eneg ? -e : e;
            p = q;
        }
    }
    if (end) *end = (char *)p;
    double d = (double)m;
    if (m < (1ull << 53) && exp10 >= -22 && exp10 <= 22) {
        d = exp10 < 0 ? d / pow10[-exp10] : d * pow10[exp10];
    } else {
        for (; exp10 > 22; exp10 -= 22) d *= 1e22;
        for (; exp10 < -22; exp10 += 22) d /= 1e22;
        d = exp10 < 0 ? d / pow10[-exp10] : d * pow10[exp10];
    }
    return neg ? -d : d;
}

/* ---------------------------------------------------------------- snprintf */

typedef struct {
    char *buf;
    size_t cap, n; /* n: characters the full output needs */
} out_t;

static void put(out_t *o, char c) {
    if (o->n + 1 < o->cap) o->buf[o->n] = c;
    o->n++;
}

static void put_field(out_t *o, const char *s, size_t len, int width, int left, char pad) {
    size_t fill = width > 0 && (size_t)width > len ? (size_t)width - len : 0;
    if (!left && pad == '0' && len && (*s == '-' || *s == '+')) { /* zeros go after the sign */
        put(o, *s++);
        len--;
    }
    if (!left)
        while (fill--) put(o, pad);
    while (len--) put(o, *s++);
    if (left)
        while (fill--) put(o, ' ');
}

static size_t fmt_uint(char *tmp, uint64_t v, unsigned base, int upper) {
    const char *dig = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    char rev[24];
    size_t n = 0, k = 0;
    do rev[n++] = dig[v % base], v /= base;
    while (v);
    while (n) tmp[k++] = rev[--n];
    return k;
}

/* Fixed notation with prec decimals; values past 2^64 print their exponent form instead. */
static size_t fmt_fixed(char *tmp, double v, int prec) {
    size_t k = 0;
    if (v != v) return memcpy(tmp, "nan", 3), 3;
    if (v < 0) tmp[k++] = '-', v = -v;
    if (v > 1.8e19) {
        memcpy(tmp + k, ">1e19", 5);
        return k + 5;
    }
    if (prec > 9) prec = 9;
    double scale = 1;
    for (int i = 0; i < prec; i++) scale *= 10;
    uint64_t whole = (uint64_t)v;
    uint64_t frac = (uint64_t)((v - (double)whole) * scale + 0.5);
    if ((double)frac >= scale) whole++, frac = 0;
    k += fmt_uint(tmp + k, whole, 10, 0);
    if (prec > 0) {
        tmp[k++] = '.';
        char digs[24];
        size_t nd = fmt_uint(digs, frac, 10, 0);
        for (size_t i = nd; i < (size_t)prec; i++) tmp[k++] = '0';
        memcpy(tmp + k, digs, nd);
        k += nd;
    }
    return k;
}

int vsnprintf(char *buf, size_t cap, const char *fmt, va_list ap) {
    out_t o = {buf, cap, 0};
    char tmp[64];
    for (const char *p = fmt; *p; p++) {
        if (*p != '%') {
            put(&o, *p);
            continue;
        }
        int left = 0, plus = 0, width = 0, prec = -1, lng = 0;
        char pad = ' ';
        for (p++;; p++) {
            if (*p == '-') left = 1;
            else if (*p == '0') pad = '0';
            else if (*p == '+') plus = 1;
            else if (*p != ' ' && *p != '#') break;
        }
        if (*p == '*') width = va_arg(ap, int), p++;
        else
            while (*p >= '0' && *p <= '9') width = width * 10 + (*p++ - '0');
        if (*p == '.') {
            prec = 0;
            if (*++p == '*') prec = va_arg(ap, int), p++;
            else
                while (*p >= '0' && *p <= '9') prec = prec * 10 + (*p++ - '0');
        }
        for (; *p == 'l' || *p == 'h' || *p == 'z' || *p == 'j' || *p == 't'; p++)
            lng += *p == 'l' ? 1 : *p == 'j' ? 2 : *p == 'z' || *p == 't' ? 3 : 0;
        if (lng == 3) lng = sizeof(size_t) == sizeof(long long) ? 2 : sizeof(size_t) == sizeof(long);
        size_t k = 0;
        switch (*p) {
        case 'd':
        case 'i': {
            int64_t v = lng >= 2 ? va_arg(ap, long long) : lng == 1 ? va_arg(ap, long) : va_arg(ap, int);
            if (v < 0) tmp[k++] = '-';
            else if (plus) tmp[k++] = '+';
            k += fmt_uint(tmp + k, v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v, 10, 0);
            put_field(&o, tmp, k, width, left, pad);
            break;
        }
        case 'u':
        case 'x':
        case 'X': {
            uint64_t v = lng >= 2 ? va_arg(ap, unsigned long long)
                         : lng == 1 ? va_arg(ap, unsigned long) : va_arg(ap, unsigned);
            k = fmt_uint(tmp, v, *p == 'u' ? 10 : 16, *p == 'X');
            put_field(&o, tmp, k, width, left, pad);
            break;
        }
        case 'p':
            tmp[0] = '0', tmp[1] = 'x';
            k = 2 + fmt_uint(tmp + 2, (uintptr_t)va_arg(ap, void *), 16, 0);
            put_field(&o, tmp, k, width, left, ' ');
            break;
        case 'c': tmp[0] = (char)va_arg(ap, int), put_field(&o, tmp, 1, width, left, ' '); break;
        case 's': {
            const char *s = va_arg(ap, const char *);
            if (!s) s = "(null)";
            size_t len = 0;
            while ((prec < 0 || len < (size_t)prec) && s[len]) len++;
            put_field(&o, s, len, width, left, ' ');
            break;
        }
        case 'f':
        case 'F':
        case 'g':
        case 'G':
        case 'e':
        case 'E': /* messages only: fixed notation for all three */
            k = fmt_fixed(tmp, va_arg(ap, double), prec < 0 ? 6 : prec);
            put_field(&o, tmp, k, width, left, pad);
            break;
        case '%': put(&o, '%'); break;
        case 0: p--; break;
        default: put(&o, '%'), put(&o, *p); break;
        }
    }
    if (cap) buf[o.n < cap ? o.n : cap - 1] = 0;
    return (int)o.n;
}

int snprintf(char *buf, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
    return n;
}
