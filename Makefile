# The three commands people and CI run. Each does its own set-up first.
PY := .venv/bin/python
export PYTHONPATH := platform:.

.PHONY: venv backbones check test demo format clean

venv:
	@bash scripts/setup.sh

backbones: venv
	$(PY) -m jobs.prepare_backbones

check: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: venv
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

test: venv backbones
	$(PY) -m pytest -q --durations=15 tests

demo: venv backbones
	$(PY) -m jobs.demo

clean:
	rm -rf .pytest_cache .ruff_cache build *.egg-info
