#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Starts LocalStack in host mode (a plain Python process, no Docker) on 127.0.0.1:$LOCALSTACK_PORT
# (default 4566), waits until it is healthy, and starts DynamoDB Local behind it with one call so
# that the JVM's start-up is paid here rather than inside a test's time-out.
#
# Prints `export NAME=value` lines for AWS clients on stdout, and nothing else there:
#     eval "$(localstack/start.sh)"
# If something already answers as LocalStack on the port, it is reused and left alone: stop.sh
# stops only what a start.sh started (PID files under the cache dir).
#
# Environment: LOCALSTACK_PORT (4566), LABELQ_CACHE_DIR, LOCALSTACK_START_TIMEOUT (seconds, 90),
# LOCALSTACK_DEBUG (1 for debug logs).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$here/lib.sh"

START_TIMEOUT="${LOCALSTACK_START_TIMEOUT:-90}"
# kms: DynamoDB's SSESpecification makes LocalStack create a KMS key for the table; without the
# service, CreateTable fails half-way and CloudFormation's retry reports "Table already exists".
SERVICES=s3,sqs,sns,dynamodb,kms,cloudwatch,logs,cloudformation,iam,sts,secretsmanager

# One DynamoDB call (ListTables): the first one makes LocalStack start DynamoDB Local, a JVM
# (~8 s). Plain curl, so that reusing a LocalStack needs no venv. LocalStack routes by the target
# header and the credential scope and does not check the (dummy) signature.
warm_dynamodb() {
    local code
    code="$(curl -sS -o /dev/null -w '%{http_code}' --max-time 120 -X POST "$LS_URL/" \
        -H 'Content-Type: application/x-amz-json-1.0' \
        -H 'X-Amz-Target: DynamoDB_20120810.ListTables' \
        -H "Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/$LS_REGION/dynamodb/aws4_request, SignedHeaders=host, Signature=0" \
        -d '{"Limit": 1}')" || return 1
    [[ "$code" == 200 ]] || { log "DynamoDB ListTables answered HTTP $code"; return 1; }
}

# Print why the start failed with the end of the log, stop what this script started, and exit.
fail_start() {
    log "$1"
    if [[ -s "$LS_LOG" ]]; then
        log "last lines of $LS_LOG:"
        tail -n 40 "$LS_LOG" >&2
    fi
    stop_instance || true
    exit 1
}

