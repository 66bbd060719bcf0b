# The two set-up commands of the README. Each creates .venv on first use and reinstalls when pyproject.toml changes.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-slow test-zoo lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --disable-pip-version-check -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --disable-pip-version-check -q -e '.[test]'
	touch $@

# The main job: ResNet-20 on the embedded digits with the default recipe; the run folder lands in runs/.
demo: $(VENV)/.installed
	$(BIN)/convzoo train

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest

# The slow tests, which the default run leaves out because faster tests cover the same code.
test-slow: $(VENV)/.installed-test
	$(BIN)/python -m pytest -m slow

# Export and compilation checked for every registered model, not only each family's sample: hours on a CPU.
test-zoo: $(VENV)/.installed-test
	$(BIN)/python -m pytest -m zoo

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/bench_resnet.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
