"""The subscriptions file: the packaged default, defaults and switches, every problem at once."""

from __future__ import annotations

import json
import logging
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from segment_qualtrics.destination.actions import ACTIONS
from segment_qualtrics.destination.subscriptions import (
    DEFAULT_CONFIG,
    MAX_SUBSCRIPTIONS,
    ConfigError,
    config_path,
    load_at_start,
    load_subscriptions,
    parse_subscriptions,
)
from segment_qualtrics.ingest.core import Router
from segment_qualtrics.runtime.ingest_app import IngestStartupFailure
from segment_qualtrics.runtime.observability import METRICS, Metric, logger
from segment_qualtrics.runtime.startup import subscriptions_at_start

from tests.unit.test_worker import Setup as WorkerSetup
from tests.unit.test_worker import delivery as worker_delivery
from tests.unit.test_worker import message as worker_message

ENVIRON = {"QUALTRICS_DIRECTORY_ID": "POOL_D", "QUALTRICS_MAILING_LIST_ID": "CG_M"}


def contact(name: str = "Contacts", **overrides) -> dict:
    item = {"name": name, "enabled": True, "actionSlug": "addContactToXmd", "trigger": 'type = "identify"',
            "mapping": {"directoryId": "POOL_1"}}
    return {**item, **overrides}


