/* kbtest_store.h - which store backend the store tests run on.
 *
 * KB_TEST_STORE=pg with KB_PG_URL set (tests/integration/pgserver.py run -- TEST, which is how
 * ctest's unit-pg entries run them): the PostgreSQL backend, each fixture on a freshly emptied
 * database (the public schema dropped and re-created). Otherwise SQLite at the given path.
 * kbtest_pg_sql plays the attacker with write access to the database, as the SQLite tests edit
 * the file: it creates the session table the row triggers write to, so its edits go through. */
#ifndef KBTEST_STORE_H
#define KBTEST_STORE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <libpq-fe.h>
#include <sqlite3.h>

static inline bool kbtest_pg(void)
{
    const char *e = getenv("KB_TEST_STORE");
    return e != NULL && strcmp(e, "pg") == 0;
}

/* A connection as the database's superuser through the harness's private socket (the attacker
 * who owns the database server), or as the test role when that is not available. */
static inline PGconn *kbtest_pg_admin(void)
{
    char ci[1024];
    const char *dir = getenv("KB_PG_SOCKDIR"), *port = getenv("KB_PG_PORT");
    if (dir != NULL && port != NULL) {
        snprintf(ci, sizeof(ci), "host=%s port=%s user=postgres dbname=kb", dir, port);
        return PQconnectdb(ci);
    }
    return PQconnectdb(getenv("KB_PG_URL") ? getenv("KB_PG_URL") : "");
}

/* Run SQL on the test database as the attacker with write access, as the SQLite tests edit
 * the file with sqlite3 (foreign keys and the store's triggers off: session_replication_role =
 * replica); SQLite's empty blob literal x'' is rewritten. Returns 0 or -1 (printed). */
static inline int kbtest_pg_sql(const char *sql)
{
    PGconn *c = kbtest_pg_admin();
    PGresult *r;
    char *q;
    const char *p;
    size_t n = 0;
    int rc = 0;
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "kbtest_pg_sql: %s", PQerrorMessage(c));
        PQfinish(c);
        return -1;
    }
    q = malloc(strlen(sql) * 4 + 1);
    for (p = sql; *p; p++) {
        if (strncmp(p, "x''", 3) == 0) {
            memcpy(q + n, "''::bytea", 9);
            n += 9;
            p += 2;
        } else {
            q[n++] = *p;
        }
    }
    q[n] = '\0';
    PQclear(PQexec(c, "SET client_min_messages = warning; "
                      "SET session_replication_role = replica"));
    r = PQexec(c, q);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "kbtest_pg_sql: %s: %s", sql, PQerrorMessage(c));
        rc = -1;
    }
    free(q);
    PQclear(r);
    PQfinish(c);
    return rc;
}

/* The first column of the first row as an integer (-1 if none). */
static inline int64_t kbtest_pg_int(const char *sql)
{
    PGconn *c = PQconnectdb(getenv("KB_PG_URL") ? getenv("KB_PG_URL") : "");
    PGresult *r = PQexec(c, sql);
    int64_t v = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0))
        v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    PQfinish(c);
    return v;
}

/* The store URL for a fresh store: PostgreSQL emptied, or sqlite:path. 0 or -1. */
static inline int kbtest_store_url(char *url, size_t n, const char *path)
{
    if (!kbtest_pg()) {
        snprintf(url, n, "sqlite:%s", path);
        return 0;
    }
    if (getenv("KB_PG_URL") == NULL) {
        fprintf(stderr, "KB_TEST_STORE=pg needs KB_PG_URL (tests/integration/pgserver.py run)\n");
        return -1;
    }
    snprintf(url, n, "%s", getenv("KB_PG_URL"));
    /* randomblob(n) as SQLite has it, for the tamper tests' SQL. */
    return kbtest_pg_sql("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public; "
                         "GRANT ALL ON SCHEMA public TO kb; "
                         "CREATE FUNCTION public.randomblob(n int) RETURNS bytea LANGUAGE sql "
                         "AS $f$ SELECT substring(decode(md5(random()::text) || "
                         "md5(random()::text) || md5(random()::text) || md5(random()::text), "
                         "'hex') FROM 1 FOR n) $f$");
}

/* The first column of sql's first row as an integer (-1: no row), read as the attacker would:
 * from the PostgreSQL database (kbtest_pg_int), else from the SQLite file at path. */
static inline int64_t kbtest_store_int(const char *path, const char *sql)
{
    sqlite3 *db;
    sqlite3_stmt *s;
    int64_t v = -1;
    if (kbtest_pg())
        return kbtest_pg_int(sql);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    if (sqlite3_step(s) == SQLITE_ROW)
        v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return v;
}

#endif
