/* secbuf.h - memory that holds secrets.
 *
 * A kb_secret is a byte buffer in its own locked mapping: mlock(2)ed so it never reaches swap,
 * madvise(MADV_DONTDUMP) so it never reaches a core file, and wiped with OPENSSL_cleanse before it
 * is unmapped. Keys, PINs, data keys and decrypted contents live in kb_secrets.
 *
 * kb_secmem_init() must be called once by every process that holds secrets, before it reads any:
 * it makes the process non-dumpable (PR_SET_DUMPABLE 0, RLIMIT_CORE 0) and proves that memory can
 * be locked. A process that cannot lock memory must refuse to start; the error names
 * RLIMIT_MEMLOCK so the operator knows which limit to raise.
 */
#ifndef KB_SECBUF_H
#define KB_SECBUF_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef struct kb_secret kb_secret;

/* Largest single secret buffer (16 MiB); larger requests fail with KB_ERR_TOO_LARGE. */
#define KB_SECRET_MAX ((size_t)16 * 1024 * 1024)

/* Harden the process and check that secret memory can be locked. On KB_ERR_MEMLOCK a message
 * naming RLIMIT_MEMLOCK has been logged. */
KB_WUR kb_err kb_secmem_init(void);

/* A zeroed secret of len bytes (len may be 0). */
KB_WUR kb_err kb_secret_new(size_t len, kb_secret **out);
/* A secret holding a copy of data[0..len). The caller still owns (and should wipe) data. */
KB_WUR kb_err kb_secret_from(const void *data, size_t len, kb_secret **out);
/* Shrink the visible length (for example after reading fewer bytes than allocated). */
KB_WUR kb_err kb_secret_truncate(kb_secret *s, size_t len);

uint8_t *kb_secret_data(kb_secret *s);
const uint8_t *kb_secret_cdata(const kb_secret *s);
size_t kb_secret_len(const kb_secret *s);

/* Wipe, unlock and free. NULL is a no-op. */
void kb_secret_free(kb_secret *s);

/* Wipe n bytes (never optimised away). */
void kb_wipe(void *p, size_t n);

/* Constant-time equality for MACs, tokens and checksums: 1 if equal, 0 if not. */
int kb_ct_eq(const void *a, const void *b, size_t n);

/* Test hook: the number of live kb_secret buffers (leak checks in unit tests). */
size_t kb_secret_live_count(void);

#endif