def problems_of(data, environ=None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_subscriptions(data, "test.json", environ or {})
    assert caught.value.source == "test.json"
    assert str(len(caught.value.problems)) in str(caught.value)
    return caught.value.problems


def one_problem_with(problems: list[str], *needles: str) -> str:
    found = [p for p in problems if all(n in p for n in needles)]
    assert len(found) == 1, (needles, problems)
    return found[0]


# --- the packaged default -------------------------------------------------------------------------

def test_the_packaged_default_loads_with_its_variables_set():
    subscriptions = load_subscriptions(DEFAULT_CONFIG, environ=ENVIRON)
    by_slug = {s.action.slug: s for s in subscriptions}
    assert set(by_slug) == set(ACTIONS)
    assert by_slug["addContactToXmd"].enabled and by_slug["upsertContactTransaction"].enabled
    assert by_slug["triggerXflowWorkflow"].enabled is False
    assert by_slug["addContactToXmd"].mapping["directoryId"] == "POOL_D"
    assert by_slug["upsertContactTransaction"].mapping["directoryId"] == "POOL_D"
    assert by_slug["upsertContactTransaction"].mapping["mailingListId"]["@if"]["else"] == "CG_M"


def test_the_packaged_default_has_segments_default_triggers():
    subscriptions = load_subscriptions(DEFAULT_CONFIG, environ=ENVIRON)
    for sub in subscriptions:
        if sub.action.default_trigger:
            assert sub.trigger.source == sub.action.default_trigger
    by_slug = {s.action.slug: s for s in subscriptions}
    identify = {"type": "identify", "userId": "u"}
    created = {"type": "track", "event": "Transaction Created", "userId": "u"}
    assert by_slug["addContactToXmd"].trigger.matches(identify)
    assert not by_slug["addContactToXmd"].trigger.matches(created)
    assert by_slug["upsertContactTransaction"].trigger.matches(created)
    assert not by_slug["upsertContactTransaction"].trigger.matches({**created, "event": "Order Completed"})


def test_the_packaged_default_without_its_variables_names_each_one():
    with pytest.raises(ConfigError) as caught:
        load_subscriptions(DEFAULT_CONFIG, environ={})
    problems = caught.value.problems
    assert len([p for p in problems if "QUALTRICS_DIRECTORY_ID" in p]) == 2
    one_problem_with(problems, "QUALTRICS_MAILING_LIST_ID")
    # the disabled workflow subscription's ${QUALTRICS_WORKFLOW_URL} is not a problem
    assert not any("QUALTRICS_WORKFLOW_URL" in p for p in problems)


def test_the_default_maps_its_mailing_list_from_traits_first():
    subscriptions = load_subscriptions(DEFAULT_CONFIG, environ=ENVIRON)
    upsert = next(s for s in subscriptions if s.action.slug == "upsertContactTransaction")
    event = {"type": "track", "event": "Transaction Created", "userId": "u", "properties": {"total": 3}}
    assert upsert.action.build_payload(upsert.mapping, event).mailingListId == "CG_M"
    with_trait = {**event, "traits": {"qualtricsMailingListId": "CG_TRAIT"}}
    assert upsert.action.build_payload(upsert.mapping, with_trait).mailingListId == "CG_TRAIT"
    assert upsert.action.build_payload(upsert.mapping, event).transactionData == {"total": 3}


def test_config_path_uses_destination_config_else_the_packaged_file(tmp_path):
    assert config_path({}) == DEFAULT_CONFIG
    assert config_path({"DESTINATION_CONFIG": ""}) == DEFAULT_CONFIG
    assert config_path({"DESTINATION_CONFIG": str(tmp_path / "s.json")}) == tmp_path / "s.json"


def test_load_subscriptions_reads_destination_config(tmp_path):
    path = tmp_path / "subscriptions.json"
    path.write_text(json.dumps({"subscriptions": [contact("From file")]}))
    [sub] = load_subscriptions(environ={"DESTINATION_CONFIG": str(path)})
    assert sub.name == "From file"


def test_an_unreadable_or_non_json_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as missing:
        load_subscriptions(tmp_path / "absent.json", environ={})
    assert "cannot read" in missing.value.problems[0]
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(ConfigError) as not_json:
        load_subscriptions(bad, environ={})
    assert "not valid JSON" in not_json.value.problems[0]
    assert str(bad) in str(not_json.value)


# --- defaults and switches ------------------------------------------------------------------------

def test_fields_missing_from_the_mapping_take_the_defaults():
    [sub] = parse_subscriptions({"subscriptions": [contact()]}, environ={})
    assert sub.mapping == {**ACTIONS["addContactToXmd"].default_mapping, "directoryId": "POOL_1"}


def test_a_mapped_field_replaces_its_default():
    [sub] = parse_subscriptions({"subscriptions": [contact(mapping={"directoryId": "P",
                                                                     "phone": {"@path": "$.traits.mobile"}})]},
                                environ={})
    assert sub.mapping["phone"] == {"@path": "$.traits.mobile"}
    payload = sub.action.build_payload(sub.mapping, {"type": "identify", "userId": "u",
                                                     "traits": {"phone": "1", "mobile": "2"}})
    assert payload.phone == "2"


def test_a_field_set_to_null_is_switched_off():
    [sub] = parse_subscriptions({"subscriptions": [contact(mapping={"directoryId": "P", "email": None,
                                                                     "unsubscribed": None})]}, environ={})
    assert "email" not in sub.mapping and "unsubscribed" not in sub.mapping
    payload = sub.action.build_payload(sub.mapping, {"type": "identify", "userId": "u",
                                                     "traits": {"email": "a@example.com"}})
    assert payload.email is None and payload.unsubscribed is None


def test_enabled_defaults_to_true_and_names_are_trimmed():
    item = contact(name="  Contacts  ")
    del item["enabled"]
    [sub] = parse_subscriptions({"subscriptions": [item]}, environ={})
    assert sub.enabled is True and sub.name == "Contacts"


def test_env_references_are_replaced_inside_nested_values():
    mapping = {"directoryId": "${DIR}", "embeddedData": {"stage": "env-${STAGE}", "list": ["${STAGE}"]}}
    [sub] = parse_subscriptions({"subscriptions": [contact(mapping=mapping)]},
                                environ={"DIR": "POOL_9", "STAGE": "prod"})
    assert sub.mapping["directoryId"] == "POOL_9"
    assert sub.mapping["embeddedData"] == {"stage": "env-prod", "list": ["prod"]}


def test_an_empty_subscription_list_is_valid():
    assert parse_subscriptions({"subscriptions": []}, environ={}) == []


def test_a_disabled_subscription_may_lack_required_fields_and_variables():
    item = contact(enabled=False, mapping={"directoryId": "${NOT_SET}"})
    subs = parse_subscriptions({"subscriptions": [item, contact("Other", enabled=False, mapping={})]},
                               environ={})
    assert [(s.name, s.enabled) for s in subs] == [("Contacts", False), ("Other", False)]


# --- every problem at once ------------------------------------------------------------------------

def test_every_problem_is_listed_at_once():
    data = {
        "subscriptions": [
            contact("Unknown action", actionSlug="sendSms"),
            contact("Bad trigger", trigger='type = = "identify"'),
            contact("Unknown field", mapping={"directoryId": "P", "favouriteColour": "blue"}),
            contact("Twice"),
            contact("Twice"),
            contact("Missing variable", mapping={"directoryId": "${NOT_SET_ANYWHERE}"}),
            contact("Disabled with missing variable", enabled=False, mapping={"directoryId": "${ALSO_NOT_SET}"}),
            contact("No directory", mapping={}),
            contact("Enabled as text", enabled="yes"),
            {**contact("Unknown key"), "description": "x"},
        ]
    }
    problems = problems_of(data)
    one_problem_with(problems, "subscriptions[0]", "'Unknown action'", "unknown actionSlug 'sendSms'",
                     "addContactToXmd")
    one_problem_with(problems, "subscriptions[1]", "trigger", "position 7")
    one_problem_with(problems, "subscriptions[2]", "unknown field 'favouriteColour'")
    one_problem_with(problems, "subscriptions[4]", "'Twice'", "used twice")
    one_problem_with(problems, "subscriptions[5]", "${NOT_SET_ANYWHERE}", "NOT_SET_ANYWHERE is not set")
    one_problem_with(problems, "subscriptions[7]", "required field 'directoryId'")
    one_problem_with(problems, "subscriptions[8]", '"enabled" must be true or false')
    one_problem_with(problems, "subscriptions[9]", "unknown key 'description'")
    assert not any("ALSO_NOT_SET" in p or "subscriptions[6]" in p for p in problems)
    assert not any("subscriptions[3]" in p for p in problems)
    assert len(problems) == 8


def test_a_subscription_with_several_problems_lists_them_all():
    item = contact("Broken", trigger="type =", mapping={"colour": "blue"})
    problems = problems_of({"subscriptions": [item]})
    one_problem_with(problems, "trigger")
    one_problem_with(problems, "unknown field 'colour'")
    one_problem_with(problems, "required field 'directoryId'")


def test_a_duplicate_name_is_reported_even_when_the_duplicate_has_other_problems():
    problems = problems_of({"subscriptions": [contact("Same"), contact("Same", trigger="type =")]})
    one_problem_with(problems, "subscriptions[1]", "used twice")
    one_problem_with(problems, "subscriptions[1]", "trigger")


def test_names_differing_only_in_surrounding_spaces_are_duplicates():
    problems = problems_of({"subscriptions": [contact("Same"), contact(" Same ")]})
    one_problem_with(problems, "used twice")


def test_more_than_fifty_subscriptions_is_a_problem():
    at_limit = {"subscriptions": [contact(f"s{i}") for i in range(MAX_SUBSCRIPTIONS)]}
    assert len(parse_subscriptions(at_limit, environ={})) == MAX_SUBSCRIPTIONS
    over = {"subscriptions": [contact(f"s{i}") for i in range(MAX_SUBSCRIPTIONS + 1)]}
    one_problem_with(problems_of(over), "51 subscriptions", "at most 50")


def test_a_required_field_switched_off_has_no_mapping():
    item = {"name": "T", "actionSlug": "upsertContactTransaction", "trigger": 'type = "track"',
            "mapping": {"directoryId": "P", "mailingListId": None}}
    one_problem_with(problems_of({"subscriptions": [item]}), "required field 'mailingListId'")


def test_a_required_field_with_a_default_needs_no_mapping():
    item = {"name": "T", "actionSlug": "upsertContactTransaction", "trigger": 'type = "track"',
            "mapping": {"directoryId": "P"}}   # mailingListId and extRef have defaults
    [sub] = parse_subscriptions({"subscriptions": [item]}, environ={})
    assert sub.mapping["mailingListId"] == {"@path": "$.traits.qualtricsMailingListId"}


def test_an_empty_variable_is_a_value_but_not_for_a_required_field():
    one_problem_with(problems_of({"subscriptions": [contact(mapping={"directoryId": "${EMPTY}"})]},
                                 environ={"EMPTY": ""}), "'directoryId' is mapped to an empty string")
    # An optional template Parameter left blank: the config loads, the field is dropped per event.
    [sub] = parse_subscriptions({"subscriptions": [contact(mapping={"directoryId": "POOL_1", "phone": "${EMPTY}"})]},
                                environ={"EMPTY": ""})
    assert sub.mapping["phone"] == ""


def test_a_bad_mapping_directive_is_a_problem():
    problems = problems_of({"subscriptions": [contact(mapping={"directoryId": {"@nope": 1}})]})
    one_problem_with(problems, "mapping", "@nope")


@pytest.mark.parametrize(
    ("item", "needle"),
    [
        (3, "must be an object"),
        ({**contact(), "name": ""}, 'non-empty string "name"'),
        ({**contact(), "name": 7}, 'non-empty string "name"'),
        ({**contact(), "trigger": None}, '"trigger" string'),
        ({**contact(), "mapping": []}, '"mapping" must be an object'),
        ({**contact(), "actionSlug": None}, "unknown actionSlug None"),
    ],
)
def test_malformed_subscriptions(item, needle):
    one_problem_with(problems_of({"subscriptions": [item]}), needle)


@pytest.mark.parametrize("data", [[], {"subs": []}, {"subscriptions": {}}, None])
def test_the_top_level_must_hold_a_subscriptions_array(data):
    one_problem_with(problems_of(data), '"subscriptions" array')


def test_unknown_top_level_keys_are_a_problem():
    one_problem_with(problems_of({"subscriptions": [contact()], "version": 2}), "unknown top-level key(s): version")


def test_the_error_text_lists_every_problem():
    with pytest.raises(ConfigError) as caught:
        parse_subscriptions({"subscriptions": [contact("A", actionSlug="x"), contact("B", trigger="(")]},
                            "conf.json", {})
    text = str(caught.value)
    assert text.startswith("subscriptions file conf.json has 2 problem(s):")
    assert all(f"  - {p}" in text for p in caught.value.problems)


# --- at runtime: a bad subscription never takes down the good ones ---------------------------------

def write(tmp_path, items, **top) -> str:
    path = tmp_path / "subscriptions.json"
    path.write_text(json.dumps({"subscriptions": items, **top}))
    return str(path)


def by_name(loaded) -> dict:
    return {s.name: s for s in loaded.subscriptions}


def test_at_start_a_broken_mapping_is_switched_off_and_still_routes(tmp_path):
    broken = contact("Broken", mapping={"directoryId": None, "phone": {"@nope": 1}})
    loaded = load_at_start(write(tmp_path, [contact("Good"), broken]), environ={})
    subs = by_name(loaded)
    assert subs["Good"].problems == () and subs["Good"].mapping["directoryId"] == "POOL_1"
    assert subs["Broken"].enabled and subs["Broken"].problems and subs["Broken"].mapping == {}
    [invalid] = loaded.invalid
    assert invalid.label == "subscriptions[1] ('Broken')" and invalid.routed
    # every problem of it, as check-config lists them
    one_problem_with(list(invalid.problems), "required field 'directoryId'")
    one_problem_with(list(invalid.problems), "@nope")
    assert list(invalid.problems) == problems_of({"subscriptions": [contact("Good"), broken]})
    # both route: the ingest queues the broken one's events for the worker to dead-letter
    targets = Router(loaded.subscriptions).matching({"type": "identify", "userId": "u"})
    assert [name for _, name, _ in targets] == ["Good", "Broken"]


def test_at_start_a_trigger_that_does_not_parse_routes_nothing(tmp_path):
    loaded = load_at_start(write(tmp_path, [contact("Good"), contact("Unparsable", trigger='type = "identify')]),
                           environ={})
    [invalid] = loaded.invalid
    assert not invalid.routed and "trigger" in invalid.problems[0]
    unparsable = by_name(loaded)["Unparsable"]
    assert unparsable.enabled is False and unparsable.problems == invalid.problems   # the worker can name why
    targets = Router(loaded.subscriptions).matching({"type": "identify", "userId": "u"})
    assert [name for _, name, _ in targets] == ["Good"]


def test_at_start_every_kind_of_problem_switches_off_only_its_subscription(tmp_path):
    items = [
        contact("Good"),
        contact("Unknown action", actionSlug="sendSms"),
        {"enabled": True, "actionSlug": "addContactToXmd", "trigger": 'type = "identify"'},   # no name
        contact("Twice"), contact("Twice", trigger='type = "track"'),
        contact("Unset", mapping={"directoryId": "${NOT_SET_ANYWHERE}"}),
        contact("Disabled but broken", enabled=False, trigger="(("),
        "not an object",
    ]
    loaded = load_at_start(write(tmp_path, items), environ={})
    assert [s.name for s in loaded.subscriptions if not s.problems] == ["Good"]
    routed = {i.label: i.routed for i in loaded.invalid}
    assert routed == {
        "subscriptions[1] ('Unknown action')": False, "subscriptions[2]": False,
        "subscriptions[3] ('Twice')": True, "subscriptions[4] ('Twice')": True,
        "subscriptions[5] ('Unset')": True, "subscriptions[6] ('Disabled but broken')": False,
        "subscriptions[7]": False,
    }
    # both of a name used twice: a message naming it could be either's
    assert "used again by subscriptions[4]" in " ".join(loaded.invalid[2].problems)
    assert "used twice" in " ".join(loaded.invalid[3].problems)
    assert "NOT_SET_ANYWHERE" in " ".join(loaded.invalid[4].problems)
    assert [name for _, name, _ in Router(loaded.subscriptions).matching({"type": "identify", "userId": "u"})] == \
        ["Good", "Twice", "Unset"]


def test_at_start_the_files_own_problems_are_reported_but_do_not_stop_it(tmp_path):
    items = [contact(f"S{i}") for i in range(MAX_SUBSCRIPTIONS + 1)]
    loaded = load_at_start(write(tmp_path, items, comment="x"), environ={})
    assert loaded.file_problems == [f"{MAX_SUBSCRIPTIONS + 1} subscriptions; at most {MAX_SUBSCRIPTIONS} are "
                                    "allowed (as in Segment)", "unknown top-level key(s): comment"]
    assert len([s for s in loaded.subscriptions if not s.problems]) == MAX_SUBSCRIPTIONS
    [over] = loaded.invalid
    assert over.label == f"subscriptions[{MAX_SUBSCRIPTIONS}] ('S{MAX_SUBSCRIPTIONS}')"
    assert "beyond the limit" in over.problems[0]


@pytest.mark.parametrize("text, needle", [
    (None, "cannot read the file"),
    ("{not json", "not valid JSON"),
    ('{"subscription": []}', '"subscriptions" array'),
    ("[]", '"subscriptions" array'),
])
def test_at_start_a_file_that_cannot_be_used_at_all_still_stops_the_function(tmp_path, text, needle):
    path = tmp_path / "subscriptions.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_at_start(path, environ={})
    assert needle in str(caught.value)


def test_at_start_the_environment_names_the_file(tmp_path):
    path = write(tmp_path, [contact("Good"), contact("Broken", mapping={"directoryId": None})])
    loaded = load_at_start(environ={"DESTINATION_CONFIG": path})
    assert loaded.source == path and len(loaded.invalid) == 1


def test_the_worker_dead_letters_a_switched_off_subscriptions_messages_with_every_problem(tmp_path):
    loaded = load_at_start(write(tmp_path, [contact("Good"), contact("Broken", mapping={"directoryId": None,
                                                                                      "phone": {"@nope": 1}})]),
                           environ={})
    setup = WorkerSetup()
    setup.worker.subscriptions = {s.name: s for s in loaded.subscriptions}
    report = setup.process(worker_delivery(worker_message("m-good", subscription="Good")),
                           worker_delivery(worker_message("m-broken", subscription="Broken")))
    assert [d.message.message_id for d in report.delivered] == ["m-good"]
    [(dead, error)] = report.dead_lettered
    assert dead.message.message_id == "m-broken" and error.code == "subscription_invalid" and not error.retryable
    [reason] = setup.dlq.reasons()
    assert reason["errorCode"] == "subscription_invalid" and reason["subscription"] == "Broken"
    assert "required field 'directoryId'" in reason["errorMessage"] and "@nope" in reason["errorMessage"]
    assert setup.executor.executed == ["m-good"]   # nothing of the broken one reached Qualtrics


def test_the_worker_names_why_for_a_subscription_that_cannot_route_any_more(tmp_path):
    # Messages queued before its trigger broke: dead-lettered with the reason, not as an unknown name.
    loaded = load_at_start(write(tmp_path, [contact("Contacts", trigger="((")]), environ={})
    setup = WorkerSetup()
    setup.worker.subscriptions = {s.name: s for s in loaded.subscriptions}
    setup.process(worker_delivery(worker_message("m-1", subscription="Contacts")))
    [reason] = setup.dlq.reasons()
    assert reason["errorCode"] == "subscription_invalid" and "trigger" in reason["errorMessage"]


# --- at start: the log line and the metric ---------------------------------------------------------

@pytest.fixture
def capsys(capsys):
    """Log lines too, as the functions write them: the logger's own handler took sys.stdout at import."""
    class Stdout:   # whatever sys.stdout is when a line is written: pytest swaps it in for the call only
        def write(self, text: str) -> None:
            sys.stdout.write(text)

        def flush(self) -> None:
            sys.stdout.flush()

    handler = logging.StreamHandler(Stdout())
    handler.setFormatter(logger.registered_formatter)
    logger.addHandler(handler)
    yield capsys
    logger.removeHandler(handler)


def emitted(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


def test_subscriptions_at_start_logs_each_switched_off_one_and_counts_them(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "stack-under-test")   # the template's service dimension
    path = write(tmp_path, [contact("Good"), contact("Broken", mapping={"directoryId": None, "phone": {"@nope": 1}}),
                            contact("Unparsable", trigger="((")])
    subs = subscriptions_at_start("ingest", environ={"DESTINATION_CONFIG": path})
    assert [s.name for s in subs if not s.problems] == ["Good"]
    lines = emitted(capsys)
    errors = [line for line in lines if line.get("level") == "ERROR"]
    assert [e["subscription"] for e in errors] == ["subscriptions[1] ('Broken')", "subscriptions[2] ('Unparsable')"]
    broken = errors[0]
    assert broken["outcome"] == "subscription_invalid" and broken["routed"] is True
    assert "required field 'directoryId'" in broken["message"] and "@nope" in broken["message"]
    assert len(broken["problems"]) == 2 and "subscription_invalid" in broken["message"]
    assert errors[1]["routed"] is False and "routes no events" in errors[1]["message"]
    [blob] = [line for line in lines if "_aws" in line]
    assert blob["SubscriptionsInvalid"] == [2.0] and blob["function"] == "ingest"
    [directive] = blob["_aws"]["CloudWatchMetrics"]
    assert set(directive["Dimensions"][0]) == set(METRICS[Metric.SUBSCRIPTIONS_INVALID].dimensions)
    assert blob["service"] == "stack-under-test"


def test_subscriptions_at_start_reports_zero_when_all_are_valid(tmp_path, capsys):
    subscriptions_at_start("addContactToXmd", environ={"DESTINATION_CONFIG": write(tmp_path, [contact()])})
    lines = emitted(capsys)
    assert not [line for line in lines if line.get("level") == "ERROR"]
    [blob] = [line for line in lines if "_aws" in line]
    assert blob["SubscriptionsInvalid"] == [0.0] and blob["function"] == "addContactToXmd"


# --- a start that fails: the ingest answers our JSON 5xx --------------------------------------------

def test_the_ingest_answers_our_json_503_when_the_file_cannot_be_used(tmp_path, capsys):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError) as caught:
        subscriptions_at_start("ingest", environ={"DESTINATION_CONFIG": str(tmp_path / "bad.json")})
    failure = IngestStartupFailure(caught.value)
    answers = [failure.handle({"body": "{}", "headers": {}}) for _ in range(2)]
    for answer in answers:
        assert answer["statusCode"] == 503 and answer["headers"]["content-type"] == "application/json"
        body = json.loads(answer["body"])
        assert body["error"]["code"] == "subscriptions_unusable" and body["error"]["message"]
        assert "bad.json" not in answer["body"]   # the caller may be anyone: no path
    errors = [line for line in emitted(capsys) if line.get("level") == "ERROR"]
    assert len(errors) == 1 and "not valid JSON" in errors[0]["message"]   # the reason, logged once


def test_the_ingest_answers_our_json_500_for_any_other_start_failure(capsys):
    answer = IngestStartupFailure(RuntimeError("INGEST_SECRET_ARN missing")).handle({})
    assert answer["statusCode"] == 500
    assert json.loads(answer["body"])["error"]["code"] == "startup_failed"
    assert "INGEST_SECRET_ARN" not in answer["body"]


BROKEN_VARIANTS = [
    {"mapping": {"directoryId": None}},                          # required field without a mapping
    {"mapping": {"directoryId": "POOL_1", "emial": "x"}},        # unknown field
    {"mapping": {"directoryId": "${NOT_SET_ANYWHERE}"}},         # unset variable
    {"mapping": {"directoryId": "POOL_1", "phone": {"@nope": 1}}},   # unknown directive
    {"trigger": 'type = "identify'},                             # trigger that does not parse
    {"actionSlug": "sendSms"},                                   # unknown action
    {"enabled": "yes"},
    {"mapping": {"directoryId": "POOL_1", "unsubscribed": "maybe"}},   # a fixed value that does not fit
    {"extra": 1},
]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 3).map(lambda i: ("good", i)),
                          st.sampled_from(range(len(BROKEN_VARIANTS))).map(lambda i: ("broken", i))),
                max_size=12))
