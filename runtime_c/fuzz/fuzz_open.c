/* fuzz_open.c - ob_model_open_memory over arbitrary bytes: header, metadata JSON, directory,
 * tensor records and tokenizer tables; then everything a caller may ask a model that opened. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    void *raw;
    uint8_t *d = fuzz_model_bytes(data, size, &raw);
    if (!d) return 0;
    ob_model *m;
    char err[256] = "";
    ob_status st = ob_model_open_memory(&m, d, size, NULL, 0, err, sizeof err);
    if (st != OB_OK) {
        FUZZ_ASSERT(err[0] != 0 && m == NULL);
    } else {
        ob_model_info info;
        FUZZ_ASSERT(ob_model_get_info(m, &info) == OB_OK);
        size_t ms;
        FUZZ_ASSERT(ob_model_metadata(m, &ms) != NULL);
        for (int32_t t = 0; t < info.vocab_size && t < 512; t++) {
            const uint8_t *b;
            size_t len;
            FUZZ_ASSERT(ob_token_bytes(m, t, &b, &len) == OB_OK);
        }
        for (int i = 0; i < info.n_eos_tokens; i++) FUZZ_ASSERT(ob_token_is_eos(m, info.eos_tokens[i]));
        /* the chat template's pieces: any metadata string, escapes included, within the buffer */
        char chat[256];
        size_t need = 0;
        st = ob_chat_prompt(m, " \xe3\x80\x80hi\n", 6, chat, sizeof chat, &need, err, sizeof err);
        FUZZ_ASSERT(st == OB_OK ? need < sizeof chat && chat[need] == 0 : err[0] != 0);
        size_t mb = 0, sb = 0;
        ob_session_params p = ob_session_params_default();
        p.n_ctx = 8;
        ob_memory_required(d, size, &p, &mb, &sb);
        ob_model_free(m);
    }
    free(raw);
    return 0;
}
