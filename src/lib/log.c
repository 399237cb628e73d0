/* log.c - JSON lines on stderr, one write(2) per line so concurrent lines never interleave. */
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define KB_LOG_LINE_MAX 4096

static const char *log_prog = "keybridge";
static atomic_int log_level = KB_LOG_INFO;
static atomic_int log_fd = 2;

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

void kb_log_set_program(const char *prog)
{
    log_prog = prog;
}

void kb_log_set_level(kb_log_level lvl)
{
    atomic_store(&log_level, (int)lvl);
}

void kb_log_set_fd(int fd)
{
    atomic_store(&log_fd, fd);
}

int kb_log_level_parse(const char *s, kb_log_level *out)
{
    for (int i = 0; i <= KB_LOG_OFF; i++) {
        if (s != NULL && strcmp(s, level_names[i]) == 0) {
            *out = (kb_log_level)i;
            return 0;
        }
    }
    return -1;
}

/* Append s as a JSON string (with quotes) to buf, never past cap-1; returns the new position.
 * Control characters are escaped; other bytes pass through (callers log ASCII identifiers). */
static size_t put_json_str(char *buf, size_t pos, size_t cap, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    if (pos + 1 < cap)
        buf[pos++] = '"';
    for (; s != NULL && *s != '\0' && pos + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            buf[pos++] = '\\';
            buf[pos++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            buf[pos++] = '\\';
            buf[pos++] = 'u';
            buf[pos++] = '0';
            buf[pos++] = '0';
            buf[pos++] = hex[c >> 4];
            buf[pos++] = hex[c & 15];
        } else {
            buf[pos++] = (char)c;
        }
    }
    if (pos + 1 < cap)
        buf[pos++] = '"';
    return pos;
}

static size_t put_raw(char *buf, size_t pos, size_t cap, const char *s)
{
    size_t n = strlen(s);
    if (pos + n >= cap)
        n = cap - pos - 1;
    memcpy(buf + pos, s, n);
    return pos + n;
}

void kb_log(kb_log_level lvl, const char *event, ...)
{
    char line[KB_LOG_LINE_MAX];
    char ts[96];
    struct timespec now;
    struct tm tm;
    size_t pos = 0;
    va_list ap;

    if ((int)lvl < atomic_load(&log_level) || lvl >= KB_LOG_OFF)
        return;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, now.tv_nsec / 1000000L);

    /* Leave room for "}\n". */
    const size_t cap = sizeof(line) - 2;
    pos = put_raw(line, pos, cap, "{\"ts\":");
    pos = put_json_str(line, pos, cap, ts);
    pos = put_raw(line, pos, cap, ",\"level\":");
    pos = put_json_str(line, pos, cap, level_names[lvl]);
    pos = put_raw(line, pos, cap, ",\"prog\":");
    pos = put_json_str(line, pos, cap, log_prog);
    pos = put_raw(line, pos, cap, ",\"event\":");
    pos = put_json_str(line, pos, cap, event);
    va_start(ap, event);
    for (;;) {
        const char *k = va_arg(ap, const char *);
        const char *v;
        if (k == NULL)
            break;
        v = va_arg(ap, const char *);
        pos = put_raw(line, pos, cap, ",");
        pos = put_json_str(line, pos, cap, k);
        pos = put_raw(line, pos, cap, ":");
        pos = put_json_str(line, pos, cap, v ? v : "");
    }
    va_end(ap);
    line[pos++] = '}';
    line[pos++] = '\n';
    {
        ssize_t w = write(atomic_load(&log_fd), line, pos);
        (void)w;
    }
}
