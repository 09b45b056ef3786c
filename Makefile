# MLPF hyperparameter-optimisation artifact: the map of the pipeline.
#   make benchmark          set up, make data, run every paper method at SCALE (default small)
#   make test               set up and run the test suite
#   make figures            rebuild paper_figures/<scale>/ from the raw logs in results/
.DEFAULT_GOAL := help
SHELL := /bin/bash

SCALE ?= small
METHODS ?= random hyperband asha asha_bo
SEEDS ?= 0 1 2
WORKERS ?= 2
EVALUATOR ?= process
PYTHON ?= python3.11
PYTEST_ARGS ?=
CONFIGS ?=
REPLAY_SEEDS ?= 50
PHYSICS_SEEDS ?= 3
# the learning-curve table on upstream's loss (make lctable builds it; the replays, claim 2's test
# and the claim-1 report read it); the previous loss's table is in results/small/archive/
LCTABLE ?= results/$(SCALE)/lctable.csv

VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PEERS_STAMP := $(VENV)/.peers-installed
RAY_STAMP := $(VENV)/.ray-installed
NEPS_STAMP := $(VENV)/.neps-installed
NPROC := $(shell nproc 2>/dev/null || echo 2)

# Every variable a recipe hands to a shell is checked here, at parse time, on its text as typed
# ($(value V) expands nothing) when it comes from the command line or the environment: a value
# such as '$(shell ...)' or '2; rm ...' stops make with one line before any shell (or make's own
# $(shell)) sees it, even under `make -n`. The defaults in this file are trusted as written.
# PYTHON, PY, VENV and PYTEST_ARGS are the developer's own commands and stay free.
DIGITS := 0 1 2 3 4 5 6 7 8 9
NAME_CHARS := $(DIGITS) a b c d e f g h i j k l m n o p q r s t u v w x y z _
PATH_CHARS := $(NAME_CHARS) A B C D E F G H I J K L M N O P Q R S T U V W X Y Z . / - +
EMPTY :=
SPACE := $(EMPTY) $(EMPTY)
COMMA := ,
# $(call without,CHARS,TEXT): TEXT with every character listed in CHARS removed
without = $(if $(1),$(call without,$(wordlist 2,$(words $(1)),$(1)),$(subst $(firstword $(1)),,$(2))),$(2))
# $(call check,VAR,CHARS,WHAT[,spaces|empty]): if the user set VAR, stop unless its text is
# made of CHARS only (and spaces, with "spaces") and is not empty (unless "empty")
check = $(if $(filter command environment,$(origin $(1))),$(if $(or \
  $(call without,$(2),$(if $(filter spaces,$(4)),$(subst $(SPACE),,$(value $(1))),$(value $(1)))),\
  $(if $(filter empty,$(4))$(strip $(value $(1))),,empty)),$(error $(1) must be $(3))))
$(foreach v,WORKERS REPLAY_SEEDS POWER_SEEDS PHYSICS_SEEDS CLAIM1_SEEDS CLAIM2_SEEDS CLAIM2_CONFIGS NPROC,\
  $(call check,$(v),$(DIGITS),a whole number (digits only)$(COMMA) e.g. $(v)=2))
$(call check,CONFIGS,$(DIGITS),empty or a whole number (digits only),empty)
$(foreach v,SEEDS CLAIM2_LIVE_SEEDS,$(call check,$(v),$(DIGITS),seeds separated by spaces$(COMMA) \
  e.g. $(v)="0 1 2",spaces))
$(foreach v,METHODS POWER_METHODS CLAIM2_METHODS CLAIM2_LIVE_METHODS,$(call check,$(v),$(NAME_CHARS),method \
  names (a-z 0-9 _) separated by spaces$(COMMA) e.g. $(v)="random asha",spaces))
$(foreach v,LCTABLE RELEASE_CLONE,\
  $(call check,$(v),$(PATH_CHARS),a path of letters$(COMMA) digits and . / _ - + (no spaces)))
