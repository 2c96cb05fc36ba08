/* Error paths of the C API, run under valgrind by .ci/capi.sh: every misuse a C caller can make
 * without undefined behaviour must give its status and a message naming the culprit, leave the
 * session unchanged, and leak nothing.
 *
 *   errors <model-dir> <text-model-dir> <tokenizer-dir>
 *
 * <model-dir>: a tiny fixture without tokenizer (vocab < 2^20, context_length >= 16);
 * <text-model-dir> + <tokenizer-dir>: a tiny fixture with R1's vocabulary and R1's tokenizer.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "deepseek.h"

static int passed, failed;

#define CHECK(cond)                                                                 \
    do {                                                                            \
        if (cond) {                                                                 \
            passed++;                                                               \
        } else {                                                                    \
            failed++;                                                               \
            fprintf(stderr, "%s:%d: CHECK(%s) failed; last error: %s\n", __FILE__,  \
                    __LINE__, #cond, ds_last_error());                              \
        }                                                                           \
    } while (0)

/* `call` returns `status` and ds_last_error() contains `needle`. */
#define EXPECT(call, status, needle)                                                   \
    do {                                                                               \
        ds_status got_ = (call);                                                       \
        if (got_ == (status) && strstr(ds_last_error(), (needle))) {                  \
            passed++;                                                                  \
        } else {                                                                       \
            failed++;                                                                  \
            fprintf(stderr, "%s:%d: %s gave %d (%s), last error \"%s\"; want %d with \"%s\"\n", \
                    __FILE__, __LINE__, #call, (int)got_, ds_status_str(got_),         \
                    ds_last_error(), (int)(status), (needle));                         \
        }                                                                              \
    } while (0)

static const ds_token PROMPT[] = {222, 369, 78, 181, 188, 383, 63};
#define N_PROMPT (sizeof PROMPT / sizeof PROMPT[0])

static float max_abs_diff(const float *a, const float *b, size_t n) {
    float m = 0;
    for (size_t i = 0; i < n; i++) {
        float d = a[i] > b[i] ? a[i] - b[i] : b[i] - a[i];
        if (d > m) m = d;
    }
    return m;
}

static void statics(void) {
    CHECK(ds_version() && strlen(ds_version()) > 0);
    CHECK(!strcmp(ds_status_str(DS_OK), "ok"));
    CHECK(!strcmp(ds_status_str(DS_ERR_SESSION_BUSY), "session busy in another thread"));
    CHECK(!strcmp(ds_status_str(DS_ERR_NO_TOKENIZER), "model has no tokenizer"));
    CHECK(!strcmp(ds_status_str(DS_ERR_INVALID_PARAMETER), "invalid generation parameter"));
    CHECK(!strcmp(ds_status_str(DS_ERR_CANCELLED), "cancelled before generation started"));
    CHECK(!strcmp(ds_status_str(DS_ERR_NON_FINITE_LOGITS), "non-finite logits"));
    CHECK(!strcmp(ds_status_str(12345), "unknown status"));
    CHECK(!strcmp(ds_status_str(-1), "unknown status"));
    CHECK(ds_last_error() != NULL);
    ds_model_free(NULL);
    ds_session_free(NULL);
}

static void loading(const char *dir) {
    /* One thread: a failed load then starts no worker pool whose threads could still be
     * exiting when valgrind takes its leak census (deepseek-core's pool does not join them). */
    ds_model_params one = ds_model_default_params();
    one.threads = 1;
    ds_model *model = (ds_model *)&model; /* must be overwritten with NULL on failure */
    EXPECT(ds_model_load(NULL, NULL, &model), DS_ERR_NULL_POINTER, "ds_model_load: argument `path` is NULL");
    CHECK(model == NULL);
    EXPECT(ds_model_load(dir, &one, NULL), DS_ERR_NULL_POINTER, "`out`");
    model = (ds_model *)&model;
    EXPECT(ds_model_load("/nonexistent/model", &one, &model), DS_ERR_IO, "/nonexistent/model");
    CHECK(model == NULL);
    EXPECT(ds_model_load("bad\xff\xfe", &one, &model), DS_ERR_INVALID_UTF8, "UTF-8");
    ds_model_params bad = one;
    bad.dtype = 99;
    EXPECT(ds_model_load(dir, &bad, &model), DS_ERR_INVALID_ARGUMENT, "params.dtype 99");
    /* A folder that exists but holds no checkpoint. */
    EXPECT(ds_model_load("/", &one, &model), DS_ERR_IO, "config.json");
    CHECK(model == NULL);
}

