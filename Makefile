# Segment → Qualtrics destination. `make run` starts the local stack; `make test` checks everything.
# Every target sets itself up: .venv (python3.13, the Lambda runtime) and .sam-venv (SAM CLI) are
# created on first use from requirements-dev.txt and mk/sam.mk.

.DEFAULT_GOAL := help
SHELL := /bin/bash

include mk/sam.mk

VENV := .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.requirements-dev.stamp
# The app venv uses the Lambda runtime's Python (3.13) when it is there, else python3.
APP_PYTHON := $(if $(wildcard $(PY313)),$(PY313),python3)

.PHONY: help venv run demo test unit integration lint check bench clean

help:
	@echo "make run     start the local stack (webhook on http://127.0.0.1:3000/segment)"
	@echo "make demo    send the sample Segment events to the running stack and show what landed"
	@echo "make test    lint, sam validate --lint, sam build, unit and integration tests"
	@echo "make check   lint + sam validate --lint + sam build only"
	@echo "make bench   benchmarks (printed figures)"
	@echo "make check-config [CONFIG=f]    check a subscriptions file, list every problem"
	@echo "make preview EVENT=f.json       what each subscription would do with an event (no AWS, no network)"
	@echo "make import-segment FILE=f      convert a Segment Public API subscriptions export"
	@echo "make dlq ARGS=\"list\"            dead letters with reasons (local stack, or --stack NAME)"
	@echo "make deploy [ENV=prod]          check the subscriptions file, then sam build + sam deploy"
	@echo "make smoke STACK=NAME           one signed test event to a deployed webhook"
	@echo "make check-qualtrics STACK=NAME GET /API/v3/whoami with the deployed credentials"

venv: $(VENV_STAMP)

$(VENV_STAMP): requirements-dev.txt layers/common/requirements.txt
	test -x $(PY) || $(APP_PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

run: $(VENV_STAMP)
	$(PY) -m local.stack

demo: $(VENV_STAMP)
	$(PY) -m local.demo

lint: $(VENV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/cfn-lint template.yaml

check: lint validate build

unit: $(VENV_STAMP)
	$(PY) -m pytest tests/unit -q

integration: $(VENV_STAMP)
	$(PY) -m pytest tests/integration -q

test: check $(VENV_STAMP)
	$(PY) -m pytest -q

bench: $(VENV_STAMP)
	$(PY) bench/cold_start.py
	$(PY) bench/ingest.py
	$(PY) bench/api_calls.py

fuzz: $(VENV_STAMP)
	INGEST_FUZZ_EXAMPLES=20000 $(PY) -m pytest tests/unit/test_ingest_fuzz.py -q

clean:
	rm -rf $(VENV) $(SAM_VENV) .aws-sam .pytest_cache .ruff_cache .hypothesis .local-stack

# After VENV_STAMP and PY: deploy, smoke, check-qualtrics, dlq; check-config, preview, import-segment.
include mk/ops.mk
include mk/config.mk