$(call check,SCALE,$(NAME_CHARS),one of smoke small paper)
ifneq ($(filter-out smoke small paper,$(SCALE))$(words $(SCALE)),1)
$(error SCALE must be one of smoke small paper)
endif
$(call check,EVALUATOR,$(NAME_CHARS),one of process mpi serial ray)
ifneq ($(filter-out process mpi serial ray,$(EVALUATOR))$(words $(EVALUATOR)),1)
$(error EVALUATOR must be one of process mpi serial ray)
endif

.PHONY: help setup peers ray neps test lint lock sums release-check data benchmark claim1 claim2-world claim2 claim2-live claim2-sensitivity speed lctable replay replay-surrogate replay-power scaling figures physics clean distclean

help: ## show this help
	@echo "usage: make TARGET [SCALE=smoke|small|paper] (default SCALE=small)"
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  %-19s %s\n", $$1, $$2}'

setup: $(STAMP) ## create .venv (Python 3.11) and install requirements.txt

$(STAMP): requirements.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (set PYTHON=...)"; exit 2; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

peers: $(PEERS_STAMP) ## install the Syne Tune peers' packages (requirements-peers.txt) into .venv

$(PEERS_STAMP): requirements-peers.txt $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-peers.txt
	$(PY) -c "import syne_tune.optimizer.baselines, syne_tune.backend.simulator_backend.simulator_backend"
	touch $@

ray: $(RAY_STAMP) ## install Ray Tune (requirements-ray.txt) into .venv: the ray evaluator and the ray_* peers

# 8 s and 420 MB on the 2-core machine (ray 2.60.0 with pyarrow): small enough for make test
$(RAY_STAMP): requirements-ray.txt $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-ray.txt
	$(PY) -c "import ray.tune, ray.tune.search.optuna, ray.tune.schedulers"
	touch $@

neps: $(NEPS_STAMP) ## install NePS 0.17.0 (requirements-neps.txt, --no-deps) into .venv: the neps_priorband peer

$(NEPS_STAMP): requirements-neps.txt $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-neps.txt
	$(PY) -c "import neps; neps.algorithms.priorband"
	touch $@

test: setup $(PEERS_STAMP) $(RAY_STAMP) $(NEPS_STAMP) data/smoke/.complete ## run the test suite on generated smoke events (slow and MPI tests included; PYTEST_ARGS="-m 'not slow'" skips them)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup ## ruff
	$(VENV)/bin/ruff check .

data: data/$(SCALE)/.complete ## generate train/val/test events for SCALE (only when missing)

data/%/.complete: | $(STAMP)
	$(PY) -m mlpf.data.prepare --scale $* --workers '$(NPROC)'
	touch $@

benchmark: setup data ## run the searches for SCALE: METHODS, SEEDS, WORKERS, EVALUATOR=process|mpi
	$(PY) -m experiments.campaign --backend live --scale $(SCALE) --methods '$(METHODS)' \
	  --seeds '$(SEEDS)' --workers '$(WORKERS)' --evaluator '$(EVALUATOR)'

CLAIM1_SEEDS ?= 5
claim1: setup data ## claim-1 references (default, hand-set lr, 4 x max_t, the study's best) x CLAIM1_SEEDS: results/SCALE/claim1/ (resumable), then their report
	$(PY) -m experiments.claim1 --scale $(SCALE) --seeds '$(CLAIM1_SEEDS)' --workers '$(WORKERS)'
	$(PY) -m analysis.claim1 --scale $(SCALE) --table '$(LCTABLE)'

lctable: setup data ## train CONFIGS sampled configurations + the default to max_t on upstream's loss: LCTABLE (resumable)
	$(PY) -m experiments.lctable --scale $(SCALE) --workers '$(WORKERS)' --out '$(LCTABLE)' \
	  $(if $(CONFIGS),--configs '$(CONFIGS)')

