# Operations targets. Included by the main Makefile (after .venv's variables: VENV_STAMP, PY); also usable alone,
# with an existing .venv: `make -f mk/sam.mk -f mk/ops.mk deploy`. Run from the repository root.
#
#   make dlq ARGS="list"                         dead letters of the local stack (`make run`), with their reasons
#   make dlq ARGS="list --stack NAME --json"     ... of a deployed stack
#   make dlq ARGS="redrive --code qualtrics_rejected --stack NAME"
#   make dlq ARGS="purge --older-than 7d --stack NAME"
#   make deploy [ENV=prod] [CONFIG=file]         check the subscriptions file the deploy packages (as the functions
#                                                will see it, with ENV's parameter_overrides), then sam build + sam
#                                                deploy --config-env ENV (samconfig.toml); stops on any problem
#   make deploy-check [ENV=prod] [CONFIG=file]   that check alone (CONFIG: the local file DESTINATION_CONFIG stands for)
#   make smoke URL=https://.../segment SECRET=... one signed test event to the webhook (or STACK=NAME)
#   make check-qualtrics [STACK=NAME | SECRET_ARN=arn]   GET /API/v3/whoami with the Qualtrics credentials
# REGION=r is the deployed stack's region (default: the secret ARN's, the AWS configuration's, samconfig.toml's).

PY ?= .venv/bin/python
# samconfig.toml environment. Not `ENV ?=`: some shells export ENV (the sh startup file) into every command.
ENV := $(if $(filter command line,$(origin ENV)),$(ENV),default)
ARGS ?=

.PHONY: dlq deploy deploy-check smoke check-qualtrics

# Recipes start with @: `--json` output must be JSON alone on stdout. SAMCONFIG_ENV: the region falls back to
# samconfig.toml's for that environment when neither REGION (--region) nor the AWS configuration gives one.
# The package is installed in .venv (`pip install -e .`): `python -m segment_qualtrics` is the one CLI.
OPS_ENV = SAMCONFIG_ENV=$(ENV)
CLI = $(PY) -m segment_qualtrics

dlq: $(VENV_STAMP)
	@$(OPS_ENV) $(CLI) dlq $(ARGS) $(if $(REGION),--region "$(REGION)")

# The check runs first: a file with problems never reaches sam build, nor the stack.
deploy: deploy-check build
	SAM_CLI_TELEMETRY=0 $(SAM) deploy --config-env $(ENV)
	@stack=$$(awk -F'"' '/^\[/ {on = ($$0 == "[$(ENV).global.parameters]")} on && /^stack_name/ {print $$2}' \
	  samconfig.toml); echo; echo "Deployed $${stack:-the stack} ($(ENV)). After the first deploy, set the secrets"; \
	  echo "(README: Operating in production), then check:"; \
	  echo "  make check-qualtrics STACK=$${stack:-NAME}"; echo "  make smoke STACK=$${stack:-NAME}"

deploy-check: $(VENV_STAMP)
	@grep -q '^\[$(ENV)\.deploy\.parameters\]' samconfig.toml || { \
	  echo "samconfig.toml has no [$(ENV).deploy.parameters]: ENV must name one of its environments" >&2; exit 1; }
	@$(PY) -m local.deploy_check --config-env $(ENV) $(if $(CONFIG),--config "$(CONFIG)")

# The secret reaches the script through the environment and the line is not echoed: make prints recipes.
smoke: $(VENV_STAMP)
	@SEGMENT_SHARED_SECRET="$(SECRET)" $(OPS_ENV) $(CLI) smoke \
	  $(if $(URL),--url "$(URL)") $(if $(STACK),--stack "$(STACK)") $(if $(EVENT),--event "$(EVENT)") \
	  $(if $(REGION),--region "$(REGION)")

check-qualtrics: $(VENV_STAMP)
	@$(OPS_ENV) $(CLI) check-qualtrics \
	  $(if $(SECRET_ARN),--secret-arn "$(SECRET_ARN)") $(if $(STACK),--stack "$(STACK)") $(if $(REGION),--region "$(REGION)")
