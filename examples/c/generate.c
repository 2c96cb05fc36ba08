/* Generation through the C API, in three modes:
 *
 *   generate <model-dir> [-n N] [-t THREADS] <token-id>...
 *       Token ids in, greedy ids out: evaluates the prompt ids and prints the N most likely
 *       next tokens (default 16), one argmax at a time with ds_eval.
 *   generate <model-dir> [--tokenizer DIR] [-n N] [-t THREADS] [--temperature T] [--seed S]
 *            --prompt TEXT
 *       Text in, text out: continues TEXT with ds_generate, streaming the text as it comes
 *       (N: most tokens, 0 = until EOS; default 16). Sampling follows the checkpoint's
 *       generation_config.json unless --temperature is given (0: greedy). Reasoning (R1's
 *       <think> section) and the answer are both printed, a blank line between them.
 *   generate <model-dir> [--tokenizer DIR] --decode <token-id>...
 *       Prints the text of the ids (special tokens left out), with ds_detokenize.
 *
 * --tokenizer names the folder of tokenizer.json when the model folder has none.
 * The result goes to stdout; everything else to stderr.
 * Build: cc generate.c $(pkg-config --cflags --libs deepseek) -o generate
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deepseek.h"

static int fail(const char *what, ds_status status) {
    fprintf(stderr, "%s failed: %s (%s)\n", what, ds_status_str(status), ds_last_error());
    return 1;
}

static int parse_u32(const char *s, unsigned long max, unsigned long *out) {
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v > max) return 0;
    *out = v;
    return 1;
}

static int parse_float(const char *s, float *out) {
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end) return 0;
    *out = v;
    return 1;
}

static ds_token argmax(const float *v, size_t n) {
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return (ds_token)best;
}

/* Token-id mode: prefill the whole prompt in one call, then feed back one token at a time. */
static int greedy_ids(ds_model *model, ds_token *prompt, size_t n_prompt, unsigned long n_new) {
    if (n_prompt == 0) {
        /* No prompt given: start from BOS like a fresh document. */
        ds_token bos = ds_model_bos_token(model);
        prompt[n_prompt++] = bos == DS_TOKEN_NONE ? 0 : bos;
    }
    ds_session *session = NULL;
    size_t vocab = ds_model_vocab_size(model);
    float *logits = malloc(vocab * sizeof *logits);
    int rc = 0;
    ds_status st;
    if (!logits) return 1;
    if ((st = ds_session_new(model, NULL, &session)) != DS_OK) {
        rc = fail("ds_session_new", st);
        goto done;
    }
    fprintf(stderr, "vocab %zu, context %zu, prompt %zu tokens\n", vocab,
            ds_session_context_length(session), n_prompt);
    if ((st = ds_eval(session, prompt, n_prompt, logits, vocab)) != DS_OK) {
        rc = fail("ds_eval (prompt)", st);
        goto done;
    }
    for (unsigned long i = 0; i < n_new; i++) {
        ds_token next = argmax(logits, vocab);
        printf(i ? " %u" : "%u", (unsigned)next);
        if (i + 1 < n_new && (st = ds_eval(session, &next, 1, logits, vocab)) != DS_OK) {
            rc = fail("ds_eval", st);
            break;
        }
    }
    printf("\n");
done:
    ds_session_free(session);
    free(logits);
    return rc;
}

/* Text mode: the callback prints each delta as it arrives. */
struct printer {
    int reasoning_open; /* the last delta was reasoning */
};

static bool print_delta(void *user_data, ds_event_kind kind, const char *text, size_t len) {
    struct printer *p = user_data;
    if (kind == DS_EVENT_CONTENT && p->reasoning_open) fputs("\n\n", stdout);
    p->reasoning_open = kind == DS_EVENT_REASONING;
    fwrite(text, 1, len, stdout); /* len, not strlen: the text may hold a NUL */
    fflush(stdout);
    return true; /* keep going */
}