main() {
    local t0 ls_pid deadline warm_t0 ready_s java_pid=""
    t0="$(now_ms)"
    mkdir -p "$LS_INSTANCE"
    # Serialises start.sh and stop.sh on this port: parallel test jobs may all call start.sh, and
    # the first one starts LocalStack while the others wait and then reuse it.
    exec 9>"$LS_INSTANCE/.lock"
    flock 9

    if localstack_healthy; then
        if [[ -f "$LS_PID_FILE" ]] && is_localstack_pid "$(cat "$LS_PID_FILE")"; then
            log "LocalStack already running on $LS_URL (pid $(cat "$LS_PID_FILE"), started by an earlier start.sh)"
        else
            log "LocalStack already answers on $LS_URL; reusing it (not started here: stop.sh will leave it running)"
        fi
        warm_dynamodb || die "LocalStack on $LS_URL answers but DynamoDB does not"
        print_client_env
        return 0
    fi

    if [[ -f "$LS_PID_FILE" ]]; then
        ls_pid="$(cat "$LS_PID_FILE")"
        if is_localstack_pid "$ls_pid"; then
            die "LocalStack pid $ls_pid (from an earlier start.sh) is running but not answering on $LS_URL;" \
                "run localstack/stop.sh, or see $LS_LOG"
        fi
        log "removing stale PID files of an earlier run"
        stop_instance
        rm -f "$LS_PID_FILE" "$DDB_PID_FILE"
    fi
    if port_in_use; then
        die "port $LS_PORT is in use by something that is not LocalStack; set LOCALSTACK_PORT to another port"
    fi

    "$here/install.sh"

    # A fresh FILESYSTEM_ROOT per start: LocalStack keeps no state across restarts here (no
    # PERSISTENCE), so yesterday's temporary files go. usr/lib/localstack is where it looks for
    # packages "built into the image": the pre-placed DynamoDB Local, JDK link and agent.
    rm -rf "$LS_INSTANCE/fs"
    mkdir -p "$LS_INSTANCE/fs/usr/lib"
    ln -s "$LS_LIB" "$LS_INSTANCE/fs/usr/lib/localstack"
    if [[ -f "$LS_LOG" ]]; then
        mv -f "$LS_LOG" "$LS_LOG.previous"
    fi

    log "starting LocalStack on $LS_URL (log: $LS_LOG)"
    # A clean environment, so that the caller's AWS_* or LocalStack settings cannot change what
    # runs. setsid: its own session and process group, so it outlives this script and the
    # caller's terminal. The shell writes its PID, then becomes LocalStack (exec keeps the PID).
    # 9>&-: the lock must not outlive this script by being inherited.
    # shellcheck disable=SC2016  # $$, $1 and $2 are the inner shell's
    env -i \
        PATH="$PATH" HOME="$HOME" LANG=C.UTF-8 \
        OVERRIDE_IN_DOCKER=0 \
        GATEWAY_SERVER=hypercorn \
        GATEWAY_LISTEN="$LS_HOST:$LS_PORT" \
        LOCALSTACK_HOST="$LS_HOST:$LS_PORT" \
        SQS_ENDPOINT_STRATEGY=path \
        DNS_ADDRESS=0 \
        DISABLE_EVENTS=1 \
        SKIP_SSL_CERT_DOWNLOAD=1 \
        FILESYSTEM_ROOT="$LS_INSTANCE/fs" \
        S3_SKIP_SIGNATURE_VALIDATION=0 \
        SERVICES="$SERVICES" \
        DEBUG="${LOCALSTACK_DEBUG:-0}" \
        setsid bash -c 'echo "$$" > "$1"; exec "$2" -m localstack.runtime.main' \
        start.sh "$LS_PID_FILE" "$LS_PYTHON" \
        </dev/null >>"$LS_LOG" 2>&1 9>&- &

    deadline=$(( $(date +%s) + 5 ))
    until [[ -s "$LS_PID_FILE" ]]; do
        (( $(date +%s) < deadline )) || fail_start "LocalStack did not start (no PID file)"
        sleep 0.05
    done
    ls_pid="$(cat "$LS_PID_FILE")"

    # Healthy = the health endpoint answers and the runtime has logged "Ready." (a SIGTERM before
    # that point can hang it, so stop.sh should only ever see a ready LocalStack).
    deadline=$(( $(date +%s) + START_TIMEOUT ))
    until localstack_healthy && grep -q '^Ready\.' "$LS_LOG"; do
        pid_alive "$ls_pid" || fail_start "LocalStack (pid $ls_pid) exited during start-up"
        (( $(date +%s) < deadline )) || fail_start "LocalStack not healthy on $LS_URL after ${START_TIMEOUT}s"
        sleep 0.2
    done
    ready_s="$(elapsed "$t0")"

    warm_t0="$(now_ms)"
    warm_dynamodb || fail_start "DynamoDB warm-up failed"
    for _ in $(seq 50); do
        java_pid="$(instance_java_pids | head -n 1)"
        [[ -n "$java_pid" ]] && break
        sleep 0.1
    done
    if [[ -n "$java_pid" ]]; then
        printf '%s\n' "$java_pid" > "$DDB_PID_FILE"
    else
        log "warning: DynamoDB answered but its JVM was not found; stop.sh will look for it again"
    fi

    log "LocalStack healthy in $ready_s (pid $ls_pid); DynamoDB warm-up $(elapsed "$warm_t0") (JVM pid ${java_pid:-?})"
    log "state: $LS_INSTANCE/fs  log: $LS_LOG  stop: localstack/stop.sh"
    print_client_env
}

main "$@"