static void getters(const ds_model *model) {
    CHECK(ds_model_vocab_size(model) > 0);
    CHECK(ds_model_context_length(model) >= 16);
    size_t n_eos = ds_model_eos_tokens(model, NULL, 0);
    CHECK(n_eos >= 1);
    ds_token eos[8] = {0};
    CHECK(ds_model_eos_tokens(model, eos, 8) == n_eos);
    CHECK(ds_model_is_eos(model, eos[0]));
    CHECK(!ds_model_is_eos(model, DS_TOKEN_NONE));

    CHECK(ds_model_vocab_size(NULL) == 0);
    CHECK(strstr(ds_last_error(), "ds_model_vocab_size: argument `model` is NULL"));
    CHECK(ds_model_context_length(NULL) == 0);
    CHECK(ds_model_bos_token(NULL) == DS_TOKEN_NONE);
    CHECK(ds_model_eos_tokens(NULL, eos, 8) == 0);
    CHECK(ds_model_eos_tokens(model, NULL, 8) == 0);
    CHECK(strstr(ds_last_error(), "`out`"));
    CHECK(!ds_model_is_eos(NULL, 0));
    CHECK(ds_session_len(NULL) == 0);
    CHECK(ds_session_context_length(NULL) == 0);
    CHECK(strstr(ds_last_error(), "`session`"));
}

static void sessions(const ds_model *model) {
    ds_session *s = (ds_session *)&s;
    EXPECT(ds_session_new(NULL, NULL, &s), DS_ERR_NULL_POINTER, "`model`");
    CHECK(s == NULL);
    EXPECT(ds_session_new(model, NULL, NULL), DS_ERR_NULL_POINTER, "`out`");

    ds_session_params p = ds_session_default_params();
    p.attention = 99;
    EXPECT(ds_session_new(model, &p, &s), DS_ERR_INVALID_ARGUMENT, "params.attention 99");
    p = ds_session_default_params();
    p.context_length = ds_model_context_length(model) + 1;
    EXPECT(ds_session_new(model, &p, &s), DS_ERR_INVALID_ARGUMENT, "context_length");
    CHECK(s == NULL);

    EXPECT(ds_session_truncate(NULL, 0), DS_ERR_NULL_POINTER, "`session`");
    EXPECT(ds_session_reset(NULL), DS_ERR_NULL_POINTER, "`session`");
}

/* Cache formats, session state files and forks from C: a restored session and a fork continue
 * exactly as the original; a truncated file, a missing one and bad arguments are statuses. */
