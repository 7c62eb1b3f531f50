# The two commands: `make demo` and `make test`. Both install what they need first (scripts/bootstrap.sh).
SHELL := /bin/bash
export PATH := $(CURDIR)/.tools/py/bin:$(HOME)/.cargo/bin:$(PATH)
BIN := target/debug/credit-worker
DEV := target/debug/credit-dev

.PHONY: setup build demo test lint unit stack-up stack-down train bench

setup:
	bash scripts/bootstrap.sh

build: setup
	cargo build --bins --locked

## Bring the local stack up, run the worker, replay the data set, print a summary.
demo: build
	bash scripts/demo.sh

## Formatting, lints, unit + component + end-to-end tests against the local stack (the crash test runs the release worker).
test: build lint
	cargo build --release --locked --bin credit-worker
	CREDIT_WORKER_BIN=$(CURDIR)/$(BIN) bash scripts/stack.sh up
	bash scripts/run-tests.sh

lint: setup
	cargo fmt --all --check
	cargo clippy --locked --all-targets -- -D warnings

## Throughput, latency, CPU and memory end to end on the local stack, then the hot stages (release build).
bench: setup
	bash scripts/bench.sh

## Pure unit tests only (no stack).
unit: setup
	cargo test --locked --lib

stack-up: build
	bash scripts/stack.sh up

stack-down:
	-[ -f .stack/run/demo-worker.pid ] && kill $$(cat .stack/run/demo-worker.pid) 2>/dev/null; rm -f .stack/run/demo-worker.pid
	bash scripts/stack.sh down

## Re-train the model (deterministic: the same data and seed give the same model file).
train: build
	$(DEV) train
