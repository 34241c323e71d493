/* model.c - open a .1bit model: read the config from the metadata, find every tensor the config
 * needs (checking dtype and shape), and carve the weights out of the one mapping (zero-copy). */
#if !defined(_GNU_SOURCE)
#define _GNU_SOURCE 1
#endif
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if !defined(OB_NO_FILES)
#include <fcntl.h>
#if !defined(OB_NO_THREADS)
#include <pthread.h>
#endif
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

#include "internal.h"

#define MAX_DIM (1 << 16)
#define MAX_VOCAB (1 << 24)
#define MAX_LAYERS 1024
#define MAX_SEQ (1 << 20)

static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

/* ---------------------------------------------------------------- metadata */

static ob_status get_int(ob_json obj, const char *sect, const char *key, long long lo, long long hi, int *out,
                         char *err, size_t es) {
    ob_json v;
    long long x;
    if (ob_json_get(obj, key, &v)) {
        ob_set_msg(err, es, "metadata: %s.%s is missing", sect, key);
        return OB_ERR_FORMAT;
    }
    if (ob_json_int(v, &x) || x < lo || x > hi) {
        ob_set_msg(err, es, "metadata: %s.%s must be an integer in [%lld, %lld], got %.*s", sect, key, lo, hi,
                   (int)(v.n > 40 ? 40 : v.n), v.p);
        return OB_ERR_FORMAT;
    }
    *out = (int)x;
    return OB_OK;
}

static ob_status get_float(ob_json obj, const char *sect, const char *key, int positive, float *out, char *err,
                           size_t es) {
    ob_json v;
    double x;
    if (ob_json_get(obj, key, &v)) {
        ob_set_msg(err, es, "metadata: %s.%s is missing", sect, key);
        return OB_ERR_FORMAT;
    }
    if (ob_json_number(v, &x) || (positive && !(x > 0))) {
        ob_set_msg(err, es, "metadata: %s.%s must be a %snumber, got %.*s", sect, key, positive ? "positive " : "",
                   (int)(v.n > 40 ? 40 : v.n), v.p);
        return OB_ERR_FORMAT;
    }
    *out = (float)x;
    return OB_OK;
}

static ob_status get_bool(ob_json obj, const char *sect, const char *key, int *out, char *err, size_t es) {
    ob_json v;
    if (ob_json_get(obj, key, &v) || ob_json_bool(v, out)) {
        ob_set_msg(err, es, "metadata: %s.%s must be true or false", sect, key);
        return OB_ERR_FORMAT;
    }
    return OB_OK;
}

/* One of `choices` (NULL-terminated); *out = its index. */
static ob_status get_choice(ob_json obj, const char *sect, const char *key, const char *const *choices, int *out,
                            char *err, size_t es) {
    ob_json v;
    char buf[32];
    size_t len;
    if (ob_json_get(obj, key, &v) || ob_json_string(v, buf, sizeof buf, &len)) {
        ob_set_msg(err, es, "metadata: %s.%s must be a short string", sect, key);
        return OB_ERR_FORMAT;
    }
    for (int i = 0; choices[i]; i++)
        if (strcmp(buf, choices[i]) == 0) {
            *out = i;
            return OB_OK;
        }
    ob_set_msg(err, es, "metadata: %s.%s '%s' is not supported", sect, key, buf);
    return OB_ERR_UNSUPPORTED;
}

#define TRY(x)                                                                                                         \
    do {                                                                                                               \
        ob_status st_ = (x);                                                                                           \
        if (st_ != OB_OK) return st_;                                                                                  \
    } while (0)

/* ---------------------------------------------------------------- precision map (mixed models) */

#define OB_PATTERN_MAX 128
static const char *const precision_kinds[] = {"binary", "ternary", "int4", "int8", NULL};
enum { OB_KIND_BINARY = 0, OB_KIND_TERNARY = 1, OB_KIND_INT4 = 2, OB_KIND_INT8 = 3 };

/* Python's fnmatch.fnmatchcase: '*' any run, '?' one character, '[...]' a set ('!' negates, a-z
 * ranges, a reversed range matches nothing), an unclosed '[' itself; bytes compared exactly. */
static int glob_match(const char *p, size_t np, const char *s, size_t ns) {
    size_t i = 0, j = 0, star_p = (size_t)-1, star_s = 0;
    while (j < ns) {
        if (i < np && p[i] == '*') {
            star_p = ++i;
            star_s = j;
            continue;
        }
        if (i < np && p[i] == '[') {
            size_t k = i + 1;
            if (k < np && p[k] == '!') k++;
            if (k < np && p[k] == ']') k++;
            while (k < np && p[k] != ']') k++;
            if (k < np) { /* a set p[i+1 .. k) */
                size_t a = i + 1;
                int neg = a < k && p[a] == '!', hit = 0;
                if (neg) a++;
                for (; a < k; a++) {
                    unsigned char lo = (unsigned char)p[a], hi = lo, c = (unsigned char)s[j];
                    if (a + 2 < k && p[a + 1] == '-') {
                        hi = (unsigned char)p[a + 2];
                        a += 2;
                    }
                    if (lo <= c && c <= hi) hit = 1;
                }
                if (hit != neg) {
                    i = k + 1;
                    j++;
                    continue;
                }
            } else if (s[j] == '[') { /* unclosed: a literal '[' */
                i++;
                j++;
                continue;
            }
        } else if (i < np && (p[i] == '?' || p[i] == s[j])) {
            i++;
            j++;
            continue;
        }
        if (star_p == (size_t)-1) return 0;
        i = star_p;
        j = ++star_s;
    }
    while (i < np && p[i] == '*') i++;
    return i == np;
}