def test_property_bad_subscriptions_never_change_the_good_ones(tmp_path_factory, kinds):
    triggers = ['type = "identify"', 'type = "track"', 'event = "Signed Up"', 'type = "identify" and traits.a = 1']
    items = [contact(f"{kind}-{n}", **({"trigger": triggers[i]} if kind == "good" else BROKEN_VARIANTS[i]))
             for n, (kind, i) in enumerate(kinds)]
    path = tmp_path_factory.mktemp("p") / "subscriptions.json"
    path.write_text(json.dumps({"subscriptions": items}))
    loaded = load_at_start(path, environ={})
    good = [item for item, (kind, _) in zip(items, kinds, strict=True) if kind == "good"]
    def key(sub):
        return sub.name, sub.enabled, sub.action.slug, sub.trigger.source, sub.mapping

    assert [key(s) for s in loaded.subscriptions if not s.problems] == \
        [key(s) for s in parse_subscriptions({"subscriptions": good}, environ={})]
    assert len(loaded.invalid) == len(items) - len(good)
    event = {"type": "identify", "userId": "u", "traits": {"a": 1}}
    routed = [name for _, name, _ in Router(loaded.subscriptions).matching(event)]
    assert [n for n in routed if n.startswith("good")] == \
        [s.name for s in parse_subscriptions({"subscriptions": good}, environ={}) if s.trigger.matches(event)]
