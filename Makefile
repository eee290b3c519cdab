# Two entry points: `make demo` (score sample images end to end) and `make test`.
PY ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
MODEL ?= llava-hf/llava-interleave-qwen-0.5b-hf
DEMO_DIR ?= demo_output

.PHONY: venv demo test

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -c constraints.txt -e ".[test]"
	touch $@

venv: $(BIN)/.installed

# MODEL=<hub id> (default), MODEL=/path/to/local/model/dir, or MODEL=smoke (random weights
# built on the spot for machines without hub access: its scores mean nothing).
demo: venv
	$(BIN)/python jobs/demo.py --model "$(MODEL)" --workdir "$(DEMO_DIR)"

test: venv
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q
