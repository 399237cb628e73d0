/* expiry.h - the expiry date of certificate and key content, read when a secret version is
 * written without an explicit expires_at (docs/internals/notify.md, "Expiry extraction").
 *
 * Recognised content:
 *   - X.509 certificates in PEM (every CERTIFICATE block; other blocks, such as a private key
 *     before the certificate, are skipped and wiped) or one DER certificate (the whole content);
 *   - PKCS#12 bundles (DER): the certificates in unencrypted safe contents and in contents
 *     encrypted under the empty password; other encrypted contents cannot be read without the
 *     bundle's password, which keybridge does not have;
 *   - OpenPGP transferable keys, binary or ASCII-armoured (public or secret key blocks): the
 *     primary key's creation time plus the Key Expiration Time of its most recent self-signature
 *     (RFC 4880 5.2.3.6; v3 keys: the validity days), and each subkey's creation time plus the
 *     Key Expiration Time of its most recent binding signature (0x18) by the primary key.
 * Signatures are not verified: the date is advisory (it drives notifications), and a self-signature
 * is recognised by its issuer.
 *
 * When several certificates, primary keys or subkeys are present, the earliest expiry wins: the
 * content stops being usable when its first part expires.
 *
 * Results: KB_OK with *out > 0; KB_ERR_NOT_FOUND when the content is none of these formats or
 * carries no expiry (an OpenPGP key that never expires, a PKCS#12 whose certificates are all
 * password-encrypted); KB_ERR_INVALID when it announces one of them (a PEM CERTIFICATE block, a
 * PGP armour header, an OpenPGP key packet) but is malformed or truncated. *kind says which
 * format was recognised, also on failure (EXPIRY_NONE if none). Nothing is logged here. */
#ifndef KB_SERVER_EXPIRY_H
#define KB_SERVER_EXPIRY_H

#include <stddef.h>
#include <stdint.h>

#include "lib/err.h"

typedef enum {
    EXPIRY_NONE = 0,
    EXPIRY_X509_PEM,
    EXPIRY_X509_DER,
    EXPIRY_PKCS12,
    EXPIRY_OPENPGP,
} expiry_kind;

/* At most this many PEM blocks, certificates in a PKCS#12, or OpenPGP packets are examined. */
#define EXPIRY_PEM_BLOCKS_MAX 64
#define EXPIRY_P12_BAGS_MAX 64
#define EXPIRY_PGP_PACKETS_MAX 4096

KB_WUR kb_err expiry_extract(const uint8_t *content, size_t len, int64_t *out, expiry_kind *kind);

/* "x509-pem", "x509-der", "pkcs12", "openpgp", "none". */
const char *expiry_kind_name(expiry_kind k);

#endif