static void state_files(const ds_model *model) {
    const size_t vocab = ds_model_vocab_size(model);
    float *want = malloc(vocab * sizeof *want), *got = malloc(vocab * sizeof *got);
    char path[64];
    snprintf(path, sizeof path, "/tmp/ds-errors-%ld-%p.dss", (long)time(NULL), (void *)path);
    ds_session_params p = ds_session_default_params();
    p.cache_dtype = 9;
    ds_session *s = NULL, *r = NULL, *f = NULL;
    EXPECT(ds_session_new(model, &p, &s), DS_ERR_INVALID_ARGUMENT, "params.cache_dtype 9");
    p.cache_dtype = DS_CACHE_Q8_0;
    p.threads = 1;
    CHECK(ds_session_new(model, &p, &s) == DS_OK);
    CHECK(ds_session_cache_dtype(s) == DS_CACHE_Q8_0);
    CHECK(ds_eval(s, PROMPT, N_PROMPT - 1, NULL, 0) == DS_OK);
    EXPECT(ds_session_save(NULL, path), DS_ERR_NULL_POINTER, "`session`");
    EXPECT(ds_session_save(s, NULL), DS_ERR_NULL_POINTER, "`path`");
    CHECK(ds_session_save(s, path) == DS_OK);
    CHECK(ds_session_restore(model, path, NULL, &r) == DS_OK);
    CHECK(ds_session_fork(s, &f) == DS_OK);
    CHECK(ds_session_len(r) == N_PROMPT - 1 && ds_session_len(f) == N_PROMPT - 1);
    CHECK(ds_session_cache_dtype(r) == DS_CACHE_Q8_0);
    CHECK(ds_eval(s, PROMPT + N_PROMPT - 1, 1, want, vocab) == DS_OK);
    CHECK(ds_eval(r, PROMPT + N_PROMPT - 1, 1, got, vocab) == DS_OK);
    CHECK(max_abs_diff(want, got, vocab) == 0.0f);
    CHECK(ds_eval(f, PROMPT + N_PROMPT - 1, 1, got, vocab) == DS_OK);
    CHECK(max_abs_diff(want, got, vocab) == 0.0f);
    ds_session_free(r);
    r = (ds_session *)&r;

    /* Cut the file short: a state error, and *out is NULL. */
    FILE *fp = fopen(path, "rb");
    CHECK(fp != NULL);
    if (fp) {
        static unsigned char bytes[1 << 16];
        size_t len = fread(bytes, 1, sizeof bytes, fp);
        fclose(fp);
        CHECK(len > 3 && len < sizeof bytes);
        fp = fopen(path, "wb");
        CHECK(fp != NULL && fwrite(bytes, 1, len - 3, fp) == len - 3);
        if (fp)
            fclose(fp);
    }
    EXPECT(ds_session_restore(model, path, NULL, &r), DS_ERR_SESSION_STATE, "bytes");
    CHECK(r == NULL);
    remove(path);
    EXPECT(ds_session_restore(model, path, NULL, &r), DS_ERR_IO, "ds-errors");
    EXPECT(ds_session_restore(NULL, path, NULL, &r), DS_ERR_NULL_POINTER, "`model`");
    EXPECT(ds_session_restore(model, path, NULL, NULL), DS_ERR_NULL_POINTER, "`out`");
    EXPECT(ds_session_fork(s, NULL), DS_ERR_NULL_POINTER, "`out`");
    CHECK(ds_session_cache_dtype(NULL) == DS_CACHE_F32);
    CHECK(!strcmp(ds_status_str(DS_ERR_SESSION_STATE), "corrupt or mismatched session state file"));
    ds_session_free(s);
    ds_session_free(f);
    free(want);
    free(got);
}

static void eval_errors(const ds_model *model) {
    const size_t vocab = ds_model_vocab_size(model);
    float *logits = malloc(2 * N_PROMPT * vocab * sizeof *logits);
    float *again = malloc(vocab * sizeof *again);
    ds_session_params p = ds_session_default_params();
    p.context_length = N_PROMPT + 1;
    p.threads = 1;
    ds_session *s = NULL;
    CHECK(ds_session_new(model, &p, &s) == DS_OK);
    CHECK(ds_session_context_length(s) == N_PROMPT + 1);

    EXPECT(ds_eval(NULL, PROMPT, N_PROMPT, logits, vocab), DS_ERR_NULL_POINTER, "ds_eval: argument `session`");
    EXPECT(ds_eval(s, NULL, N_PROMPT, logits, vocab), DS_ERR_NULL_POINTER, "`tokens`");
    EXPECT(ds_eval(s, PROMPT, 0, logits, vocab), DS_ERR_INVALID_ARGUMENT, "no tokens");
    EXPECT(ds_eval(s, PROMPT, N_PROMPT, logits, vocab - 1), DS_ERR_BUFFER_TOO_SMALL, "logits_len");
    EXPECT(ds_eval_all(s, PROMPT, N_PROMPT, logits, N_PROMPT * vocab - 1), DS_ERR_BUFFER_TOO_SMALL, "logits_len");
    EXPECT(ds_eval(s, PROMPT, SIZE_MAX, logits, vocab), DS_ERR_INVALID_ARGUMENT, "too large");

    ds_token bad[] = {1, 2, (ds_token)vocab, 3};
    EXPECT(ds_eval(s, bad, 4, logits, vocab), DS_ERR_TOKEN_OUT_OF_RANGE, "position 2");
    ds_token none[] = {DS_TOKEN_NONE};
    EXPECT(ds_eval(s, none, 1, NULL, 0), DS_ERR_TOKEN_OUT_OF_RANGE, "4294967295");
    CHECK(ds_session_len(s) == 0);

    /* Fill the context, then overflow it: the session must stay as it was. */
    CHECK(ds_eval(s, PROMPT, N_PROMPT, logits, vocab) == DS_OK);
    CHECK(ds_session_len(s) == N_PROMPT);
    EXPECT(ds_eval(s, PROMPT, 2, logits, vocab), DS_ERR_CONTEXT_OVERFLOW, "context length");
    CHECK(ds_session_len(s) == N_PROMPT);
    CHECK(ds_eval(s, PROMPT, 1, NULL, 0) == DS_OK); /* NULL logits: evaluate, copy nothing */
    CHECK(ds_session_len(s) == N_PROMPT + 1);
    EXPECT(ds_eval(s, PROMPT, 1, logits, vocab), DS_ERR_CONTEXT_OVERFLOW, "context length");

    /* Rewind: re-evaluating the rest of the prompt gives its logits again (the cache is really
     * truncated; prefill in one or two chunks may round differently). */
    EXPECT(ds_session_truncate(s, N_PROMPT + 2), DS_ERR_INVALID_ARGUMENT, "cannot truncate");
    CHECK(ds_session_truncate(s, 3) == DS_OK);
    CHECK(ds_session_len(s) == 3);
    CHECK(ds_eval(s, PROMPT + 3, N_PROMPT - 3, again, vocab) == DS_OK);
    CHECK(max_abs_diff(logits, again, vocab) < 1e-4f);

    /* eval_all's last row equals eval's row; the last error survives successful calls. */
    CHECK(ds_session_reset(s) == DS_OK);
    CHECK(ds_session_len(s) == 0);
    CHECK(ds_eval_all(s, PROMPT, N_PROMPT, logits, N_PROMPT * vocab) == DS_OK);
    CHECK(max_abs_diff(logits + (N_PROMPT - 1) * vocab, again, vocab) < 1e-4f);
    CHECK(strstr(ds_last_error(), "cannot truncate"));

    ds_session_free(s);
    free(logits);
    free(again);
}

