# shellcheck shell=bash disable=SC2034  # variables here are used by the scripts that source this file
# Shared settings and helpers for the localstack/ scripts. Sourced, never run.
#
# Layout under the cache dir (nothing is written anywhere else):
#   $LS_HOME/venv                      Python 3.13 venv with localstack-core (install.sh)
#   $LS_HOME/lib                       pre-placed DynamoDB Local, JDK link, javaagent (install.sh)
#   $LS_HOME/instances/<port>/         one running LocalStack per port (start.sh / stop.sh):
#       fs/                            its FILESYSTEM_ROOT (temporary state; wiped at each start)
#       localstack.log                 its log
#       localstack.pid, dynamodb.pid   what start.sh started, and so what stop.sh may stop

LABELQ_CACHE_DIR="${LABELQ_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/labelq}"
LS_HOME="$LABELQ_CACHE_DIR/localstack"
LS_VENV="$LS_HOME/venv"
LS_PYTHON="$LS_VENV/bin/python"
LS_LIB="$LS_HOME/lib"
LS_PORT="${LOCALSTACK_PORT:-4566}"
LS_HOST=127.0.0.1
LS_URL="http://$LS_HOST:$LS_PORT"
LS_INSTANCE="$LS_HOME/instances/$LS_PORT"
LS_LOG="$LS_INSTANCE/localstack.log"
LS_PID_FILE="$LS_INSTANCE/localstack.pid"
DDB_PID_FILE="$LS_INSTANCE/dynamodb.pid"
LS_REGION="${AWS_REGION:-${AWS_DEFAULT_REGION:-us-east-1}}"

LS_SCRIPT_NAME="$(basename "$0")"

# Progress and errors go to stderr so that stdout stays clean for `eval "$(start.sh)"`.
log() { printf '%s: %s\n' "$LS_SCRIPT_NAME" "$*" >&2; }
die() { printf '%s: error: %s\n' "$LS_SCRIPT_NAME" "$*" >&2; exit 1; }

case "$LS_PORT" in
    '' | *[!0-9]*) die "LOCALSTACK_PORT must be a port number, got '$LS_PORT'" ;;
esac

# Seconds since the epoch with millisecond precision, for step timings.
now_ms() { date +%s%3N; }
elapsed() {
    local ms=$(( $(now_ms) - $1 ))
    printf '%d.%03ds' $(( ms / 1000 )) $(( ms % 1000 ))
}

# True when a process with this PID exists (and is not a zombie).
pid_alive() {
    local pid=$1 state
    [[ -n "$pid" && -r "/proc/$pid/stat" ]] || return 1
    state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" || return 1
    [[ -n "$state" && "$state" != Z ]]
}

# True when LocalStack answers its health endpoint on our port.
localstack_healthy() {
    curl -fsS --max-time 2 "$LS_URL/_localstack/health" >/dev/null 2>&1
}

# True when anything at all accepts TCP connections on our port.
port_in_use() {
    (exec 3<>"/dev/tcp/$LS_HOST/$LS_PORT") 2>/dev/null
}

# Environment that points AWS SDKs and CLIs at this LocalStack, as `export` lines.
print_client_env() {
    local kv k v
    for kv in \
        "AWS_ENDPOINT_URL=$LS_URL" \
        "AWS_REGION=$LS_REGION" \
        "AWS_DEFAULT_REGION=$LS_REGION" \
        "AWS_ACCESS_KEY_ID=test" \
        "AWS_SECRET_ACCESS_KEY=test" \
        "LOCALSTACK_PORT=$LS_PORT"; do
        k="${kv%%=*}"
        v="${kv#*=}"
        printf 'export %s=%q\n' "$k" "$v"
    done
}

# Prints the path of a CPython 3.13 interpreter (localstack-core 2026.3.0 needs exactly 3.13;
# older ones fail with a misleading "No component plugins found"). Looks at, in order:
# $LABELQ_PYTHON313, python3.13 on PATH, then pyenv installs (newest 3.13.x first).
find_python313() {
    local candidates=() c root pyenv_root
    [[ -n "${LABELQ_PYTHON313:-}" ]] && candidates+=("$LABELQ_PYTHON313")
    c="$(command -v python3.13 || true)"
    [[ -n "$c" ]] && candidates+=("$c")
    pyenv_root="${PYENV_ROOT:-$HOME/.pyenv}"
    for root in "$pyenv_root" /root/.pyenv; do
        while IFS= read -r c; do
            [[ -n "$c" ]] && candidates+=("$c")
        done < <(compgen -G "$root/versions/3.13.*/bin/python3" | sort -rV)
    done
    for c in "${candidates[@]}"; do
        if [[ -x "$c" ]] && "$c" -c 'import sys, venv; sys.exit(sys.version_info[:2] != (3, 13))' 2>/dev/null; then
            printf '%s\n' "$c"
            return 0
        fi
    done
    return 1
}

