"""Emails and phone numbers are masked in free text; ids, URLs, IPs, dates and times are left alone."""

import pytest
from segment_qualtrics.observability import mask


@pytest.mark.parametrize(("text", "masked"), [
    ("write to ann.lee@example.com today", "write to a***@example.com today"),
    ("call +44 20 7946 0000 now", "call *** now"),
    ("phone 555-010-1234", "phone ***"),
    ("p=(555) 010-1234.", "p=***."),
])
def test_personal_data_is_masked(text, masked):
    assert mask(text) == masked


@pytest.mark.parametrize("text", [
    "http://127.0.0.1:34017/inbound-event/v1/events/json/triggers?urlTokenId=local-demo",
    "transactionDate 2026-11-29 10:00:00 is invalid",
    "contact CID_8decf1f9b3c3421 in POOL_SANDBOX",
    "Qualtrics answered 429 (TOO_MANY_REQUESTS)",
])
def test_other_text_is_left_alone(text):
    assert mask(text) == text
