/* generate.h - secrets whose content keybridged generates itself (`keybridge secret generate`,
 * POST /v1/admin/secrets/{name}/generate; docs/internals/generate.md). The content never leaves
 * the server in the answer: callers get metadata, and the public half of a key pair.
 *
 *   random    bytes (GEN_RANDOM_BYTES_MIN..MAX, default 32) straight from the token's generator
 *             (C_GenerateRandom; kb_keystore_random)
 *   password  bytes characters (GEN_PASSWORD_LEN_MIN..MAX, default 32) drawn uniformly (rejection
 *             sampling on token bytes) from alphabet: 2..94 distinct printable ASCII characters
 *             (0x21-0x7e; default A-Z a-z 0-9); at least GEN_PASSWORD_MIN_BITS bits of entropy
 *   ec        P-256 (default) or P-384 key pair        } OpenSSL EVP_PKEY_keygen in process
 *   rsa       2048, 3072 (default) or 4096-bit pair    } memory, after 48 bytes from the token
 *   ed25519   Ed25519 key pair                         } are mixed into OpenSSL's DRBG
 *   openpgp   OpenPGP key (Ed25519 primary + Curve25519 encryption subkey) made by GnuPG
 *             through gpgme in a private temporary home that is wiped (generate_pgp.h); user ID
 *             uid (default NAME), expiring at expires_at (default in 2 years)
 * Key pairs are stored as PKCS#8 PEM (unencrypted: the store seals it) under NAME, and the public
 * key (SubjectPublicKeyInfo PEM) as a second secret NAME.pub and in the answer. OpenPGP keys
 * likewise, armoured (secret key block under NAME, public key block under NAME.pub), both with
 * the key's expiry as expires_at. */
#ifndef KB_SERVER_GENERATE_H
#define KB_SERVER_GENERATE_H

#include <stddef.h>
#include <stdint.h>

#include "lib/err.h"
#include "lib/keystore.h"
#include "lib/secbuf.h"
#include "service.h"

#define GEN_RANDOM_BYTES_MIN 16
#define GEN_RANDOM_BYTES_MAX 4096
#define GEN_RANDOM_BYTES_DEFAULT 32
#define GEN_PASSWORD_LEN_MIN 8
#define GEN_PASSWORD_LEN_MAX 1024
#define GEN_PASSWORD_LEN_DEFAULT 32
#define GEN_ALPHABET_MIN 2
#define GEN_ALPHABET_MAX 94
#define GEN_PASSWORD_MIN_BITS 64
#define GEN_SEED_BYTES 48 /* token bytes mixed into OpenSSL's DRBG before a key generation */
#define GEN_PUB_SUFFIX ".pub"

typedef struct {
    const char *type;     /* random, password, ec, rsa, ed25519, openpgp */
    int64_t bytes;        /* random: bytes; password: characters; 0 = default */
    const char *alphabet; /* password only; NULL = default */
    int64_t bits;         /* rsa only; 0 = 3072 */
    const char *curve;    /* ec only; NULL = P-256 */
    const char *uid;      /* openpgp only: the user ID; NULL = generate_make's default_uid */
    int64_t expires_at;   /* openpgp: when the key expires (unix time, a day to 20 years from
                           * now); 0 = in 2 years. Other types: not checked here (it is the
                           * stored version's expiry only) */
} generate_params;

/* Check the parameters (KB_ERR_INVALID or KB_ERR_TOO_LARGE with *why naming the rule); a
 * parameter that does not apply to the type is refused too. */
KB_WUR kb_err generate_check(const generate_params *p, const char **why);

/* Make the content (and *pub_pem, malloc'd, for key pairs; NULL otherwise). *expires is the
 * expiry the content itself carries (openpgp keys), 0 for none. default_uid is the openpgp user
 * ID when p->uid is NULL (generate_secret passes the secret's name). */
KB_WUR kb_err generate_make(kb_keystore *ks, const generate_params *p, const char *default_uid,
                            kb_secret **content, char **pub_pem, int64_t *expires);

typedef struct {
    int64_t version;     /* of NAME */
    int64_t pub_version; /* of NAME.pub, 0 if none */
    char *pub_pem;       /* malloc'd, NULL if none */
    int64_t expires_at;  /* the key's own expiry (openpgp), 0 otherwise */
} generate_result;

/* Generate, then write NAME (created, or a new version if it exists) with base's description,
 * owner group, metadata and expiry (openpgp: the key's own), and NAME.pub for key pairs (same
 * owner group). Audited as
 * secret.generate (and the writes as secret.create / secret.put). */
KB_WUR kb_err generate_secret(svc *s, const svc_actor *a, const generate_params *p,
                              const svc_secret_spec *base, generate_result *out);
void generate_result_clear(generate_result *r);

#endif