# localstack-core is pinned to a release; its dependencies are resolved as they were in the month
# of that release (newer cbor2 / pyOpenSSL break it). lock.sh resolves with this cut-off, and
# install.sh applies it to the build dependencies of the few source-only packages too.
LS_CORE_SPEC='localstack-core[runtime]==2026.3.0'
LS_DEPS_CUTOFF=2026-04-01T00:00:00Z
# The pip that venvs are upgraded to before anything else (it knows --uploaded-prior-to).
LS_PIP_VERSION=26.3

# PIDs of the DynamoDB Local JVMs that belong to this instance. LocalStack starts DynamoDB Local
# (in its own process group) with a jar under this instance's FILESYSTEM_ROOT, so its command line
# names our directory: that finds it even after LocalStack itself died and left it behind.
instance_java_pids() {
    local needle="$LS_INSTANCE/fs/" f pid
    for f in /proc/[0-9]*/cmdline; do
        pid="${f#/proc/}"
        pid="${pid%/cmdline}"
        [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == java ]] || continue
        if tr '\0' ' ' < "$f" 2>/dev/null | grep -qF -- "$needle"; then
            printf '%s\n' "$pid"
        fi
    done
}

# True when PID is a LocalStack runtime (guards against a recycled PID in a stale PID file).
is_localstack_pid() {
    local pid=$1
    pid_alive "$pid" && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF 'localstack.runtime.main'
}

# terminate PID SECONDS WHAT: SIGTERM, wait up to SECONDS, then SIGKILL (to the process group too
# when PID leads one, as LocalStack does since start.sh runs it under setsid).
terminate() {
    local pid=$1 timeout=$2 what=$3 deadline
    pid_alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$(( $(date +%s) + timeout ))
    while pid_alive "$pid" && (( $(date +%s) < deadline )); do
        sleep 0.2
    done
    if pid_alive "$pid"; then
        log "$what (pid $pid) still running ${timeout}s after SIGTERM; sending SIGKILL"
        if [[ "$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ')" == "$pid" ]]; then
            kill -KILL -- "-$pid" 2>/dev/null || true
        fi
        kill -KILL "$pid" 2>/dev/null || true
        deadline=$(( $(date +%s) + 5 ))
        while pid_alive "$pid" && (( $(date +%s) < deadline )); do
            sleep 0.1
        done
    fi
    pid_alive "$pid" && { log "$what (pid $pid) survived SIGKILL"; return 1; }
    return 0
}

# Stops what start.sh started for this port and cache dir: the LocalStack runtime named in its PID
# file and DynamoDB Local's JVM. Nothing else. Callers hold the instance lock.
stop_instance() {
    local ls_pid="" ddb_pid="" java_pids=() p status=0
    [[ -f "$LS_PID_FILE" ]] && ls_pid="$(cat "$LS_PID_FILE")"
    [[ -f "$DDB_PID_FILE" ]] && ddb_pid="$(cat "$DDB_PID_FILE")"
    if [[ -z "$ls_pid" && -z "$ddb_pid" ]]; then
        return 0
    fi

    if [[ -n "$ls_pid" ]] && is_localstack_pid "$ls_pid"; then
        log "stopping LocalStack (pid $ls_pid)"
        terminate "$ls_pid" "${LOCALSTACK_STOP_TIMEOUT:-20}" LocalStack || status=1
    fi
    # LocalStack usually stops DynamoDB Local itself; whatever JVM of ours is left goes now.
    mapfile -t java_pids < <(instance_java_pids)
    for p in "${java_pids[@]}"; do
        log "stopping DynamoDB Local (pid $p)"
        terminate "$p" 10 "DynamoDB Local" || status=1
    done
    if [[ $status -eq 0 ]]; then
        rm -f "$LS_PID_FILE" "$DDB_PID_FILE"
    fi
    return "$status"
}
