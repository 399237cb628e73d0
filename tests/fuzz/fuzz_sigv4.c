/* fuzz_sigv4.c - kb_sigv4_verify (and kb_sigv4_sign) over fuzzer-built requests.
 *
 * Input layout (text, '\n' separated): the first line is "METHOD PATH[?QUERY]", then one header
 * per line as "name:value" up to an empty line; everything after it is the body. The secret for
 * AKIDEXAMPLE is the AWS test suite's, and the clock is the suite's timestamp, so a seed taken
 * from the suite reaches the signature comparison. Must never crash, leak or read out of bounds.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/secbuf.h"
#include "lib/sigv4.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_MAX_HEADERS (KB_SIGV4_MAX_HEADERS + 8)

static kb_secret *fuzz_secret;

static kb_err fuzz_lookup(void *arg, const char *akid, const kb_secret **secret, void **user)
{
    (void)arg;
    if (strcmp(akid, "AKIDEXAMPLE") != 0)
        return KB_ERR_NOT_FOUND;
    *secret = fuzz_secret;
    *user = NULL;
    return KB_OK;
}

static char *dup_n(const uint8_t *p, size_t n)
{
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, p, n);
        s[n] = '\0';
    }
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char sk[] = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    static const char *required[] = {"host", "x-amz-date"};
    kb_sigv4_header *h = NULL;
    kb_sigv4_request r;
    char *line0 = NULL, *q;
    const uint8_t *p = data, *end = data + size, *eol;
    size_t n = 0;

    if (fuzz_secret == NULL && kb_secret_from(sk, strlen(sk), &fuzz_secret) != KB_OK)
        return 0;
    memset(&r, 0, sizeof(r));
    eol = memchr(p, '\n', size);
    if (eol == NULL)
        return 0;
    line0 = dup_n(p, (size_t)(eol - p));
    h = calloc(FUZZ_MAX_HEADERS, sizeof(*h));
    if (line0 == NULL || h == NULL)
        goto out;
    p = eol + 1;
    while (p < end && n < FUZZ_MAX_HEADERS) {
        const uint8_t *colon;
        size_t ll;
        eol = memchr(p, '\n', (size_t)(end - p));
        ll = eol ? (size_t)(eol - p) : (size_t)(end - p);
        if (ll == 0) {
            p++;
            break;
        }
        colon = memchr(p, ':', ll);
        if (colon) {
            /* Point into the input: the library must honour the lengths, not look for NULs. */
            h[n].name = (const char *)p;
            h[n].name_len = (size_t)(colon - p);
            h[n].value = (const char *)colon + 1;
            h[n].value_len = ll - (size_t)(colon - p) - 1;
            n++;
        }
        p = eol ? eol + 1 : end;
    }
    r.method = line0;
    r.path = "/";
    r.query = "";
    q = strchr(line0, ' ');
    if (q) {
        char *qm;
        *q++ = '\0';
        r.path = q;
        qm = strchr(q, '?');
        if (qm) {
            *qm++ = '\0';
            r.query = qm;
        }
    }
    r.headers = h;
    r.n_headers = n;
    r.body = p < end ? p : NULL;
    r.body_len = p < end ? (size_t)(end - p) : 0;

    {
        kb_sigv4_verify_opts o = {fuzz_lookup, NULL, "service", required, 2, 1440938160, 900, NULL};
        char region[64];
        void *user = NULL;
        const char *why = NULL;
        kb_err e = kb_sigv4_verify(&r, &o, region, &user, &why);
        if (e != KB_OK && why == NULL)
            abort(); /* every failure carries a message */
    }
    {
        kb_sigv4_params sp = {"AKIDEXAMPLE", fuzz_secret, NULL, "us-east-1",
                              "service",     1440938160,  1};
        kb_dbuf auth;
        char date[17];
        kb_dbuf_init(&auth, 8192);
        if (kb_sigv4_sign(&r, &sp, &auth, date) == KB_OK && auth.len == 0)
            abort();
        kb_dbuf_free(&auth);
    }
out:
    free(line0);
    free(h);
    return 0;
}
