# SAM CLI targets. Included by the main Makefile; also usable alone: `make -f mk/sam.mk validate`.
# Run from the repository root (paths are relative to it).
#
# SAM CLI lives in its own venv (.sam-venv): aws-sam-cli pins aws-sam-translator, which pins a pydantic
# older than the application's, so it must not share .venv.
# `sam build` (no container) needs a python3.13 on PATH that matches the Lambda runtime; we put the
# pyenv 3.13 bin folder first on PATH for it.

# Keep whatever default goal the including Makefile has (restored at the end of this file).
_SAM_MK_PREVIOUS_DEFAULT_GOAL := $(.DEFAULT_GOAL)

SAM_CLI_VERSION ?= 1.170.0
SAM_VENV := .sam-venv
SAM := $(SAM_VENV)/bin/sam
SAM_STAMP := $(SAM_VENV)/.aws-sam-cli-$(SAM_CLI_VERSION).stamp
SAM_REGION ?= us-east-1
SAM_TEMPLATE ?= template.yaml
# template.yaml uses Fn::ForEach: SAM CLI expands AWS::LanguageExtensions locally only when this is set.
SAM_ENV = SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=$(SAM_REGION) SAM_CLI_ENABLE_LANGUAGE_EXTENSIONS=1

# Folder holding a real python3.13 (not a pyenv shim): pyenv's 3.13.x first, then a python3.13 on PATH.
# Override with `make PY313_BIN=/path/to/bin ...`.
ifeq ($(origin PY313_BIN),undefined)
PY313_BIN := $(firstword \
  $(foreach v,3.13 3.13.0,$(addsuffix /bin,$(shell pyenv prefix $(v) 2>/dev/null))) \
  $(shell python3.13 -c 'import os, sys; print(os.path.dirname(os.path.realpath(sys.executable)))' 2>/dev/null))
endif
PY313 := $(PY313_BIN)/python3.13

.PHONY: sam-venv validate build

sam-venv: $(SAM_STAMP)

$(SAM_STAMP):
	@test -n "$(PY313_BIN)" && test -x "$(PY313)" || { \
	  echo "python3.13 not found: install it (pyenv install 3.13) or pass PY313_BIN=/dir/with/python3.13" >&2; \
	  exit 1; }
	"$(PY313)" -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet --disable-pip-version-check "aws-sam-cli==$(SAM_CLI_VERSION)"
	@rm -f $(SAM_VENV)/.aws-sam-cli-*.stamp
	touch $@

validate: $(SAM_STAMP)
	$(SAM_ENV) $(SAM) validate --lint --template-file $(SAM_TEMPLATE)

build: $(SAM_STAMP)
	@test -x "$(PY313)" || { echo "python3.13 not found (PY313_BIN='$(PY313_BIN)')" >&2; exit 1; }
	PATH="$(PY313_BIN):$$PATH" $(SAM_ENV) $(SAM) build --template-file $(SAM_TEMPLATE)

.DEFAULT_GOAL := $(_SAM_MK_PREVIOUS_DEFAULT_GOAL)
