"""Error classification: HTTP statuses, the Qualtrics error envelope and Retry-After (errors.py)."""

from __future__ import annotations

import json

import pytest
from segment_qualtrics.destination.errors import (
    PermanentError,
    RetryableError,
    error_from_response,
    is_retryable_status,
)


def envelope(error: dict | None = None, request_id: str | None = "req-1") -> bytes:
    meta: dict = {"httpStatus": "400 - Bad Request"}
    if error is not None:
        meta["error"] = error
    if request_id is not None:
        meta["requestId"] = request_id
    return json.dumps({"meta": meta}).encode()


# --- statuses -------------------------------------------------------------------------------------

@pytest.mark.parametrize("status", [408, 423, 429, 500, 502, 503, 504, 599])
def test_retryable_statuses(status):
    assert is_retryable_status(status)
    error = error_from_response(status, b"")
    assert isinstance(error, RetryableError) and error.retryable
    assert error.status == status


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 409, 413, 415, 422, 451, 501])
def test_permanent_statuses(status):
    assert not is_retryable_status(status)
    error = error_from_response(status, b"")
    assert isinstance(error, PermanentError) and not error.retryable
    assert error.status == status


@pytest.mark.parametrize(
    ("status", "code"),
    [(401, "qualtrics_unauthorized"), (429, "qualtrics_rate_limited"), (408, "qualtrics_timeout"),
     (504, "qualtrics_timeout"), (500, "qualtrics_server_error"), (503, "qualtrics_server_error"),
     (501, "qualtrics_server_error"), (400, "qualtrics_rejected"), (404, "qualtrics_rejected")],
)
def test_error_codes(status, code):
    assert error_from_response(status, None).code == code


def test_the_message_names_the_status():
    assert error_from_response(503, b"").message == "Qualtrics answered 503"


# --- the Qualtrics error envelope -----------------------------------------------------------------

def test_the_envelope_gives_message_code_and_request_id():
    error = error_from_response(400, envelope({"errorMessage": "Invalid directory", "errorCode": "DIR_1"}))
    assert error.message == "Qualtrics answered 400: Invalid directory (DIR_1)"
    assert error.request_id == "req-1"
    assert error.describe() == {"code": "qualtrics_rejected", "message": error.message, "retryable": False,
                                "status": 400, "requestId": "req-1"}


@pytest.mark.parametrize("key", ["qualtricsErrorCode", "internalErrorCode"])
def test_older_error_code_key_names_are_read(key):
    error = error_from_response(500, envelope({"errorMessage": "Boom", key: "OLD_1"}))
    assert error.message == "Qualtrics answered 500: Boom (OLD_1)"


def test_a_str_body_is_read_like_bytes():
    error = error_from_response(404, envelope({"errorMessage": "Not found"}).decode())
    assert error.message == "Qualtrics answered 404: Not found" and error.request_id == "req-1"


def test_a_request_id_without_an_error_is_kept():
    error = error_from_response(502, envelope(None, request_id="req-2"))
    assert error.request_id == "req-2" and error.message == "Qualtrics answered 502"


@pytest.mark.parametrize(
    "body",
    [b"", None, b"<html>Bad gateway</html>", b"\xff\xfe", b"[]", b"null", b'"text"', b'{"meta": "x"}',
     b'{"meta": {"error": "text"}}', b'{"result": {}}'],
)
def test_empty_or_unexpected_bodies_still_classify(body):
    error = error_from_response(503, body)
    assert isinstance(error, RetryableError)
    assert error.message == "Qualtrics answered 503"
    assert error.request_id is None
    assert "requestId" not in error.describe()


# --- Retry-After ----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": "2.5"}, 2.5),
        ({"RETRY-AFTER": "4"}, 4.0),
        ({"Retry-after": "3"}, 3.0),
        ({"Retry-After": "-3"}, 0.0),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),   # an HTTP-date, long past
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT", "Date": "Wed, 21 Oct 2015 07:27:00 GMT"}, 60.0),
        ({"Retry-After": ""}, None),
        ({"Retry-After": "inf"}, None),
        ({"Retry-After": "nan"}, None),
        ({}, None),
        (None, None),
    ],
)
def test_retry_after(headers, expected):
    assert error_from_response(429, b"", headers).retry_after == expected


def test_describe_leaves_out_what_is_unknown():
    error = RetryableError("network_error", "could not reach Qualtrics")
    assert error.describe() == {"code": "network_error", "message": "could not reach Qualtrics", "retryable": True}
    assert str(error) == "could not reach Qualtrics"
    assert "network_error" in repr(error)
