# Two commands: `make run` (set up, train, evaluate, outliers) and `make test`.
# Offline data: `make run DATA_DIR=/path/to/idx-files`.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= configs/default.py
WORKDIR ?= runs/default
DATA_DIR ?=
DATA_FLAG := $(if $(DATA_DIR),--config.data_dir=$(abspath $(DATA_DIR)),)
RESULTS := results

.PHONY: setup test run benchmark clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

test: setup
	$(BIN)/python -m pytest

run: setup
	$(BIN)/python scripts/train.py --config=$(CONFIG) --workdir=$(WORKDIR) $(DATA_FLAG)
	$(BIN)/python scripts/evaluate.py --workdir=$(WORKDIR)
	$(BIN)/python scripts/outliers.py --workdir=$(WORKDIR)
	mkdir -p $(RESULTS)
	cp $(WORKDIR)/report.md $(WORKDIR)/outliers.json $(WORKDIR)/eval.json \
	   $(WORKDIR)/metrics.jsonl $(WORKDIR)/*.png $(RESULTS)/
	@echo "report: $(WORKDIR)/report.md (copied to $(RESULTS)/)"

# Speed figures into results/benchmark_$(MACHINE)*.json (MACHINE=gpu on a GPU).
MACHINE ?= cpu
benchmark: setup
	$(BIN)/python scripts/benchmark.py --config=configs/fast.py $(DATA_FLAG) \
	    --out=$(RESULTS)/benchmark_$(MACHINE).json
	$(BIN)/python scripts/benchmark.py --config=configs/default.py $(DATA_FLAG) \
	    --out=$(RESULTS)/benchmark_$(MACHINE)_default.json
	$(BIN)/python scripts/benchmark.py --config=configs/cnn.py --steps_only \
	    --out=$(RESULTS)/benchmark_$(MACHINE)_cnn.json
	$(BIN)/python scripts/benchmark.py --config=configs/best.py --steps_only \
	    --profile_ops=12 --out=$(RESULTS)/benchmark_$(MACHINE)_best_ops.json

clean:
	rm -rf $(VENV) runs
