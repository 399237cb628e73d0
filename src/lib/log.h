/* log.h - structured JSON logs on stderr.
 *
 * One JSON object per line: {"ts":"...","level":"info","prog":"keybridged","event":"...",k:v...}.
 * Fields are string key/value pairs ending with NULL:
 *
 *     kb_log(KB_LOG_INFO, "listening", "addr", "127.0.0.1:8443", NULL);
 *
 * Never pass secret content, keys, PINs or tokens as a value: this API has no way to redact
 * them. Log names, ids, versions, sizes and error codes instead.
 */
#ifndef KB_LOG_H
#define KB_LOG_H

#include <stddef.h>

typedef enum { KB_LOG_DEBUG = 0, KB_LOG_INFO, KB_LOG_WARN, KB_LOG_ERROR, KB_LOG_OFF } kb_log_level;

void kb_log_set_program(const char *prog);
void kb_log_set_level(kb_log_level lvl);
/* Parse "debug" | "info" | "warn" | "error" | "off"; returns 0 on success. */
int kb_log_level_parse(const char *s, kb_log_level *out);
/* Write s into buf[0..cap) as a JSON string literal, quotes included, the way log lines carry
 * values: control characters escaped, bytes that are not valid UTF-8 as U+FFFD, cut between
 * characters (and still closed) when cap is short. Returns the length written (no NUL).
 * 6 * strlen(s) + 2 bytes always suffice. */
size_t kb_log_json_quote(char *buf, size_t cap, const char *s);
/* Redirect output to fd (tests); default 2. */
void kb_log_set_fd(int fd);

void kb_log(kb_log_level lvl, const char *event, ...) __attribute__((sentinel));

#endif
