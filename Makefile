# Everything runs inside .venv, created and filled on first use: on a fresh machine
# `make run` and `make test` need nothing else.
PYTHON_SYS ?= python3.11
VENV       := .venv
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.installed
SCALE      ?= cpu
EXP        ?= ablation_pos_embed
ARGS       ?=

.PHONY: help install run test bench table2 table5 table6 table7 table8 sweep report clean

help:  ## list the targets
	@grep -E '^[a-z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the project (editable) with test extras

run: $(STAMP)  ## the main job: train cvt_tiny on the bundled digits (CPU, offline)
	$(PY) -m cvt_lab $(ARGS)

test: $(STAMP)  ## the whole test suite
	$(PY) -m pytest

bench: $(STAMP)  ## performance benchmark vs transformers' CvT (writes experiments/bench/)
	$(PY) -m cvt_lab.bench --out experiments/bench/bench_cpu.json $(ARGS)

table2: $(STAMP)  ## Table 2/3/7 complexity: params and MACs beside the paper's
	$(PY) -m cvt_lab.complexity --table2 experiments/reports/table2.md

clean:  ## remove run outputs (keeps .venv)
	rm -rf outputs multirun
