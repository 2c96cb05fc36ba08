/* Error paths of the C API, run under valgrind by .ci/capi.sh: every misuse a C caller can make
 * without undefined behaviour must give its status and a message naming the culprit, leave the
 * session unchanged, and leak nothing.
 *
 *   errors <model-dir>   (a tiny fixture: vocab < 2^20, context_length >= 16)
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

/* Two threads on one session: every call must either run or fail with DS_ERR_SESSION_BUSY. */
struct race {
    ds_session *session;
    atomic_int stop, saw_busy, bad;
    size_t vocab;
};

static void *evaluator(void *arg) {
    struct race *r = arg;
    float *logits = malloc(r->vocab * sizeof *logits);
    time_t start = time(NULL);
    while (!atomic_load(&r->stop) && time(NULL) - start < 60) {
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
    CHECK(atomic_load(&r.saw_busy));
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

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: errors <model-dir>\n");
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

    printf("errors.c: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
