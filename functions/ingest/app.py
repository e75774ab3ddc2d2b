"""Ingest: POST /segment. Authenticates, validates and routes Segment events onto the action queues."""

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from segment_qualtrics.runtime.ingest_app import IngestApp, IngestStartupFailure
from segment_qualtrics.runtime.observability import logger, metrics

try:
    app = IngestApp.from_environment()   # once per cold start: config, secret provider, SQS client
except Exception as exc:  # noqa: BLE001 - logged once; every request then gets our JSON 5xx, not API Gateway's
    app = IngestStartupFailure(exc)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.handle(event)
