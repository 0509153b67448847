# Set-up and the main commands. `make run` and `make test` create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run evaluate test test-unit bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## Main job on the embedded default: the default sweep (Ray Tune, local Ray, simulator).
## A new sweep name per run, so a second `make run` does not collide with the first.
run: install
	RAY_AUTH_MODE=$${RAY_AUTH_MODE:-disabled} $(PY) -m lwmecps_rllib.tune \
		--name default-$$(date +%Y%m%d-%H%M%S) --plot results/sweep.png

## Every baseline and the oracle over the unseen day.
evaluate: install
	$(PY) -m lwmecps_rllib.evaluate --env LWMECPSEnv3 --scenario testbed-4bs --trace b \
		--policy all --output results/evaluate.json --plot results/evaluate.png

## Lint and the whole test suite.
test: install
	$(PY) -m ruff check .
	$(PY) -m pytest -q

## Unit tier only (no Ray).
test-unit: install
	$(PY) -m pytest -q -m "not integration and not k8s"

bench: install
	$(PY) bench/env_step.py

lint: install
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) results .pytest_cache .ruff_cache