/* config.precision: an object of pattern -> kind; kinds known, no pattern twice (a JSON reader
 * keeps the last of two equal keys at the first one's place, so the order would be ambiguous). */
static ob_status get_precision(ob_json cj, ob_json *out, char *err, size_t es) {
    ob_json map, k, v, k2, v2;
    char pat[OB_PATTERN_MAX], pat2[OB_PATTERN_MAX], kind[16];
    size_t cur = 0, n, n2, klen;
    if (ob_json_get(cj, "precision", &map) || !ob_json_is_object(map)) {
        ob_set_msg(err, es, "metadata: a mixed model needs a config.precision object");
        return OB_ERR_FORMAT;
    }
    int count = 0;
    while (ob_json_next(map, &cur, &k, &v) == 0) {
        count++;
        if (ob_json_string(k, pat, sizeof pat, &n)) {
            ob_set_msg(err, es, "metadata: a config.precision pattern is longer than %d bytes", OB_PATTERN_MAX - 1);
            return OB_ERR_FORMAT;
        }
        int known = 0;
        if (ob_json_string(v, kind, sizeof kind, &klen) == 0)
            for (int i = 0; precision_kinds[i]; i++) known |= klen == strlen(precision_kinds[i]) && strcmp(kind, precision_kinds[i]) == 0;
        if (!known) {
            ob_set_msg(err, es, "metadata: config.precision['%.60s'] must be binary, ternary, int4 or int8", pat);
            return OB_ERR_UNSUPPORTED;
        }
        size_t cur2 = 0;
        while (ob_json_next(map, &cur2, &k2, &v2) == 0 && k2.p != k.p)
            if (ob_json_string(k2, pat2, sizeof pat2, &n2) == 0 && n2 == n && memcmp(pat, pat2, n) == 0) {
                ob_set_msg(err, es, "metadata: config.precision repeats the pattern '%.60s'", pat);
                return OB_ERR_FORMAT;
            }
    }
    if (count == 0) {
        ob_set_msg(err, es, "metadata: a mixed model needs a non-empty config.precision");
        return OB_ERR_FORMAT;
    }
    *out = map;
    return OB_OK;
}

static int empty_object(ob_json v) {
    ob_json k, x;
    size_t cur = 0;
    return ob_json_is_object(v) && ob_json_next(v, &cur, &k, &x) != 0;
}

/* The kind of BitLinear `name` (module name, no ".weight"): the first matching pattern's, else
 * config.quant's. */
static int layer_kind(const ob_config *c, const char *name) {
    if (c->mixed) {
        ob_json k, v;
        char pat[OB_PATTERN_MAX], kind[16];
        size_t cur = 0, n, klen;
        while (ob_json_next(c->precision, &cur, &k, &v) == 0)
            if (ob_json_string(k, pat, sizeof pat, &n) == 0 && glob_match(pat, n, name, strlen(name)) &&
                ob_json_string(v, kind, sizeof kind, &klen) == 0)
                for (int i = 0; precision_kinds[i]; i++)
                    if (strcmp(kind, precision_kinds[i]) == 0) return i;
    }
    return c->binary ? OB_KIND_BINARY : OB_KIND_TERNARY;
}

