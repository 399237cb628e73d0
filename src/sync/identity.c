/* identity.c - load the syncer's SVID and bundle (see identity.h). */
#include "identity.h"

#include <string.h>

#include <openssl/asn1.h>

#include "lib/json.h"
#include "lib/secbuf.h"

static kb_err finish(sync_identity *out, const char *server_td, const char **why)
{
    const ASN1_TIME *na;
    struct tm tm;
    KB_ENSURE(spiffe_bundle_set_get(out->bundles, server_td) != NULL, KB_ERR_CONFIG);
    na = X509_get0_notAfter(x509svid_leaf(out->svid));
    if (na == NULL || ASN1_TIME_to_tm(na, &tm) != 1) {
        *why = "SVID has no usable notAfter";
        return KB_ERR_INVALID;
    }
    out->not_after = timegm(&tm);
    if (out->not_after <= time(NULL)) {
        *why = "SVID expired";
        return KB_ERR_AUTH;
    }
    return KB_OK;
}

void sync_identity_clear(sync_identity *id)
{
    if (id == NULL)
        return;
    x509svid_free(id->svid);
    spiffe_bundle_set_free(id->bundles);
    memset(id, 0, sizeof(*id));
}

kb_err sync_identity_from_files(const char *cert, const char *key, const char *bundle,
                                const char *server_td, sync_identity *out, const char **why)
{
    spiffe_bundle *b = NULL;
    kb_err rc;
    const char *dummy;
    if (why == NULL)
        why = &dummy;
    *why = "";
    KB_ENSURE_REF(cert);
    KB_ENSURE_REF(key);
    KB_ENSURE_REF(bundle);
    KB_ENSURE_REF(out);
    memset(out, 0, sizeof(*out));
    KB_GUARD_OUT(rc, x509svid_load(cert, key, &out->svid, why));
    KB_GUARD_OUT(rc, spiffe_bundle_load_file(server_td, bundle, &b, why));
    KB_GUARD_OUT(rc, spiffe_bundle_set_new(&out->bundles));
    KB_GUARD_OUT(rc, spiffe_bundle_set_put(out->bundles, b));
    b = NULL;
    if ((rc = finish(out, server_td, why)) == KB_ERR_CONFIG)
        *why = "no bundle for the server's trust domain";
out:
    spiffe_bundle_free(b);
    if (rc != KB_OK)
        sync_identity_clear(out);
    return rc;
}

static const char *str_member(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

kb_err sync_identity_from_svidstore(const void *json, size_t len, const char *server_td,
                                    sync_identity *out, const char **why)
{
    static const char *const allowed[] = {"spiffeID", "spiffeId",         "x509SVID", "x509SVIDKey",
                                          "bundle",   "federatedBundles", NULL};
    json_t *doc = NULL, *fed;
    const char *id, *certs, *key, *bundle, *bad, *td, *dummy;
    char err[128];
    spiffe_bundle *b = NULL;
    spiffe_id sid, own_id;
    kb_err rc;
    json_t *v;

    if (why == NULL)
        why = &dummy;
    *why = "";
    KB_ENSURE_REF(json);
    KB_ENSURE_REF(server_td);
    KB_ENSURE_REF(out);
    memset(out, 0, sizeof(*out));
    rc = kb_json_parse(json, len, SYNC_SVIDSTORE_MAX, &doc, err, sizeof(err));
    if (rc != KB_OK) {
        *why = "SVIDStore secret is not a JSON object";
        return rc;
    }
    if (kb_json_only_keys(doc, allowed, &bad) != KB_OK) {
        *why = "SVIDStore JSON has an unknown member";
        rc = KB_ERR_INVALID;
        goto out;
    }
    /* SPIRE writes "spiffeID"; some writers use "spiffeId" (DESIGN.md: accept both). */
    id = str_member(doc, "spiffeID");
    if (id == NULL)
        id = str_member(doc, "spiffeId");
    certs = str_member(doc, "x509SVID");
    key = str_member(doc, "x509SVIDKey");
    bundle = str_member(doc, "bundle");
    if (id == NULL || certs == NULL || key == NULL || bundle == NULL ||
        (json_object_get(doc, "spiffeID") && json_object_get(doc, "spiffeId"))) {
        *why = "SVIDStore JSON needs spiffeID, x509SVID, x509SVIDKey and bundle strings";
        rc = KB_ERR_INVALID;
        goto out;
    }
    KB_GUARD_OUT(rc, spiffe_id_parse_str(id, &sid, why));
    KB_GUARD_OUT(rc, x509svid_parse_pem(certs, strlen(certs), key, strlen(key), &out->svid, why));
    own_id = *x509svid_id(out->svid);
    if (!spiffe_id_eq(&sid, &own_id)) {
        *why = "spiffeID does not match the SVID's URI SAN";
        rc = KB_ERR_INVALID;
        goto out;
    }
    /* keybridged only accepts peers of its own trust domain (docs/api.md): an SVID of another
     * domain would be refused in the handshake anyway; say so before any connection. */
    if (strcmp(spiffe_id_trust_domain(&sid), server_td) != 0) {
        *why = "the stored SVID's trust domain is not the server's (server_id)";
        rc = KB_ERR_AUTH;
        goto out;
    }
    KB_GUARD_OUT(rc, spiffe_bundle_set_new(&out->bundles));
    KB_GUARD_OUT(
        rc, spiffe_bundle_parse_pem(spiffe_id_trust_domain(&sid), bundle, strlen(bundle), &b, why));
    KB_GUARD_OUT(rc, spiffe_bundle_set_put(out->bundles, b));
    b = NULL;
    fed = json_object_get(doc, "federatedBundles");
    if (fed != NULL && !json_is_null(fed)) {
        if (!json_is_object(fed)) {
            *why = "federatedBundles must be an object";
            rc = KB_ERR_INVALID;
            goto out;
        }
        json_object_foreach(fed, td, v)
        {
            /* Keys are trust domain names, or SPIFFE IDs of trust domains (spiffe://td). */
            const char *name = strncmp(td, "spiffe://", 9) == 0 ? td + 9 : td;
            if (!json_is_string(v)) {
                *why = "a federated bundle is not a PEM string";
                rc = KB_ERR_INVALID;
                goto out;
            }
            KB_GUARD_OUT(rc, spiffe_bundle_parse_pem(name, json_string_value(v),
                                                     json_string_length(v), &b, why));
            KB_GUARD_OUT(rc, spiffe_bundle_set_put(out->bundles, b));
            b = NULL;
        }
    }
    if ((rc = finish(out, server_td, why)) == KB_ERR_CONFIG)
        *why = "no bundle for the server's trust domain";
out:
    spiffe_bundle_free(b);
    json_decref(doc); /* the wiping allocator clears the key PEM (json.h) */
    if (rc != KB_OK)
        sync_identity_clear(out);
    return rc;
}
