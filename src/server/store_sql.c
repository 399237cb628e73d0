/* store_sql.c - the shared op layer's core (store_sql.h): the loop behind every multi-row read.
 */
#include "store_sql_int.h"

#include "lib/buf.h"

kb_err store_sql_collect(cx *b, stmt *s, size_t elem, row_fn row, void *ctx,
                         items_free_fn free_items, const char *what, void **out, size_t *n)
{
    char *arr = NULL;
    size_t cnt = 0, cap = 0;
    kb_err rc = KB_OK;
    int r;
    while ((r = step(s)) == STORE_SQL_ROW) {
        bool keep = true;
        KB_GUARD_OUT(rc, kb_grow((void **)&arr, &cap, cnt, elem));
        KB_GUARD_OUT(
            rc, row(b, s, ctx, arr + cnt * elem, cnt > 0 ? arr + (cnt - 1) * elem : NULL, &keep));
        if (keep)
            cnt++;
    }
    if (r != STORE_SQL_DONE)
        rc = b->drv->db_err(b, r, what);
out:
    if (rc != KB_OK) {
        /* Slots past cnt are all-zero except a half-filled one: free it too. */
        free_items(arr, cnt < cap ? cnt + 1 : cnt);
        return rc;
    }
    *out = arr;
    *n = cnt;
    return KB_OK;
}
