/* log.c - JSON lines on stderr, one write(2) per line so concurrent lines never interleave. */
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "utf8.h"

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

/* Append s as a JSON string (with quotes) to buf, never past cap; returns the new position, or
 * pos unchanged if not even "" fits. Control characters are escaped, bytes that are not valid
 * UTF-8 become U+FFFD (RFC 8259 section 8.1: JSON text is UTF-8), and a string cut short for
 * room is cut between characters and still closed, so every line stays valid JSON. */
static size_t put_json_str(char *buf, size_t pos, size_t cap, const char *s, int *full)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    if (pos + 2 > cap) {
        *full = 1;
        return pos;
    }
    buf[pos++] = '"';
    while (*p != '\0') {
        char esc[6];
        const char *out = esc;
        size_t n, used = 1;
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            n = 2;
        } else if (*p < 0x20 || *p == 0x7f) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[*p >> 4];
            esc[5] = hex[*p & 15];
            n = 6;
        } else if (*p < 0x80) {
            out = (const char *)p;
            n = 1;
        } else if ((used = kb_utf8_next(p, strnlen((const char *)p, 4), NULL)) > 0) {
            out = (const char *)p;
            n = used;
        } else {
            out = "\\ufffd";
            n = 6;
            used = 1;
        }
        if (pos + n + 1 > cap) { /* keep room for the closing quote */
            *full = 1;
            break;
        }
        memcpy(buf + pos, out, n);
        pos += n;
        p += used;
    }
    buf[pos++] = '"';
    return pos;
}

size_t kb_log_json_quote(char *buf, size_t cap, const char *s)
{
    int full = 0;
    return put_json_str(buf, 0, cap, s, &full);
}

static size_t put_raw(char *buf, size_t pos, size_t cap, const char *s, int *full)
{
    size_t n = strlen(s);
    if (pos + n > cap) {
        *full = 1;
        return pos;
    }
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

    /* Leave room for "}\n". A field that does not fit whole is dropped with all after it (a
     * long value is cut instead), so the line is always one valid JSON object. */
    const size_t cap = sizeof(line) - 2;
    int full = 0;
    pos = put_raw(line, pos, cap, "{\"ts\":", &full);
    pos = put_json_str(line, pos, cap, ts, &full);
    pos = put_raw(line, pos, cap, ",\"level\":", &full);
    pos = put_json_str(line, pos, cap, level_names[lvl], &full);
    pos = put_raw(line, pos, cap, ",\"prog\":", &full);
    pos = put_json_str(line, pos, cap, log_prog, &full);
    pos = put_raw(line, pos, cap, ",\"event\":", &full);
    pos = put_json_str(line, pos, cap, event, &full);
    va_start(ap, event);
    for (;;) {
        const char *k = va_arg(ap, const char *);
        const char *v;
        size_t start = pos;
        int cut = 0;
        if (k == NULL)
            break;
        v = va_arg(ap, const char *);
        if (full)
            continue; /* drain the arguments */
        pos = put_raw(line, pos, cap, ",", &cut);
        if (!cut)
            pos = put_json_str(line, pos, cap, k, &cut);
        if (!cut)
            pos = put_raw(line, pos, cap, ":", &cut);
        if (!cut) {
            size_t at = pos;
            pos = put_json_str(line, pos, cap, v ? v : "", &full);
            cut = pos == at; /* not even "" fitted */
        }
        if (cut) { /* the key, the separator or the value did not fit: drop the whole field */
            pos = start;
            full = 1;
        }
    }
    va_end(ap);
    line[pos++] = '}';
    line[pos++] = '\n';
    {
        ssize_t w = write(atomic_load(&log_fd), line, pos);
        (void)w;
    }
}
