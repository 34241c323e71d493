/* fuzz_decode.c - a model that opened must also run: prefill two tokens, one decode step and a
 * sample, on whatever weights, norms and scales the input holds (NaN and infinities included),
 * under every sampler setting the input picks.  Nothing may crash, overflow or read out of
 * bounds, whatever the numbers come out as. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    void *raw;
    uint8_t *d = fuzz_model_bytes(data, size, &raw);
    if (!d) return 0;
    ob_model *m;
    char err[256];
    if (ob_model_open_memory(&m, d, size, NULL, 0, err, sizeof err) == OB_OK) {
        ob_model_info info;
        ob_model_get_info(m, &info);
        ob_session_params p = ob_session_params_default();
        p.n_ctx = 4;
        p.n_batch = 2;
        p.kv_type = size % 2 ? OB_KV_F16 : OB_KV_F32;
        p.max_memory = (uint64_t)256 << 20; /* a hostile vocab or dim must not exhaust the fuzzer */
        ob_session *s;
        if (ob_session_create(&s, m, &p, NULL, 0, err, sizeof err) == OB_OK) {
            /* the sampler from the last bytes of the file: temperature, top-k, top-p, penalty */
            ob_sampler_params sp = ob_sampler_params_default();
            uint8_t k = data[size - 1];
            sp.temperature = (float)(k & 3) * 0.5f;
            sp.top_k = (k >> 2) & 7;
            sp.top_p = (k & 32) ? 0.5f : 1.0f;
            sp.repeat_penalty = (k & 64) ? 1.3f : 1.0f;
            sp.seed = size;
            int32_t toks[2] = {0, info.vocab_size - 1}, next;
            FUZZ_ASSERT(ob_session_set_sampler(s, &sp) == OB_OK);
            if (ob_session_eval(s, toks, 2, NULL, 0) == OB_OK && ob_session_sample(s, &next) == OB_OK) {
                FUZZ_ASSERT(next >= 0 && next < info.vocab_size);
                for (int step = 0; step < 3; step++) /* the third slides the 4-token context */
                    if (ob_session_decode(s, next) != OB_OK || ob_session_sample(s, &next) != OB_OK) break;
            }
            ob_session_free(s);
        }
        ob_model_free(m);
    }
    free(raw);
    return 0;
}