static ob_status parse_config(ob_config *c, const ob_file *f, char *err, size_t es) {
    ob_json root = ob_json_root((const char *)f->data + f->meta_offset, (size_t)f->meta_size), cj, qj, tj, v;
    if (!ob_json_is_object(root)) {
        ob_set_msg(err, es, "metadata: not a JSON object");
        return OB_ERR_FORMAT;
    }
    if (ob_json_get(root, "config", &cj) || !ob_json_is_object(cj)) {
        ob_set_msg(err, es, "metadata: 'config' object is missing");
        return OB_ERR_FORMAT;
    }
    memset(c, 0, sizeof *c);
    TRY(get_int(cj, "config", "vocab_size", 1, MAX_VOCAB, &c->vocab_size, err, es));
    TRY(get_int(cj, "config", "dim", 1, MAX_DIM, &c->dim, err, es));
    TRY(get_int(cj, "config", "n_layers", 1, MAX_LAYERS, &c->n_layers, err, es));
    TRY(get_int(cj, "config", "n_heads", 1, MAX_DIM, &c->n_heads, err, es));
    TRY(get_int(cj, "config", "n_kv_heads", 1, MAX_DIM, &c->n_kv_heads, err, es));
    TRY(get_int(cj, "config", "ffn_dim", 1, 4 * MAX_DIM, &c->ffn_dim, err, es));
    TRY(get_int(cj, "config", "max_seq_len", 1, MAX_SEQ, &c->max_seq_len, err, es));
    static const char *const norms[] = {"rmsnorm", "layernorm", NULL};
    static const char *const poss[] = {"rope", "learned", NULL};
    static const char *const acts[] = {"silu", "relu2", "gelu", NULL};
    static const char *const quants[] = {"ternary", "binary", NULL};
    TRY(get_choice(cj, "config", "norm", norms, &c->norm, err, es));
    TRY(get_choice(cj, "config", "pos", poss, &c->pos, err, es));
    TRY(get_choice(cj, "config", "activation", acts, &c->activation, err, es));
    TRY(get_choice(cj, "config", "quant", quants, &c->binary, err, es));
    TRY(get_bool(cj, "config", "gated", &c->gated, err, es));
    TRY(get_bool(cj, "config", "qk_norm", &c->qk_norm, err, es));
    TRY(get_bool(cj, "config", "subln", &c->subln, err, es));
    TRY(get_bool(cj, "config", "tie_embeddings", &c->tie_embeddings, err, es));
    TRY(get_float(cj, "config", "norm_eps", 1, &c->norm_eps, err, es));
    TRY(get_float(cj, "config", "residual_scale", 0, &c->residual_scale, err, es));
    c->rope_theta = 10000.0f;
    if (c->pos == OB_POS_ROPE) TRY(get_float(cj, "config", "rope_theta", 1, &c->rope_theta, err, es));
    if (c->dim % c->n_heads) {
        ob_set_msg(err, es, "metadata: dim %d is not divisible by n_heads %d", c->dim, c->n_heads);
        return OB_ERR_FORMAT;
    }
    if (c->n_heads % c->n_kv_heads) {
        ob_set_msg(err, es, "metadata: n_heads %d is not a multiple of n_kv_heads %d", c->n_heads, c->n_kv_heads);
        return OB_ERR_FORMAT;
    }
    c->head_dim = c->dim / c->n_heads;
    if (c->pos == OB_POS_ROPE && c->head_dim % 2) {
        ob_set_msg(err, es, "metadata: RoPE needs an even head_dim, got %d", c->head_dim);
        return OB_ERR_FORMAT;
    }

    if (ob_json_get(root, "quant", &qj) || !ob_json_is_object(qj)) {
        ob_set_msg(err, es, "metadata: 'quant' object is missing");
        return OB_ERR_FORMAT;
    }
    static const char *const packs[] = {"t2", "t1.6", "b1", NULL};
    static const char *const embeds[] = {"f32", "f16", "i8", NULL};
    static const char *const acts_q[] = {"int8-absmax-per-token", NULL};
    static const char *const weight_kinds[] = {"ternary", "binary", "mixed", NULL};
    int pack, embed, weights, aq;
    TRY(get_choice(qj, "quant", "weights", weight_kinds, &weights, err, es));
    TRY(get_choice(qj, "quant", "pack", packs, &pack, err, es));
    TRY(get_choice(qj, "quant", "embed_dtype", embeds, &embed, err, es));
    TRY(get_choice(qj, "quant", "activations", acts_q, &aq, err, es));
    /* a mixed model's pack is its ternary layers' (t2 / t1.6), whatever config.quant is */
    c->mixed = weights == 2;
    if (c->mixed ? pack == 2 : (weights != c->binary || (pack == 2) != (weights == 1))) {
        ob_set_msg(err, es, "metadata: quant.weights / quant.pack / config.quant disagree");
        return OB_ERR_FORMAT;
    }
    if (c->mixed) TRY(get_precision(cj, &c->precision, err, es));
    else if (ob_json_get(cj, "precision", &v) == 0 && !empty_object(v)) { /* {} is no map */
        ob_set_msg(err, es, "metadata: config.precision needs quant.weights 'mixed'");
        return OB_ERR_FORMAT;
    }
    c->wdtype = pack == 0 ? OB_DT_T2 : pack == 1 ? OB_DT_T16 : OB_DT_B1;
    c->embed_dtype = embed == 0 ? OB_DT_F32 : embed == 1 ? OB_DT_F16 : OB_DT_I8;
    c->head_dtype = c->embed_dtype;
    if (ob_json_get(qj, "head_dtype", &v) == 0) { /* optional: the LM head in its own dtype */
        static const char *const heads[] = {"f32", "f16", "i8", "i4", NULL};
        static const int head_dt[] = {OB_DT_F32, OB_DT_F16, OB_DT_I8, OB_DT_I4};
        int head;
        TRY(get_choice(qj, "quant", "head_dtype", heads, &head, err, es));
        c->head_dtype = head_dt[head];
    }
    c->separate_head = !c->tie_embeddings || c->head_dtype != c->embed_dtype;

    if (ob_json_get(root, "tokenizer", &tj) || !ob_json_is_object(tj)) {
        ob_set_msg(err, es, "metadata: 'tokenizer' object is missing");
        return OB_ERR_FORMAT;
    }
    static const char *const kinds[] = {"char", "bpe", NULL};
    static const char *const pretoks[] = {"none", "gpt2-bytelevel", "llama3-bytelevel", "sentencepiece", NULL};
    int tvocab, pre;
    TRY(get_choice(tj, "tokenizer", "type", kinds, &c->tok_kind, err, es));
    TRY(get_choice(tj, "tokenizer", "pretokenizer", pretoks, &pre, err, es));
    if ((pre == OB_PRE_NONE) != (c->tok_kind == OB_TOK_CHAR)) {
        ob_set_msg(err, es, "metadata: tokenizer.pretokenizer does not fit tokenizer.type");
        return OB_ERR_UNSUPPORTED;
    }
    TRY(get_int(tj, "tokenizer", "vocab_size", 1, MAX_VOCAB, &tvocab, err, es));
    if (tvocab != c->vocab_size) {
        ob_set_msg(err, es, "metadata: tokenizer vocab_size %d != config vocab_size %d", tvocab, c->vocab_size);
        return OB_ERR_FORMAT;
    }
    c->eot_token = -1;
    if (ob_json_get(tj, "special_tokens", &v) == 0) {
        ob_json k, val;
        size_t cur = 0;
        if (!ob_json_is_object(v)) {
            ob_set_msg(err, es, "metadata: tokenizer.special_tokens must be an object");
            return OB_ERR_FORMAT;
        }
        while (ob_json_next(v, &cur, &k, &val) == 0) {
            long long id;
            if (ob_json_int(val, &id) || id < 0 || id >= c->vocab_size) {
                ob_set_msg(err, es, "metadata: special token id out of range");
                return OB_ERR_FORMAT;
            }
            if (ob_json_string_eq(k, "<|endoftext|>")) c->eot_token = (int)id;
        }
    }
    c->n_eos = 0; /* models trained by onebit have none: they generate the full count */
    if (ob_json_get(tj, "eos_token_ids", &v) == 0) {
        ob_json item;
        size_t cur = 0;
        if (!ob_json_is_array(v)) {
            ob_set_msg(err, es, "metadata: tokenizer.eos_token_ids must be an array");
            return OB_ERR_FORMAT;
        }
        while (ob_json_item(v, &cur, &item) == 0) {
            long long id;
            if (ob_json_int(item, &id) || id < 0 || id >= c->vocab_size) {
                ob_set_msg(err, es, "metadata: tokenizer.eos_token_ids holds an id outside the vocabulary");
                return OB_ERR_FORMAT;
            }
            if (c->n_eos == OB_MAX_EOS) {
                ob_set_msg(err, es, "metadata: more than %d tokenizer.eos_token_ids", OB_MAX_EOS);
                return OB_ERR_UNSUPPORTED;
            }
            c->eos[c->n_eos++] = (int32_t)id;
        }
    }
    return OB_OK;
}

