# Two commands set everything up on a fresh machine:
#   make demo   creates .venv, installs riskwatch with the embedded extras, runs the demo
#   make test   the same environment plus test tools (and Debian's prometheus and
#               prometheus-alertmanager, installed when missing), runs the whole test suite
VENV ?= .venv
PYTHON ?= python3
DEMO_ARGS ?=

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[embedded,dev]'
	touch $@

.PHONY: install system-deps demo test bench
install: $(VENV)/.installed

system-deps:
	scripts/install-system-deps.sh

demo: $(VENV)/.installed
	$(VENV)/bin/riskwatch demo $(DEMO_ARGS)

test: $(VENV)/.installed system-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest

bench: $(VENV)/.installed
	$(VENV)/bin/riskwatch bench pipeline
	$(VENV)/bin/riskwatch bench state
	$(VENV)/bin/riskwatch bench detect
