# Two commands: `make run` (set up, train, evaluate, outliers) and `make test`.
# Offline data: `make run DATA_DIR=/path/to/idx-files`.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= configs/default.py
WORKDIR ?= runs/default
DATA_DIR ?=
DATASET ?=
DATA_FLAG := $(if $(DATA_DIR),--config.data_dir=$(abspath $(DATA_DIR)),) \
             $(if $(DATASET),--config.dataset=$(DATASET),)
RESULTS := results

.PHONY: setup setup-benchmark test test-fast run label-errors benchmark clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

# The whole suite (what CI runs; under 5 minutes on 2 CPU cores, on two
# pytest-xdist workers: pyproject.toml), then the unit tests alone (under a
# minute).
test: setup
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

run: setup
	$(BIN)/python scripts/train.py --config=$(CONFIG) --workdir=$(WORKDIR) $(DATA_FLAG)
	$(BIN)/python scripts/evaluate.py --workdir=$(WORKDIR)
	$(BIN)/python scripts/outliers.py --workdir=$(WORKDIR)
	mkdir -p $(RESULTS)
	rm -f $(RESULTS)/*.png
	cp $(WORKDIR)/report.md $(WORKDIR)/outliers.json $(WORKDIR)/eval.json \
	   $(WORKDIR)/metrics.jsonl $(WORKDIR)/*.png $(RESULTS)/
	@echo "report: $(WORKDIR)/report.md (copied to $(RESULTS)/)"

# Label-error candidates of both splits from out-of-sample probabilities
# (minutes each on 2 CPU cores; docs/label_errors.md).
label-errors: setup
	$(BIN)/python scripts/label_errors.py --workdir=$(WORKDIR) --split=test $(DATA_FLAG)
	$(BIN)/python scripts/label_errors.py --workdir=$(WORKDIR) --split=train $(DATA_FLAG)

# Benchmarks need PyTorch (CPU) for the peers; `make run` and `make test` never do.
setup-benchmark: $(VENV)/.installed-benchmark

$(VENV)/.installed-benchmark: $(VENV)/.installed requirements-benchmark.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-benchmark.txt
	touch $@

MACHINE ?= cpu
benchmark: setup-benchmark
	$(BIN)/python benchmarks/benchmark.py --suite $(DATA_FLAG) \
	    --out=$(RESULTS)/benchmark_$(MACHINE).json

clean:
	rm -rf $(VENV) runs
