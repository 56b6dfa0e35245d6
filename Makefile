# Benchmarks side by side with runc, crun and podman (root; not part of the test suite).
# Results are appended to bench/results/YYYY-MM-DD.md; see docs/benchmarks.md.
PYTHON ?= python3

.PHONY: bench test

bench:
	$(PYTHON) bench/run_all.py

test:
	$(PYTHON) -m pytest tests -q