/* Two threads on one session for up to 10 s: every call must either run or fail with
 * DS_ERR_SESSION_BUSY. */
struct race {
    ds_session *session;
    atomic_int stop, saw_busy, bad;
    size_t vocab;
};

static void *evaluator(void *arg) {
    struct race *r = arg;
    float *logits = malloc(r->vocab * sizeof *logits);
    time_t start = time(NULL);
    while (!atomic_load(&r->stop) && time(NULL) - start < 10) {
        ds_status st = ds_session_reset(r->session);
        if (st == DS_OK) st = ds_eval(r->session, PROMPT, N_PROMPT, logits, r->vocab);
        if (st != DS_OK && st != DS_ERR_SESSION_BUSY) atomic_store(&r->bad, 1);
        if (st == DS_ERR_SESSION_BUSY) atomic_store(&r->saw_busy, 1);
    }
    atomic_store(&r->stop, 1);
    free(logits);
    return NULL;
}

static void *intruder(void *arg) {
    struct race *r = arg;
    while (!atomic_load(&r->stop)) {
        ds_status st = ds_session_truncate(r->session, 0);
        if (st == DS_ERR_SESSION_BUSY) {
            if (!strstr(ds_last_error(), "in use by another thread")) atomic_store(&r->bad, 1);
            atomic_store(&r->saw_busy, 1);
            atomic_store(&r->stop, 1);
        } else if (st != DS_OK) {
            atomic_store(&r->bad, 1);
        }
        (void)ds_session_len(r->session); /* lock-free, never busy */
    }
    return NULL;
}

static void concurrent_use(const ds_model *model) {
    ds_session_params p = ds_session_default_params();
    p.threads = 1;
    struct race r = {.vocab = ds_model_vocab_size(model)};
    CHECK(ds_session_new(model, &p, &r.session) == DS_OK);
    pthread_t a, b;
    CHECK(pthread_create(&a, NULL, evaluator, &r) == 0);
    CHECK(pthread_create(&b, NULL, intruder, &r) == 0);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    /* Whether the two threads collide depends on the scheduler (under valgrind threads take
     * turns, so they rarely do): what must always hold is that no call went wrong. That a held
     * session answers DS_ERR_SESSION_BUSY is checked deterministically by the callback
     * re-entry checks and by the Rust tests. */
    CHECK(!atomic_load(&r.bad));
    /* Both threads are done: the session works again. */
    CHECK(ds_session_reset(r.session) == DS_OK);
    CHECK(ds_eval(r.session, PROMPT, N_PROMPT, NULL, 0) == DS_OK);
    ds_session_free(r.session);
}

