#!/usr/bin/env bash
# Runs `cargo lambda ARGS...` from a venv that this script installs on first use (from PyPI, pinned
# and hash-checked in requirements-cargo-lambda.txt), so CI needs nothing installed by hand.
#   scripts/cargo-lambda.sh build --release --x86-64 --output-format zip -p worker
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${LABELQ_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/labelq}"
venv="$cache/cargo-lambda/venv"
requirements="$here/requirements-cargo-lambda.txt"
stamp="$venv/.labelq-stamp"
want="$(sha256sum < "$requirements" | cut -d' ' -f1)"

if [[ ! -x "$venv/bin/cargo-lambda" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    echo "cargo-lambda.sh: installing cargo-lambda and zig into $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps \
        -r "$requirements" >&2
    printf '%s\n' "$want" > "$stamp"
fi

# zig is found as `python3 -m ziglang`, from the venv's python.
PATH="$venv/bin:$PATH" exec "$venv/bin/cargo-lambda" lambda "$@"
