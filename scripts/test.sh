#!/usr/bin/env bash
# Sets everything up and runs the whole test suite: lint, type check, tests.
# Fails on the first failing step. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh

echo "==> ruff"
.venv/bin/ruff check src tests bench
.venv/bin/ruff format --check src tests bench

echo "==> mypy (strict: src, tests, bench)"
.venv/bin/mypy

echo "==> pytest"
.venv/bin/pytest "$@"
