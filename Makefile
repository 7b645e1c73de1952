# ironbook — two commands: `make demo` runs the main job, `make test` runs the checks.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Every dependency, runtime and dev, pinned with its hashes: `make lock` writes it.
LOCK := requirements.lock
LOCK_TOOLS := .lock-tools
UV_VERSION := 0.13.9

.PHONY: demo test lint typecheck unit bench clean monitoring-tools backup-tools lock

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Exactly the locked files (pip refuses any whose hash differs), then ironbook
# itself without resolving anything more.
$(STAMP): $(PY) pyproject.toml $(LOCK)
	$(PY) -m pip install --quiet --require-hashes -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

# Rewrite the lock from pyproject.toml for every platform and Python >= 3.11
# (uv's universal resolution). Pins already in the lock are kept when they
# still fit; `make lock UPGRADE=1` moves everything to the newest releases.
lock:
	$(PYTHON) -m venv $(LOCK_TOOLS)
	$(LOCK_TOOLS)/bin/python -m pip install --quiet uv==$(UV_VERSION)
	$(LOCK_TOOLS)/bin/uv pip compile pyproject.toml --extra dev --universal \
		--python-version 3.11 --generate-hashes --custom-compile-command 'make lock' \
		--quiet $(if $(UPGRADE),--upgrade) -o $(LOCK)

# promtool, prometheus, alertmanager, node_exporter, and chromium with
# chromium-driver (the ops console test): installed from Debian when
# missing and root, else the command that does it is printed (docs/alerting.md).
monitoring-tools:
	sh deploy/install-monitoring.sh

# rclone, for backups to an rclone remote: from Debian when missing and root,
# else the command that does it is printed (docs/backup.md).
backup-tools:
	sh deploy/install-rclone.sh

demo: $(STAMP) monitoring-tools
	$(VENV)/bin/ironbook demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/lint-imports

typecheck: $(STAMP)
	$(VENV)/bin/mypy

test: monitoring-tools backup-tools lint typecheck
	$(VENV)/bin/pytest -n 2 --timeout 600

bench: $(STAMP)
	$(VENV)/bin/ironbook bench core

clean:
	rm -rf $(VENV) $(LOCK_TOOLS) .mypy_cache .pytest_cache .ruff_cache .import_linter_cache
