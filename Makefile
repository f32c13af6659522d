# Everything runs inside .venv, created and filled on first use: on a fresh machine
# `make run` and `make test` need nothing else.
PYTHON_SYS ?= python3.11
VENV       := .venv
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.installed
# The torch the suite is tested with (pyproject.toml states the range users may have).
TORCH_PIN  ?= torch==2.14.1 torchvision==0.29.1
SCALE      ?= cpu
EXP        ?= ablation_pos_embed
ARGS       ?=

.PHONY: help install run test test-fast lint bench table2 table4 sweep report reports clean

help:  ## list the targets
	@grep -E '^[a-z0-9_%-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]' $(TORCH_PIN)
	touch $(STAMP)

# The one step that needs the package index: everything after it (make run, make test) runs offline.
install: $(STAMP)  ## create .venv and install the project (editable) with the dev extra (tests, ruff)

run: $(STAMP)  ## the main job: train cvt_tiny on the bundled digits (CPU, offline)
	$(PY) -m cvt_lab $(ARGS)

# Most tests run one single-threaded job (many in a subprocess): two processes keep both cores busy.
TEST_WORKERS ?= 2

test: $(STAMP)  ## the whole suite, what CI runs: tests/unit, integration and e2e (TEST_WORKERS=2 processes; 0: in this one)
	$(PY) -m pytest -n $(TEST_WORKERS)

test-fast: $(STAMP)  ## the edit loop: tests/unit and tests/integration, no tests/e2e (CLI subprocesses, DDP, sweeps, wheel)
	$(PY) -m pytest -n $(TEST_WORKERS) tests/unit tests/integration

lint: $(STAMP)  ## ruff check (configured in pyproject.toml) over src/, tests/ and benchmarks/
	$(PY) -m ruff check src tests benchmarks

bench: $(STAMP)  ## benchmarks: CvT-13 vs transformers' CvT, and the default run's accuracy/time (experiments/bench/)
	$(PY) -m benchmarks.cvt_bench --compile --out experiments/bench/bench_cpu.json $(ARGS)
	$(PY) benchmarks/default_run.py --out experiments/bench/default_run.json

table2: $(STAMP)  ## Table 2/3/7 complexity: params and MACs beside the paper's
	$(PY) -m cvt_lab.complexity --table2 experiments/reports/table2.md

clean:  ## remove run outputs (keeps .venv)
	rm -rf outputs multirun

