/* source_keybridge.h - keybridged's client API over mTLS (docs/api.md):
 *   GET  /v1/secrets             -> {"client","application","secrets":[metadata...]}
 *   POST /v1/secrets:batchGet    {"names":[...]} -> {"secrets":[record+content | {name,error}]}
 * The client presents its X509-SVID; the server's chain is verified as an X509-SVID against the
 * bundle (x509svid_verify, purpose server) and its SPIFFE ID must equal server_id exactly: any
 * other valid SVID is refused (DESIGN.md "Identity"). No hostname check (the SVID has a URI SAN
 * only); no TLS session resumption, so every connection re-verifies the pinned identity. */
#ifndef KB_SYNC_SOURCE_KEYBRIDGE_H
#define KB_SYNC_SOURCE_KEYBRIDGE_H

#include "backoff.h"
#include "identity.h"
#include "source.h"

/* Largest response bodies we read. */
#define SYNC_KB_LIST_MAX ((size_t)32 * 1024 * 1024)
#define SYNC_KB_BATCH_MAX ((size_t)32 * 1024 * 1024)
/* Largest single content accepted from the server (the dir sink may hold more than the cloud). */
#define SYNC_KB_CONTENT_MAX ((size_t)1024 * 1024)
/* Largest retry_after accepted in a deferred batch entry (seconds). */
#define SYNC_KB_RETRY_AFTER_LIMIT 86400
/* Rounds over the [source] url list retried after a transport failure (reset, closed before an
 * answer, timeout), with jittered backoff within the deadline (SYNC_BACKOFF_BASE_MS doubling):
 * a herd that a busy keybridged dropped during the handshake comes back (bench/herd). */
#define SYNC_KB_TRANSPORT_RETRIES 5
/* 429 / 503 answers and deferred batch entries are retried after the server's Retry-After plus
 * jitter for as long as the run's deadline allows (backoff.h); a hint that does not fit stops the
 * run early. */

typedef struct {
    const char *url;       /* "https://127.0.0.1:8443", or a comma-separated list of replicas (https
                              only, at most KB_FAILOVER_MAX_URLS), tried from a per-client offset */
    const char *server_id; /* pinned SPIFFE ID of keybridged (required) */
    const sync_identity *identity; /* borrowed; must outlive the source */
    long timeout_ms;               /* per request; 0 = 10 s (cut to what the deadline leaves) */
    const sync_clock *clock;       /* borrowed; deadline, sleep, random; NULL = real, none */
} sync_kb_opts;

KB_WUR kb_err sync_source_keybridge_new(const sync_kb_opts *o, sync_source **out);
/* The replica asked first now (the last that answered), for messages. */
const char *sync_source_keybridge_server(const sync_source *s);
/* Why the last TLS verification failed ("" if it did not), for error messages. */
const char *sync_source_keybridge_why(const sync_source *s);

/* Parsers, exposed for unit and fuzz tests. */
KB_WUR kb_err sync_kb_parse_list(const void *body, size_t len, sync_listing *out);
/* out[0..n) are matched to names[0..n) by name; names absent from the answer get
 * KB_ERR_NOT_FOUND. *fetched counts the contents decoded. */
KB_WUR kb_err sync_kb_parse_batch(const void *body, size_t len, const char *const *names, size_t n,
                                  sync_content *out, size_t *fetched);

#endif
