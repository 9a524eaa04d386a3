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

# The same command line as `make rust-tests`, so the test binary built there is the one run here.
cargo test --workspace --features labelq-e2e/localstack --test e2e -- localstack::
"$root/tests/lambda/invoke.sh"
