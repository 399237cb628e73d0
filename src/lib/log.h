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

typedef enum { KB_LOG_DEBUG = 0, KB_LOG_INFO, KB_LOG_WARN, KB_LOG_ERROR, KB_LOG_OFF } kb_log_level;

void kb_log_set_program(const char *prog);
void kb_log_set_level(kb_log_level lvl);
/* Parse "debug" | "info" | "warn" | "error" | "off"; returns 0 on success. */
int kb_log_level_parse(const char *s, kb_log_level *out);
/* Redirect output to fd (tests); default 2. */
void kb_log_set_fd(int fd);

void kb_log(kb_log_level lvl, const char *event, ...) __attribute__((sentinel));

#endif
