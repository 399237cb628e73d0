#!/usr/bin/env python3
"""check-modules.py - module prefixes and one-way calls, checked on the built objects with nm
(docs/internals/README.md, "Module prefixes", has the convention).

    scripts/check-modules.py [BUILD_DIR]      # default: build

1. Every external symbol defined in src/<folder>/<file>.c starts with one of its module's
   prefixes: the folder's (lib kb_, cache cache_, ca ca_, sync sync_, cli cli_; src/server has
   none), the file's name or a leading part of it cut at an underscore (store_sqlite_audit.c:
   store_sqlite_audit_, store_sqlite_, store_), or the file's declared short prefix (ABBREV).
   main.c defines main only.
2. ONE_WAY: the objects on the left reference nothing defined in the objects on the right
   (api.c -> api_admin.c -> api_common.c, never back).

Exits 1 naming every offender, 0 when all is well, 2 when the build is missing.
"""
import fnmatch
import os
import subprocess
import sys

FOLDER = {"lib": "kb_", "cache": "cache_", "ca": "ca_", "sync": "sync_", "cli": "cli_",
          "server": ""}
# folder/file (glob, without .c) -> its declared short prefix
# Symbols the compiler adds for sanitizers and coverage (ASan's __odr_asan.<global>, gcov's
# counters): not ours to name, and only present in those builds.
INSTRUMENTATION = ("__odr_asan", "__asan", "__ubsan", "__sancov", "__gcov", "__llvm")
ABBREV = {
    "server/service": "svc_",
    "server/store_sqlite*": "sq_",
    "server/store_migrate_db": "mdb_",
}
ONE_WAY = [
    (["server/api_admin", "server/api_common"], ["server/api"]),
    (["server/api_common"], ["server/api_admin"]),
]
LAYER_DIRS = ("kb.dir", "kbserver.dir", "kbcache.dir", "kbca.dir", "kbsync.dir")


def objects(build):
    out = {}
    for root, _, files in os.walk(os.path.join(build, "CMakeFiles")):
        parts = root.split(os.sep)
        if not any(p in LAYER_DIRS or p.startswith("keybridge") and p.endswith(".dir")
                   for p in parts) or "src" not in parts:
            continue
        for f in files:
            if f.endswith(".c.o"):
                rel = os.path.join(root, f).split(os.sep + "src" + os.sep, 1)[1]
                out[rel[: -len(".c.o")]] = os.path.join(root, f)  # "server/api"
    return out


def nm(args, paths):
    res = {}
    if not paths:
        return res
    text = subprocess.run(["nm", "-A"] + args + paths, check=True, capture_output=True,
                          text=True).stdout
    for line in text.splitlines():
        path, _, rest = line.partition(": ")
        if not _:
            path, _, rest = line.rpartition(":")
        f = rest.split()
        res.setdefault(path, []).append(f)
    return res


def allowed(folder, stem, sym):
    if FOLDER[folder] and sym.startswith(FOLDER[folder]):
        return True
    part = stem
    while part:
        if sym == part or sym.startswith(part + "_"):
            return True
        part = part.rpartition("_")[0]
    return any(fnmatch.fnmatch(f"{folder}/{stem}", g) and sym.startswith(p)
               for g, p in ABBREV.items())


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    if not os.path.exists(os.path.join(build, "libkb.a")):
        print(f"check-modules: no {build}/libkb.a (build first: cmake --build {build})",
              file=sys.stderr)
        return 2
    objs = {k: v for k, v in objects(build).items() if k.split("/")[0] in FOLDER}
    if not objs:
        print(f"check-modules: no objects under {build}/CMakeFiles", file=sys.stderr)
        return 2
    by_path = {v: k for k, v in objs.items()}
    defined = nm(["-g", "--defined-only"], sorted(objs.values()))
    bad = checked = 0
    defs_of = {}
    for path, rows in sorted(defined.items()):
        mod = by_path[path]
        folder, stem = mod.split("/", 1)
        for f in rows:
            if len(f) != 3:
                continue
            sym = f[2]
            if sym.startswith(INSTRUMENTATION):
                continue
            defs_of.setdefault(mod, set()).add(sym)
            checked += 1
            if stem == "main":
                if sym != "main":
                    print(f"check-modules: src/{mod}.c exports {sym} (main.c defines main "
                          "only; make it static)")
                    bad += 1
            elif not allowed(folder, stem, sym):
                want = " or ".join(x for x in (FOLDER[folder], stem + "_") if x)
                print(f"check-modules: src/{mod}.c exports {sym}: not {want}... (prefix it with "
                      "the module's name, or make it static)")
                bad += 1
    for left, right in ONE_WAY:
        forbidden = set().union(*(defs_of.get(r, set()) for r in right))
        undef = nm(["-u"], [objs[m] for m in left if m in objs])
        for path, rows in sorted(undef.items()):
            for sym in sorted({f[-1] for f in rows} & forbidden):
                print(f"check-modules: src/{by_path[path]}.c calls {sym}, defined in "
                      f"{', '.join(right)} (calls go one way: ONE_WAY)")
                bad += 1
    if bad:
        print(f"check-modules: {bad} problem(s) in {checked} exported symbols", file=sys.stderr)
        return 1
    print(f"check-modules: ok ({checked} exported symbols in {len(objs)} objects, "
          f"{len(ONE_WAY)} call rules)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
