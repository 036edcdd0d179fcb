.PHONY: run demo test bench setup

# Set up .venv (idempotent) and run the scheduler on an embedded SQLite store with the
# example jobs (Ctrl-C stops it; state lives in ./.cronloop/).
run: setup
	.venv/bin/cronloop up

# The seed-000 demo: out-of-order status, then the sync loop that fixes it.
demo: setup
	.venv/bin/cronloop demo

# Set up .venv (idempotent) and run the whole test suite (ruff, mypy strict, pytest).
test:
	scripts/test.sh

# Run every benchmark and write docs/benchmarks.md.
bench: setup
	.venv/bin/python -m bench

setup:
	scripts/bootstrap.sh