/* A fresh thread has its own (empty) last error. */
static void *fresh_thread(void *arg) {
    *(int *)arg = strcmp(ds_last_error(), "") == 0;
    return NULL;
}


/* ---- text: tokenizer, ds_generate, ds_chat ----------------------------------------------- */

/* Text functions on a model without a tokenizer, and tokenizers that cannot be attached. */
static void no_tokenizer(ds_model *model, const char *tokenizer_dir) {
    ds_token ids[4];
    size_t n = 99;
    CHECK(!ds_model_has_tokenizer(model));
    CHECK(!ds_model_has_tokenizer(NULL));
    EXPECT(ds_tokenize(model, "hi", true, ids, 4, &n), DS_ERR_NO_TOKENIZER, "ds_tokenize: the model has no tokenizer");
    CHECK(n == 0);
    EXPECT(ds_detokenize(model, ids, 0, true, NULL, 0, &n), DS_ERR_NO_TOKENIZER, "ds_model_load_tokenizer");
    ds_session *s = NULL;
    CHECK(ds_session_new(model, NULL, &s) == DS_OK);
    ds_generate_result r = {.finish_reason = DS_FINISH_STOP, .prompt_tokens = 5};
    EXPECT(ds_generate(s, "hi", NULL, NULL, NULL, &r), DS_ERR_NO_TOKENIZER, "ds_generate: the model has no tokenizer");
    CHECK(r.finish_reason == DS_FINISH_NONE && r.prompt_tokens == 0);
    ds_message m = {"user", "hi", NULL, NULL};
    EXPECT(ds_chat(s, &m, 1, NULL, NULL, NULL, NULL), DS_ERR_NO_TOKENIZER, "ds_chat");
    ds_session_free(s);

    EXPECT(ds_model_load_tokenizer(NULL, tokenizer_dir), DS_ERR_NULL_POINTER, "`model`");
    EXPECT(ds_model_load_tokenizer(model, NULL), DS_ERR_NULL_POINTER, "`dir`");
    EXPECT(ds_model_load_tokenizer(model, "/nonexistent/tok"), DS_ERR_IO, "/nonexistent/tok/tokenizer.json");
    EXPECT(ds_model_load_tokenizer(model, "bad\xff"), DS_ERR_INVALID_UTF8, "`dir`");
    /* R1's 128815 ids do not fit the tiny model's vocabulary. */
    EXPECT(ds_model_load_tokenizer(model, tokenizer_dir), DS_ERR_INVALID_ARGUMENT, "vocab_size");
    CHECK(!ds_model_has_tokenizer(model));
}

