#!/usr/bin/env bash
# test_module_names.sh - the module-prefix convention and the one-way call rules
# (docs/internals/README.md, "Module prefixes"): scripts/check-modules.py passes on the real
# build, and fails, naming the symbol, on objects that break each rule.
set -euo pipefail
S="$(cd "${KB_SOURCE_DIR:?}" && pwd)"
B="$(cd "${KB_BUILD_DIR:?}" && pwd)"
T="$(mktemp -d)"
trap 'rm -rf "$T"' EXIT
CC="${CC:-cc}"

# 1. The tree as built follows the convention.
"$S/scripts/check-modules.py" "$B"

# A fake build dir: the layout CMake uses (CMakeFiles/<layer>.dir/src/<folder>/<file>.c.o).
fake() {
  rm -rf "$T/b"
  mkdir -p "$T/b/CMakeFiles/kbserver.dir/src/server" "$T/b/CMakeFiles/kb.dir/src/lib"
  : >"$T/b/libkb.a"
}
obj() { # obj LAYER FOLDER FILE 'C source'
  printf '%s\n' "$4" >"$T/$3.c"
  "$CC" -c -o "$T/b/CMakeFiles/$1.dir/src/$2/$3.c.o" "$T/$3.c"
}
expect_fail() { # expect_fail WHAT TEXT
  if "$S/scripts/check-modules.py" "$T/b" >"$T/out" 2>&1; then
    echo "FAIL: $1 passed the check"
    exit 1
  fi
  grep -qF "$2" "$T/out" || {
    echo "FAIL: $1: the message does not name '$2':"
    cat "$T/out"
    exit 1
  }
  echo "ok: $1 refused"
}

# 2. Good names pass: file name, a leading part of it, the folder prefix, a declared short one.
fake
obj kbserver server store_sqlite_audit 'int store_sqlite_audit_x(void){return 1;} int store_y(void){return 2;} int sq_z(void){return 3;}'
obj kb lib buf 'int kb_dbuf_x(void){return 1;} static int helper(void){return 2;} int buf_y(void){return helper();}'
obj kbserver server main 'int main(void){return 0;}'
"$S/scripts/check-modules.py" "$T/b" >"$T/out" || {
  cat "$T/out"
  exit 1
}
echo "ok: good names pass"

# 3. Each rule, broken once.
fake
obj kbserver server generate 'int gen_make(void){return 1;}'
expect_fail "an exported symbol without its module's prefix" "src/server/generate.c exports gen_make"
fake
obj kb lib base64 'int b64_decode(void){return 1;}'
expect_fail "a src/lib symbol without kb_" "src/lib/base64.c exports b64_decode"
fake
obj kbserver server api 'int svc_x(void){return 1;}'
expect_fail "a short prefix used by a module that did not declare it" "src/server/api.c exports svc_x"
fake
obj kbserver server main 'int main(void){return 0;} int usage(void){return 1;}'
expect_fail "main.c exporting more than main" "src/server/main.c exports usage"
fake
obj kbserver server api 'int api_error(void){return 1;}'
obj kbserver server api_common 'int api_error(void); int api_common_x(void){return api_error();}'
expect_fail "api_common.c calling back into api.c" "src/server/api_common.c calls api_error"
fake
obj kbserver server api_admin 'int api_admin(void){return 1;}'
obj kbserver server api_common 'int api_admin(void); int api_x(void){return api_admin();}'
expect_fail "api_common.c calling into api_admin.c" "src/server/api_common.c calls api_admin"
echo "test_module_names: ok"
