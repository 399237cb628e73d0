/* creds.h - keybridge-cache's credentials file: access key id -> secret access key + account.
 *
 * Format: one credential per line, three fields separated by spaces or tabs:
 *
 *     # access-key-id        secret-access-key                          account
 *     AKIAEXAMPLE0000001     wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY   123456789012
 *
 * Blank lines and lines starting with '#' are ignored. The file must not be group- or
 * world-accessible (kb_file_read_secret refuses mode & 077); it is read into locked memory and
 * each secret key is kept in its own kb_secret. Errors name the line, never its content.
 */
#ifndef KB_CACHE_CREDS_H
#define KB_CACHE_CREDS_H

#include <stddef.h>

#include "lib/err.h"
#include "lib/secbuf.h"

#define CACHE_CREDS_FILE_MAX (1024 * 1024)
#define CACHE_CREDS_MAX 10000
#define CACHE_AKID_MIN 16
#define CACHE_AKID_MAX 128
#define CACHE_SECRET_KEY_MAX 128

typedef struct cache_creds cache_creds;

/* Parse a credentials file. On KB_ERR_INVALID, *bad_line (if not NULL) is the 1-based line. */
KB_WUR kb_err cache_creds_load(const char *path, cache_creds **out, size_t *bad_line);
/* Parse from memory (tests). */
KB_WUR kb_err cache_creds_parse(const char *text, size_t len, cache_creds **out, size_t *bad_line);
void cache_creds_free(cache_creds *c);
size_t cache_creds_count(const cache_creds *c);

/* Find an access key id: KB_ERR_NOT_FOUND if unknown. account points into c. */
KB_WUR kb_err cache_creds_lookup(const cache_creds *c, const char *akid, const kb_secret **key,
                                 const char **account);

#endif
