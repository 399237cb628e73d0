/* names.h - name limits shared by keybridged (which creates the names) and keybridge-sync (which
 * puts them into AWS Secrets Manager as keybridge/<application>/<name>).
 *
 * Secrets Manager names are at most 512 characters (AWS Secrets Manager API Reference,
 * CreateSecret, "Name": "Length Constraints: Minimum length of 1. Maximum length of 512.").
 * With the longest secret name (255), the prefix "keybridge/" (10) and the separator "/" (1), an
 * application name may be 512 - 10 - 1 - 255 = 246 characters: every secret of every
 * application then has a valid cloud name. keybridged refuses longer application names when a
 * client is created or updated; keybridge-sync refuses a listing whose application is longer
 * (a client stored before the limit). The value also fits the 256-character tag value limit
 * (the keybridge:app tag). */
#ifndef KB_NAMES_H
#define KB_NAMES_H

/* Secret, group and application names: A-Z a-z 0-9 _ . + = @ -, not starting with '.'. */
#define KB_NAME_MAX 255
#define KB_CLOUD_NAME_PREFIX "keybridge/"
#define KB_CLOUD_NAME_MAX 512
#define KB_APP_NAME_MAX                                                                            \
    (KB_CLOUD_NAME_MAX - (int)(sizeof(KB_CLOUD_NAME_PREFIX) - 1) - 1 - KB_NAME_MAX)

_Static_assert(KB_APP_NAME_MAX == 246, "keybridge/<246>/<255> is 512 characters");

#endif
