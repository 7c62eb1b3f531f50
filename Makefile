# The two commands: `make demo` and `make test`. Both install what they need first (scripts/bootstrap.sh).
SHELL := /bin/bash
export PATH := $(CURDIR)/.tools/py/bin:$(HOME)/.cargo/bin:$(PATH)
# One profile for everything `make` runs (demo, tests, bench): the dependencies are built once.
BIN := target/release/credit-worker
DEV := target/release/credit-dev

.PHONY: setup build demo test lint unit stack-up stack-down train bench

setup:
	bash scripts/bootstrap.sh

# The test targets too: with them the dependencies get one feature set (dev-dependencies add
# features), so `make test` after `make demo` builds nothing again.
build: setup
	cargo build --release --locked --bins --tests

## Bring the local stack up, run the worker, replay the data set, print a summary.
demo: build
	bash scripts/demo.sh

## Formatting, lints, unit + component + end-to-end tests against the local stack (release build).
test: build lint
	CREDIT_WORKER_BIN=$(CURDIR)/$(BIN) bash scripts/stack.sh up
	bash scripts/run-tests.sh

lint: setup
	cargo fmt --all --check
	cargo clippy --release --locked --all-targets -- -D warnings

## Throughput, latency, CPU and memory end to end on the local stack, then the hot stages (release build).
bench: setup
	bash scripts/bench.sh

## Pure unit tests only (no stack).
unit: setup
	cargo test --release --locked --lib

stack-up: build
	bash scripts/stack.sh up

stack-down:
	-[ -f .stack/run/demo-worker.pid ] && kill $$(cat .stack/run/demo-worker.pid) 2>/dev/null; rm -f .stack/run/demo-worker.pid
	bash scripts/stack.sh down

## Re-train the model (deterministic: the same data and seed give the same model file).
train: build
	$(DEV) train
