"""Emails and phone numbers are masked in free text; ids, URLs, IPs, dates, times and our own numbers are not."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from segment_qualtrics.runtime.observability import LOG_TEXT_LIMIT, _clean, mask, redact


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


# --- our own numbers are not phone numbers; phone numbers are, whatever the key or shape -------------------

@pytest.mark.parametrize("text", [
    "the body is 5000001 bytes; the limit is 4194304",
    "the request holds 1500000 events; at most 2500 are accepted",
    "event 1234567 of the batch is larger than 262144 bytes",
    "indexes 0 1 2 3 4 5 6 7 8 9",
    "at 2026-11-29 10:00:00 and 2026-11-29",
    "ts 1765000000000 from 10.0.0.1 and 192.168.100.200",
])
def test_sizes_limits_counts_indexes_and_times_are_left_alone(text):
    assert mask(text) == text


@pytest.mark.parametrize(("text", "masked"), [
    ("call 555-010-1234 5 times", "call *** 5 times"),
    ("1 800 555 0199", "***"),
    ("+44 (0)20 7946 0000", "***"),
    ("tel:+14155550142", "tel:***"),
    ("phone: 4155550142", "phone: ***"),
    ('{"mobileNumber": "4155550142"}', '{"mobileNumber": "***"}'),
    ("+1 415 555 0142 and (555) 010-1234", "*** and ***"),
])
def test_phone_numbers_are_masked_by_their_shape_or_the_word_before_them(text, masked):
    assert mask(text) == masked


def test_a_series_of_phone_numbers_leaves_no_number_whole():
    text = "555-010-1234 555-010-9999 555-010-8888 555-010-7777"
    masked = mask(text)
    for number in ("1234", "9999", "8888", "7777"):
        assert number not in masked


def test_values_of_phone_fields_are_masked_whatever_their_shape():
    cleaned = _clean({"traits": {"phone": "4155550142", "phoneNumber": 4155550142, "mobile": "n/a", "size": 5000001,
                                 "fax": None}, "message": "the body is 5000001 bytes"})
    assert cleaned == {"traits": {"phone": "***", "phoneNumber": "***", "mobile": "***", "size": 5000001,
                                  "fax": None}, "message": "the body is 5000001 bytes"}


def test_a_413_line_keeps_its_numbers_through_the_formatter():
    line = _clean({"message": "request rejected", "reason": "the body is 4194305 bytes; the limit is 4194304"})
    assert line["reason"] == "the body is 4194305 bytes; the limit is 4194304"


@pytest.mark.parametrize(("text", "masked"), [
    ("x a@b@example.com y", "x a@b***@example.com y"),
    ("ann@ex.co.uk,bob@x.io", "a***@ex.co.uk,b***@x.io"),
    ("a@example.com123", "a***@example.com123"),
    ("@example.com and a@ and a@b", "@example.com and a@ and a@b"),
])
def test_emails_are_masked_as_the_address_regex_did(text, masked):
    assert mask(text) == masked


def test_a_long_logged_string_is_cut_before_masking_and_names_what_was_cut():
    text = "word " * 20_000 + "ann@example.com"
    cleaned = _clean({"message": text})["message"]
    assert len(cleaned) <= LOG_TEXT_LIMIT + 64
    assert cleaned.endswith(" characters cut]") and "ann@example.com" not in cleaned


def test_a_secret_across_the_cut_is_still_redacted():
    secret = "s3cr3t-across-the-cut-0123456789"
    redact(secret)
    text = "x" * (LOG_TEXT_LIMIT - 10) + secret
    assert secret[:10] not in _clean({"message": text})["message"]


EMAILS = st.from_regex(r"[a-z][a-z0-9._+-]{0,20}@[a-z0-9-]{1,10}(\.[a-z0-9-]{1,10}){0,2}\.[a-z]{2,6}", fullmatch=True)
PHONES = st.from_regex(r"\+[1-9][0-9]{0,2} [0-9]{3} [0-9]{3} [0-9]{4}|\([0-9]{3}\) [0-9]{3}-[0-9]{4}"
                       r"|[0-9]{3}-[0-9]{3}-[0-9]{4}", fullmatch=True)
FILLER = st.text(alphabet=st.sampled_from(list("ab ,;!?\n")), max_size=12)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(FILLER, st.one_of(EMAILS, PHONES)), min_size=1, max_size=5), FILLER)
def test_no_email_or_phone_number_in_free_text_survives(parts, tail):
    text = "".join(f"{filler} {value} " for filler, value in parts) + tail
    masked = mask(text)
    for _, value in parts:
        assert value not in masked
        if "@" in value:
            local, domain = value.split("@")
            assert f"{local[0]}***@{domain}" in masked
        else:
            assert value[-4:] not in masked


OLD_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")   # quadratic


@settings(max_examples=1500, deadline=None)
@given(st.text(alphabet="abc.@-_+%", max_size=40))
def test_emails_without_digits_are_masked_exactly_as_the_quadratic_regex_did(text):
    assert mask(text) == OLD_EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", text)
