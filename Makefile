# `make test` and `make demo` set everything up on a fresh machine: system packages
# (as root), a .venv, torch 2.13.0 (CPU) first, then the pinned set.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.edgegen-installed

.PHONY: setup test test-fast demo bench clean native native-aarch64 native-asan-test

setup: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt scripts/install_system_deps.sh
	bash scripts/install_system_deps.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c requirements/constraints.txt -e '.[build,onnx,coreml,report,rpc,gpu,test]'
	touch $(STAMP)

test: setup native native-aarch64 native-asan-test
	$(PY) -m pytest -q -rs --durations=25

test-fast: setup
	$(PY) -m pytest -q -rs -m "not slow"

demo: setup
	$(VENV)/bin/edgegen demo --out demo.png

bench: setup
	$(PY) benchmarks/denoiser_step.py --model tiny-sd
	$(PY) benchmarks/denoiser_step.py --model digits

# the C runtime (runtimes/native): library, edgegen-run and C tests; cross-built for aarch64 phones/boards
native:
	$(MAKE) -C runtimes/native

native-aarch64:
	$(MAKE) -C runtimes/native aarch64

# the C tests under AddressSanitizer + UBSan (the fuzz of the artifact checks runs on this build in
# tests/runtimes/native/test_core_native.py)
native-asan-test: setup
	$(MAKE) -C runtimes/native asan
	runtimes/native/build-asan/tests/test_core_json
	runtimes/native/build-asan/tests/test_core_units
	EDGEGEN_NATIVE_TESTS=$(CURDIR)/runtimes/native/build-asan/tests $(PY) -m pytest -q -rs tests/runtimes/native -k text

clean:
	$(MAKE) -C runtimes/native clean
	rm -rf $(VENV) .cache demo.png