REPLAY_SEED_LIST = $(shell seq 0 $$(( $(REPLAY_SEEDS) - 1 )))
replay: setup $(PEERS_STAMP) $(NEPS_STAMP) ## validate the surrogate of LCTABLE, replay every method and peer x REPLAY_SEEDS on it (simulated time), then their figures
	$(PY) -m experiments.surrogate --scale $(SCALE) --table '$(LCTABLE)'
	$(PY) -m experiments.campaign --backend replay --scale $(SCALE) --table '$(LCTABLE)' \
	  --seeds "$(REPLAY_SEED_LIST)" --processes '$(NPROC)' $(REUSE_CLAIM2)
	$(PY) -m analysis.replay --scale $(SCALE) --min-seeds '$(REPLAY_SEEDS)'

POWER_SEEDS ?= 200
POWER_SEED_LIST = $(shell seq 0 $$(( $(POWER_SEEDS) - 1 )))
POWER_METHODS = default random hyperband asha asha_bo
replay-power: setup ## claim 2 with more seeds: the paper's four methods and the default x POWER_SEEDS (200) on LCTABLE, then the pre-registered test (analysis/preregistration.md)
	$(PY) -m experiments.campaign --backend replay --scale $(SCALE) --table '$(LCTABLE)' \
	  --methods '$(POWER_METHODS)' --seeds "$(POWER_SEED_LIST)" \
	  --processes '$(NPROC)' --out results/$(SCALE)/replay_power $(REUSE_CLAIM2)
	$(PY) -m analysis.replay --scale $(SCALE) --min-seeds '$(POWER_SEEDS)' \
	  --methods '$(subst $(SPACE),$(COMMA),$(strip $(POWER_METHODS)))' \
	  --results results/$(SCALE)/replay_power --out paper_figures/$(SCALE)/replay_power
	$(PY) -m analysis.claim2 --per-seed paper_figures/$(SCALE)/replay_power/per_seed.csv

CLAIM2_METHODS = default random hyperband asha asha_bo asha_gp asha_tpe epoch1 epoch4 bohb \
  syne_bohb neps_priorband
CLAIM2_SEEDS ?= 200
# The world of the test (analysis/preregistration.md): the whole table once it is complete
# (1,024 sampled configurations); CLAIM2_CONFIGS=512 runs it on configurations 0..512, the
# pre-registered fallback while the table is not complete. The budget is always 32 median full
# trainings of configurations 1..512 (pre-registered), whatever the world.
CLAIM2_CONFIGS ?= 1024
CLAIM2_BUDGET_FIRST := 512
CLAIM2_DIR = $(dir $(LCTABLE))claim2
CLAIM2_WORLD = $(CLAIM2_DIR)/lctable.csv
# configurations 0..512 alone: what the budget is read from (live runs need no more)
CLAIM2_BUDGET_WORLD = $(CLAIM2_DIR)/first512/lctable.csv
CLAIM2_BUDGET_WORLD_CMD = $(PY) -m experiments.lctable --scale $(SCALE) --out '$(LCTABLE)' \
	    --world '$(CLAIM2_BUDGET_WORLD)' --first $(CLAIM2_BUDGET_FIRST)
CLAIM2_BUDGET_CMD = $(PY) -m experiments.table --scale $(SCALE) --table '$(CLAIM2_BUDGET_WORLD)' \
	    --replay-budget 32 --first $(CLAIM2_BUDGET_FIRST)
# searches make claim2 already replayed on the same table, lookup, budget and settings are
# copied, not replayed again (experiments.campaign --reuse)
REUSE_CLAIM2 = $(if $(wildcard $(CLAIM2_DIR)/replay),--reuse '$(CLAIM2_DIR)/replay')
# ... and on the surrogate: make claim2-sensitivity's other world
REUSE_CLAIM2_SURROGATE = $(if $(wildcard $(CLAIM2_DIR)/claim2-world-surrogate),\
  --reuse '$(CLAIM2_DIR)/claim2-world-surrogate')
claim2-world: setup ## the world of the pre-registered claim-2 test: LCTABLE whole once complete, else its configurations 0..CLAIM2_CONFIGS (CLAIM2_WORLD), its surrogate, and configurations 0..512 for the budget
	$(CLAIM2_BUDGET_WORLD_CMD)
	$(PY) -m experiments.lctable --scale $(SCALE) --out '$(LCTABLE)' --world '$(CLAIM2_WORLD)' \
	  --first '$(CLAIM2_CONFIGS)'
	$(PY) -m experiments.surrogate --scale $(SCALE) --table '$(CLAIM2_WORLD)'

