# Two commands: `make demo` and `make test`. Both create .venv and install on first use.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The CPU build of torch goes in first so nothing later pulls the CUDA build and its GB of packages.
# Elsewhere: make TORCH=torch TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
PIP_QUIET := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
PYTEST_ARGS ?=

.PHONY: install demo test lint bench-quick clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) $(PIP_QUIET)
	$(PY) -m pip install -q -e ".[dev]" $(PIP_QUIET)
	touch $(STAMP)

# A fresh run each time (stage 1 is reused from runs/demo/sft_model when it is there).
demo: $(STAMP)
	$(VENV)/bin/rayscale train tracking.run_dir=runs/demo checkpoint.resume=never

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check rayscale tests benchmarks

bench-quick: $(STAMP)
	for b in benchmarks/*.py; do $(PY) $$b --quick || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache
