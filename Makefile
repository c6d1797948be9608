# `make test` and `make demo` set everything up on a fresh machine: system packages
# (as root), a .venv, torch 2.13.0 (CPU) first, then the pinned set.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.edgegen-installed

.PHONY: setup test test-fast demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt scripts/install_system_deps.sh
	bash scripts/install_system_deps.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c requirements/constraints.txt -e '.[build,onnx,coreml,report,rpc,gpu,test]'
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q -rs

test-fast: setup
	$(PY) -m pytest -q -rs -m "not slow"

demo: setup
	$(VENV)/bin/edgegen demo --out demo.png

bench: setup
	$(PY) benchmarks/denoiser_step.py --model tiny-sd
	$(PY) benchmarks/denoiser_step.py --model digits

clean:
	rm -rf $(VENV) .cache demo.png