static int generate_text(ds_model *model, const char *prompt, const ds_generate_params *params) {
    ds_session *session = NULL;
    ds_status st = ds_session_new(model, NULL, &session);
    if (st != DS_OK) return fail("ds_session_new", st);
    struct printer printer = {0};
    ds_generate_result r;
    st = ds_generate(session, prompt, params, print_delta, &printer, &r);
    printf("\n");
    ds_session_free(session);
    if (st != DS_OK) return fail("ds_generate", st);
    static const char *const reasons[] = {"none", "stop", "length", "cancelled"};
    fprintf(stderr, "prompt %zu tokens, generated %zu (%s), %.1f tok/s prefill, %.1f tok/s decode\n",
            r.prompt_tokens, r.completion_tokens, reasons[r.finish_reason], r.prefill_tok_s,
            r.decode_tok_s);
    return 0;
}

static int decode(ds_model *model, const ds_token *ids, size_t n) {
    size_t len = 0;
    /* Ask for the size, then decode into a buffer that fits (the text plus a NUL). */
    ds_status st = ds_detokenize(model, ids, n, true, NULL, 0, &len);
    if (st != DS_OK && st != DS_ERR_BUFFER_TOO_SMALL) return fail("ds_detokenize", st);
    char *text = malloc(len + 1);
    if (!text) return 1;
    st = ds_detokenize(model, ids, n, true, text, len + 1, &len);
    if (st == DS_OK) {
        fwrite(text, 1, len, stdout);
        printf("\n");
    }
    free(text);
    return st == DS_OK ? 0 : fail("ds_detokenize", st);
}

int main(int argc, char **argv) {
    const char *usage =
        "usage: generate <model-dir> [-n N] [-t THREADS] <token-id>...\n"
        "       generate <model-dir> [--tokenizer DIR] [-n N] [-t THREADS] [--temperature T]\n"
        "                [--seed S] --prompt TEXT\n"
        "       generate <model-dir> [--tokenizer DIR] --decode <token-id>...\n";
    if (argc < 2) {
        fputs(usage, stderr);
        return 2;
    }
    unsigned long n_new = 16, threads = 0, seed = 0, v;
    const char *prompt_text = NULL, *tokenizer = NULL;
    int decode_mode = 0, has_seed = 0;
    float temperature = -1; /* negative: the checkpoint's default */
    ds_token *ids = calloc((size_t)argc, sizeof *ids);
    size_t n_ids = 0;
    if (!ids) return 1;
    for (int i = 2; i < argc; i++) {
        const char *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(argv[i], "-n") && next && parse_u32(next, 1u << 20, &n_new)) {
            i++;
        } else if (!strcmp(argv[i], "-t") && next && parse_u32(next, 4096, &threads)) {
            i++;
        } else if (!strcmp(argv[i], "--prompt") && next) {
            prompt_text = argv[++i];
        } else if (!strcmp(argv[i], "--tokenizer") && next) {
            tokenizer = argv[++i];
        } else if (!strcmp(argv[i], "--temperature") && next && parse_float(next, &temperature)) {
            i++;
        } else if (!strcmp(argv[i], "--seed") && next && parse_u32(next, UINT32_MAX, &seed)) {
            has_seed = 1;
            i++;
        } else if (!strcmp(argv[i], "--decode")) {
            decode_mode = 1;
        } else if (parse_u32(argv[i], UINT32_MAX, &v)) {
            ids[n_ids++] = (ds_token)v;
        } else {
            fprintf(stderr, "bad argument: %s\n%s", argv[i], usage);
            free(ids);
            return 2;
        }
    }
    if ((prompt_text && (n_ids || decode_mode)) || (tokenizer && !prompt_text && !decode_mode)) {
        fputs(usage, stderr);
        free(ids);
        return 2;
    }

    ds_model_params mp = ds_model_default_params();
    mp.threads = (uint32_t)threads;
    ds_model *model = NULL;
    ds_status st = ds_model_load(argv[1], &mp, &model);
    int rc;
    if (st != DS_OK) {
        rc = fail("ds_model_load", st);
    } else if (tokenizer && (st = ds_model_load_tokenizer(model, tokenizer)) != DS_OK) {
        rc = fail("ds_model_load_tokenizer", st);
    } else if (decode_mode) {
        rc = decode(model, ids, n_ids);
    } else if (prompt_text) {
        ds_generate_params gp = ds_generate_default_params();
        gp.max_tokens = n_new;
        gp.temperature = temperature;
        gp.seed = seed;
        gp.has_seed = has_seed;
        rc = generate_text(model, prompt_text, &gp);
    } else {
        rc = greedy_ids(model, ids, n_ids, n_new);
    }
    ds_model_free(model);
    free(ids);
    return rc;
}
