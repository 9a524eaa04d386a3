#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Lints every CloudFormation template in infra/ (*.yaml) with cfn-lint and checkov.
# Fails on any cfn-lint error or warning and on any failed checkov check; a check is accepted only
# by an inline skip with its reason in the resource's Metadata (checkov: skip: - id:, comment:).
# The tools live in a venv under $LABELQ_CACHE_DIR/lint (default ~/.cache/labelq/lint), installed
# here from the hash-pinned infra/requirements-lint.txt on first use (or when that file changes).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../localstack/lib.sh
source "$here/../localstack/lib.sh"

LINT_VENV="$LABELQ_CACHE_DIR/lint/venv"

install_lint_venv() {
    local py stamp stamp_file t0
    stamp="$(cat "$here/../localstack/requirements-pip.lock" "$here/requirements-lint.txt" | sha256sum | cut -d' ' -f1)"
    stamp_file="$LINT_VENV/.labelq-stamp"
    if [[ -x "$LINT_VENV/bin/python" && -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp" ]]; then
        return 0
    fi
    t0="$(now_ms)"
    py="$(find_python313)" || die "no CPython 3.13 found (set LABELQ_PYTHON313 to one)"
    log "installing cfn-lint and checkov into $LINT_VENV"
    rm -rf "$LINT_VENV"
    "$py" -m venv "$LINT_VENV"
    "$LINT_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        --require-hashes --no-deps -r "$here/../localstack/requirements-pip.lock" >&2
    "$LINT_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        --require-hashes --no-deps -r "$here/requirements-lint.txt" >&2
    printf '%s\n' "$stamp" > "$stamp_file"
    log "lint tools installed in $(elapsed "$t0")"
}

main() {
    local templates=() args=() t status=0
    mkdir -p "$LABELQ_CACHE_DIR/lint"
    (
        exec 9>"$LABELQ_CACHE_DIR/lint/.install.lock"
        flock 9
        install_lint_venv
    )
    mapfile -t templates < <(compgen -G "$here/*.yaml" | sort)
    [[ ${#templates[@]} -gt 0 ]] || die "no templates in $here"

    log "cfn-lint $("$LINT_VENV/bin/cfn-lint" --version | awk '{print $2}'): ${templates[*]##*/}"
    "$LINT_VENV/bin/cfn-lint" -- "${templates[@]}" || status=1

    log "checkov $("$LINT_VENV/bin/checkov" --version): ${templates[*]##*/}"
    for t in "${templates[@]}"; do
        args+=(-f "$t")
    done
    # --skip-download: offline, and no need for Prisma Cloud's guidelines or mappings.
    "$LINT_VENV/bin/checkov" "${args[@]}" --framework cloudformation --skip-download \
        --compact --quiet || status=1

    [[ $status -eq 0 ]] || die "lint failed"
    log "all templates pass"
}

main "$@"
