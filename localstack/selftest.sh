#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# End-to-end check of localstack/ and infra/storage.yaml, as CI would use them:
#   install -> start -> provision two stacks at once -> smoke_test.py on each, at once
#   -> delete both -> stop -> no LocalStack or DynamoDB Local process of ours left.
# Prints the time of each step, and a closing "N passed, N failed" line for the smoke tests.
#     LABELQ_CACHE_DIR=$(mktemp -d) localstack/selftest.sh      # from an empty cache
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$here/lib.sh"

STACKS=("labelq-selftest-$$-a" "labelq-selftest-$$-b")
timings=()
work="$(mktemp -d)"
started_here=0

# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
    local status=$? s
    if [[ $started_here -eq 1 ]]; then
        for s in "${STACKS[@]}"; do
            "$here/provision.sh" "$s" --delete >/dev/null 2>&1 || true
        done
        "$here/stop.sh" || true
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT

# timed NAME COMMAND...: run it, and remember how long it took.
timed() {
    local name=$1 t0
    shift
    t0="$(now_ms)"
    "$@"
    timings+=("$(printf '%-34s %s' "$name" "$(elapsed "$t0")")")
}

# in_parallel LABEL COMMAND_PREFIX...: run "COMMAND_PREFIX STACK" for each stack concurrently,
# output to $work/LABEL-STACK.out; fails if any did, after showing its output.
# shellcheck disable=SC2317  # called through timed
in_parallel() {
    local label=$1 pids=() i s failed=0
    shift
    for s in "${STACKS[@]}"; do
        "$@" "$s" >"$work/$label-$s.out" 2>&1 &
        pids+=($!)
    done
    for i in "${!pids[@]}"; do
        if ! wait "${pids[$i]}"; then
            log "$label ${STACKS[$i]} failed:"
            cat "$work/$label-${STACKS[$i]}.out" >&2
            failed=1
        fi
    done
    return "$failed"
}

was_running=0
localstack_healthy && was_running=1

timed "install" "$here/install.sh"
timed "start (to healthy + DynamoDB warm)" "$here/start.sh" >"$work/env.sh"
[[ $was_running -eq 1 ]] || started_here=1
# shellcheck disable=SC1091
source "$work/env.sh"

timed "provision 2 stacks in parallel" in_parallel provision "$here/provision.sh"
for s in "${STACKS[@]}"; do
    grep -q '^export LABELQ_BUCKET=' "$work/provision-$s.out" || die "no outputs for $s"
done
buckets="$(cat "$work"/provision-*.out | grep -c '^export LABELQ_BUCKET=' || true)"
distinct="$(cat "$work"/provision-*.out | grep '^export LABELQ_\(BUCKET\|TABLE\|QUEUE_URL\|TOPIC_ARN\)=' | sort -u | wc -l)"
[[ "$buckets" -eq 2 && "$distinct" -eq 8 ]] || die "the two stacks share resource names"

smoke_status=0
timed "smoke test both stacks in parallel" in_parallel smoke "$LS_PYTHON" "$here/smoke_test.py" \
    || smoke_status=1
for s in "${STACKS[@]}"; do
    log "smoke test of $s:"
    sed 's/^/    /' "$work/smoke-$s.out" >&2
done

timed "delete 2 stacks in parallel" in_parallel delete "$here/provision.sh" --delete
timed "stop" "$here/stop.sh"
started_here=0

if [[ $was_running -eq 0 ]]; then
    leftovers="$(instance_java_pids)"
    if [[ -f "$LS_PID_FILE" ]] || [[ -n "$leftovers" ]] || port_in_use; then
        die "processes left behind: pid file $(cat "$LS_PID_FILE" 2>/dev/null || echo none), java ${leftovers:-none}"
    fi
    log "no LocalStack or DynamoDB Local process left; port $LS_PORT free"
fi

log "timings:"
printf '    %s\n' "${timings[@]}" >&2
passed="$(cat "$work"/smoke-*.out | grep -c '^all checks passed' || true)"
printf 'selftest: %d passed, %d failed\n' "$passed" $(( ${#STACKS[@]} - passed ))
exit "$smoke_status"
