#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Deploys infra/storage.yaml to LocalStack as the stack named by the first argument, or deletes
# it with --delete; see provision.py --help. Runs provision.py with the LocalStack venv's python
# (install.sh makes it) and points it at this port's LocalStack unless AWS_ENDPOINT_URL is set.
#     eval "$(localstack/provision.sh labelq-test-1)"     # exports LABELQ_BUCKET, LABELQ_TABLE, ...
#     localstack/provision.sh labelq-test-1 --delete
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$here/lib.sh"

[[ -x "$LS_PYTHON" ]] || die "no LocalStack venv at $LS_VENV; run localstack/install.sh first"
export AWS_ENDPOINT_URL="${AWS_ENDPOINT_URL:-$LS_URL}"
exec "$LS_PYTHON" "$here/provision.py" "$@"
