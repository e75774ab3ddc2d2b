"""Logger and metrics, created once per process. Correlation id = Segment messageId.

Never log a token, a secret, a signature or an event body: log ids, codes and counts. Emails and
phone numbers that must appear (error messages quoting a value) go through ``mask``.
"""

from __future__ import annotations

import re

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

logger = Logger()
metrics = Metrics()

__all__ = ["logger", "metrics", "MetricUnit", "mask"]

_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")
_PHONE = re.compile(r"\+?\d[\d ().-]{6,}\d")


def mask(text: str) -> str:
    """Mask emails (j***@example.com) and phone numbers (***) in free text."""
    text = _EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", text)
    return _PHONE.sub("***", text)
