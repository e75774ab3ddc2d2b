"""Worker of every action queue: ACTION_SLUG (set per function by template.yaml) names the action it delivers."""

import os

from aws_lambda_powertools.utilities.typing import LambdaContext
from segment_qualtrics.runtime.observability import logger, metrics
from segment_qualtrics.runtime.startup import log_startup_failure
from segment_qualtrics.runtime.worker_app import WorkerApp

try:
    app = WorkerApp.from_environment()   # once per cold start: config, Qualtrics client, AWS clients
except Exception as exc:
    # One clear line, then Lambda's init error: each invocation fails and its messages stay queued.
    log_startup_failure(exc, os.environ.get("ACTION_SLUG") or "worker")
    raise


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.handle(event, context)
