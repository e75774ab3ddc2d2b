# Segment → Qualtrics destination. `make run` starts the local stack; `make test` checks everything.
# Every target sets itself up: .venv (python3.13, the Lambda runtime) and .sam-venv (SAM CLI) are
# created on first use from requirements-dev.txt and mk/sam.mk.

.DEFAULT_GOAL := help
SHELL := /bin/bash

include mk/sam.mk

VENV := .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.requirements-dev.stamp
# The app venv uses the Lambda runtime's Python (3.13). Without it, python3 if it is 3.11 or 3.12 (the code runs
# there; Lambda runs 3.13, so deploy-time checks still want 3.13), with a warning; older ones stop with the hint.
APP_PYTHON := $(if $(wildcard $(PY313)),$(PY313),python3)
PY313_HINT := install Python 3.13 (pyenv install 3.13, or your package manager's python3.13) or pass PY313_BIN=/dir

.PHONY: help venv run demo invoke env.json sam test unit integration lint check bench fuzz soak lock clean backfill

help:
	@echo "make run     start the local stack (webhook on http://127.0.0.1:3000/segment)"
	@echo "make demo    send the sample Segment events to the running stack and show what landed"
	@echo "make invoke FUNCTION=IngestFunction EVENT=events/ingest/identify.json   one function on one event, no Docker"
	@echo "make env.json                   env.json for \`sam local invoke --env-vars env.json\` (needs Docker)"
	@echo "make sam ARGS=\"...\"            the SAM CLI of .sam-venv, e.g. ARGS=\"local invoke IngestFunction -e ...\""
	@echo "make test    lint, sam validate --lint, sam build, unit and integration tests"
	@echo "make check   lint + sam validate --lint + sam build only"
	@echo "make bench   benchmarks (printed figures)"
	@echo "make fuzz    the ingest fuzz tests with 20,000 hostile bodies per generator (a few minutes)"
	@echo "make soak    bench/soak.py: 2,000 events with faults and crashes, lost/duplicated counts (ARGS=--help)"
	@echo "make lock    recompile layers/common/requirements.txt (hashed) from requirements.in (ARGS=--upgrade)"
	@echo "make bench-throughput   delivered per minute against Qualtrics' limits, with and without the rate limiter"
	@echo "make bench-cost         AWS cost per million events, from one run through the real handlers"
	@echo "make check-config [CONFIG=f]    check a subscriptions file, list every problem"
	@echo "make preview EVENT=f.json       what each subscription would do with an event (no AWS, no network)"
	@echo "make import-segment FILE=f      convert a Segment Public API subscriptions export"
	@echo "make dlq ARGS=\"list\"            dead letters with reasons (local stack, or --stack NAME)"
	@echo "make deploy [ENV=prod]          check the subscriptions file, then sam build + sam deploy"
	@echo "make smoke STACK=NAME           one signed test event to a deployed webhook"
	@echo "make check-qualtrics STACK=NAME GET /API/v3/whoami with the deployed credentials"
	@echo "make backfill FILE=events.ndjson[.gz] [STACK=NAME] [ARGS=\"...\"]   load past events in bulk (docs/backfill.md)"

venv: $(VENV_STAMP)

$(VENV_STAMP): requirements-dev.txt layers/common/requirements.txt pyproject.toml
	@test -x $(PY) || [ "$(APP_PYTHON)" != python3 ] || python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
	  echo "python3.13 not found and python3 is $$(python3 -V 2>&1 | cut -d' ' -f2), too old: $(PY313_HINT)" >&2; exit 1; }
	@test -x $(PY) || [ "$(APP_PYTHON)" != python3 ] || echo "WARNING: python3.13 not found; .venv uses python3" \
	  "($$(python3 -V 2>&1 | cut -d' ' -f2)). The code and tests run on 3.11+, but Lambda runs 3.13 and" \
	  "\`make build\` needs it: $(PY313_HINT)" >&2
	test -x $(PY) || $(APP_PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes -r layers/common/requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	$(PY) -m pip check --disable-pip-version-check
	touch $@

run: $(VENV_STAMP)
	@$(PY) -m local.stack

demo: $(VENV_STAMP)
	@$(PY) -m local.demo

# The handler's return value on stdout (JSON), its log lines on stderr: `make invoke ... > result.json` works.
invoke: $(VENV_STAMP)
	@test -n "$(FUNCTION)" -a -n "$(EVENT)" || { echo "usage: make invoke FUNCTION=<LogicalId> EVENT=events/<dir>/<file>.json" \
	  "(e.g. FUNCTION=AddContactToXmdFunction EVENT=events/add_contact_to_xmd/identify.json)" >&2; exit 2; }
	@$(PY) -m local.invoke "$(FUNCTION)" "$(EVENT)"

# Function environment for `sam local invoke --env-vars env.json` (Docker), pointed at the host's `make run`.
env.json: $(VENV_STAMP)
	@$(PY) -m local.env_json > $@.tmp || { rm -f $@.tmp; exit 1; }
	@mv $@.tmp $@ && echo "wrote env.json (see docs/local-stack.md)" >&2

sam: $(SAM_STAMP)
	@$(SAM_ENV) $(SAM) $(ARGS)

lint: $(VENV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
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
	$(PY) bench/linear_inputs.py --max-kib 512

fuzz: $(VENV_STAMP)
	INGEST_FUZZ_EXAMPLES=20000 $(PY) -m pytest tests/unit/test_ingest_fuzz.py -q

soak: $(VENV_STAMP)
	$(PY) bench/soak.py $(ARGS)

# The layer's lock: every transitive dependency of requirements.in pinned, with the hashes of all its files.
lock: $(VENV_STAMP)
	cd layers/common && ../../$(VENV)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
	  --no-emit-index-url --no-emit-find-links $(ARGS) --output-file requirements.txt requirements.in

# Throughput against Qualtrics' limits and AWS cost per million events (docs/throughput.md), a few minutes each.
.PHONY: bench-throughput bench-cost
bench-throughput: $(VENV_STAMP)
	$(PY) bench/throughput.py $(ARGS)

bench-cost: $(VENV_STAMP)
	$(PY) bench/cost.py $(ARGS)

# Past events in bulk (docs/backfill.md). Without STACK: the local stack of `make run`, with its subscriptions file,
# variables and sandbox workflow URL. With STACK: pass the deployed subscriptions file and variables in ARGS.
BACKFILL_LOCAL_ARGS = --config local/subscriptions.json --env QUALTRICS_DIRECTORY_ID=POOL_SANDBOX \
  --env QUALTRICS_MAILING_LIST_ID=CG_SANDBOX --contacts-mailing-list CG_SANDBOX \
  --env "QUALTRICS_WORKFLOW_URL=$$($(PY) -c 'import json; print(json.load(open(".local-stack/state.json"))["sandboxUrl"])' \
  2>/dev/null)/inbound-event/v1/events/json/triggers?urlTokenId=local-demo"

backfill: $(VENV_STAMP)
	@test -n "$(FILE)" || { echo "usage: make backfill FILE=events.ndjson[.gz] [STACK=NAME] [ARGS=\"--dry-run ...\"]" >&2; exit 2; }
	@$(PY) -m segment_qualtrics backfill $(FILE) \
	  $(if $(STACK),--stack $(STACK),$(BACKFILL_LOCAL_ARGS)) $(ARGS)

clean:
	rm -rf $(VENV) $(SAM_VENV) .aws-sam .pytest_cache .ruff_cache .mypy_cache .import_linter_cache .hypothesis \
	  .local-stack build layers/common/*.egg-info

# After VENV_STAMP and PY: deploy, smoke, check-qualtrics, dlq; check-config, preview, import-segment.
include mk/ops.mk
include mk/config.mk
