/* notify.h - keybridged's expiry notifier ([notify], docs/internals/notify.md).
 *
 * Every [notify] interval a thread looks at the live secrets whose latest version expires within
 * the widest window (default 30d,7d,1d). For each one it finds the narrowest window the expiry
 * falls in; if (secret id, version, window) has not been delivered yet (store_notify_sent: a
 * durable table, so a restart does not resend), it POSTs a JSON webhook with a Slack-compatible
 * "text" and the fields name, version, expires_at, window and owner_group (never content, which
 * the notifier never opens), retried up to [notify] attempts times with doubling backoff. A 2xx
 * answer marks it delivered together with its audit row (secret.expiry_notify, result ok), in one
 * store transaction; when all
 * attempts fail the audit row says so and the next scan tries again. A secret that enters a
 * narrower window is notified again; wider windows it skipped (written with little time left)
 * are not sent late. Delivery is at least once: a crash between the 2xx and the mark resends.
 *
 * With no [notify] url nothing is sent, but the gauges (notify_render_metrics) still work.
 */
#ifndef KB_SERVER_NOTIFY_H
#define KB_SERVER_NOTIFY_H

#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"
#include "lib/config.h"
#include "lib/err.h"
#include "service.h"

#define NOTIFY_WINDOWS_MAX 8
#define NOTIFY_WINDOW_MAX_SECS ((int64_t)366 * 86400)
#define NOTIFY_ATTEMPTS_MAX 20
#define NOTIFY_BACKOFF_CAP_SECS 300
#define NOTIFY_BODY_MAX ((size_t)4096)        /* webhook answers are read and dropped */
#define NOTIFY_IDENTITY "keybridged:notifier" /* the audit rows' identity */

typedef struct notify notify;

/* Read [notify] (KB_ERR_CONFIG, logged, for a bad window list, attempts, URL or ca_file). */
KB_WUR kb_err notify_new(const kb_config *cfg, svc *s, notify **out);
void notify_free(notify *n);

/* One scan at time now: deliver what is due. *delivered (may be NULL) counts the webhooks that
 * got a 2xx. Errors are those of the store; delivery failures are logged and audited only. */
KB_WUR kb_err notify_scan(notify *n, int64_t now, size_t *delivered);

/* Run notify_scan every interval on a thread of its own (no-op without a URL); stop wakes it,
 * also in the middle of a backoff, and joins it. */
KB_WUR kb_err notify_start(notify *n);
void notify_stop(notify *n);

/* Prometheus text: keybridged_secrets_expiring{window} (live secrets whose latest version
 * expires within each window from now) and keybridged_expiry_notifications_total{result}. */
KB_WUR kb_err notify_render_metrics(notify *n, int64_t now, kb_dbuf *out);

/* "30d", "12h", "90m", "45s": the label for a window. */
void notify_window_label(int64_t secs, char *buf, size_t len);

#endif