static void tokenize_errors(const ds_model *model) {
    const char *text = "Hello, world!";
    const ds_token want[] = {0, 19923, 14, 2058, 3}; /* BOS + transformers' ids */
    ds_token ids[8] = {0};
    size_t n = 99;
    EXPECT(ds_tokenize(NULL, text, true, ids, 8, &n), DS_ERR_NULL_POINTER, "ds_tokenize: argument `model`");
    CHECK(n == 0);
    EXPECT(ds_tokenize(model, NULL, true, ids, 8, &n), DS_ERR_NULL_POINTER, "`text`");
    EXPECT(ds_tokenize(model, text, true, ids, 8, NULL), DS_ERR_NULL_POINTER, "`n_out`");
    EXPECT(ds_tokenize(model, "bad\xc3", true, ids, 8, &n), DS_ERR_INVALID_UTF8, "`text`");
    /* The size query, an undersized buffer (untouched), then the right size. */
    EXPECT(ds_tokenize(model, text, true, NULL, 0, &n), DS_ERR_BUFFER_TOO_SMALL, "need 5");
    CHECK(n == 5);
    EXPECT(ds_tokenize(model, text, true, ids, 4, &n), DS_ERR_BUFFER_TOO_SMALL, "out_len is 4, need 5");
    CHECK(n == 5 && ids[0] == 0 && ids[1] == 0);
    EXPECT(ds_tokenize(model, text, true, NULL, 5, &n), DS_ERR_NULL_POINTER, "`out`");
    CHECK(ds_tokenize(model, text, true, ids, 8, &n) == DS_OK);
    CHECK(n == 5 && !memcmp(ids, want, sizeof want));
    CHECK(ds_tokenize(model, text, false, ids, 8, &n) == DS_OK);
    CHECK(n == 4 && ids[0] == 19923);
    CHECK(ds_tokenize(model, "", false, NULL, 0, &n) == DS_OK && n == 0);

    char out[64];
    memset(out, 'x', sizeof out);
    EXPECT(ds_detokenize(model, NULL, 2, true, out, 64, &n), DS_ERR_NULL_POINTER, "`tokens`");
    EXPECT(ds_detokenize(model, want, 5, true, out, 64, NULL), DS_ERR_NULL_POINTER, "`n_out`");
    EXPECT(ds_detokenize(model, want, 5, true, NULL, 0, &n), DS_ERR_BUFFER_TOO_SMALL, "need 14");
    CHECK(n == 13);
    /* 13 bytes hold the text but not its NUL. */
    EXPECT(ds_detokenize(model, want, 5, true, out, 13, &n), DS_ERR_BUFFER_TOO_SMALL, "the text and a NUL");
    CHECK(out[0] == 'x');
    CHECK(ds_detokenize(model, want, 5, true, out, 14, &n) == DS_OK);
    CHECK(n == 13 && !strcmp(out, text));
    CHECK(ds_detokenize(model, want, 5, false, out, 64, &n) == DS_OK);
    CHECK(!strcmp(out, "<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>Hello, world!"));
    CHECK(ds_detokenize(model, want, 0, true, out, 1, &n) == DS_OK && n == 0 && out[0] == 0);
    /* The model's vocabulary is padded past the tokenizer's: those ids have no text. */
    const ds_token padding[] = {19923, 129000};
    EXPECT(ds_detokenize(model, padding, 2, true, out, 64, &n), DS_ERR_TOKEN_OUT_OF_RANGE, "position 1");
}

static void generate_param_errors(ds_session *s) {
    ds_generate_params p = ds_generate_default_params();
    ds_generate_result r;
    EXPECT(ds_generate(NULL, "hi", &p, NULL, NULL, &r), DS_ERR_NULL_POINTER, "ds_generate: argument `session`");
    EXPECT(ds_generate(s, NULL, &p, NULL, NULL, &r), DS_ERR_NULL_POINTER, "`prompt`");
    EXPECT(ds_generate(s, "\xff", &p, NULL, NULL, &r), DS_ERR_INVALID_UTF8, "`prompt`");

    p.top_p = 1.5f;
    EXPECT(ds_generate(s, "hi", &p, NULL, NULL, &r), DS_ERR_INVALID_PARAMETER, "`top_p`");
    p = ds_generate_default_params();
    p.min_p = 2;
    EXPECT(ds_generate(s, "hi", &p, NULL, NULL, &r), DS_ERR_INVALID_PARAMETER, "`min_p`");
    p = ds_generate_default_params();
    p.presence_penalty = -3;
    EXPECT(ds_generate(s, "hi", &p, NULL, NULL, &r), DS_ERR_INVALID_PARAMETER, "`presence_penalty`");
    p = ds_generate_default_params();
    p.repetition_penalty = 0;
    EXPECT(ds_generate(s, "hi", &p, NULL, NULL, &r), DS_ERR_INVALID_PARAMETER, "`repetition_penalty`");

    p = ds_generate_default_params();
    p.n_stop = 1;
    EXPECT(ds_generate(s, "hi", &p, NULL, NULL, &r), DS_ERR_NULL_POINTER, "`params.stop`");
    const char *stops[] = {"ok", NULL};
    p.stop = stops;
    p.n_stop = 2;
    EXPECT(ds_generate(s, "hi", &p, NULL, NULL, &r), DS_ERR_NULL_POINTER, "`params.stop[1]`");
    stops[1] = "";
    EXPECT(ds_generate(s, "hi", &p, NULL, NULL, &r), DS_ERR_INVALID_PARAMETER, "`stop`");
    stops[1] = "\xc3";
    EXPECT(ds_generate(s, "hi", &p, NULL, NULL, &r), DS_ERR_INVALID_UTF8, "`params.stop[1]`");
    CHECK(r.finish_reason == DS_FINISH_NONE);

    ds_message m[2] = {{"user", "hi", NULL, NULL}, {NULL, "x", NULL, NULL}};
    EXPECT(ds_chat(NULL, m, 1, NULL, NULL, NULL, NULL), DS_ERR_NULL_POINTER, "ds_chat: argument `session`");
    EXPECT(ds_chat(s, NULL, 1, NULL, NULL, NULL, NULL), DS_ERR_NULL_POINTER, "`messages`");
    EXPECT(ds_chat(s, m, 0, NULL, NULL, NULL, NULL), DS_ERR_INVALID_ARGUMENT, "n_messages is 0");
    EXPECT(ds_chat(s, m, 2, NULL, NULL, NULL, NULL), DS_ERR_NULL_POINTER, "`messages[1].role`");
    m[1].role = "user";
    m[1].content = NULL;
    EXPECT(ds_chat(s, m, 2, NULL, NULL, NULL, NULL), DS_ERR_NULL_POINTER, "`messages[1].content`");
    CHECK(ds_session_len(s) == 0);
}

