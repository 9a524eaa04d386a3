#!/usr/bin/env bash
# The API contract: schemathesis with all its checks against a real `labelq serve` (the real
# binary, embedded backends, the real model, bearer tokens), fed by the document it serves at
# /openapi.json. Also validates the committed openapi.json as OpenAPI 3.1. Bounded: a fixed
# number of examples per operation and a fixed seed, so a run takes the same work every time.
#
# Environment: LABELQ_CACHE_DIR (where the tool venv lives), CONTRACT_EXAMPLES (per operation,
# default 40), CONTRACT_SEED.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
here="$root/tests/contract"
cache="${LABELQ_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/labelq}"
venv="$cache/contract-venv"
lock="$here/requirements.lock"

if ! cmp -s "$lock" "$venv/requirements.lock" 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --require-hashes -r "$lock"
  cp "$lock" "$venv/requirements.lock"
fi

"$venv/bin/openapi-spec-validator" "$root/openapi.json"

# The real binary, as `make rust-tests` built it for the end-to-end suite: the same command line,
# so nothing is rebuilt (a plain `cargo build` would resolve features without the dev-dependencies
# and compile the SDK again).
cargo test --workspace --features labelq-e2e/localstack --no-run
binary="${CARGO_TARGET_DIR:-$root/target}/debug/labelq-under-test"

work="$(mktemp -d)"
server=""
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

token="contract-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
printf 'schemathesis:%s\n' "$token" >"$work/tokens"
mkfifo "$work/stdout"
LABELQ_LOG=warn "$binary" serve --listen 127.0.0.1:0 --data-dir "$work/data" --tokens-file "$work/tokens" \
  --workers 1 >"$work/stdout" 2>"$work/server.log" &
server=$!
read -r listening <"$work/stdout"
base="${listening##* }"
cat "$work/stdout" >/dev/null &

cd "$here"
status=0
# GET /v1/live only speaks WebSocket once upgraded: an HTTP fuzzer can only ever get its 426, and
# `positive_data_acceptance` would call that a rejection. Its protocol is tested by the
# end-to-end suite with a real WebSocket client (tests/tests/e2e/websocket.rs).
SCHEMATHESIS_HOOKS=hooks PYTHONPATH="$here" "$venv/bin/st" run "$base/openapi.json" \
  --checks all \
  --exclude-operation-id liveJobs \
  -H "Authorization: Bearer $token" \
  --max-examples "${CONTRACT_EXAMPLES:-50}" \
  --seed "${CONTRACT_SEED:-20261201}" \
  --workers 2 \
  --no-color || status=$?
if [ "$status" -ne 0 ]; then
  echo "--- labelq serve's log" >&2
  cat "$work/server.log" >&2
fi
exit "$status"
