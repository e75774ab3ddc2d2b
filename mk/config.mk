# The subscriptions file: check it, dry-run events through it, import it from Segment.
# Included by the main Makefile (after PY and VENV_STAMP are set); also usable alone:
# `make -f mk/config.mk check-config`. Run from the repository root. No AWS, no network.
#
#   make check-config [CONFIG=file] [VARS="NAME=VALUE ..."]
#   make preview EVENT=path.json [CONFIG=file] [VARS="NAME=VALUE ..."] [DATACENTER=iad1] [JSON=1]
#   make import-segment FILE=export.json [OUT=subscriptions.json]
#
# CONFIG defaults to $DESTINATION_CONFIG, else the packaged default_subscriptions.json. VARS sets
# environment variables for the file's ${NAME} references (the real environment is used too).

_CONFIG_MK_PREVIOUS_DEFAULT_GOAL := $(.DEFAULT_GOAL)

PY ?= .venv/bin/python
CONFIG_CLI = $(PY) -m segment_qualtrics
CONFIG_ENV_ARGS = $(foreach pair,$(VARS),--env $(pair))

.PHONY: check-config preview import-segment

check-config: $(VENV_STAMP)
	@$(CONFIG_CLI) check-config $(CONFIG) $(CONFIG_ENV_ARGS)

preview: $(VENV_STAMP)
	@test -n "$(EVENT)" || { echo "usage: make preview EVENT=path.json [CONFIG=file] [VARS=\"NAME=VALUE ...\"] [DATACENTER=iad1] [JSON=1]" >&2; exit 2; }
	@$(CONFIG_CLI) preview $(EVENT) $(if $(CONFIG),--config $(CONFIG)) $(CONFIG_ENV_ARGS) \
	  $(if $(DATACENTER),--datacenter $(DATACENTER)) $(if $(JSON),--json)

import-segment: $(VENV_STAMP)
	@test -n "$(FILE)" || { echo "usage: make import-segment FILE=export.json [OUT=subscriptions.json]" >&2; exit 2; }
	@$(CONFIG_CLI) import-segment $(FILE) $(if $(OUT),-o $(OUT))

.DEFAULT_GOAL := $(_CONFIG_MK_PREVIOUS_DEFAULT_GOAL)