/* What the callback sees and does. */
struct stream {
    ds_session *session;
    int calls, bad_text, cancel_at;
    ds_status reentry[3];
    size_t len_inside;
    char text[4096];
    size_t text_len;
};

static bool on_text(void *user_data, ds_event_kind kind, const char *text, size_t len) {
    struct stream *st = user_data;
    st->calls++;
    if (len == 0 || text[len] != 0 || (kind != DS_EVENT_CONTENT && kind != DS_EVENT_REASONING))
        st->bad_text = 1;
    if (st->text_len + len < sizeof st->text) {
        memcpy(st->text + st->text_len, text, len);
        st->text_len += len;
        st->text[st->text_len] = 0;
    }
    if (st->calls == 1 && st->session) {
        /* Re-entering the session from its own callback: busy, never a deadlock. */
        ds_token t = 5;
        st->reentry[0] = ds_generate(st->session, "again", NULL, on_text, st, NULL);
        st->reentry[1] = ds_eval(st->session, &t, 1, NULL, 0);
        st->reentry[2] = ds_session_reset(st->session);
        st->len_inside = ds_session_len(st->session);
    }
    return st->calls != st->cancel_at;
}

/* An abort callback that says stop at once, counting its polls. */
static bool abort_now(void *user_data) {
    int *polls = user_data;
    ++*polls;
    return true;
}

