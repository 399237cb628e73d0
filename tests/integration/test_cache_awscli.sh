#!/usr/bin/env bash
# test_cache_awscli.sh - drive keybridge-cache with the real AWS CLI (--endpoint-url), including
# pagination over >100 secrets, tags, batch get, delete/restore, a wrong secret key, and kill -9
# followed by a restart with every acknowledged write intact.
set -u
BIN="${KB_BUILD_DIR:?}/keybridge-cache"
T=$(mktemp -d /tmp/kb-cache-cli.XXXXXX)
PID=""
pass=0
failed=0
cleanup() {
    if [ -n "$PID" ]; then kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; fi
    rm -rf "$T"
}
trap cleanup EXIT

ok() { pass=$((pass + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*" >&2; }
check() { # check DESC EXPECTED ACTUAL
    if [ "$2" == "$3" ]; then ok; else bad "$1: want '$2', got '$3'"; fi
}

"$BIN" init-key --out "$T/key" >/dev/null || { echo "init-key failed"; exit 1; }
if "$BIN" init-key --out "$T/key" 2>/dev/null; then bad "init-key overwrote a key"; else ok; fi
cat >"$T/creds" <<CREDS
AKIDCLITEST000000001 cli-secret-key-1 111122223333
AKIDCLITEST000000002 cli-secret-key-2 444455556666
CREDS
chmod 600 "$T/creds"
cat >"$T/cfg.ini" <<CFG
[server]
listen = 127.0.0.1:0
threads = 2
[store]
path = $T/cache.db
key_file = $T/key
[auth]
credentials_file = $T/creds
CFG

start() {
    : >"$T/log"
    "$BIN" --config "$T/cfg.ini" serve 2>>"$T/log" &
    PID=$!
    for _ in $(seq 1 100); do
        PORT=$(grep -o '"event":"listening","listen[^}]*"port":"[0-9]*"' "$T/log" | grep -o '"port":"[0-9]*"' | grep -o '[0-9]*' | head -1)
        [ -n "$PORT" ] && return 0
        sleep 0.1
    done
    echo "server did not start"; cat "$T/log"; exit 1
}

# The CLI must not read any real configuration or credentials.
: >"$T/awsconfig"
export AWS_CONFIG_FILE="$T/awsconfig" AWS_SHARED_CREDENTIALS_FILE="$T/awsconfig" AWS_PAGER=""
export AWS_ACCESS_KEY_ID=AKIDCLITEST000000001 AWS_SECRET_ACCESS_KEY=cli-secret-key-1
export AWS_DEFAULT_REGION=us-east-1 AWS_MAX_ATTEMPTS=1 AWS_RETRY_MODE=standard
sm() { aws --endpoint-url "http://127.0.0.1:$PORT" secretsmanager "$@"; }

# a credentials file readable by others is refused
chmod 644 "$T/creds"
if "$BIN" --config "$T/cfg.ini" serve 2>/dev/null; then bad "served with a 0644 credentials file"; else ok; fi
chmod 600 "$T/creds"
start

# create, get
sm create-secret --name app/db --secret-string hunter2 --description "main db" \
    --tags Key=team,Value=core Key=env,Value=prod >"$T/out" || bad "create-secret"
ARN=$(jq -r .ARN "$T/out")
case "$ARN" in arn:aws:secretsmanager:us-east-1:111122223333:secret:app/db-??????) ok ;; *) bad "ARN $ARN" ;; esac
sm get-secret-value --secret-id "$ARN" --output json >"$T/get"
check "get by ARN" hunter2 "$(jq -r .SecretString "$T/get")"
check "stages" AWSCURRENT "$(jq -r '.VersionStages[0]' "$T/get")"
V1=$(jq -r .VersionId "$T/get")

# put: new version, AWSPREVIOUS moves
V2=$(sm put-secret-value --secret-id app/db --secret-string v2 --query VersionId --output text)
[ "$V1" != "$V2" ] && ok || bad "put made no new version"
check "previous after put" hunter2 "$(sm get-secret-value --secret-id app/db --version-stage AWSPREVIOUS --query SecretString --output text)"
sm put-secret-value --secret-id app/db --secret-string v3 >/dev/null
check "previous moves" v2 "$(sm get-secret-value --secret-id app/db --version-stage AWSPREVIOUS --query SecretString --output text)"
# idempotent token
TOK=0123456789abcdef0123456789abcdef
sm put-secret-value --secret-id app/db --secret-string v4 --client-request-token $TOK >/dev/null
sm put-secret-value --secret-id app/db --secret-string v4 --client-request-token $TOK >/dev/null || bad "idempotent retry"
check "retry keeps previous" v3 "$(sm get-secret-value --secret-id app/db --version-stage AWSPREVIOUS --query SecretString --output text)"
if sm put-secret-value --secret-id app/db --secret-string other --client-request-token $TOK 2>"$T/err"; then
    bad "token reuse with another value accepted"
else grep -q ResourceExistsException "$T/err" && ok || bad "token reuse: $(cat "$T/err")"; fi

# binary
printf '\x00\x01\x02\xff' >"$T/bin"
sm create-secret --name app/bin --secret-binary "fileb://$T/bin" >/dev/null || bad "create binary"
check "binary" "AAEC/w==" "$(sm get-secret-value --secret-id app/bin --query SecretBinary --output text)"

# describe, tags
sm tag-resource --secret-id app/db --tags Key=owner,Value=keybridge || bad "tag-resource"
sm untag-resource --secret-id app/db --tag-keys env || bad "untag-resource"
sm describe-secret --secret-id app/db --output json >"$T/desc"
check "describe desc" "main db" "$(jq -r .Description "$T/desc")"
check "tags" "owner team" "$(jq -r '[.Tags[].Key] | sort | join(" ")' "$T/desc")"
check "policy" "None" "$(sm get-resource-policy --secret-id app/db --query ResourcePolicy --output text)"

# >100 secrets: auto-pagination and manual pagination
for i in $(seq -w 1 120); do echo "{\"Name\":\"bulk/s$i\",\"SecretString\":\"value-$i\",\"Tags\":[{\"Key\":\"bulk\",\"Value\":\"yes\"}]}"; done >"$T/bulk"
python3 - "$T/bulk" "$PORT" <<'PY' || bad "bulk create"
import sys, json, boto3
c = boto3.client("secretsmanager", endpoint_url="http://127.0.0.1:%s" % sys.argv[2])
for line in open(sys.argv[1]):
    c.create_secret(**json.loads(line))
PY
# (v1 CLI applies --query per page, so count merged pages with jq)
sm list-secrets --output json >"$T/all"
check "auto-paginated list" 122 "$(jq '.SecretList | length' "$T/all")"
check "tags in every entry" 122 "$(jq '[.SecretList[] | select(has("Tags"))] | length' "$T/all")"
check "filtered list" 120 "$(sm list-secrets --filters Key=tag-key,Values=bulk --output json | jq '.SecretList | length')"
check "name prefix" 10 "$(sm list-secrets --filters Key=name,Values=bulk/s10 --output json | jq '.SecretList | length')"
check "negation" 2 "$(sm list-secrets --filters Key=name,Values='!bulk/' --output json | jq '.SecretList | length')"
sm list-secrets --max-items 50 --output json >"$T/p1"
check "page 1" 50 "$(jq '.SecretList | length' "$T/p1")"
NT=$(jq -r .NextToken "$T/p1")
[ "$NT" != null ] && ok || bad "no NextToken with --max-items"
sm list-secrets --max-items 100 --starting-token "$NT" --output json >"$T/p2"
check "page 2" 72 "$(jq '.SecretList | length' "$T/p2")"
check "page 2 first" "$(jq -r '.SecretList[50].Name' "$T/all")" "$(jq -r '.SecretList[0].Name' "$T/p2")"
sm list-secrets --max-results 100 --no-paginate --output json >"$T/raw"
check "raw page" 100 "$(jq '.SecretList | length' "$T/raw")"
RAWTOK=$(jq -r .NextToken "$T/raw")
check "raw page 2" 22 "$(sm list-secrets --max-results 100 --next-token "$RAWTOK" --no-paginate --query 'length(SecretList)' --output text)"

# batch get
sm batch-get-secret-value --secret-id-list app/db bulk/s001 nope --output json >"$T/batch"
check "batch values" 2 "$(jq '.SecretValues | length' "$T/batch")"
check "batch errors" ResourceNotFoundException "$(jq -r '.Errors[0].ErrorCode' "$T/batch")"
# no CLI paginator for BatchGetSecretValue: one page of at most 20, with a NextToken
sm batch-get-secret-value --filters Key=tag-key,Values=bulk --output json >"$T/bf"
check "batch filters" "20 true" "$(jq -r '"\(.SecretValues | length) \(.NextToken != null)"' "$T/bf")"

# delete + restore, force delete
sm delete-secret --secret-id app/bin --recovery-window-in-days 7 >/dev/null || bad "delete"
if sm get-secret-value --secret-id app/bin 2>"$T/err"; then bad "get of deleted"; else grep -q InvalidRequestException "$T/err" && ok || bad "deleted: $(cat "$T/err")"; fi
if sm create-secret --name app/bin --secret-string x 2>"$T/err"; then bad "recreate pending"; else grep -q InvalidRequestException "$T/err" && ok || bad "recreate: $(cat "$T/err")"; fi
sm restore-secret --secret-id app/bin >/dev/null || bad "restore"
check "restored" "AAEC/w==" "$(sm get-secret-value --secret-id app/bin --query SecretBinary --output text)"
sm delete-secret --secret-id app/bin --force-delete-without-recovery >/dev/null || bad "force delete"
if sm describe-secret --secret-id app/bin 2>"$T/err"; then bad "force-deleted still there"; else grep -q ResourceNotFoundException "$T/err" && ok || bad "force: $(cat "$T/err")"; fi
if sm delete-secret --secret-id app/db --recovery-window-in-days 3 2>"$T/err"; then bad "window 3 accepted"; else grep -q InvalidParameterException "$T/err" && ok || bad "window: $(cat "$T/err")"; fi

# wrong secret key, unknown key id, other account
if AWS_SECRET_ACCESS_KEY=wrong sm list-secrets 2>"$T/err"; then bad "wrong key accepted"; else grep -q InvalidSignatureException "$T/err" && ok || bad "wrong key: $(cat "$T/err")"; fi
if AWS_ACCESS_KEY_ID=AKIDUNKNOWN000000000 sm list-secrets 2>"$T/err"; then bad "unknown key accepted"; else grep -q UnrecognizedClientException "$T/err" && ok || bad "unknown: $(cat "$T/err")"; fi
check "other account sees nothing" 0 "$(AWS_ACCESS_KEY_ID=AKIDCLITEST000000002 AWS_SECRET_ACCESS_KEY=cli-secret-key-2 sm list-secrets --query 'length(SecretList)' --output text)"
if AWS_ACCESS_KEY_ID=AKIDCLITEST000000002 AWS_SECRET_ACCESS_KEY=cli-secret-key-2 sm get-secret-value --secret-id "$ARN" 2>"$T/err"; then bad "cross-account read"; else grep -q ResourceNotFoundException "$T/err" && ok || bad "cross: $(cat "$T/err")"; fi

# secret values never reach the log
if grep -q -e hunter2 -e cli-secret-key "$T/log"; then bad "secret in log"; else ok; fi

# kill -9 and restart: everything acknowledged is there
sm put-secret-value --secret-id app/db --secret-string after-crash-value >/dev/null || bad "last put"
kill -9 "$PID"; wait "$PID" 2>/dev/null; PID=""
start
sm batch-get-secret-value --secret-id-list app/db bulk/s120 --output json >"$T/after"
check "after kill -9: current" after-crash-value "$(jq -r '.SecretValues[0].SecretString' "$T/after")"
check "after kill -9: bulk" value-120 "$(jq -r '.SecretValues[1].SecretString' "$T/after")"
check "after kill -9: count" 121 "$(sm list-secrets --output json | jq '.SecretList | length')"
if grep -c "after-crash-value" "$T/cache.db" "$T/cache.db-wal" >/dev/null 2>&1; then bad "plaintext in the database"; else ok; fi

echo "$pass passed, $failed failed"
[ "$failed" -eq 0 ]
