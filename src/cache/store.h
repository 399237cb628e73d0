/* store.h - keybridge-cache's SQLite storage: secrets, versions (sealed), stages, tags.
 *
 * One connection in WAL mode with synchronous=FULL, so a committed transaction survives a crash
 * or kill -9 (https://www.sqlite.org/pragma.html#pragma_synchronous). The store is not
 * thread-safe: the API layer serializes callers with its own lock.
 *
 * Every lookup is scoped by account: a secret of another account is simply not found. Values
 * are sealed with AES-256-GCM (seal.h) bound to (account, ARN, version id).
 */
#ifndef KB_CACHE_STORE_H
#define KB_CACHE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "lib/err.h"
#include "lib/secbuf.h"

/* Limits from the botocore model (secretsmanager 2017-10-17). */
#define CACHE_NAME_MAX 512
#define CACHE_ARN_MAX 2048
#define CACHE_DESC_MAX 2048
#define CACHE_KMS_MAX 2048
#define CACHE_ACCOUNT_LEN 12
#define CACHE_VERSION_ID_MAX 64
#define CACHE_TAGS_MAX 50
#define CACHE_TAG_KEY_MAX 128
#define CACHE_TAG_VALUE_MAX 256
#define CACHE_STAGE_MAX 256
#define CACHE_STAGES_PER_VERSION 20
/* Versions kept per secret: unlabelled (deprecated) versions beyond this are removed, oldest
 * first, as Secrets Manager does ("about 100 versions"). */
#define CACHE_VERSIONS_MAX 100

typedef struct cache_store cache_store;

typedef struct {
    int64_t id;
    char account[CACHE_ACCOUNT_LEN + 1];
    char name[CACHE_NAME_MAX + 1];
    char arn[CACHE_ARN_MAX + 1];
    int has_description;
    char description[CACHE_DESC_MAX + 1];
    int has_kms_key_id;
    char kms_key_id[CACHE_KMS_MAX + 1];
    int64_t created_ms;
    int64_t changed_ms;
    int64_t accessed_ms; /* 0: never read */
    int64_t deleted_ms;  /* 0: not scheduled for deletion */
    int64_t deletion_ms; /* when deleted_ms != 0: the end of the recovery window */
} cache_secret;

typedef struct {
    char key[CACHE_TAG_KEY_MAX + 1];
    char value[CACHE_TAG_VALUE_MAX + 1];
} cache_tag;

typedef struct {
    size_t n;
    cache_tag t[CACHE_TAGS_MAX];
} cache_tag_list;

typedef enum {
    CACHE_SORT_CREATED = 0,
    CACHE_SORT_CHANGED,
    CACHE_SORT_ACCESSED,
    CACHE_SORT_NAME
} cache_sort;

/* Open (creating the schema if needed). Takes ownership of key (freed on error too). path may be
 * ":memory:" for tests and fuzzing. */
KB_WUR kb_err cache_store_open(const char *path, kb_secret *key, cache_store **out);
void cache_store_close(cache_store *st);

KB_WUR kb_err cache_store_begin(cache_store *st);
/* A deferred (read) transaction: the statements of one read-only request share one snapshot
 * and one lock acquisition instead of locking per statement. End it with commit or rollback. */
KB_WUR kb_err cache_store_begin_read(cache_store *st);
KB_WUR kb_err cache_store_commit(cache_store *st);
void cache_store_rollback(cache_store *st);

/* Find by name, full ARN or partial ARN (without the 6-character suffix) within account. */
KB_WUR kb_err cache_store_find(cache_store *st, const char *account, const char *secret_id,
                               cache_secret *out);
KB_WUR kb_err cache_store_find_name(cache_store *st, const char *account, const char *name,
                                    cache_secret *out);
/* Insert (s->id set on success); KB_ERR_EXISTS when the name or ARN is taken. */
KB_WUR kb_err cache_store_secret_insert(cache_store *st, cache_secret *s);
/* Write back the mutable fields (description, kms key, dates). */
KB_WUR kb_err cache_store_secret_update(cache_store *st, const cache_secret *s);
/* Remove a secret with its versions, stages and tags. */
KB_WUR kb_err cache_store_secret_delete(cache_store *st, int64_t id);
/* Remove every secret whose recovery window ended at or before now_ms. */
KB_WUR kb_err cache_store_purge_expired(cache_store *st, int64_t now_ms);

/* Where a page ends: the sort key (value, id) of the last secret returned. */
typedef struct {
    int64_t id;       /* 0: start from the beginning */
    int64_t num;      /* created/changed/accessed date of that secret (date sorts) */
    const char *text; /* its name (CACHE_SORT_NAME) */
} cache_list_after;

/* A secret's ListSecrets entry as the store keeps it rendered (schema 2): head "," tail is the
 * entry, the members and order of DescribeSecret's shared ones, strings escaped as jansson
 * escapes them (kb_json_put_str), dates as kb_json_put_ms writes them:
 *   head  {"ARN":…,"Name":…[,"Description":…][,"KmsKeyId":…],"LastChangedDate":…
 *         [,"LastAccessedDate":…][,"DeletedDate":…]
 *   tail  "Tags":[{"Key":…,"Value":…},…],"SecretVersionsToStages":{"vid":["stage",…],…},
 *         "CreatedDate":…}
 * head is rendered from the row by every insert and update (cache_store_secret_insert,
 * _secret_update); both when a transaction that changed the secret's tags or stages
 * (cache_store_tag_set, _tag_remove, _stage_set, _stage_remove) commits, in that transaction.
 * Not NUL-terminated; valid during the callback only. */