/* ---------------------------------------------------------------- tensors */

static ob_status need(const ob_file *f, const char *name, uint32_t dtype, int n_dims, uint64_t d0, uint64_t d1,
                      ob_tensor_rec *rec, char *err, size_t es) {
    int r = ob_file_find(f, name, rec, err, es);
    if (r > 0) return (ob_status)r;
    if (r < 0) {
        ob_set_msg(err, es, "tensor '%s' is missing", name);
        return OB_ERR_FORMAT;
    }
    if (rec->dtype != dtype) {
        ob_set_msg(err, es, "tensor '%s' has dtype %s, expected %s", name, ob_dtype_name(rec->dtype),
                   ob_dtype_name(dtype));
        return OB_ERR_FORMAT;
    }
    if ((int)rec->n_dims != n_dims || rec->shape[0] != d0 || (n_dims == 2 && rec->shape[1] != d1)) {
        ob_set_msg(err, es, "tensor '%s' has shape [%llu, %llu] (%u dims), expected [%llu, %llu]", name,
                   (unsigned long long)rec->shape[0], (unsigned long long)rec->shape[1], (unsigned)rec->n_dims,
                   (unsigned long long)d0, (unsigned long long)d1);
        return OB_ERR_FORMAT;
    }
    return OB_OK;
}

static ob_status bind_float(const ob_file *f, ob_fmatrix *m, const char *name, const ob_config *c, int dtype,
                            int rows, char *err, size_t es) {
    ob_tensor_rec rec, sc;
    TRY(need(f, name, (uint32_t)dtype, 2, (uint64_t)rows, (uint64_t)c->dim, &rec, err, es));
    m->w = ob_file_tensor_data(f, &rec);
    m->dtype = dtype;
    m->rows = rows;
    m->cols = c->dim;
    m->row_scale = NULL;
    if (dtype == OB_DT_I8 || dtype == OB_DT_I4) {
        char sname[OB_NAME_MAX + 8];
        snprintf(sname, sizeof sname, "%s.scale", name);
        TRY(need(f, sname, OB_DT_F32, 1, (uint64_t)rows, 1, &sc, err, es));
        m->row_scale = (const float *)ob_file_tensor_data(f, &sc);
    }
    return OB_OK;
}

static ob_status bind_norm(const ob_file *f, const float **out, const char *name, int size, char *err, size_t es) {
    ob_tensor_rec rec;
    TRY(need(f, name, OB_DT_F32, 1, (uint64_t)size, 1, &rec, err, es));
    *out = (const float *)ob_file_tensor_data(f, &rec);
    return OB_OK;
}

