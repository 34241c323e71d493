/* chat.c - a one-message chat prompt from the fixed pieces of the model's chat template.
 *
 * Chat templates are Jinja programs; the C runtime runs none.  The exporter (onebit/chat_template.py)
 * renders the template around a placeholder message and stores what comes before and after it in
 * the metadata, after checking that those pieces do not depend on the message.  Templates such as
 * Llama-3's pass the message through Jinja's `trim`, which is Python's str.strip: chat_trim says
 * so, and the same characters are stripped here. */
#include <string.h>

#include "internal.h"

/* Python's str.isspace(), the set str.strip() removes. */
static int py_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f ||
           c == 0x3000;
}

/* The code point of the UTF-8 sequence at s[0..n) (n its length), or 0xFFFFFFFF when it is not a
 * well-formed one: such bytes are never whitespace (the tokenizer rejects them afterwards). */
static uint32_t code_point(const unsigned char *s, size_t n) {
    static const unsigned char lead_mask[5] = {0, 0x7f, 0x1f, 0x0f, 0x07};
    if (n < 1 || n > 4 || (n == 1) != (s[0] < 0x80)) return 0xFFFFFFFFu;
    uint32_t c = s[0] & lead_mask[n];
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0xFFFFFFFFu;
        c = (c << 6) | (s[i] & 0x3f);
    }
    return c;
}

static size_t seq_len(unsigned char lead) {
    return lead < 0x80 ? 1 : (lead >> 5) == 6 ? 2 : (lead >> 4) == 14 ? 3 : (lead >> 3) == 30 ? 4 : 1;
}

/* [*start, *end) of text without leading and trailing Python whitespace. */
static void strip(const unsigned char *s, size_t len, size_t *start, size_t *end) {
    size_t a = 0, b = len;
    while (a < b) {
        size_t k = seq_len(s[a]);
        if (k > b - a || !py_space(code_point(s + a, k))) break;
        a += k;
    }
    while (b > a) {
        size_t k = 1; /* back over continuation bytes to the lead byte (at most 3) */
        while (k < 4 && k < b - a && (s[b - k] & 0xc0) == 0x80) k++;
        if (!py_space(code_point(s + b - k, k))) break;
        b -= k;
    }
    *start = a;
    *end = b;
}

ob_status ob_chat_prompt(const ob_model *m, const char *user, size_t len, char *buf, size_t cap, size_t *need,
                         char *err, size_t es) {
    if (!m || (!user && len) || (!buf && cap)) {
        ob_set_msg(err, es, "invalid argument");
        return OB_ERR_INVALID_ARG;
    }
    size_t meta_size;
    const char *meta = ob_model_metadata(m, &meta_size);
    ob_json tj, pre, suf, trim;
    if (ob_json_get(ob_json_root(meta, meta_size), "tokenizer", &tj) || ob_json_get(tj, "chat_prefix", &pre) ||
        ob_json_get(tj, "chat_suffix", &suf)) {
        ob_set_msg(err, es, "this model has no chat template pieces (tokenizer.chat_prefix / chat_suffix): "
                            "only models exported from a checkpoint with a chat template have them");
        return OB_ERR_UNSUPPORTED;
    }
    int do_trim = 0;
    if (ob_json_get(tj, "chat_trim", &trim) == 0 && ob_json_bool(trim, &do_trim)) {
        ob_set_msg(err, es, "metadata: tokenizer.chat_trim must be true or false");
        return OB_ERR_FORMAT;
    }
    size_t a = 0, b = len;
    if (do_trim) strip((const unsigned char *)user, len, &a, &b);
    /* an unescaped JSON string is never longer than its quoted form */
    size_t bound = pre.n + (b - a) + suf.n + 1;
    if (need) *need = bound;
    if (cap < bound) {
        ob_set_msg(err, es, "buffer of %zu bytes is too small for the chat prompt (%zu needed)", cap, bound);
        return OB_ERR_BUFFER;
    }
    size_t lp, ls;
    if (ob_json_string(pre, buf, cap, &lp)) {
        ob_set_msg(err, es, "metadata: tokenizer.chat_prefix must be a string");
        return OB_ERR_FORMAT;
    }
    if (b > a) memcpy(buf + lp, user + a, b - a);
    if (ob_json_string(suf, buf + lp + (b - a), cap - lp - (b - a), &ls)) {
        ob_set_msg(err, es, "metadata: tokenizer.chat_suffix must be a string");
        return OB_ERR_FORMAT;
    }
    if (need) *need = lp + (b - a) + ls;
    return OB_OK;
}
