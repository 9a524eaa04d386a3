#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Each Lambda answers a real invocation through cargo-lambda's local Runtime API emulator.
#
# The bootstraps, unpacked from the zips of `make lambda-test-zips` (or `make lambda-zips`), run as the Lambda service runs them, polling the
# emulator's Runtime API, against a fresh LocalStack stack of infra/storage.yaml; each is invoked
# with an event shaped as AWS sends it:
#   request-handler  API Gateway POST /v1/images with a base64 photo      -> 202
#   worker           the SQS event of the message that submission queued  -> no batch item failures
#   status-api       API Gateway GET /v1/images/{id}                      -> 200 SUCCEEDED, with labels
#   callback-deliverer  the SQS event of the callback the worker announced  -> a signed call to a
#                    receiver on 127.0.0.1, with the signing secret read from Secrets Manager
# Needs LocalStack running (eval "$(localstack/start.sh)").
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=../../localstack/lib.sh
source "$root/localstack/lib.sh"

port="${LAMBDA_EMULATOR_PORT:-9600}"
stack="labelq-invoke-$$"
work="$(mktemp -d)"
pids=()

cleanup() {
    local status=$?
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [[ $status -ne 0 ]]; then
        for f in "$work"/*.log; do [[ -f "$f" ]] && { echo "--- $f" >&2; tail -n 20 "$f" >&2; }; done
    fi
    "$root/localstack/provision.sh" "$stack" --delete >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

# The bootstraps as shipped: unpacked from the zips.
for name in request-handler worker status-api callback-deliverer; do
    zip="$root/target/lambda/$name/bootstrap.zip"
    [[ -f "$zip" ]] || die "$zip is missing: run make lambda-test-zips"
    python3 -m zipfile -e "$zip" "$work/$name"
    chmod +x "$work/$name/bootstrap"
    # Linked at a fixed address (scripts/lambda-build.rs): ELF type EXEC, not a PIE's DYN.
    if [[ "${LABELQ_LAMBDA_PIE:-}" != 1 ]]; then
        elf_type="$(python3 -c 'import sys; print(int.from_bytes(open(sys.argv[1], "rb").read(18)[16:18], "little"))' "$work/$name/bootstrap")"
        [[ "$elf_type" == 2 ]] || die "$name/bootstrap is not a fixed-address executable (ELF type $elf_type)"
    fi
done
photo="$(python3 "$root/model/fetch_photos.py")/coffee.png"
model_dir="$(python3 "$root/model/prepare.py")"

eval "$("$root/localstack/provision.sh" "$stack")"

(cd "$root" && exec "$root/scripts/cargo-lambda.sh" watch --only-lambda-apis \
    --invoke-address 127.0.0.1 --invoke-port "$port") >"$work/emulator.log" 2>&1 &
pids+=($!)
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }
for _ in $(seq 1 240); do
    listening && break
    sleep 0.25
done
listening || die "the emulator did not come up on port $port"

# start NAME [VAR=VALUE ...]: runs target/lambda/NAME/bootstrap against the emulator, trusting
# the Amazon roots only, as deployed. LocalStack speaks plain HTTP, so that proves the compiled-in
# roots load into the SDK's connector on the first call, not a handshake against them.
start() {
    local name="$1"
    shift
    env "$@" \
        LABELQ_TLS_TRUST=amazon \
        AWS_LAMBDA_RUNTIME_API="http://127.0.0.1:$port/.rt/$name" \
        AWS_LAMBDA_FUNCTION_NAME="$name" \
        AWS_LAMBDA_FUNCTION_VERSION=1 \
        AWS_LAMBDA_FUNCTION_MEMORY_SIZE=1024 \
        AWS_LAMBDA_LOG_GROUP_NAME="/aws/lambda/$name" \
        AWS_LAMBDA_LOG_STREAM_NAME=local \
        AWS_LAMBDA_LOG_FORMAT=JSON \
        "$work/$name/bootstrap" >"$work/$name.log" 2>&1 &
    pids+=($!)
}

# invoke NAME EVENT-FILE: prints the function's response.
invoke() {
    (cd "$root" && "$root/scripts/cargo-lambda.sh" invoke "$1" --invoke-address 127.0.0.1 \
        --invoke-port "$port" --data-file "$2" --output-format json)
}

events() { "$LS_PYTHON" "$root/tests/lambda/events.py" "$@"; }

receiver_port=$((port + 1))
# Not through events(): $! must be the python process itself, for cleanup to stop it.
"$LS_PYTHON" "$root/tests/lambda/events.py" receiver "$receiver_port" "$work/calls.jsonl" &
pids+=($!)

# Callbacks to 127.0.0.1 allowed, as the tests' explicit setting.
start request-handler LABELQ_TABLE="$LABELQ_TABLE" LABELQ_BUCKET="$LABELQ_BUCKET" LABELQ_TOPIC_ARN="$LABELQ_TOPIC_ARN" \
    LABELQ_CALLBACKS=true LABELQ_CALLBACK_ALLOW_PRIVATE=true
start worker LABELQ_TABLE="$LABELQ_TABLE" LABELQ_BUCKET="$LABELQ_BUCKET" LABELQ_QUEUE_URL="$LABELQ_QUEUE_URL" \
    LABELQ_MAX_RECEIVE_COUNT=5 LABEL_DETECTOR=onnx LABELQ_MODEL_DIR="$model_dir" LABELQ_WORKER_CONCURRENCY=1 \
    LABELQ_COMPLETION_TOPIC_ARN="$LABELQ_COMPLETION_TOPIC_ARN"
start status-api LABELQ_TABLE="$LABELQ_TABLE" LABELQ_BUCKET="$LABELQ_BUCKET"
start callback-deliverer LABELQ_TABLE="$LABELQ_TABLE" LABELQ_BUCKET="$LABELQ_BUCKET" \
    LABELQ_CALLBACK_QUEUE_URL="$LABELQ_CALLBACK_QUEUE_URL" LABELQ_CALLBACK_SECRET_ARN="$LABELQ_CALLBACK_SECRET_ARN" \
    LABELQ_CALLBACK_ALLOW_PRIVATE=true

events api POST /v1/images user-1 "$photo" "http://127.0.0.1:$receiver_port/hook" >"$work/submit.json"
accepted="$(invoke request-handler "$work/submit.json" | events check-api 202 status=PENDING)"
id="$("$LS_PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["id"])' <<<"$accepted")"
log "request-handler: 202 for image $id"

events sqs "$LABELQ_QUEUE_URL" >"$work/batch.json"
batch="$(invoke worker "$work/batch.json")"
[[ "$("$LS_PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["batchItemFailures"])' <<<"$batch")" == "[]" ]] \
    || die "the worker reported failures: $batch"
log "worker: batch handled, no failures"

events api GET "/v1/images/$id" user-1 >"$work/status.json"
invoke status-api "$work/status.json" | events check-api 200 status=SUCCEEDED labels.*.name=Espresso >/dev/null
log "status-api: 200 SUCCEEDED with labels"

events sqs "$LABELQ_CALLBACK_QUEUE_URL" >"$work/callbacks.json"
batch="$(invoke callback-deliverer "$work/callbacks.json")"
[[ "$("$LS_PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["batchItemFailures"])' <<<"$batch")" == "[]" ]] \
    || die "the callback deliverer reported failures: $batch"
"$LS_PYTHON" - "$work/calls.jsonl" "$id" <<'PY' || die "the receiver did not get the job's signed callback"
import json, sys
calls = [json.loads(line) for line in open(sys.argv[1])]
assert len(calls) == 1, calls
call = calls[0]
assert call["headers"]["webhook-id"] == "msg_" + sys.argv[2].replace("-", ""), call
assert call["headers"]["webhook-signature"].startswith("v1,"), call
body = json.loads(call["body"])
assert body["type"] == "job.succeeded" and body["data"]["id"] == sys.argv[2], body
PY
events api GET "/v1/images/$id" user-1 >"$work/status.json"
invoke status-api "$work/status.json" | events check-api 200 callback.status=DELIVERED >/dev/null
log "callback-deliverer: one signed call, DELIVERED; every function answered a real invocation"
