/* json.c - a small strict JSON reader for the .1bit metadata: validate once, then look values up
 * in place.  No allocation; recursion bounded by OB_JSON_DEPTH; every read is bounds-checked, so
 * it is safe on hostile input (fuzzed by tests/test_json.c). */
#include <math.h>
#include <string.h>

#include "internal.h"

#define OB_JSON_DEPTH 32

typedef struct {
    const char *s;
    size_t n, i;
    char *err;
    size_t err_size;
} jp;

static int jfail(jp *p, const char *what) {
    ob_set_msg(p->err, p->err_size, "metadata JSON: %s at byte %zu", what, p->i);
    return -1;
}

static void jws(jp *p) {
    while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r'))
        p->i++;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Length of a valid UTF-8 sequence at s (max n bytes), or 0. */
int ob_utf8_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    int len;
    unsigned cp;
    if (c >= 0xc2 && c <= 0xdf) len = 2, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef) len = 3, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4) len = 4, cp = c & 0x07;
    else return 0;
    if ((size_t)len > n) return 0;
    for (int k = 1; k < len; k++) {
        if ((s[k] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (s[k] & 0x3f);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0;
    return len;
}

static int jstring(jp *p) {
    p->i++; /* opening quote */
    while (p->i < p->n) {
        unsigned char c = (unsigned char)p->s[p->i];
        if (c == '"') {
            p->i++;
            return 0;
        }
        if (c < 0x20) return jfail(p, "control character in string");
        if (c == '\\') {
            if (p->i + 1 >= p->n) return jfail(p, "unterminated escape");
            char e = p->s[p->i + 1];
            if (e == 'u') {
                if (p->i + 6 > p->n) return jfail(p, "short \\u escape");
                for (int k = 2; k < 6; k++)
                    if (hexval(p->s[p->i + k]) < 0) return jfail(p, "bad \\u escape");
                p->i += 6;
            } else if (strchr("\"\\/bfnrt", e) && e) {
                p->i += 2;
            } else {
                return jfail(p, "bad escape");
            }
            continue;
        }
        int len = ob_utf8_len((const unsigned char *)p->s + p->i, p->n - p->i);
        if (!len) return jfail(p, "invalid UTF-8");
        p->i += (size_t)len;
    }
    return jfail(p, "unterminated string");
}

static int jdigits(jp *p) {
    size_t start = p->i;
    while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') p->i++;
    return p->i > start ? 0 : jfail(p, "digit expected");
}

static int jnumber(jp *p) {
    if (p->s[p->i] == '-') p->i++;
    if (p->i >= p->n) return jfail(p, "truncated number");
    if (p->s[p->i] == '0') p->i++;
    else if (jdigits(p)) return -1;
    if (p->i < p->n && p->s[p->i] == '.') {
        p->i++;
        if (jdigits(p)) return -1;
    }
    if (p->i < p->n && (p->s[p->i] == 'e' || p->s[p->i] == 'E')) {
        p->i++;
        if (p->i < p->n && (p->s[p->i] == '+' || p->s[p->i] == '-')) p->i++;
        if (jdigits(p)) return -1;
    }
    return 0;
}

static int jvalue(jp *p, int depth);

static int jcontainer(jp *p, int depth, char close) {
    if (depth >= OB_JSON_DEPTH) return jfail(p, "nesting too deep");
    p->i++;
    jws(p);
    if (p->i < p->n && p->s[p->i] == close) {
        p->i++;
        return 0;
    }
    for (;;) {
        jws(p);
        if (close == '}') {
            if (p->i >= p->n || p->s[p->i] != '"') return jfail(p, "object key expected");
            if (jstring(p)) return -1;
            jws(p);
            if (p->i >= p->n || p->s[p->i] != ':') return jfail(p, "':' expected");
            p->i++;
        }
        if (jvalue(p, depth + 1)) return -1;
        jws(p);
        if (p->i >= p->n) return jfail(p, "unterminated container");
        if (p->s[p->i] == ',') {
            p->i++;
            continue;
        }
        if (p->s[p->i] == close) {
            p->i++;
            return 0;
        }
        return jfail(p, "',' or close expected");
    }
}

static int jliteral(jp *p, const char *lit) {
    size_t k = strlen(lit);
    if (p->n - p->i < k || memcmp(p->s + p->i, lit, k) != 0) return jfail(p, "unexpected character");
    p->i += k;
    return 0;
}

static int jvalue(jp *p, int depth) {
    jws(p);
    if (p->i >= p->n) return jfail(p, "value expected");
    switch (p->s[p->i]) {
    case '{': return jcontainer(p, depth, '}');
    case '[': return jcontainer(p, depth, ']');
    case '"': return jstring(p);
    case 't': return jliteral(p, "true");
    case 'f': return jliteral(p, "false");
    case 'n': return jliteral(p, "null");
    default:
        if (p->s[p->i] == '-' || (p->s[p->i] >= '0' && p->s[p->i] <= '9')) return jnumber(p);
        return jfail(p, "unexpected character");
    }
}

int ob_json_validate(const char *text, size_t n, char *err, size_t err_size) {
    jp p = {text, n, 0, err, err_size};
    if (!text) return jfail(&p, "missing");
    if (jvalue(&p, 0)) return -1;
    jws(&p);
    if (p.i != n) return jfail(&p, "trailing bytes");
    return 0;
}

/* ---- lookups over validated text (they never read outside [p, p + n) either) */

static size_t skip_ws(const char *s, size_t n, size_t i) {
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) i++;
    return i;
}

/* End of the value starting at s[i]. */
static size_t skip_value(const char *s, size_t n, size_t i) {
    if (i >= n) return n;
    char c = s[i];
    if (c == '"') {
        for (i++; i < n; i++) {
            if (s[i] == '\\') i++;
            else if (s[i] == '"') return i + 1;
        }
        return n;
    }
    if (c == '{' || c == '[') {
        int depth = 0;
        for (; i < n; i++) {
            if (s[i] == '"') {
                i = skip_value(s, n, i) - 1;
                continue;
            }
            if (s[i] == '{' || s[i] == '[') depth++;
            else if (s[i] == '}' || s[i] == ']') {
                if (--depth == 0) return i + 1;
            }
        }
        return n;
    }
    while (i < n && s[i] != ',' && s[i] != '}' && s[i] != ']' && s[i] != ' ' && s[i] != '\n' &&
           s[i] != '\t' && s[i] != '\r')
        i++;
    return i;
}

ob_json ob_json_root(const char *text, size_t n) {
    size_t i = skip_ws(text, n, 0);
    size_t e = skip_value(text, n, i);
    ob_json v = {text + i, e - i};
    return v;
}

int ob_json_is_object(ob_json v) { return v.n >= 2 && v.p[0] == '{'; }

int ob_json_next(ob_json obj, size_t *cursor, ob_json *key, ob_json *value) {
    if (!ob_json_is_object(obj)) return -1;
    const char *s = obj.p;
    size_t n = obj.n, i = *cursor ? *cursor : 1;
    i = skip_ws(s, n, i);
    if (i < n && s[i] == ',') i = skip_ws(s, n, i + 1);
    if (i >= n || s[i] != '"') return -1;
    size_t ke = skip_value(s, n, i);
    key->p = s + i;
    key->n = ke - i;
    i = skip_ws(s, n, ke);
    if (i >= n || s[i] != ':') return -1;
    i = skip_ws(s, n, i + 1);
    size_t ve = skip_value(s, n, i);
    value->p = s + i;
    value->n = ve - i;
    *cursor = ve;
    return 0;
}

int ob_json_is_array(ob_json v) { return v.n >= 2 && v.p[0] == '['; }

int ob_json_item(ob_json arr, size_t *cursor, ob_json *value) {
    if (!ob_json_is_array(arr)) return -1;
    const char *s = arr.p;
    size_t n = arr.n, i = *cursor ? *cursor : 1;
    i = skip_ws(s, n, i);
    if (i < n && s[i] == ',') i = skip_ws(s, n, i + 1);
    if (i >= n || s[i] == ']') return -1;
    size_t ve = skip_value(s, n, i);
    value->p = s + i;
    value->n = ve - i;
    *cursor = ve;
    return 0;
}

int ob_json_string_eq(ob_json v, const char *str) {
    char buf[128];
    size_t len;
    /* a string without escapes is its own bytes: compare in place (every key lookup of the loader
     * comes here for every member it passes, so decoding each into buf was most of an open) */
    if (v.n >= 2 && v.p[0] == '"' && !memchr(v.p + 1, '\\', v.n - 2)) {
        len = strlen(str);
        return v.n - 2 == len && memcmp(v.p + 1, str, len) == 0;
    }
    if (ob_json_string(v, buf, sizeof buf, &len)) return 0;
    return strlen(str) == len && memcmp(buf, str, len) == 0;
}

int ob_json_get(ob_json obj, const char *key, ob_json *out) {
    size_t cur = 0;
    ob_json k, v;
    int found = -1;
    /* the last duplicate wins, as in Python's json */
    while (ob_json_next(obj, &cur, &k, &v) == 0)
        if (ob_json_string_eq(k, key)) {
            *out = v;
            found = 0;
        }
    return found;
}

static size_t put_utf8(char *buf, uint32_t cp) {
    if (cp < 0x80) {
        buf[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        buf[0] = (char)(0xc0 | (cp >> 6));
        buf[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        buf[0] = (char)(0xe0 | (cp >> 12));
        buf[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        buf[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    buf[0] = (char)(0xf0 | (cp >> 18));
    buf[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    buf[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    buf[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

static uint32_t hex4(const char *s) {
    uint32_t v = 0;
    for (int k = 0; k < 4; k++) v = (v << 4) | (uint32_t)hexval(s[k]);
    return v;
}

int ob_json_string(ob_json v, char *buf, size_t cap, size_t *len) {
    if (v.n < 2 || v.p[0] != '"' || cap == 0) return -1;
    size_t o = 0, i = 1, end = v.n - 1;
    while (i < end) {
        char tmp[4];
        size_t k = 0;
        if (v.p[i] == '\\' && i + 1 < end) {
            char e = v.p[i + 1];
            i += 2;
            switch (e) {
            case 'b': tmp[k++] = '\b'; break;
            case 'f': tmp[k++] = '\f'; break;
            case 'n': tmp[k++] = '\n'; break;
            case 'r': tmp[k++] = '\r'; break;
            case 't': tmp[k++] = '\t'; break;
            case 'u': {
                if (i + 4 > end) return -1;
                uint32_t cp = hex4(v.p + i);
                i += 4;
                if (cp >= 0xd800 && cp < 0xdc00 && i + 6 <= end && v.p[i] == '\\' && v.p[i + 1] == 'u') {
                    uint32_t lo = hex4(v.p + i + 2);
                    if (lo >= 0xdc00 && lo < 0xe000) {
                        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                        i += 6;
                    }
                }
                if (cp >= 0xd800 && cp < 0xe000) cp = 0xfffd; /* lone surrogate */
                k = put_utf8(tmp, cp);
                break;
            }
            default: tmp[k++] = e; break;
            }
        } else {
            tmp[k++] = v.p[i++];
        }
        if (o + k >= cap) return -1;
        memcpy(buf + o, tmp, k);
        o += k;
    }
    buf[o] = 0;
    if (len) *len = o;
    return 0;
}

/* Numbers are parsed here rather than with strtod, which reads the decimal separator from the
 * process's LC_NUMERIC: a host program that calls setlocale(LC_ALL, "de_DE") would otherwise see
 * "1e-05" read fine and "0.5" stop at the '.'.  The result is correctly rounded whenever the
 * significand has at most 19 digits and fits in 53 bits with |exponent| <= 22 (Clinger's fast
 * path: one exact operation), which covers what Python's json writes for the config's values;
 * beyond that it is within a few units in the last place of a double, and the config keeps floats. */
static const double pow10_exact[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                       1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

int ob_json_number(ob_json v, double *out) {
    const char *s = v.p;
    size_t n = v.n, i = 0;
    int neg = 0, digits = 0, any = 0;
    uint64_t mant = 0;
    long exp10 = 0; /* value = mant * 10^exp10 */
    if (n == 0) return -1;
    if (s[0] == '-') neg = 1, i = 1;
    if (i >= n || s[i] < '0' || s[i] > '9') return -1;
    for (int frac = 0; i < n; i++) {
        char c = s[i];
        if (c == '.' && !frac) {
            frac = 1;
            any = 0; /* a fraction needs a digit */
            continue;
        }
        if (c < '0' || c > '9') break;
        any = 1;
        if (mant == 0 && c == '0') {
            if (frac) exp10--; /* leading zeros of a fraction only shift the exponent */
            continue;
        }
        if (digits < 19) {
            mant = mant * 10 + (uint64_t)(c - '0');
            digits++;
            if (frac) exp10--;
        } else if (!frac) {
            exp10++; /* digits past 19 are dropped: the 19 kept carry more than a double holds */
        }
    }
    if (!any) return -1;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        int eneg = 0;
        long e = 0;
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-')) eneg = s[i++] == '-';
        if (i >= n || s[i] < '0' || s[i] > '9') return -1;
        for (; i < n && s[i] >= '0' && s[i] <= '9'; i++)
            if (e < 100000) e = e * 10 + (s[i] - '0'); /* saturate: past 1e100000 everything is 0 or inf */
        exp10 += eneg ? -e : e;
    }
    if (i != n) return -1;
    double d;
    if (mant == 0) {
        d = 0.0;
    } else if (mant <= ((uint64_t)1 << 53) && exp10 >= -22 && exp10 <= 22) {
        d = exp10 >= 0 ? (double)mant * pow10_exact[exp10] : (double)mant / pow10_exact[-exp10];
    } else if (exp10 + digits > 310) {
        return -1; /* beyond DBL_MAX */
    } else if (exp10 + digits < -330) {
        d = 0.0; /* below the smallest subnormal */
    } else {
        d = (double)mant;
        long e = exp10;
        for (; e > 22; e -= 22) d *= 1e22;
        for (; e < -22; e += 22) d /= 1e22;
        d = e >= 0 ? d * pow10_exact[e] : d / pow10_exact[-e];
    }
    if (!isfinite(d)) return -1;
    *out = neg ? -d : d;
    return 0;
}

/* Integers digit by digit (exact; no float on the way): -?[0-9]+ with |value| <= 9e15. */
int ob_json_int(ob_json v, long long *out) {
    size_t i = 0;
    int neg = 0;
    long long x = 0;
    if (v.n > 0 && v.p[0] == '-') neg = 1, i = 1;
    if (i >= v.n) return -1;
    for (; i < v.n; i++) {
        if (v.p[i] < '0' || v.p[i] > '9') return -1;
        x = x * 10 + (v.p[i] - '0');
        if (x > 9000000000000000LL) return -1;
    }
    *out = neg ? -x : x;
    return 0;
}

int ob_json_bool(ob_json v, int *out) {
    if (v.n == 4 && memcmp(v.p, "true", 4) == 0) *out = 1;
    else if (v.n == 5 && memcmp(v.p, "false", 5) == 0) *out = 0;
    else return -1;
    return 0;
}
