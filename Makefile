# `make train ARGS="encoder=stacked readout=cell"` and `make test`: both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: train test test-cluster lint docs docs-serve docs-figures setup clean-venv

setup: $(VENV)/.installed

# Re-installs only when the project's dependencies change.
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

train: setup
	$(BIN)/python train.py $(ARGS)

# One worker per core; worksteal balances the long CLI tests (about 2.5 min on 2 cores).
test: setup
	$(BIN)/python -m pytest -n auto --dist worksteal

# The SLURM tests on a one-host cluster (scripts/local_slurm.sh; needs root to install slurm-wlm and
# munge): a 2-task DDP sweep through submitit, and preempted jobs that requeue. The cluster stops
# afterwards, whether they pass or not.
test-cluster: setup
	bash scripts/local_slurm.sh start
	SLURM_CONF=$${SEQAE_SLURM_DIR:-/tmp/seqae-slurm}/slurm.conf $(BIN)/python -m pytest --cluster tests/cluster; \
	status=$$?; bash scripts/local_slurm.sh stop; exit $$status

# The site in docs/, built with --strict: a broken link or API reference fails the build (CI builds it).
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# The tutorial's pictures (docs/images/tutorial-*.png) from a real run; the TensorBoard screenshot
# needs chromium (apt-get install chromium).
docs-figures: setup
	$(BIN)/python scripts/docs_figures.py --out docs/images

docs-serve: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean-venv:
	rm -rf $(VENV)