static ob_status bind_linear(const ob_file *f, const ob_config *c, ob_linear *l, const char *name, int out, int in,
                             char *err, size_t es) {
    ob_tensor_rec rec, sc;
    char module[OB_NAME_MAX + 32];
    size_t n = strlen(name) - strlen(".weight"); /* every caller's name ends in ".weight" */
    memcpy(module, name, n);
    module[n] = 0;
    int kind = layer_kind(c, module);
    uint32_t dtype = kind == OB_KIND_BINARY ? OB_DT_B1 : kind == OB_KIND_INT4 ? OB_DT_I4 : kind == OB_KIND_INT8 ? OB_DT_I8
                                                                                                             : (uint32_t)c->wdtype;
    TRY(need(f, name, dtype, 2, (uint64_t)out, (uint64_t)in, &rec, err, es));
    l->w = ob_file_tensor_data(f, &rec);
    l->fmt = dtype == OB_DT_T2 ? OB_WFMT_T2 : dtype == OB_DT_T16 ? OB_WFMT_T16 : OB_WFMT_B1;
    l->rows = out;
    l->cols = in;
    l->scale = rec.scale;
    l->row_scale = NULL;
    l->ifmt = dtype == OB_DT_I4 ? OB_IFMT_I4 : OB_IFMT_I8;
    if (dtype == OB_DT_I4 || dtype == OB_DT_I8) {
        char sname[OB_NAME_MAX + 40];
        snprintf(sname, sizeof sname, "%s.scale", name);
        TRY(need(f, sname, OB_DT_F32, 1, (uint64_t)out, 1, &sc, err, es));
        l->row_scale = (const float *)ob_file_tensor_data(f, &sc);
    }
    return OB_OK;
}

static ob_status bind_weights(ob_model *m, char *err, size_t es) {
    const ob_file *f = &m->file;
    const ob_config *c = &m->cfg;
    char name[OB_NAME_MAX + 32];
    int inner = c->n_heads * c->head_dim, kv = c->n_kv_heads * c->head_dim;
    TRY(bind_float(f, &m->embed, "embed.weight", c, c->embed_dtype, c->vocab_size, err, es));
    if (!c->separate_head) {
        m->head = m->embed;
    } else {
        TRY(bind_float(f, &m->head, "head.weight", c, c->head_dtype, c->vocab_size, err, es));
    }
    m->pos_embed = NULL;
    if (c->pos == OB_POS_LEARNED) {
        ob_tensor_rec rec;
        TRY(need(f, "pos_embed.weight", OB_DT_F32, 2, (uint64_t)c->max_seq_len, (uint64_t)c->dim, &rec, err, es));
        m->pos_embed = (const float *)ob_file_tensor_data(f, &rec);
    }
    TRY(bind_norm(f, &m->norm, "norm.weight", c->dim, err, es));
    for (int i = 0; i < c->n_layers; i++) {
        ob_layer *L = &m->layers[i];
#define NAME(suffix) (snprintf(name, sizeof name, "layers.%d.%s", i, suffix), name)
        TRY(bind_norm(f, &L->attn_norm, NAME("attn_norm.weight"), c->dim, err, es));
        TRY(bind_norm(f, &L->mlp_norm, NAME("mlp_norm.weight"), c->dim, err, es));
        TRY(bind_linear(f, c, &L->q_proj, NAME("attn.q_proj.weight"), inner, c->dim, err, es));
        TRY(bind_linear(f, c, &L->k_proj, NAME("attn.k_proj.weight"), kv, c->dim, err, es));
        TRY(bind_linear(f, c, &L->v_proj, NAME("attn.v_proj.weight"), kv, c->dim, err, es));
        TRY(bind_linear(f, c, &L->o_proj, NAME("attn.o_proj.weight"), c->dim, inner, err, es));
        if (c->qk_norm) {
            TRY(bind_norm(f, &L->q_norm, NAME("attn.q_norm.weight"), c->head_dim, err, es));
            TRY(bind_norm(f, &L->k_norm, NAME("attn.k_norm.weight"), c->head_dim, err, es));
        }
        if (c->subln) {
            TRY(bind_norm(f, &L->attn_sub_norm, NAME("attn.sub_norm.weight"), inner, err, es));
            TRY(bind_norm(f, &L->mlp_sub_norm, NAME("mlp.sub_norm.weight"), c->ffn_dim, err, es));
        }
        if (c->gated) TRY(bind_linear(f, c, &L->gate_proj, NAME("mlp.gate_proj.weight"), c->ffn_dim, c->dim, err, es));
        TRY(bind_linear(f, c, &L->up_proj, NAME("mlp.up_proj.weight"), c->ffn_dim, c->dim, err, es));
        TRY(bind_linear(f, c, &L->down_proj, NAME("mlp.down_proj.weight"), c->dim, c->ffn_dim, err, es));
#undef NAME
    }
    return OB_OK;
}

/* ---------------------------------------------------------------- plan and open */

