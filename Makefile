# `make run`: set up .venv and run the main job; `make test`: set up .venv and run the tests; `make quick`: all but
# the slow ones.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export OUTDATED_IGNORE := 1

.PHONY: run test quick lint clean docs docs-serve docs-figures

# torch and torchvision are left unpinned so pip resolves a matching pair from the registry
# (a CPU-only torch wheel without a torchvision build would break `import torchvision`).
$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,docs]'
	$(BIN)/python -c "import torchvision.ops, lightning, testbed.cli.lightning"
	touch $@

run: $(VENV)/.installed
	$(BIN)/testbed sweep -c configs/sweeps/quickstart.yaml --workers 2
	$(BIN)/testbed report runs/sweeps/quickstart
	@echo "figures: runs/sweeps/quickstart/figures/   report: runs/sweeps/quickstart/report.md"

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

# The edit-and-check loop: every test but those marked slow (make test still runs them).
quick: $(VENV)/.installed
	$(BIN)/python -m pytest -q -m "not slow"

# The documentation site (mkdocs.yml): built strictly, as tests/test_docs.py builds it.
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

docs-serve: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

# The report page's figures are the quickstart's, as `testbed report` draws them (the sweep resumes: done runs are
# skipped, so after `make run` this costs the report only).
docs-figures: $(VENV)/.installed
	$(BIN)/testbed sweep -c configs/sweeps/quickstart.yaml --workers 2
	$(BIN)/testbed report runs/sweeps/quickstart
	mkdir -p docs/figures/quickstart
	cp runs/sweeps/quickstart/figures/*.png docs/figures/quickstart/

lint: $(VENV)/.installed
	$(BIN)/ruff check .

clean:
	rm -rf runs .pytest_cache site
