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

# The performance targets' figures into results/benchmark_$(MACHINE).json
# (MACHINE=gpu on a GPU; about 16 minutes on 2 CPU cores), the fast.py and
# best.py runs' metrics beside it, then best.py's costliest operations.
MACHINE ?= cpu
BENCH_RUNS := runs/benchmark_$(MACHINE)
METRICS_SUFFIX := $(if $(filter cpu,$(MACHINE)),,_$(MACHINE))
benchmark: setup
	rm -rf $(BENCH_RUNS)
	$(BIN)/python scripts/benchmark.py --suite $(DATA_FLAG) --workdir=$(BENCH_RUNS) \
	    --out=$(RESULTS)/benchmark_$(MACHINE).json
	cp $(BENCH_RUNS)/fast/metrics.jsonl $(RESULTS)/metrics_fast$(METRICS_SUFFIX).jsonl
	cp $(BENCH_RUNS)/best/metrics.jsonl $(RESULTS)/metrics_best$(METRICS_SUFFIX).jsonl
	$(BIN)/python scripts/benchmark.py --config=configs/best.py --steps_only \
	    --profile_ops=12 --out=$(RESULTS)/benchmark_$(MACHINE)_best_ops.json

clean:
	rm -rf $(VENV) runs