ob_status ob_model_plan_file(ob_model_plan *plan, const void *data, size_t size, char *err, size_t es) {
    memset(plan, 0, sizeof *plan);
    const uint16_t probe = 1;
    if (*(const uint8_t *)&probe != 1) {
        ob_set_msg(err, es, "big-endian hosts are not supported (tensors are read in place)");
        return OB_ERR_UNSUPPORTED;
    }
    if (data && ((uintptr_t)data % 4)) {
        ob_set_msg(err, es, "model bytes must be at least 4-byte aligned (64 recommended)");
        return OB_ERR_INVALID_ARG;
    }
    TRY(ob_file_parse(&plan->file, data, size, err, es));
    TRY(parse_config(&plan->cfg, &plan->file, err, es));
    ob_tensor_rec rec;
    int r = ob_file_find(&plan->file, "tokenizer.merges", &rec, err, es);
    if (r > 0) return (ob_status)r;
    if (r == 0) {
        if (rec.dtype != OB_DT_I32 || rec.n_dims != 2 || rec.shape[1] != 3 || rec.shape[0] > (uint64_t)MAX_VOCAB) {
            ob_set_msg(err, es, "tensor 'tokenizer.merges' must be I32 [n_merges, 3]");
            return OB_ERR_FORMAT;
        }
        plan->n_merges = (int)rec.shape[0];
    }
    if (plan->cfg.tok_kind == OB_TOK_CHAR && plan->n_merges) {
        ob_set_msg(err, es, "a char tokenizer has no merges");
        return OB_ERR_FORMAT;
    }
    plan->vocab_hash_cap = pow2_at_least(2 * (size_t)plan->cfg.vocab_size);
    plan->merge_hash_cap = pow2_at_least(2 * (size_t)plan->n_merges);
    return OB_OK;
}

/* The limits above bound every term (n_layers <= 2^10, hash tables <= 2^26 entries, n_tensors
 * <= 2^16), so the sum fits a 32-bit size_t. */
size_t ob_model_plan_bytes(const ob_model_plan *plan) {
    return 64 + ob_arena_round(sizeof(ob_model)) + ob_arena_round(sizeof(ob_layer) * (size_t)plan->cfg.n_layers) +
           ob_arena_round(4 * (size_t)plan->file.n_tensors) + ob_arena_round(4 * plan->vocab_hash_cap) +
           ob_arena_round(4 * plan->merge_hash_cap);
}

static ob_status model_init(ob_model **out, const void *data, size_t size, void *arena_buf, size_t arena_size,
                            char *err, size_t es) {
    ob_model_plan plan;
    TRY(ob_model_plan_file(&plan, data, size, err, es));
    size_t need_bytes = ob_model_plan_bytes(&plan);
    ob_arena arena = {NULL, 0, 0, 0};
    int owned = 0;
    if (arena_buf) {
        if (arena_size < need_bytes) {
            ob_set_msg(err, es, "arena of %zu bytes is too small: the model needs %zu", arena_size, need_bytes);
            return OB_ERR_NOMEM;
        }
        arena.base = (uint8_t *)arena_buf;
        arena.size = arena_size;
    } else {
        arena.base = (uint8_t *)malloc(need_bytes);
        if (!arena.base) {
            ob_set_msg(err, es, "cannot allocate %zu bytes", need_bytes);
            return OB_ERR_NOMEM;
        }
        arena.size = need_bytes;
        owned = 1;
    }
    ob_model *m = (ob_model *)ob_arena_alloc(&arena, sizeof(ob_model));
    m->alloc_base = owned ? arena.base : NULL;
    m->plan_bytes = need_bytes;
    m->file = plan.file;
    m->cfg = plan.cfg;
    m->layers = (ob_layer *)ob_arena_alloc(&arena, sizeof(ob_layer) * (size_t)m->cfg.n_layers);
    uint32_t *index = (uint32_t *)ob_arena_alloc_raw(&arena, 4 * (uint64_t)m->file.n_tensors);
    static const char *const packs[] = {"?", "?", "?", "t2", "t1.6", "b1"};
    static const char *const embeds[] = {"f32", "f16", "i8"};
    snprintf(m->pack_name, sizeof m->pack_name, "%s", packs[m->cfg.wdtype]);
    snprintf(m->embed_name, sizeof m->embed_name, "%s", embeds[m->cfg.embed_dtype]);
    ob_status st = ob_file_check_directory(&m->file, index, err, es);
    if (st == OB_OK) st = bind_weights(m, err, es);
    if (st == OB_OK) st = ob_tokenizer_init(m, &arena, plan.vocab_hash_cap, plan.merge_hash_cap, err, es);
    if (st != OB_OK) {
        if (owned) free(arena.base);
        return st;
    }
    *out = m;
    return OB_OK;
}

ob_status ob_model_open_memory(ob_model **out, const void *data, size_t size, void *arena, size_t arena_size,
                               char *err, size_t err_size) {
    if (err && err_size) err[0] = 0;
    if (!out) {
        ob_set_msg(err, err_size, "out is NULL");
        return OB_ERR_INVALID_ARG;
    }
    *out = NULL;
    return model_init(out, data, size, arena, arena_size, err, err_size);
}

/* The T2X repack is for the x86 kernels (ob_t2x_wanted); elsewhere (and in wasi-libc, which has no
 * madvise / mprotect) it is not compiled. */
#if !defined(OB_NO_FILES) && (defined(__x86_64__) || defined(__i386__))
#define OB_REPACK_T2X 1
static ob_linear *layer_linear(ob_layer *L, int j) {
    ob_linear *all[7] = {&L->q_proj, &L->k_proj, &L->v_proj, &L->o_proj, &L->gate_proj, &L->up_proj, &L->down_proj};
    return all[j];
}

