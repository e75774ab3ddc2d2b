"""One worker process spending a shared DynamoDB budget as fast as the limiter lets it (test_rate_limit.py).

    python -m tests.integration.rate_limit_hammer <endpoint> <table> <test name> <limit> <window> <seconds>

Prints one JSON line: the clock of every admission this process got (what the guarantee is about).
"""

from __future__ import annotations

import json
import sys
import time

import boto3
from segment_qualtrics.adapters.dynamodb_rate_limit import DynamoRateLimitStore
from segment_qualtrics.delivery.rate_limit import RateLimiter


class Recording(DynamoRateLimitStore):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.admitted: list[float] = []

    def take(self, name, budget, now):
        wait = super().take(name, budget, now)
        if wait == 0.0:
            self.admitted.append(now)
        return wait


def main(endpoint: str, table: str, name: str, limit: str, window: str, seconds: str) -> None:
    dynamodb = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")
    store = Recording(dynamodb, table, prefix=f"rate-limit-test#{name}#")
    # The budget under test is the contact writes class; the brand is left unlimited here.
    limiter = RateLimiter(store, {"contact_writes": int(limit)}, float(window))
    errors = []
    limiter.on_error = errors.append
    deadline = time.time() + float(seconds)
    while time.time() < deadline:
        limiter.before("create_contact")
    print(json.dumps({"admitted": store.admitted, "errors": [repr(e) for e in errors]}))


if __name__ == "__main__":
    main(*sys.argv[1:7])
