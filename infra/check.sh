#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Checks the infrastructure code: lints every template (lint.sh: cfn-lint and checkov), then runs
# the template tests (tests/test_template.py) with pytest from lint.sh's venv. Both always run; the
# exit status is non-zero when either failed. Works from any directory, offline once the venv exists.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../localstack/lib.sh
source "$here/../localstack/lib.sh"

# Where lint.sh keeps its venv (it creates it before linting).
LINT_VENV="$LABELQ_CACHE_DIR/lint/venv"

status=0
"$here/lint.sh" || status=1
[[ -x "$LINT_VENV/bin/python" ]] || die "lint.sh left no venv at $LINT_VENV"

# pytest joins that venv from its own hash-pinned file. The stamp lives inside the venv, so a venv
# that lint.sh rebuilt gets pytest again; lint.sh's lock keeps two installs from overlapping.
install_pytest() {
    local stamp stamp_file
    stamp="$(sha256sum < "$here/requirements-test.txt" | cut -d' ' -f1)"
    stamp_file="$LINT_VENV/.labelq-test-stamp"
    [[ -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp" ]] && return 0
    log "installing pytest into $LINT_VENV"
    "$LINT_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        --require-hashes --no-deps -r "$here/requirements-test.txt" >&2
    printf '%s\n' "$stamp" > "$stamp_file"
}
(
    exec 9>"$LABELQ_CACHE_DIR/lint/.install.lock"
    flock 9
    install_pytest
)

PYTHONDONTWRITEBYTECODE=1 "$LINT_VENV/bin/python" -m pytest -q -p no:cacheprovider \
    --rootdir "$here" "$here/tests" || status=1
[[ $status -eq 0 ]] || die "infra checks failed"
log "infra checks pass"
