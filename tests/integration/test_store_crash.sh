#!/usr/bin/env bash
# Crash test for the SQLite store: a writer (test_store in KB_CRASH_WRITER mode) makes up to 500
# secret creations, printing each id only after its commit returned; we kill -9 it after a seeded
# random number of acknowledgements, then check that every acknowledged write is present (secret
# row and its version row) and that PRAGMA integrity_check is ok. Repeated ROUNDS times on the
# same database, so recovery of an interrupted WAL is exercised too.
#   KB_CRASH_SEED=<n> replays a run; the seed is printed.
set -euo pipefail

BUILD=${KB_BUILD_DIR:?KB_BUILD_DIR not set}
WRITER="$BUILD/test_store"
[ -x "$WRITER" ] || { echo "missing $WRITER"; exit 1; }
command -v sqlite3 >/dev/null || { echo "sqlite3 CLI missing"; exit 1; }

SEED=${KB_CRASH_SEED:-$(( $(date +%s) % 100000 ))}
ROUNDS=${KB_CRASH_ROUNDS:-4}
echo "crash test seed: $SEED (rerun with KB_CRASH_SEED=$SEED)"
RANDOM=$SEED

WORK=$(mktemp -d /tmp/kbcrash.XXXXXX)
WPID=""
cleanup() {
    if [ -n "$WPID" ] && kill -0 "$WPID" 2>/dev/null; then kill -9 "$WPID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

DB="$WORK/store.db"
total_acked=0
for round in $(seq 1 "$ROUNDS"); do
    target=$(( (RANDOM % 499) + 1 ))
    out="$WORK/acked.$round"
    : > "$out"
    KB_CRASH_WRITER="$DB" "$WRITER" > "$out" 2> "$WORK/writer.$round.log" &
    WPID=$!
    # Wait until the writer has acknowledged `target` writes (or finished), then kill -9.
    while kill -0 "$WPID" 2>/dev/null; do
        n=$(wc -l < "$out")
        if [ "$n" -ge "$target" ]; then
            kill -9 "$WPID" 2>/dev/null || true
            break
        fi
        sleep 0.01
    done
    wait "$WPID" 2>/dev/null || true
    WPID=""
    # Only complete lines are acknowledgements (a kill mid-write may leave a partial one).
    acked=$(grep -cE '^[0-9]+$' "$out" || true)
    echo "round $round: target $target, acknowledged $acked before kill -9"
    [ "$acked" -ge 1 ] || { echo "writer acknowledged nothing"; cat "$WORK/writer.$round.log"; exit 1; }

    integrity=$(sqlite3 "$DB" "PRAGMA integrity_check;")
    [ "$integrity" = "ok" ] || { echo "integrity_check: $integrity"; exit 1; }
    fk=$(sqlite3 "$DB" "PRAGMA foreign_key_check;")
    [ -z "$fk" ] || { echo "foreign_key_check: $fk"; exit 1; }

    sqlite3 "$DB" "SELECT s.id FROM secrets s JOIN versions v ON v.secret_id = s.id \
                   AND v.version = 1 ORDER BY s.id;" > "$WORK/present"
    missing=$(grep -E '^[0-9]+$' "$out" | LC_ALL=C sort | LC_ALL=C comm -23 - <(LC_ALL=C sort "$WORK/present") || true)
    if [ -n "$missing" ]; then
        echo "acknowledged writes missing after crash (seed $SEED, round $round):"
        echo "$missing" | head
        exit 1
    fi
    total_acked=$(( total_acked + acked ))
done

# The store itself reopens the crashed database cleanly and sees every row.
rows=$(sqlite3 "$DB" "SELECT count(*) FROM secrets;")
[ "$rows" -ge "$total_acked" ] || { echo "rows $rows < acknowledged $total_acked"; exit 1; }
KB_CRASH_WRITER="$DB" timeout 120 "$WRITER" > "$WORK/final" 2>/dev/null
[ "$(wc -l < "$WORK/final")" -eq 500 ] || { echo "writer failed on the recovered database"; exit 1; }
[ "$(sqlite3 "$DB" "PRAGMA integrity_check;")" = "ok" ]
echo "crash test ok: $total_acked acknowledged writes over $ROUNDS kills, all present"
