/* err.h - keybridge's error type and guard macros.
 *
 * Every fallible function returns a kb_err, which the compiler will not let a caller ignore.
 * The guard macros keep the happy path a straight line (the s2n-tls style):
 *
 *     KB_GUARD(store_secret_get(st, name, &sec));      // propagate any error
 *     KB_ENSURE(len <= KB_NAME_MAX, KB_ERR_TOO_LARGE);  // fail with a code
 *     KB_ENSURE_REF(p);                                // NULL -> KB_ERR_NULL
 *
 * Functions with cleanup use `goto out` with one exit; the _OUT variants set `rc` and jump:
 *
 *     kb_err rc = KB_OK;
 *     KB_GUARD_OUT(rc, step());
 *   out:
 *     cleanup();
 *     return rc;
 */
#ifndef KB_ERR_H
#define KB_ERR_H

#define KB_WUR __attribute__((warn_unused_result))

typedef enum {
    KB_OK = 0,
    KB_ERR_NULL,        /* a required pointer was NULL (a caller bug) */
    KB_ERR_NOMEM,       /* allocation failed */
    KB_ERR_INVALID,     /* malformed input */
    KB_ERR_TOO_LARGE,   /* input over a named limit */
    KB_ERR_TRUNCATED,   /* input ended early */
    KB_ERR_TRAILING,    /* bytes left after a complete value */
    KB_ERR_NOT_FOUND,   /* no such object (or not visible to the caller) */
    KB_ERR_EXISTS,      /* object already exists */
    KB_ERR_CONFLICT,    /* state does not allow the operation (version order, deleted, ...) */
    KB_ERR_DENIED,      /* caller is not allowed */
    KB_ERR_AUTH,        /* authentication failed (bad certificate, signature, MAC) */
    KB_ERR_INTEGRITY,   /* stored data failed an integrity check (row MAC, GCM tag, chain) */
    KB_ERR_CRYPTO,      /* a cryptographic library call failed */
    KB_ERR_HSM,         /* the PKCS#11 token failed or refused */
    KB_ERR_IO,          /* a file or socket operation failed */
    KB_ERR_DB,          /* the database failed */
    KB_ERR_SCHEMA,      /* the database schema is newer than this binary */
    KB_ERR_CONFIG,      /* bad configuration */
    KB_ERR_MEMLOCK,     /* secret memory could not be locked (RLIMIT_MEMLOCK) */
    KB_ERR_LIMIT,       /* a rate or budget limit was hit */
    KB_ERR_TIMEOUT,     /* an operation timed out */
    KB_ERR_UNAVAILABLE, /* a peer or service was unreachable */
    KB_ERR_INTERNAL,    /* a broken invariant */
    KB_ERR_TAMPERED,    /* a row that decides access failed its row MAC (answered as absent) */
    KB_ERR__COUNT
} kb_err;

/* A short, stable, lowercase name for the code ("invalid", "not_found", ...). */
const char *kb_err_str(kb_err e);

#define KB_GUARD(x)                                                                                \
    do {                                                                                           \
        kb_err kb__e = (x);                                                                        \
        if (kb__e != KB_OK)                                                                        \
            return kb__e;                                                                          \
    } while (0)

#define KB_ENSURE(cond, code)                                                                      \
    do {                                                                                           \
        if (!(cond))                                                                               \
            return (code);                                                                         \
    } while (0)

#define KB_ENSURE_REF(p) KB_ENSURE((p) != NULL, KB_ERR_NULL)

#define KB_GUARD_OUT(rc, x)                                                                        \
    do {                                                                                           \
        (rc) = (x);                                                                                \
        if ((rc) != KB_OK)                                                                         \
            goto out;                                                                              \
    } while (0)

#define KB_ENSURE_OUT(rc, cond, code)                                                              \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            (rc) = (code);                                                                         \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)

#define KB_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
