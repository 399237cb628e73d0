/* spiffe_id.h - SPIFFE IDs: parse, validate, compare, match by path prefix.
 *
 * A SPIFFE ID is `spiffe://<trust-domain><path>` (SPIFFE-ID.md, section 2). This module accepts
 * only the canonical form every SPIFFE implementation agrees on:
 *
 *   - scheme exactly `spiffe://` (lowercase);
 *   - trust domain non-empty, at most 255 bytes (2.3), of `a-z 0-9 . _ -` only: uppercase is an
 *     error, not something to fold, so one identity has one spelling; no userinfo (`@`), no port
 *     (`:`) (2.1);
 *   - path empty (the trust domain's root ID) or `/`-separated segments of `A-Z a-z 0-9 . _ -`;
 *     no empty, `.` or `..` segments, no trailing `/`, no percent-encoding (2.2);
 *   - no query, no fragment (2);
 *   - at most 2048 bytes in all (2.3).
 *
 * The root ID (`spiffe://td`) is a valid ID but never a workload's identity: X509-SVID.md 3.1
 * requires a non-root path for leaf SVIDs; see spiffe_id_is_root().
 *
 * A spiffe_id is a plain value (no allocation, nothing to free, safe to copy with `=`). Its fields
 * are private to spiffe_id.c: use the accessors.
 */
#ifndef KB_SPIFFE_ID_H
#define KB_SPIFFE_ID_H

#include <stddef.h>

#include "err.h"

/* Longest SPIFFE ID, in bytes, including "spiffe://" (SPIFFE-ID.md 2.3). */
#define SPIFFE_ID_MAX 2048
/* Longest trust domain name, in bytes (SPIFFE-ID.md 2.3, from RFC 3986's host limit). */
#define SPIFFE_TD_MAX 255

typedef struct {
    char str[SPIFFE_ID_MAX + 1]; /* private: the whole ID, NUL-terminated */
    char td[SPIFFE_TD_MAX + 1];  /* private: the trust domain name, NUL-terminated */
    size_t len;                  /* private */
    size_t path_off;             /* private: offset of the path in str (== len for a root ID) */
} spiffe_id;

static inline size_t spiffe_id_max(void)
{
    return SPIFFE_ID_MAX;
}

/* Parse s[0..len) (need not be NUL-terminated; an embedded NUL is an invalid character).
 * KB_OK: *out holds the ID. KB_ERR_INVALID (syntax) or KB_ERR_TOO_LARGE (over SPIFFE_ID_MAX or
 * SPIFFE_TD_MAX): *why (if not NULL) points to a static string naming the rule that was broken,
 * and *out is zeroed. The reason never quotes the input. */
KB_WUR kb_err spiffe_id_parse(const char *s, size_t len, spiffe_id *out, const char **why);

/* spiffe_id_parse() of a NUL-terminated string. */
KB_WUR kb_err spiffe_id_parse_str(const char *s, spiffe_id *out, const char **why);

/* Validate a bare trust domain name (no scheme), e.g. "example.org", with the same rules and
 * reasons as the trust domain part of spiffe_id_parse(). */
KB_WUR kb_err spiffe_td_validate(const char *s, size_t len, const char **why);

/* Build the ID for trust domain td and path (path "" for the root ID, else it starts with '/').
 * The result is validated exactly like spiffe_id_parse(). */
KB_WUR kb_err spiffe_id_from_parts(const char *td, const char *path, spiffe_id *out,
                                   const char **why);

/* The whole ID, NUL-terminated, e.g. "spiffe://example.org/ns/a". */
const char *spiffe_id_str(const spiffe_id *id);
size_t spiffe_id_len(const spiffe_id *id);
/* The trust domain name, NUL-terminated, e.g. "example.org". */
const char *spiffe_id_trust_domain(const spiffe_id *id);
/* The path, NUL-terminated: "" for a root ID, else "/seg/seg". */
const char *spiffe_id_path(const spiffe_id *id);

/* 1 if the ID has no path (spiffe://td): valid as a trust domain's ID, never as a workload's. */
int spiffe_id_is_root(const spiffe_id *id);
/* 1 if a and b are the same ID (byte equality: the parser admits one spelling per ID). */
int spiffe_id_eq(const spiffe_id *a, const spiffe_id *b);
/* 1 if the ID is in trust domain td (a bare name like "example.org"). */
int spiffe_id_member_of(const spiffe_id *id, const char *td);

/* Path-prefix match on segment boundaries, for policies like "every ID under /lambda/":
 *   prefix "/lambda"  matches "/lambda" and "/lambda/x/y", not "/lambdax" nor "/lambda2/x";
 *   prefix "/lambda/" matches "/lambda/x/y" only (strictly below /lambda);
 *   prefix "/"        matches every non-root path.
 * A prefix that does not start with '/' matches nothing. Returns 1 on a match, 0 otherwise. */
int spiffe_id_has_prefix(const spiffe_id *id, const char *prefix);

#endif
