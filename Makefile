# Two commands: `make run` (the service, embedded default) and `make test` (the whole suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A CPU build of torch lies on dev/CI machines; an unpinned torch would pull GBs of CUDA.
TORCH ?= torch==2.13.0

.PHONY: run test venv test-deps lint bench-api clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml harness/pyproject.toml
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ./harness -e '.[test]'
	touch $@

venv: $(VENV)/.installed

run: venv
	$(BIN)/kernelwatch up

test-deps: venv
	bash scripts/ensure-services.sh
	bash scripts/ensure-browser.sh
	bash scripts/ensure-compose.sh

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy kernelwatch harness/kernelwatch_harness

test: test-deps lint
	$(BIN)/pytest -q -ra

clean:
	rm -rf $(VENV)
