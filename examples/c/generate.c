/* Greedy decoding through the C API: loads a model folder, evaluates the prompt token ids and
 * prints the N most likely next tokens, one argmax at a time.
 *
 *   generate <model-dir> [-n N] [-t THREADS] <token-id>...
 *
 * Prints the generated ids on one line of stdout; everything else goes to stderr.
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

static ds_token argmax(const float *v, size_t n) {
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return (ds_token)best;
}

int main(int argc, char **argv) {
    const char *usage = "usage: generate <model-dir> [-n N] [-t THREADS] <token-id>...\n";
    if (argc < 2) {
        fputs(usage, stderr);
        return 2;
    }
    unsigned long n_new = 16, threads = 0, v;
    ds_token *prompt = calloc((size_t)argc, sizeof *prompt);
    size_t n_prompt = 0;
    if (!prompt) return 1;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "-n") && i + 1 < argc && parse_u32(argv[i + 1], 1u << 20, &n_new)) {
            i++;
        } else if (!strcmp(argv[i], "-t") && i + 1 < argc &&
                   parse_u32(argv[i + 1], 4096, &threads)) {
            i++;
        } else if (parse_u32(argv[i], UINT32_MAX, &v)) {
            prompt[n_prompt++] = (ds_token)v;
        } else {
            fprintf(stderr, "bad argument: %s\n%s", argv[i], usage);
            free(prompt);
            return 2;
        }
    }

    ds_model_params mp = ds_model_default_params();
    mp.threads = (uint32_t)threads;
    ds_model *model = NULL;
    ds_status st = ds_model_load(argv[1], &mp, &model);
    if (st != DS_OK) {
        free(prompt);
        return fail("ds_model_load", st);
    }
    if (n_prompt == 0) {
        /* No prompt given: start from BOS like a fresh document. */
        ds_token bos = ds_model_bos_token(model);
        prompt[n_prompt++] = bos == DS_TOKEN_NONE ? 0 : bos;
    }

    ds_session *session = NULL;
    size_t vocab = ds_model_vocab_size(model);
    float *logits = malloc(vocab * sizeof *logits);
    int rc = 0;
    if (!logits) {
        rc = 1;
        goto done;
    }
    if ((st = ds_session_new(model, NULL, &session)) != DS_OK) {
        rc = fail("ds_session_new", st);
        goto done;
    }
    fprintf(stderr, "vocab %zu, context %zu, prompt %zu tokens\n", vocab,
            ds_session_context_length(session), n_prompt);

    /* Prefill the whole prompt in one call, then feed back one token at a time. */
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
    ds_model_free(model);
    free(logits);
    free(prompt);
    return rc;
}