claim2: claim2-world $(PEERS_STAMP) $(NEPS_STAMP) ## the pre-registered claim-2 test (analysis/preregistration.md) on its world: CLAIM2_METHODS x 200 seeds (2.9 core-hours measured: 1 h 27 min on 2 cores), then its verdict
	$(PY) -m experiments.campaign --backend replay --scale $(SCALE) --table '$(CLAIM2_WORLD)' \
	  --methods '$(CLAIM2_METHODS)' --seeds "$$(seq -s ' ' 0 $$(( $(CLAIM2_SEEDS) - 1 )))" \
	  --device-budget "$$($(CLAIM2_BUDGET_CMD))" --processes '$(NPROC)' --out $(CLAIM2_DIR)/replay
	$(PY) -m analysis.replay --scale $(SCALE) --min-seeds '$(CLAIM2_SEEDS)' \
	  --methods '$(subst $(SPACE),$(COMMA),$(strip $(CLAIM2_METHODS)))' \
	  --results $(CLAIM2_DIR)/replay --live $(dir $(LCTABLE)) --out paper_figures/$(SCALE)/claim2
	$(PY) -m analysis.claim2 --per-seed paper_figures/$(SCALE)/claim2/per_seed.csv

CLAIM2_LIVE_METHODS ?= random hyperband asha asha_bo asha_gp asha_tpe default
CLAIM2_LIVE_SEEDS ?= 0 1 2 3 4
speed: setup data ## time configurations of LCTABLE on this machine against the table (its CPU seconds per table CPU second for the same training; about 3 min at small): results/SCALE/speed/, which analysis.replay reads to compare live searches with replays at the same work
	$(PY) -m experiments.speed --scale $(SCALE) --table '$(LCTABLE)' --workers '$(WORKERS)'

claim2-live: data ## claim 2's live searches (analysis/preregistration.md): CLAIM2_LIVE_METHODS (the paper's four, ASHA + BO in its three flavours, and the default) x CLAIM2_LIVE_SEEDS on upstream's loss at half the replay budget (worker CPU-seconds, a hard cut; no wall cap; needs configurations 0..512 of LCTABLE), logs next to LCTABLE (35 searches of 1,350 worker CPU-s each on 2 workers, plus start-ups; resumable); first `make speed`'s timing of this machine against the table
	$(CLAIM2_BUDGET_WORLD_CMD)
	$(PY) -m experiments.speed --scale $(SCALE) --table '$(LCTABLE)' --workers '$(WORKERS)'
	$(PY) -m experiments.campaign --backend live --scale $(SCALE) --methods '$(CLAIM2_LIVE_METHODS)' \
	  --seeds '$(CLAIM2_LIVE_SEEDS)' --workers '$(WORKERS)' --evaluator '$(EVALUATOR)' \
	  --device-budget "$$($(CLAIM2_BUDGET_CMD) --live)" --time-budget 0 \
	  --out $(dir $(LCTABLE))

claim2-sensitivity: claim2-world ## claim 2's verdict with each top-1 % configuration left out, in the other world, with 8 workers (a few core-h at 200 seeds: experiments/sensitivity.py)
	$(PY) -m experiments.sensitivity --scale $(SCALE) --table '$(CLAIM2_WORLD)' \
	  --seeds "$$(seq -s ' ' 0 $$(( $(CLAIM2_SEEDS) - 1 )))" --processes '$(NPROC)' \
	  --out $(CLAIM2_DIR)/sensitivity
	$(PY) -m analysis.sensitivity --scale $(SCALE) --manifest $(CLAIM2_DIR)/sensitivity/scenarios.json \
	  --out paper_figures/$(SCALE)/claim2_sensitivity --processes '$(NPROC)'

