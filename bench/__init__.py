"""cronloop benchmarks: ``python -m bench [SUITE ...] [--quick]`` (see bench/harness.py)."""