# Paper tables as sweeps (conf/experiment/) followed by their report (experiments/reports/<table>.{md,csv,png}).
# SCALE=cpu (default: cvt_tiny on digits, minutes) or SCALE=paper (CvT-13 at 224 on ImageNet: add
# ARGS='data.root=/data/imagenet launcher=gpus'). Re-running skips finished jobs, resumes interrupted ones.
SWEEPS     ?= outputs/sweeps
REPORTS    ?= experiments/reports
# The experiment that runs a table: the one whose config says `experiment.table: <table>`.
experiment_of = $(basename $(notdir $(shell grep -l '^  table: $(1)$$' conf/experiment/*.yaml)))

# tableN (not .PHONY: a pattern rule): Tables 3, 5, 6, 7, 8; Table 4 has its own target below.
# A table with a pre-registration (experiments/prereg/<table>.yaml at cpu scale, <table>_<scale>.yaml else)
# runs exactly the registered sweep, each job recording the file's sha256 (its confirmation run).
table%: $(STAMP)  ## tableN (3, 5-8): the sweep of the experiment for Table N (its pre-registration, if any), then its report
	@if [ -z "$(call experiment_of,$@)" ]; then \
	  echo "error: no experiment runs $@ (none of conf/experiment/*.yaml has experiment.table: $@)" >&2; exit 2; fi
	@registered=$$($(PY) -m cvt_lab.prereg $@ --scale $(SCALE)) || exit 2; \
	  $(MAKE) --no-print-directory sweep EXP=$(call experiment_of,$@) PREREG_ARGS="$$registered"

# Table 4 fine-tunes a pre-trained checkpoint: CKPT=PATH (required at paper scale: ours, the released .pth,
# or transformers'; add ARGS='model=cvt13 ...' to match it). At CPU scale without CKPT, a plain cvt_tiny
# run on digits into $(PRETRAIN) provides it (made once, reused afterwards).
PRETRAIN   ?= outputs/pretrain_cpu
CKPT       ?=

table4: $(STAMP)  ## Table 4 (transfer from CKPT=PATH; CPU: pre-trains cvt_tiny on digits first): sweep + report
	@if [ "$(SCALE)" != cpu ] && [ -z "$(CKPT)" ]; then \
	  echo "error: make table4 SCALE=$(SCALE) needs the pre-trained weights: CKPT=PATH (e.g. CvT-13-384x384-IN-22k.pth) and ARGS='model=cvt13 launcher=gpus'" >&2; exit 2; fi
	@if [ -z "$(CKPT)" ] && ! grep -qs '"status": "finished"' $(PRETRAIN)/results.json; then \
	  echo "pre-training cvt_tiny on digits into $(PRETRAIN) (the checkpoint Table 4 fine-tunes at CPU scale)"; \
	  $(PY) -m cvt_lab hydra.run.dir=$(PRETRAIN) trainer.enable_progress_bar=false || exit 1; fi
	$(MAKE) --no-print-directory sweep EXP=$(call experiment_of,$@) \
	  ARGS="checkpoint=$(abspath $(or $(CKPT),$(PRETRAIN)/checkpoints/last.ckpt)) $(ARGS)"

PREREG_ARGS ?=

sweep: $(STAMP)  ## any experiment: make sweep EXP=name [SCALE=paper] [ARGS='launcher=cpu_parallel ...']
	$(PY) -m cvt_lab experiment=$(EXP) scale=$(SCALE) $(PREREG_ARGS) $(ARGS) -m
	$(PY) -m cvt_lab.report $(EXP) --scale $(SCALE) --sweeps $(SWEEPS) --out $(REPORTS)

report: $(STAMP)  ## the report of an experiment's sweep so far: make report EXP=name [SCALE=paper]
	$(PY) -m cvt_lab.report $(EXP) --scale $(SCALE) --sweeps $(SWEEPS) --out $(REPORTS)

# Holm corrects across the family of Tables 5-8: once every table has run, their reports are made again so that
# each counts the others' final p (a table not run yet counts as p = 1 until then). The handwriting tables are a
# family of their own (htr_ablations), made again where their sweeps exist.
ABLATION_TABLES ?= table5 table6 table7 table8
HTR_TABLES ?= htr_pos_embed htr_conv_embed htr_kv_stride

reports: $(STAMP)  ## the reports of Tables 5-8 again, and of the handwriting tables whose sweeps exist
	@for t in $(ABLATION_TABLES); do \
	  $(PY) -m cvt_lab.report $(SWEEPS)/$${t}_$(SCALE) --out $(REPORTS) >/dev/null || exit $$?; \
	  echo "wrote $(REPORTS)/$$t.md"; done
	@for t in $(HTR_TABLES); do \
	  if [ -d $(SWEEPS)/$${t}_$(SCALE) ]; then \
	    $(PY) -m cvt_lab.report $(SWEEPS)/$${t}_$(SCALE) --out $(REPORTS) >/dev/null || exit $$?; \
	    echo "wrote $(REPORTS)/$$t.md"; fi; done

# Handwriting (cvt_lab.htr): the CvT ablations on lines of handwritten digits, each sweep <= 10 minutes on 2 cores at
# CPU scale, then its report on test CER in experiments/reports/<table>.{md,csv,png} (<table>_<scale>.* for other
# scales), as Tables 5-8's: with a pre-registration (experiments/prereg/<table>.yaml) the target runs exactly the
# registered sweep and the report judges it (confirmatory); without one the sweep runs as configured (exploratory).
HTR_ABLATIONS = htr_ablation_pos_embed htr_ablation_conv_embed htr_ablation_kv_stride
htr_table = $(patsubst htr_ablation_%,htr_%,$(1))

.PHONY: htr $(HTR_ABLATIONS)
htr: $(STAMP)  ## the default line recognizer: CvT + CTC on digit_lines (CPU, offline), test CER / WER, samples.png
	$(PY) -m cvt_lab experiment=htr $(ARGS)

$(HTR_ABLATIONS): $(STAMP)  ## htr_ablation_{pos_embed,conv_embed,kv_stride}: the handwriting sweep (its pre-registration, if any), then its report
	@registered=$$($(PY) -m cvt_lab.prereg $(call htr_table,$@) --scale $(SCALE)) || exit 2; \
	  $(MAKE) --no-print-directory sweep EXP=$@ PREREG_ARGS="$$registered"
