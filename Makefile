# MOELoRA reproduction harness. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BOOT ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build of torch for the tests and the embedded default; environment.yml pins the same version
# (its CUDA build) for GPU users. tests/test_packaging.py keeps the two pins equal.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
ARTIFACTS ?= artifacts
DATA_DIR := $(ARTIFACTS)/medsynth
BASE_DIR := $(ARTIFACTS)/base/medsynth-tiny
RESULTS ?= outputs
REPORTS ?= reports
PYTEST_ARGS ?=
# experiments.reproduce: jobs side by side, one thread each (JOBS=1: one grid multirun at a time)
JOBS ?= 2
# extra Hydra overrides for every job of reproduce-mini, e.g. OVERRIDES=lr_protocol=dev
OVERRIDES ?=
# opt-in lr per method (analysis/lr_select.py): the methods that train (every conf/method/*.yaml
# with an adapter), and the lr_scale grid
LR_METHODS ?= $(shell grep -L '^adapter: null' conf/method/*.yaml | xargs -n1 basename | sed 's/\.yaml$$//' | paste -sd, -)
LR_GRID ?= 10,15,25,35,50
# make decode-noise: which runs are decoded again, and how many times each
NOISE_EXPERIMENT ?= table2
NOISE_METHODS ?= lora_full moelora_dense
DRAWS ?= 4
# make publish-demo: the run folder of `make demo` (python run.py)
DEMO_RUN ?= $(RESULTS)/default/moelora_dense/seed=42

help: ## list the targets: first what a user needs, then the research and maintenance ones
	@echo "Usage: make <target>   (the first call creates .venv; README.md explains each)"
	@echo
	@grep -hE '^[a-zA-Z_%-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'
	@echo
	@echo "Research and maintenance:"
	@grep -hE '^[a-zA-Z_%-]+:.*?##@ ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?##@ "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

env: $(STAMP) ## create .venv and install the project (CPU torch)

data: $(STAMP) ##@ build MedSynth-8 (cached)
	$(PY) -m moelora.data.medsynth data --out $(DATA_DIR)

base: data ##@ train the tokenizer and pre-train the tiny base model (cached)
	$(PY) -m moelora.data.medsynth base --data $(DATA_DIR) --out $(BASE_DIR)

demo: base ## the main job on the embedded default: python run.py, then its scores
	$(PY) run.py

test: $(STAMP) ## the fast test suite (no slow, no GPU tests; prints the slowest tests)
	$(PY) -m pytest -m "not slow and not gpu" -q --durations=15 $(PYTEST_ARGS)

test-all: $(STAMP) ##@ every CPU test, slow ones included
	$(PY) -m pytest -m "not gpu" -q $(PYTEST_ARGS)

test-gpu: $(STAMP) ##@ GPU checks (needs CUDA)
	$(PY) -m pytest -m gpu -q $(PYTEST_ARGS)

lint: $(STAMP) ##@ ruff lint and format check (what CI runs)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP) ##@ ruff format and the safe lint fixes
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

golden: $(STAMP) ##@ regenerate tests/golden/losses.json (review the diff, say why in the commit)
	$(PY) -m tests.make_golden

bench: $(STAMP) ##@ efficiency benchmarks (ratios measured in one run): the fused layer, eager vs compiled steps, then serving mixed-task traffic
	$(PY) experiments/bench_moelora.py
	$(PY) experiments/bench_compile.py --out $(REPORTS)/bench_compile.json
	$(PY) experiments/bench_serving.py

bench-serving: base ##@ serving mixed-task traffic on the bench's tiny Llama and on the MedSynth-8 base
	$(PY) experiments/bench_serving.py --out $(REPORTS)/bench_serving_tiny.json
	$(PY) experiments/bench_serving.py --base medsynth --out $(REPORTS)/bench_serving_medsynth.json

gpu-check: $(STAMP) ##@ one-shot GPU check (memory plan vs peak, MOELoRA vs LoRA, generation): $(REPORTS)/gpu_check
	$(PY) experiments/gpu_check.py --out $(REPORTS)/gpu_check $(if $(TINY),--tiny,)

memory-plan: $(STAMP) ##@ docs/results/memory-plan.md: the memory plan of ChatGLM-6B, Qwen2.5-7B, Llama-3-8B on 24/40/80 GB cards
	$(PY) -m moelora.engine.memory --table --out docs/results/memory-plan.md

smoke: base ##@ one trainer=smoke run of the default method
	$(PY) run.py trainer=smoke logger=none

collect: $(STAMP) ##@ gather every results.json under $(RESULTS) into $(REPORTS)/results.csv
	$(PY) -m analysis.collect --root $(RESULTS) --out $(REPORTS)

tables: collect ## Tables 2 and 3 (Markdown, LaTeX, CSV) under $(REPORTS)
	$(PY) -m analysis.tables --reports $(REPORTS)

figures: collect ## Figures 4-6 (PNG, PDF) under $(REPORTS)
	$(PY) -m analysis.figures --reports $(REPORTS)

claims: collect ##@ the paper's claims tested on the runs: $(REPORTS)/claims_*.md (verdict per claim)
	$(PY) -m analysis.claims --reports $(REPORTS)

report: tables figures claims ## $(REPORTS)/REPORT.md: environment, sha, claims, every table and figure
	$(PY) -m analysis.report --reports $(REPORTS)

publish-demo: $(STAMP) ## docs/results/demo.md and README's demo table from the make demo run DEMO_RUN (review, then commit)
	$(PY) -m analysis.demo --run $(DEMO_RUN)

publish: $(STAMP) ## write docs/results/medsynth-8.md, its data and figures from the runs under $(RESULTS) (review, then commit)
	$(PY) -m analysis.publish --root $(RESULTS) --out docs/results

sweep-%: base ## run one experiment grid, e.g. make sweep-table2
	$(PY) run.py experiment=$*

efficiency: $(STAMP) ##@ Fig. 5 measured under control: rebuild the fig5_efficiency runs under $(RESULTS), time them in one process
	$(PY) -m experiments.efficiency --results $(RESULTS)

reproduce-smoke: base ##@ every experiment grid with trainer=smoke and 3 seeds, JOBS at a time, then the report
	$(PY) -m experiments.reproduce --smoke --jobs $(JOBS) --results $(RESULTS)/smoke
	$(MAKE) report RESULTS=$(RESULTS)/smoke REPORTS=$(REPORTS)/smoke

reproduce-mini: base ## every experiment grid at full MedSynth-8 length, JOBS at a time (hours on 2 cores; experiments/README.md)
	$(PY) -m experiments.reproduce --jobs $(JOBS) --results $(RESULTS) $(OVERRIDES)
	$(MAKE) report

lr-sweep: base ##@ opt-in: every method of LR_METHODS at every lr_scale of LR_GRID, seed 42, scored on the dev split (hours)
	$(PY) run.py -m experiment_name=lr_dev method=$(LR_METHODS) trainer.lr_scale=$(LR_GRID) seed=42 data.files.test=dev.jsonl logger=none

lr-select: $(STAMP) ##@ opt-in: each method's best dev lr: $(REPORTS)/lr_select.md and conf/lr_protocol/dev.yaml (then OVERRIDES=lr_protocol=dev)
	$(PY) -m analysis.lr_select --root $(RESULTS)/lr_dev --out $(REPORTS) --protocol conf/lr_protocol/dev.yaml

decode-noise: $(STAMP) ##@ the decoding's share of a row's spread: NOISE_METHODS runs of NOISE_EXPERIMENT decoded DRAWS times each
	$(PY) -m analysis.decode_noise --root $(RESULTS)/$(NOISE_EXPERIMENT) --methods $(NOISE_METHODS) --draws $(DRAWS) --out $(REPORTS)

clean: ## remove outputs and reports (keeps artifacts and .venv)
	rm -rf outputs multirun $(REPORTS) analysis/out

.PHONY: help env data base demo test test-all test-gpu lint format golden bench bench-serving gpu-check memory-plan efficiency smoke collect tables figures claims report publish publish-demo reproduce-smoke reproduce-mini lr-sweep lr-select decode-noise clean