typedef struct {
    ob_model *m;
    const ob_kernels *k; /* decodes T1.6 rows */
    uint8_t *base;
    size_t *dst; /* [n_layers * 7]: each linear's offset in base, or SIZE_MAX if it stays */
    uintptr_t page;
    int next; /* the next linear to take (atomic) */
} repack_job;

static void repack_linear(repack_job *j, int k) {
    ob_linear *l = layer_linear(&j->m->layers[k / 7], k % 7);
    uint8_t *dst = j->base + j->dst[k];
    size_t nb = ob_t2x_bytes(l->rows, l->cols);
    uintptr_t pg = j->page;
#if defined(MADV_POPULATE_WRITE)
    /* one call maps the matrix's pages: about half the time of a fault per page */
    uintptr_t p0 = (uintptr_t)dst / pg * pg;
    madvise((void *)p0, (size_t)((uintptr_t)dst + nb - p0), MADV_POPULATE_WRITE);
#endif
    ob_t2x_repack(j->k, l->fmt, l->w, l->rows, l->cols, dst);
    uintptr_t a = ((uintptr_t)l->w + pg - 1) / pg * pg,
              b = ((uintptr_t)l->w + (size_t)l->rows * ob_row_bytes(l->fmt, l->cols)) / pg * pg;
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
    l->w = dst;
    l->fmt = OB_WFMT_T2X;
}

static void *repack_worker(void *arg) {
    repack_job *j = (repack_job *)arg;
    for (int k; (k = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED)) < j->m->cfg.n_layers * 7;)
        if (j->dst[k] != SIZE_MAX) repack_linear(j, k);
    return NULL;
}

/* Moves every T2 BitLinear into T2X (kernels.h: the blocks of 8 rows interleaved, so the GEMV reads
 * one stream) in one anonymous mapping, when this CPU's kernels have a fast T2X GEMV.  Matrix by
 * matrix, each one's file pages are dropped from this process once copied (they stay in the page
 * cache), so the resident set never holds a matrix twice; two threads share the matrices where
 * there are two cores.  It costs 0.2-0.3 s of load on the 2B shape, and the sharing of those pages
 * between processes; ONEBIT_REPACK=0 keeps the file's layout, read in place.  Any failure leaves
 * the model as it was: the same results either way. */
static void repack_t2x(ob_model *m) {
    const char *env = getenv("ONEBIT_REPACK");
    if ((env && strcmp(env, "0") == 0) || !ob_t2x_wanted()) return;
    int n = m->cfg.n_layers * 7;
    size_t *dst = (size_t *)malloc(sizeof(size_t) * (size_t)n), total = 0;
    if (!dst) return;
    for (int k = 0; k < n; k++) {
        const ob_linear *l = layer_linear(&m->layers[k / 7], k % 7);
        dst[k] = SIZE_MAX;
        if (!l->w || (l->fmt != OB_WFMT_T2 && l->fmt != OB_WFMT_T16) || l->row_scale) continue;
        dst[k] = total;
        total += (ob_t2x_bytes(l->rows, l->cols) + 63) / 64 * 64;
    }
    void *buf = total ? mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) : MAP_FAILED;
    if (buf == MAP_FAILED) {
        free(dst);
        return;
    }
#if defined(MADV_HUGEPAGE)
    /* ONEBIT_HUGEPAGES=1: the copy in transparent huge pages (a hint; 4 KB pages where the kernel has
     * none).  The GEMV streams this mapping once a token; with 2 MB pages the hardware prefetcher
     * is not stopped at every 4 KB boundary nor the TLB refilled.  Session 25, Zen 3 VM
     * (docs/BENCHMARKS.md): 2b4t decode 1.03x at 1 thread and 1.09x at 2, 134m within the noise; but
     * loading right after another process freed memory took 0.83-0.87 s instead of 0.33-0.37 (the
     * host faults in the 2 MB blocks the guest had handed back), so it is not the default. */
    const char *huge = getenv("ONEBIT_HUGEPAGES");
    if (huge && strcmp(huge, "1") == 0) madvise(buf, total, MADV_HUGEPAGE);
#endif
    long page = sysconf(_SC_PAGESIZE);
    ob_kernels k;
    ob_kernels_init_env(&k);
    repack_job job = {m, &k, (uint8_t *)buf, dst, page > 0 ? (uintptr_t)page : 4096, 0};
#if !defined(OB_NO_THREADS)
    pthread_t helper;
    int helped = sysconf(_SC_NPROCESSORS_ONLN) > 1 && pthread_create(&helper, NULL, repack_worker, &job) == 0;
    repack_worker(&job);
    if (helped) pthread_join(helper, NULL);
#else
    repack_worker(&job);
#endif
    free(dst);
    mprotect(buf, total, PROT_READ); /* immutable from here, as the file mapping is */
    m->repacked = buf;
    m->repacked_size = total;
}
#endif