replay-surrogate: setup $(PEERS_STAMP) $(NEPS_STAMP) ## after make replay: the same replays on the surrogate (accepted or not), and whether both rank the methods alike
	$(PY) -m experiments.surrogate --scale $(SCALE) --table '$(LCTABLE)'
	$(PY) -m experiments.campaign --backend replay --scale $(SCALE) --table '$(LCTABLE)' \
	  --lookup surrogate --seeds "$(REPLAY_SEED_LIST)" --processes '$(NPROC)' \
	  --out results/$(SCALE)/replay_surrogate $(REUSE_CLAIM2_SURROGATE)
	$(PY) -m analysis.replay --scale $(SCALE) --min-seeds '$(REPLAY_SEEDS)' \
	  --results results/$(SCALE)/replay_surrogate --out paper_figures/$(SCALE)/replay_surrogate \
	  --compare paper_figures/$(SCALE)/replay

# decision times are measured once (results/SCALE/scaling/decision_times.csv, kept: delete it
# to measure again, about 5 minutes); the simulations depend on them only through their curve
scaling: setup ## the central manager from 2 to 1,024 simulated workers and decentralised search on LCTABLE (simulated, minutes): paper_figures/SCALE/scaling/
	$(PY) -m experiments.scaling all --scale $(SCALE) --table '$(LCTABLE)' --processes '$(NPROC)'
	$(PY) -m analysis.scaling --scale $(SCALE)

LIVE_LOGS = $(wildcard results/$(SCALE)/*/seed*/metadata.json)
figures: setup ## rebuild paper_figures/SCALE/ from the live searches' raw logs in results/SCALE/ (says so when there are none yet)
	$(if $(LIVE_LOGS),$(PY) -m analysis.make_figures --scale $(SCALE) \
	  $(if $(wildcard $(LCTABLE)),--table "$(LCTABLE)"),\
	  @echo "figures: no live searches under results/$(SCALE)/ yet (make claim2-live, or make benchmark):" \
	  "nothing to rebuild; the replays' reports come with make claim2, make replay and make replay-power")

physics: setup data ## retrain the default and each method's incumbent (PHYSICS_SEEDS seeds, test split); physics table and figure
	$(PY) -m analysis.physics --scale $(SCALE) --seeds '$(PHYSICS_SEEDS)' --jobs '$(NPROC)'

lock: setup ## rewrite requirements.lock: every package of .venv with its sha256 (needs the package index)
	$(PY) release/lock.py

sums: ## rewrite SHA256SUMS: the sha256 of every shipped log, table and figure (results/, paper_figures/), as committed
	@git diff --quiet HEAD -- results paper_figures || { echo "sums: results/ or paper_figures/ differ from HEAD: commit them first" >&2; exit 1; }
	git ls-files -z results paper_figures | LC_ALL=C sort -z | xargs -0 sha256sum > SHA256SUMS

RELEASE_CLONE ?= /tmp/mlpf-hpo-release-check
release-check: setup $(PEERS_STAMP) $(RAY_STAMP) $(NEPS_STAMP) ## before a tag (RELEASE.md): clean tree, SHA256SUMS and requirements.lock agree, CI on a clean clone (about 20 min)
	@test -z "$$(git status --porcelain)" || { echo "release-check: the tree is not clean (git status)" >&2; exit 1; }
	@git ls-files -z results paper_figures | LC_ALL=C sort -z | xargs -0 sha256sum | cmp -s - SHA256SUMS || \
	  { echo "release-check: SHA256SUMS is not the sha256 of the shipped files: make sums" >&2; exit 1; }
	$(PY) release/lock.py --check
	$(PY) -m pytest -q -p no:cacheprovider tests/test_release.py
	rm -rf "$(RELEASE_CLONE)" && git clone -q . "$(RELEASE_CLONE)"
	cd "$(RELEASE_CLONE)" && CI=true .ci/run
	@echo "release-check: ok ($$(git -C "$(RELEASE_CLONE)" rev-parse --short HEAD), the commit cloned)"
	rm -rf "$(RELEASE_CLONE)"

clean: ## remove generated data, runs, caches (keeps .venv and the shipped logs)
	rm -rf data runs benchmarks/out .pytest_cache .ruff_cache
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +

distclean: clean ## also remove .venv
	rm -rf $(VENV)
