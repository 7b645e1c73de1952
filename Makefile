# ironbook — two commands: `make demo` runs the main job, `make test` runs the checks.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: demo test lint typecheck unit bench clean monitoring-tools backup-tools

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet -e .
	touch $@

$(DEV_STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@ $(STAMP)

# promtool, prometheus, alertmanager, node_exporter: installed from Debian when
# missing and root, else the command that does it is printed (docs/alerting.md).
monitoring-tools:
	sh deploy/install-monitoring.sh

# rclone, for backups to an rclone remote: from Debian when missing and root,
# else the command that does it is printed (docs/backup.md).
backup-tools:
	sh deploy/install-rclone.sh

demo: $(STAMP) monitoring-tools
	$(VENV)/bin/ironbook demo

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/lint-imports

typecheck: $(DEV_STAMP)
	$(VENV)/bin/mypy

test: monitoring-tools backup-tools lint typecheck
	$(VENV)/bin/pytest -n 2 --timeout 600

bench: $(STAMP)
	$(VENV)/bin/ironbook bench core

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .import_linter_cache
