# The two commands of the README: `make run` (the embedded default) and `make test`.
# Both build .venv from the pinned requirements.txt on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# OLMo's own implementation, the reference of the OLMo-native loader's tests (see the file)
REFERENCE := .olmo-reference/.installed

.PHONY: run test test-fast docs lint clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

run: $(STAMP)
	$(BIN)/snakemake --profile profiles/default
	$(BIN)/snakemake --profile profiles/default --report results/provenance.html

$(REFERENCE): tests/olmo-reference.txt $(STAMP)
	rm -rf .olmo-reference
	$(BIN)/pip install --quiet --no-deps --target .olmo-reference -r tests/olmo-reference.txt
	touch $@

test: $(STAMP) $(REFERENCE)
	$(BIN)/pytest

# the edit-test loop: the unit tests without the slow ones (references in subprocesses, clusters)
test-fast: $(STAMP)
	$(BIN)/pytest tests/unit -m "not slow" -q

# the documentation site, warnings (a broken link, a missing image) as errors
docs: $(STAMP)
	$(BIN)/sphinx-build -W --keep-going -q -b html docs docs/_build/html
	@echo "open docs/_build/html/index.html"

lint: $(STAMP)
	$(BIN)/ruff check pipeline scripts tests
	$(BIN)/snakemake --lint

clean:
	rm -rf docs/_build results/data results/checkpoints results/extract results/reduce results/summary.zarr \
	       results/fits results/figures results/logs results/benchmarks results/report.html \
	       results/provenance.html results/update \
	       .snakemake
