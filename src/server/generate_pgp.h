/* generate_pgp.h - OpenPGP key pairs for `keybridge secret generate --type openpgp`
 * (generate.h; docs/internals/generate.md "OpenPGP").
 *
 * GnuPG makes the key (through gpgme) in a private temporary home: a fresh 0700 directory
 * (mkdtemp, under /dev/shm when it can, so the files stay in memory), used by this one
 * generation only. The key is an Ed25519 primary (certify, sign) with a Curve25519 encryption
 * subkey, both expiring at expires_at, without a passphrase (the armoured secret key becomes the
 * secret's content and is sealed under the HSM key like any content; no pinentry is ever asked:
 * loopback mode with a callback that refuses). Afterwards, on success and on every error, the
 * home's gpg-agent is stopped (gpgconf --kill all), its socket directory removed, and every file
 * overwritten with zeros and removed; a home that cannot be wiped fails the generation. */
#ifndef KB_SERVER_GENERATE_PGP_H
#define KB_SERVER_GENERATE_PGP_H

#include <stddef.h>
#include <stdint.h>

#include "lib/err.h"
#include "lib/secbuf.h"

#define GEN_PGP_ALGO "ed25519"         /* primary key (certify, sign) */
#define GEN_PGP_SUBALGO "cv25519"      /* encryption subkey */
#define GEN_PGP_UID_MAX 256            /* bytes of a user ID */
#define GEN_PGP_ARMOR_MAX 16384        /* an exported (armoured) key, secret or public */
#define GEN_PGP_EXPIRES_MIN_SECS 86400 /* a key must be valid for at least a day */
#define GEN_PGP_EXPIRES_MAX_SECS (20 * 366 * 86400LL) /* and at most about 20 years */
#define GEN_PGP_EXPIRES_DEFAULT_SECS (730 * 86400LL)  /* when no expires_at is given: 2 years */

/* A user ID GnuPG takes unchanged: 1..GEN_PGP_UID_MAX bytes of UTF-8, no control character,
 * no leading or trailing space (KB_ERR_INVALID; KB_ERR_TOO_LARGE when too long). */
KB_WUR kb_err generate_pgp_check_uid(const char *uid);

/* Make a key for uid expiring at expires_at (in [now + MIN, now + MAX]): *secret the armoured
 * secret key (locked memory), *pub the armoured public key (malloc'd), *expires the earliest
 * expiry of its primary key and subkey as GnuPG recorded it. KB_ERR_UNAVAILABLE when gpgme or
 * gpg cannot be used. */
KB_WUR kb_err generate_pgp_make(const char *uid, int64_t expires_at, int64_t now,
                                kb_secret **secret, char **pub, int64_t *expires);

/* The same with the home made under base_dir (NULL: /dev/shm, else $TMPDIR, else /tmp) and other
 * GnuPG algorithm names (exposed for tests: their own directory, so that parallel tests do not
 * see each other's homes; a name GnuPG refuses makes it fail before or after the primary key
 * exists). */
KB_WUR kb_err generate_pgp_make_algo(const char *base_dir, const char *uid, const char *algo,
                                     const char *subalgo, int64_t expires_at, int64_t now,
                                     kb_secret **secret, char **pub, int64_t *expires);

/* The private home (exposed for tests): make one into buf (under base_dir, or NULL as above);
 * wipe one (agent stopped, files zeroed and removed, directory removed). */
KB_WUR kb_err generate_pgp_home_new(const char *base_dir, char *buf, size_t len);
KB_WUR kb_err generate_pgp_home_wipe(const char *home);

#endif
