#!/usr/bin/env bash
# The AWS path against LocalStack: installs and starts LocalStack (host mode, no Docker), runs the
# Rust LocalStack suite (one CloudFormation stack of infra/storage.yaml per test), then invokes
# each Lambda's release bootstrap through cargo-lambda's emulator. Stops only the LocalStack it
# started, whatever happens.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/localstack/install.sh"
env_file="$(mktemp)"
trap '"$root/localstack/stop.sh" || true; rm -f "$env_file"' EXIT
"$root/localstack/start.sh" >"$env_file"
# shellcheck disable=SC1090
source "$env_file"

# `--workspace` so features unify as in `make rust-tests` and the SDK crates built there are reused.
cargo test --workspace --features labelq-e2e/localstack --test aws
"$root/tests/lambda/invoke.sh"
