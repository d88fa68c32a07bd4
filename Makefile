# minik8s — `make up` runs a cluster on the embedded store, `make test` runs every tier.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install sysdeps lint typecheck test test-fast test-kernel bench up demo clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# Debian packages the tests need: installed when root and missing (CI runs as root).
sysdeps:
	@missing=""; \
	command -v etcd >/dev/null || missing="$$missing etcd-server"; \
	command -v linux.uml >/dev/null || missing="$$missing user-mode-linux"; \
	command -v modprobe >/dev/null || [ -x /sbin/modprobe ] || missing="$$missing kmod"; \
	command -v ipvsadm >/dev/null || [ -x /sbin/ipvsadm ] || missing="$$missing ipvsadm"; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "not root: cannot install$$missing; the tests that need them will be skipped"; \
	  fi; \
	fi

lint: install
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

typecheck: install
	$(VENV)/bin/mypy

test-fast: install
	$(VENV)/bin/pytest -q tests/unit tests/conformance tests/integration

test-kernel: install sysdeps
	tests/kernel/uml-run.sh -- -q tests/kernel

test: install sysdeps lint typecheck test-fast test-kernel

bench: install sysdeps
	$(PY) -m bench

up: install
	$(VENV)/bin/minik8s up

# The seed's Service path from kubectl apply to curl, in a user-mode-linux guest: a real
# kernel with IPVS, whatever this machine's kernel has (examples/seed_demo.py).
demo: install sysdeps
	@echo 'booting a user-mode-linux guest for the demo (a few seconds)...'
	tests/kernel/uml-run.sh -o -t 300 -c '$(PY) -m examples.seed_demo'

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