static void generation(const ds_model *model) {
    ds_session_params sp = ds_session_default_params();
    sp.threads = 1;
    sp.context_length = 24;
    ds_session *s = NULL;
    CHECK(ds_session_new(model, &sp, &s) == DS_OK);
    generate_param_errors(s);

    /* Greedy, streamed, to the end: 8 tokens. */
    ds_generate_params p = ds_generate_default_params();
    p.temperature = 0;
    p.max_tokens = 8;
    struct stream all = {0};
    ds_generate_result r;
    CHECK(ds_generate(s, "Once upon a time", &p, on_text, &all, &r) == DS_OK);
    CHECK(r.finish_reason == DS_FINISH_LENGTH && r.completion_tokens == 8 && r.cached_tokens == 0);
    CHECK(all.calls > 0 && !all.bad_text && all.text_len > 0);
    CHECK(ds_session_len(s) == r.prompt_tokens + 7);
    const size_t prompt_tokens = r.prompt_tokens;

    /* Cancelled by the first callback, which also tries to re-enter the session. The cache is
     * reused: only the last prompt token is evaluated again. */
    struct stream cancel = {.session = s, .cancel_at = 1};
    CHECK(ds_generate(s, "Once upon a time", &p, on_text, &cancel, &r) == DS_OK);
    CHECK(r.finish_reason == DS_FINISH_CANCELLED && cancel.calls == 1);
    CHECK(r.completion_tokens < 8 && r.cached_tokens == prompt_tokens - 1);
    CHECK(cancel.reentry[0] == DS_ERR_SESSION_BUSY && cancel.reentry[1] == DS_ERR_SESSION_BUSY &&
          cancel.reentry[2] == DS_ERR_SESSION_BUSY);
    CHECK(cancel.len_inside == prompt_tokens + 7);
    CHECK(!strncmp(all.text, cancel.text, cancel.text_len));

    /* Without a callback or a result, and with NULL params (sampling with a fresh seed). */
    CHECK(ds_generate(s, "Once upon a time", NULL, NULL, NULL, NULL) == DS_OK);

    /* A prompt longer than the context: rejected, the session unchanged. */
    const size_t before = ds_session_len(s);
    EXPECT(ds_generate(s, "a b c d e f g h i j k l m n o p q r s t u v w x y z", &p, on_text, &all, &r),
           DS_ERR_CONTEXT_OVERFLOW, "context length 24");
    CHECK(ds_session_len(s) == before && r.finish_reason == DS_FINISH_NONE);
    /* Generation stops at the context's end. */
    p.max_tokens = 0;
    CHECK(ds_generate(s, "Once upon a time", &p, NULL, NULL, &r) == DS_OK);
    CHECK(r.finish_reason == DS_FINISH_LENGTH && ds_session_len(s) == 24);

    /* A chat, streamed as reasoning (R1's template opens <think>). */
    ds_message m[] = {{"system", "Be brief.", NULL, NULL}, {"user", "What is 1+1?", NULL, NULL}};
    struct stream chat = {0};
    p.max_tokens = 4;
    CHECK(ds_chat(s, m, 2, &p, on_text, &chat, &r) == DS_OK);
    CHECK(r.finish_reason == DS_FINISH_LENGTH && r.completion_tokens == 4 && !chat.bad_text);
    CHECK(r.cached_tokens == 1); /* BOS */

    /* The abort callback: before the prompt is evaluated, the call succeeds cancelled; while
     * ds_chat renders its template, it fails with DS_ERR_CANCELLED, the session unchanged. */
    int polls = 0;
    p.abort_callback = abort_now;
    p.abort_callback_data = &polls;
    struct stream aborted = {0};
    CHECK(ds_generate(s, "Once upon a time", &p, on_text, &aborted, &r) == DS_OK);
    CHECK(r.finish_reason == DS_FINISH_CANCELLED && r.completion_tokens == 0 && aborted.calls == 0);
    CHECK(polls == 1);
    const size_t kept = ds_session_len(s);
    EXPECT(ds_chat(s, m, 2, &p, on_text, &aborted, &r), DS_ERR_CANCELLED, "ds_chat: cancelled");
    CHECK(polls == 2 && r.finish_reason == DS_FINISH_NONE && ds_session_len(s) == kept);
    ds_session_free(s);
}

static void text(const char *tiny_dir, const char *text_dir, const char *tokenizer_dir) {
    ds_model_params mp = ds_model_default_params();
    mp.threads = 1;
    ds_model *tiny = NULL, *model = NULL;
    CHECK(ds_model_load(tiny_dir, &mp, &tiny) == DS_OK);
    CHECK(ds_model_load(text_dir, &mp, &model) == DS_OK);
    if (!tiny || !model) {
        ds_model_free(tiny);
        ds_model_free(model);
        return;
    }
    no_tokenizer(tiny, tokenizer_dir);
    CHECK(ds_model_load_tokenizer(model, tokenizer_dir) == DS_OK);
    CHECK(ds_model_has_tokenizer(model));
    tokenize_errors(model);
    generation(model);
    ds_model_free(tiny);
    ds_model_free(model);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: errors <model-dir> <text-model-dir> <tokenizer-dir>\n");
        return 2;
    }
    statics();
    loading(argv[1]);

    ds_model_params mp = ds_model_default_params();
    mp.threads = 1;
    ds_model *model = NULL;
    CHECK(ds_model_load(argv[1], &mp, &model) == DS_OK);
    if (!model) {
        fprintf(stderr, "cannot load %s: %s\n", argv[1], ds_last_error());
        return 1;
    }
    getters(model);
    sessions(model);
    eval_errors(model);
    state_files(model);
    concurrent_use(model);

    int empty = 0;
    pthread_t t;
    CHECK(pthread_create(&t, NULL, fresh_thread, &empty) == 0);
    pthread_join(t, NULL);
    CHECK(empty);

    /* A session keeps its model alive: free the model first, keep evaluating. */
    ds_session *s = NULL;
    CHECK(ds_session_new(model, NULL, &s) == DS_OK);
    ds_model_free(model);
    CHECK(ds_eval(s, PROMPT, N_PROMPT, NULL, 0) == DS_OK);
    CHECK(ds_session_len(s) == N_PROMPT);
    ds_session_free(s);

    text(argv[1], argv[2], argv[3]);

    printf("errors.c: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
