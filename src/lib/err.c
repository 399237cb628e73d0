/* err.c - names for kb_err codes. */
#include "err.h"

#include <stddef.h>

static const char *const kb_err_names[KB_ERR__COUNT] = {
    [KB_OK] = "ok",
    [KB_ERR_NULL] = "null",
    [KB_ERR_NOMEM] = "nomem",
    [KB_ERR_INVALID] = "invalid",
    [KB_ERR_TOO_LARGE] = "too_large",
    [KB_ERR_TRUNCATED] = "truncated",
    [KB_ERR_TRAILING] = "trailing",
    [KB_ERR_NOT_FOUND] = "not_found",
    [KB_ERR_EXISTS] = "exists",
    [KB_ERR_CONFLICT] = "conflict",
    [KB_ERR_DENIED] = "denied",
    [KB_ERR_AUTH] = "auth",
    [KB_ERR_INTEGRITY] = "integrity",
    [KB_ERR_CRYPTO] = "crypto",
    [KB_ERR_HSM] = "hsm",
    [KB_ERR_IO] = "io",
    [KB_ERR_DB] = "db",
    [KB_ERR_SCHEMA] = "schema",
    [KB_ERR_CONFIG] = "config",
    [KB_ERR_MEMLOCK] = "memlock",
    [KB_ERR_LIMIT] = "limit",
    [KB_ERR_TIMEOUT] = "timeout",
    [KB_ERR_UNAVAILABLE] = "unavailable",
    [KB_ERR_INTERNAL] = "internal",
    [KB_ERR_TAMPERED] = "tampered",
};

const char *kb_err_str(kb_err e)
{
    if ((unsigned)e >= KB_ERR__COUNT || kb_err_names[e] == NULL)
        return "unknown";
    return kb_err_names[e];
}
