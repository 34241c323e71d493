/* json.c - a small strict JSON reader for the .1bit metadata: validate once, then look values up
 * in place.  No allocation; recursion bounded by OB_JSON_DEPTH; every read is bounds-checked, so
 * it is safe on hostile input (fuzzed by tests/test_json.c). */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
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

int ob_json_string_eq(ob_json v, const char *str) {
    char buf[128];
    size_t len;
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

int ob_json_number(ob_json v, double *out) {
    char buf[64];
    if (v.n == 0 || v.n >= sizeof buf) return -1;
    if (!(v.p[0] == '-' || (v.p[0] >= '0' && v.p[0] <= '9'))) return -1;
    memcpy(buf, v.p, v.n);
    buf[v.n] = 0;
    char *end;
    errno = 0;
    double d = strtod(buf, &end);
    if (*end != 0 || !isfinite(d)) return -1;
    *out = d;
    return 0;
}

int ob_json_int(ob_json v, long long *out) {
    double d;
    if (ob_json_number(v, &d)) return -1;
    for (size_t k = 0; k < v.n; k++)
        if (v.p[k] == '.' || v.p[k] == 'e' || v.p[k] == 'E') return -1;
    if (d < -9.0e15 || d > 9.0e15) return -1;
    *out = (long long)d;
    return 0;
}

int ob_json_bool(ob_json v, int *out) {
    if (v.n == 4 && memcmp(v.p, "true", 4) == 0) *out = 1;
    else if (v.n == 5 && memcmp(v.p, "false", 5) == 0) *out = 0;
    else return -1;
    return 0;
}
