#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Stops the LocalStack that start.sh started on $LOCALSTACK_PORT (default 4566) for this cache dir,
# and its DynamoDB Local JVM: SIGTERM, then SIGKILL after LOCALSTACK_STOP_TIMEOUT seconds (20).
# Only processes named by start.sh's PID files (and the JVM running this instance's jar) are
# touched; a LocalStack that start.sh merely reused is left running. Safe to run twice.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$here/lib.sh"

main() {
    local t0
    t0="$(now_ms)"
    if [[ ! -d "$LS_INSTANCE" ]]; then
        log "nothing to stop on port $LS_PORT (no $LS_INSTANCE)"
        return 0
    fi
    exec 9>"$LS_INSTANCE/.lock"
    flock 9
    if [[ ! -f "$LS_PID_FILE" && ! -f "$DDB_PID_FILE" ]]; then
        log "nothing to stop on port $LS_PORT (no PID files: not started by start.sh, or already stopped)"
        return 0
    fi
    stop_instance || die "some processes did not stop; PID files kept in $LS_INSTANCE"
    log "stopped in $(elapsed "$t0")"
}

main "$@"
