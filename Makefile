# The virtualenv; scripts/setup.sh honours LISA_VENV the same way.
VENV ?= $(or $(LISA_VENV),.venv)

.PHONY: setup test demo

setup:
	LISA_VENV="$(abspath $(VENV))" bash scripts/setup.sh

test: setup
	$(VENV)/bin/python -m pytest -q tests

demo: setup
	$(VENV)/bin/lisa-demo --output outputs/demo
