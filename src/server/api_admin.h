/* api_admin.h - the admin API (api_admin.c): secrets, versions, groups, clients, memberships,
 * grants, expiry and audit under /v1/admin. Called by api.c's router once the caller is an
 * authenticated admin; depends only on api_common.h below it.
 */
#ifndef KB_SERVER_API_ADMIN_H
#define KB_SERVER_API_ADMIN_H

#include "api_common.h"

void api_admin(svc *s, api_ctx *c, const store_client *who, api_response *r);

#endif