ob_status ob_model_open(ob_model **out, const char *path, char *err, size_t err_size) {
    if (err && err_size) err[0] = 0;
    if (!out || !path) {
        ob_set_msg(err, err_size, "out or path is NULL");
        return OB_ERR_INVALID_ARG;
    }
    *out = NULL;
#if defined(OB_NO_FILES) /* bare metal: no file system; the model comes from ob_model_open_memory */
    ob_set_msg(err, err_size, "%s: this build has no file system (use ob_model_open_memory)", path);
    return OB_ERR_UNSUPPORTED;
#else
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        ob_set_msg(err, err_size, "%s: %s", path, strerror(errno));
        return OB_ERR_IO;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) { /* EOVERFLOW: a file past 2 GiB on a 32-bit build without LFS */
        ob_set_msg(err, err_size, "%s: %s", path, strerror(errno));
        close(fd);
        return OB_ERR_IO;
    }
    if (!S_ISREG(sb.st_mode)) {
        ob_set_msg(err, err_size, "%s: not a regular file", path);
        close(fd);
        return OB_ERR_IO;
    }
    if (sb.st_size < 0 || (uint64_t)sb.st_size > (uint64_t)SIZE_MAX) {
        ob_set_msg(err, err_size, "%s: %llu bytes do not fit this machine's address space", path,
                   (unsigned long long)sb.st_size);
        close(fd);
        return OB_ERR_NOMEM;
    }
    size_t size = (size_t)sb.st_size;
    if (size == 0) {
        close(fd);
        ob_set_msg(err, err_size, "%s: empty file, not a .1bit model", path);
        return OB_ERR_FORMAT;
    }
    /* MAP_POPULATE: the CRC below reads every page at once, and the kernel maps them in one pass
     * far faster than one page fault per 64 KiB (2B shape: 1.8 s of faults -> see docs/RUNTIME.md) */
    int flags = MAP_PRIVATE;
#if defined(MAP_POPULATE)
    flags |= MAP_POPULATE;
#endif
    void *map = mmap(NULL, size, PROT_READ, flags, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        ob_set_msg(err, err_size, "%s: mmap failed: %s", path, strerror(errno));
        return OB_ERR_IO;
    }
    char msg[OB_ERRMSG];
    msg[0] = 0;
    ob_status st = model_init(out, map, size, NULL, 0, msg, sizeof msg);
    if (st != OB_OK) {
        munmap(map, size);
        ob_set_msg(err, err_size, "%s: %s", path, msg);
        return st;
    }
    (*out)->mapping = map;
    (*out)->mapping_size = size;
#if defined(OB_REPACK_T2X)
    repack_t2x(*out);
#endif
    return OB_OK;
#endif
}

void ob_model_free(ob_model *m) {
    if (!m) return;
#if !defined(OB_NO_FILES)
    if (m->mapping) munmap(m->mapping, m->mapping_size);
    if (m->repacked) munmap(m->repacked, m->repacked_size);
#endif
    if (m->alloc_base) free(m->alloc_base);
}

const char *ob_model_error(const ob_model *m) { return m ? m->error : "model is NULL"; }

int ob_token_is_eos(const ob_model *m, int32_t token) {
    if (!m) return 0;
    for (int i = 0; i < m->cfg.n_eos; i++)
        if (m->cfg.eos[i] == token) return 1;
    return 0;
}

ob_status ob_model_get_info(const ob_model *m, ob_model_info *info) {
    if (!m || !info) return OB_ERR_INVALID_ARG;
    const ob_config *c = &m->cfg;
    static const char *const norms[] = {"rmsnorm", "layernorm"}, *const poss[] = {"rope", "learned"},
                             *const acts[] = {"silu", "relu2", "gelu"}, *const kinds[] = {"char", "bpe"};
    memset(info, 0, sizeof *info);
    info->vocab_size = c->vocab_size;
    info->dim = c->dim;
    info->n_layers = c->n_layers;
    info->n_heads = c->n_heads;
    info->n_kv_heads = c->n_kv_heads;
    info->head_dim = c->head_dim;
    info->ffn_dim = c->ffn_dim;
    info->max_seq_len = c->max_seq_len;
    info->norm = norms[c->norm];
    info->pos = poss[c->pos];
    info->activation = acts[c->activation];
    info->gated = c->gated;
    info->qk_norm = c->qk_norm;
    info->subln = c->subln;
    info->tie_embeddings = c->tie_embeddings;
    info->residual_scale = c->residual_scale;
    info->norm_eps = c->norm_eps;
    info->rope_theta = c->rope_theta;
    info->quant = c->mixed ? "mixed" : c->binary ? "binary" : "ternary";
    info->pack = m->pack_name;
    info->embed_dtype = m->embed_name;
    info->tokenizer = kinds[c->tok_kind];
    info->n_merges = m->tok.n_merges;
    info->eot_token = c->eot_token;
    info->n_eos_tokens = c->n_eos;
    memcpy(info->eos_tokens, c->eos, sizeof c->eos);
    info->file_size = m->file.size;
    info->repacked_bytes = (uint64_t)m->repacked_size;
    return OB_OK;
}

const char *ob_model_metadata(const ob_model *m, size_t *size) {
    if (!m) return NULL;
    if (size) *size = (size_t)m->file.meta_size;
    return (const char *)m->file.data + m->file.meta_offset;
}