typedef struct {
    const char *head;
    size_t head_len;
    const char *tail;
    size_t tail_len;
} cache_list_text;

/* The longest head or tail rendered (a write that would need more fails): the longest answer. */
#define CACHE_LIST_TEXT_MAX ((size_t)32 * 1024 * 1024)

/* What a listing reads of each secret: fewer columns, less work per row (a ListSecrets page). */
typedef enum {
    CACHE_LIST_SECRETS = 0, /* the whole secret; t NULL */
    CACHE_LIST_TEXTS,       /* the texts (t); of the secret id, name, description and the dates */
    CACHE_LIST_KEYS         /* the texts (t); of the secret id and the sort column only */
} cache_list_read;

/* Visit the account's secrets in order (ties by id), starting strictly after `after` (NULL or
 * id 0: from the start). The resume point is a key, not an offset: a page deep in a listing
 * costs a range scan of the index from there, not a walk over every earlier secret. `what` says
 * which members of the secret are read (the others are empty or 0). The callback returns 0 to
 * go on, 1 to stop, or a negative value on error (KB_ERR_INTERNAL). */
typedef int (*cache_store_visit_fn)(void *arg, const cache_secret *s, const cache_list_text *t);
KB_WUR kb_err cache_store_list(cache_store *st, const char *account, int include_deleted,
                               cache_sort sort, int descending, const cache_list_after *after,
                               cache_list_read what, cache_store_visit_fn fn, void *arg);

KB_WUR kb_err cache_store_tags_get(cache_store *st, int64_t id, cache_tag_list *out);

KB_WUR kb_err cache_store_tag_set(cache_store *st, int64_t id, const char *key, const char *value);
KB_WUR kb_err cache_store_tag_remove(cache_store *st, int64_t id, const char *key);

/* Add a version, sealing value[0..len). KB_ERR_EXISTS if vid exists. */
KB_WUR kb_err cache_store_version_add(cache_store *st, const cache_secret *s, const char *vid,
                                      int binary, const uint8_t *value, size_t len, int64_t now_ms);
/* Read and open a version. KB_ERR_NOT_FOUND if absent, KB_ERR_INTEGRITY if it fails to open. */
KB_WUR kb_err cache_store_version_read(cache_store *st, const cache_secret *s, const char *vid,
                                       int *binary, kb_secret **value, int64_t *created_ms);
/* As version_read, without allocating: *value points into the store's locked scratch buffer,
 * valid until the next peek or cache_store_peek_release(), which wipes it. The
 * store is single-threaded (callers hold the API lock), so one buffer serves every read. */
KB_WUR kb_err cache_store_version_peek(cache_store *st, const cache_secret *s, const char *vid,
                                       int *binary, const uint8_t **value, size_t *len,
                                       int64_t *created_ms);
void cache_store_peek_release(cache_store *st);
KB_WUR kb_err cache_store_version_exists(cache_store *st, int64_t id, const char *vid);
KB_WUR kb_err cache_store_version_count(cache_store *st, int64_t id, size_t *n);
/* Remove the oldest versions that carry no stage until at most max remain. */
KB_WUR kb_err cache_store_versions_prune(cache_store *st, int64_t id, size_t max);

/* The version holding stage (vid gets CACHE_VERSION_ID_MAX+1 bytes); KB_ERR_NOT_FOUND. */
KB_WUR kb_err cache_store_stage_get(cache_store *st, int64_t id, const char *stage, char *vid);
/* Attach stage to vid, moving it from whichever version had it. */
KB_WUR kb_err cache_store_stage_set(cache_store *st, int64_t id, const char *stage,
                                    const char *vid);
KB_WUR kb_err cache_store_stage_remove(cache_store *st, int64_t id, const char *stage);
/* Visit (version id, stage) pairs ordered by version then stage; callback as for list. */
typedef int (*cache_store_stage_fn)(void *arg, const char *vid, const char *stage);
KB_WUR kb_err cache_store_stages(cache_store *st, int64_t id, const char *only_vid,
                                 cache_store_stage_fn fn, void *arg);

/* Visit a secret's versions newest first (by sequence), starting below before_seq (0: from the
 * newest): version id, creation date, sequence number, and whether any stage is attached.
 * Callback as for list. */
typedef int (*cache_store_version_fn)(void *arg, const char *vid, int64_t created_ms, int64_t seq,
                                      int staged);
KB_WUR kb_err cache_store_versions(cache_store *st, int64_t id, int64_t before_seq,
                                   cache_store_version_fn fn, void *arg);

/* A secret's resource policy text (malloc'd; KB_ERR_NOT_FOUND when none), set (replacing) and
 * delete (no error when none). Stored and returned only: keybridge-cache enforces no policy. */
KB_WUR kb_err cache_store_policy_get(cache_store *st, int64_t id, char **out);
KB_WUR kb_err cache_store_policy_set(cache_store *st, int64_t id, const char *policy);
KB_WUR kb_err cache_store_policy_delete(cache_store *st, int64_t id);

/* Render every secret's ListSecrets texts afresh from its row, tags and stages and compare them
 * with the stored ones: *stale counts the secrets whose texts differ (0 when the store kept them
 * up to date). For tests and fuzzing: a full pass over the store. */
KB_WUR kb_err cache_store_check_lists(cache_store *st, size_t *stale);

/* A key derived from the at-rest key for a purpose (label); owned by the store. */
const kb_secret *cache_store_token_key(const cache_store *st);

#endif
