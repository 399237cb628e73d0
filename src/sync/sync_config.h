/* sync_config.h - keybridge-sync's configuration: the key table and the checks of its values.
 *
 * One source of truth: the [daemon] interval the daemon keeps is the one `keybridge-sync
 * schedule` prints the EventBridge cron for (and the Terraform module's `interval`). */
#ifndef KB_SYNC_CONFIG_H
#define KB_SYNC_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "lib/config.h"
#include "lib/err.h"

#define SYNC_ENV_PREFIX "KEYBRIDGE_SYNC"
#define SYNC_MAX_REGIONS 16 /* [sink] regions */
#define SYNC_MAX_ALLOW 64   /* [sink] owners, groups */

extern const kb_config_key sync_config_keys[];

/* 1 if a run every `minutes` minutes fits an hour evenly (1..60, divides 60). */
int sync_interval_ok(int64_t minutes);
/* [daemon] interval, checked (KB_ERR_CONFIG unless sync_interval_ok). */
KB_WUR kb_err sync_config_interval(const kb_config *cfg, int *minutes);
/* A share 0..1 ([sink] max_delete_fraction); KB_ERR_CONFIG otherwise. */
KB_WUR kb_err sync_config_fraction(const char *s, double *out);
/* Split a comma list in place into dst (pointers into buf, NULL-terminated, at most max). */
size_t sync_config_split(char *buf, const char **dst, size_t max);
/* [sink] endpoint for region i of nreg: one of a comma list (one per region; "" if the counts
 * differ), a template where {region} is replaced, or NULL (AWS's regional endpoint). */
const char *sync_config_endpoint(const char *endpoint, size_t i, size_t nreg, const char *region,
                                 char *buf, size_t len);

#endif
