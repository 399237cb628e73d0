/* failover.h - a client's list of server URLs and the order it tries them in (issue 13).
 *
 * A client (keybridge-sync's [source] url, the CLI's [client] server_url or --server) may name
 * several keybridged replicas. Every client tries them in the same cyclic order, but each starts
 * at its own stable offset, a hash of its own name (its SPIFFE ID: the first 8 bytes of its
 * SHA-256, big-endian, modulo the number of URLs): load spreads over the replicas
 * and one client keeps talking to the same replica run after run (docs/failover.md).
 *
 * What fails over is decided by the caller from what happened (kb_failover_status for answers);
 * an answer other than 502/503/504 is authoritative (a 403 from one replica is the answer of all
 * of them) and is never retried on another.
 */
#ifndef KB_FAILOVER_H
#define KB_FAILOVER_H

#include <stddef.h>

#include "err.h"

#define KB_FAILOVER_MAX_URLS 8    /* servers in one list */
#define KB_FAILOVER_MAX_LIST 8192 /* characters of the whole comma-separated list */

typedef struct {
    char *url[KB_FAILOVER_MAX_URLS]; /* owned, in the order written */
    size_t n;
    size_t start; /* index of the first to try (kb_urllist_order) */
} kb_urllist;

/* Append the entries of a comma-separated list ("https://a:8443, https://b:8443"; blanks
 * around entries ignored). KB_ERR_INVALID: an empty entry or an empty list; KB_ERR_TOO_LARGE:
 * more than KB_FAILOVER_MAX_URLS in all, or the text over KB_FAILOVER_MAX_LIST. On error the list
 * is unchanged. prefix (or NULL): every entry must start with it ("https://"), else
 * KB_ERR_INVALID. */
KB_WUR kb_err kb_urllist_add(kb_urllist *l, const char *list, const char *prefix);
void kb_urllist_free(kb_urllist *l);
/* Set the starting offset from the client's name (kb_failover_offset); NULL counts as "". */
void kb_urllist_order(kb_urllist *l, const char *client);
/* The i-th server to try (i counts from 0 and wraps): url[(start + i) % n]. NULL if empty. */
const char *kb_urllist_at(const kb_urllist *l, size_t i);
/* The stable offset alone: the first 8 bytes of SHA-256(name) as a big-endian integer, modulo n
 * (0 when n is 0). */
size_t kb_failover_offset(const char *name, size_t n);
/* 1 for an answer that means "this replica cannot serve now, another may" (502, 503, 504). */
int kb_failover_status(int status);

#endif
