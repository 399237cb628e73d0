/* ca_cmd.h - what keybridge-ca's subcommands share: the opened store, keys, authority and policy
 * built from the configuration, and the registration and daemon subcommands. */
#ifndef KB_CA_CMD_H
#define KB_CA_CMD_H

#include "ca.h"
#include "ca_policy.h"
#include "ca_store.h"
#include "ca_target.h"
#include "lib/config.h"

typedef struct ca_ctx ca_ctx;

/* Open the store (and the PIN when [ca] key = pkcs11); with_ca also opens the authority.
 * Returns an exit code (KB_EXIT_OK on success; a message has been printed otherwise). */
int ca_ctx_open(const kb_config *cfg, int with_ca, ca_ctx **out);
void ca_ctx_close(ca_ctx *x);
/* A message naming why opening or creating the CA failed with rc: the PKCS#11 module, a missing
 * SOFTHSM2_CONF or token, no active CA, a missing key (buf holds it, or a static string). */
const char *ca_ctx_explain(ca_ctx *x, kb_err rc, char *buf, size_t len);
ca_store *ca_ctx_store(ca_ctx *x);
ca_authority *ca_ctx_ca(ca_ctx *x);
const ca_keys *ca_ctx_keys(ca_ctx *x);
const kb_config *ca_ctx_config(ca_ctx *x);
/* A new key (named after [pkcs11] key_label or in [ca] key_dir) and generation. */
KB_WUR kb_err ca_ctx_new_generation(ca_ctx *x, const char *td, int intermediate, const char *state,
                                    int64_t *gen, char **csr_pem);

/* The [policy] file (an exit code; a message has been printed on failure). */
int ca_cmd_load_policy(const kb_config *cfg, ca_policy **out);

/* The AWS settings of [aws] for targets, with the CA's trust domain (or td without a CA). */
void ca_cmd_target_env(const kb_config *cfg, ca_authority *ca, const char *td, ca_target_env *e);

int ca_cmd_register(const kb_config *cfg, int argc, char **argv);
int ca_cmd_list(const kb_config *cfg, int argc, char **argv);
int ca_cmd_remove(const kb_config *cfg, int argc, char **argv);
/* ca_serve.c: the renewal daemon and the mTLS API. */
int ca_cmd_serve(const kb_config *cfg, int argc, char **argv);
int ca_cmd_renew_once(const kb_config *cfg, int argc, char **argv);

#endif
