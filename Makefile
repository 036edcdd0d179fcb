.PHONY: run test bench setup

# Set up .venv (idempotent) and run the main job.
run: setup
	.venv/bin/cronloop demo

# Set up .venv (idempotent) and run the whole test suite (ruff, mypy strict, pytest).
test:
	scripts/test.sh

# Run every benchmark and write docs/benchmarks.md.
bench: setup
	.venv/bin/python -m bench

setup:
	scripts/bootstrap.sh
