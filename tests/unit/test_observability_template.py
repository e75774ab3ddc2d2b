"""Checks of template.yaml's operations side: alarms, the alarm topic, the dashboard and tracing.

The alarms and the dashboard read metrics by name and dimension set; a name the code does not emit (or a
dimension set it files the metric under differently) makes a graph stay empty and an alarm never fire. So
every metric they read in our namespace must be declared in observability.METRICS with the same dimensions,
and every declared metric must be emitted somewhere in the package.

Several stacks (dev, prod) can share an account and region, and so the namespace. Each stack's functions use
the stack name as Powertools service name, i.e. as the `service` dimension of every metric, and each stack's
alarms and dashboard read only the metrics whose `service` is their own stack name.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from segment_qualtrics.destination.actions import ACTIONS
from segment_qualtrics.runtime.observability import METRICS, NAMESPACE, Metric

from local.template import load_template

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "layers" / "common" / "segment_qualtrics"
ACTION_SLUGS = set(ACTIONS)
STACK_NAME = "stack-under-test"   # what ${AWS::StackName} / !Ref AWS::StackName become in these checks


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(ROOT / "template.yaml")


@pytest.fixture(scope="module")
def resources(template: dict[str, Any]) -> dict[str, Any]:
    return template["Resources"]


def of_type(resources: dict[str, Any], kind: str) -> dict[str, Any]:
    return {name: r for name, r in resources.items() if r["Type"] == kind}


def alarms(resources: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: r["Properties"] for name, r in of_type(resources, "AWS::CloudWatch::Alarm").items()}


def alarm_metrics(props: dict[str, Any]) -> list[dict[str, Any]]:
    """Namespace, MetricName and Dimensions of every metric an alarm reads (single metric or metric math)."""
    if "MetricName" in props:
        return [{"Namespace": props["Namespace"], "MetricName": props["MetricName"],
                 "Dimensions": props.get("Dimensions", [])}]
    return [q["MetricStat"]["Metric"] for q in props.get("Metrics", []) if "MetricStat" in q]


def dimension_map(metric: dict[str, Any]) -> dict[str, Any]:
    return {d["Name"]: d["Value"] for d in metric.get("Dimensions", [])}


def stack_value(value: Any) -> Any:
    """`!Ref AWS::StackName` and `!Sub "${AWS::StackName}"` as STACK_NAME; any other value as is."""
    if value in ({"Ref": "AWS::StackName"}, {"Fn::Sub": "${AWS::StackName}"}):
        return STACK_NAME
    return value


def service_name(template: dict[str, Any]) -> str:
    """The Powertools service name (the metrics' `service` dimension) of every function: the stack name."""
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["POWERTOOLS_SERVICE_NAME"] == {"Ref": "AWS::StackName"}, "service = the stack name"
    for name, function in of_type(template["Resources"], "AWS::Serverless::Function").items():
        own = function["Properties"].get("Environment", {}).get("Variables", {})
        assert "POWERTOOLS_SERVICE_NAME" not in own, f"{name} overrides the service name"
        assert "POWERTOOLS_METRICS_NAMESPACE" not in own, f"{name} overrides the metrics namespace"
    return STACK_NAME


def dashboard_body(template: dict[str, Any], resources: dict[str, Any]) -> dict[str, Any]:
    """The dashboard JSON, with every ${...} of its !Sub replaced by a placeholder (parameters by their default,
    the stack name by STACK_NAME)."""
    [dashboard] = of_type(resources, "AWS::CloudWatch::Dashboard").values()
    text = dashboard["Properties"]["DashboardBody"]["Fn::Sub"]
    assert isinstance(text, str)
    parameters = template["Parameters"]

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "AWS::StackName":
            return STACK_NAME
        if name in parameters:
            return str(parameters[name]["Default"])
        assert name.split(".")[0] in resources or name.startswith("AWS::"), f"dashboard refers to unknown {name}"
        return f"<{name}>"

    return json.loads(re.sub(r"\$\{([^}!]+)\}", value, text))


def dashboard_metrics(body: dict[str, Any]) -> tuple[list[tuple[str, str, dict[str, str]]], list[str]]:
    """(namespace, name, dimensions) of every plain metric line, and every metric math / SEARCH expression."""
    lines, expressions = [], []
    for widget in body["widgets"]:
        previous: list[str] = []
        for entry in widget.get("properties", {}).get("metrics", []):
            items = [e for e in entry if not isinstance(e, dict)]
            options = [e for e in entry if isinstance(e, dict)]
            if not items:
                expressions += [o["expression"] for o in options if "expression" in o]
                continue
            if items[0] == "...":   # CloudWatch's shorthand: the previous line's leading items, then these
                assert previous and len(items) <= len(previous), entry
                items = previous[:len(previous) - len(items) + 1] + items[1:]
            previous = items
            namespace, name, *pairs = items
            assert len(pairs) % 2 == 0, entry
            lines.append((namespace, name, dict(zip(pairs[::2], pairs[1::2], strict=True))))
    return lines, expressions


SEARCH = re.compile(r"SEARCH\('\{([^}]+)\}([^']*)'")
SEARCH_TERM = re.compile(r'(\w+)="([^"]*)"')


def search_parts(expression: str) -> tuple[str, list[str], dict[str, str]]:
    """Namespace, dimension names and search terms of a SEARCH('{Namespace,dims...} terms', ...) expression.

    The terms must all be exact property matches (name="value"): no free text, partial match or boolean
    operator, which could widen the search beyond one metric name of one stack."""
    match = SEARCH.search(expression)
    assert match, f"not a SEARCH expression: {expression}"
    namespace, *dimensions = [part.strip() for part in match.group(1).split(",")]
    terms = SEARCH_TERM.findall(match.group(2))
    assert SEARCH_TERM.sub("", match.group(2)).strip() == "", f"only exact name=\"value\" terms: {expression}"
    assert len({k for k, _ in terms}) == len(terms), f"a term repeated: {expression}"
    return namespace, dimensions, dict(terms)


# ------------------------------------------------------------------------------------------------ alarms

def test_every_dead_letter_queue_has_a_message_alarm(resources: dict[str, Any]) -> None:
    dlqs = {q["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
            for q in of_type(resources, "AWS::SQS::Queue").values() if "RedrivePolicy" in q["Properties"]}
    assert len(dlqs) == len(ACTIONS)
    for dlq in dlqs:
        matching = [p for p in alarms(resources).values()
                    if p.get("Namespace") == "AWS/SQS" and p.get("MetricName") == "ApproximateNumberOfMessagesVisible"
                    and dimension_map(p) == {"QueueName": {"Fn::GetAtt": [dlq, "QueueName"]}}]
        assert len(matching) == 1, f"no (or several) message alarm for {dlq}"
        [alarm] = matching
        assert (alarm["Statistic"], alarm["Threshold"], alarm["ComparisonOperator"]) == \
            ("Maximum", 0, "GreaterThanThreshold"), f"{dlq}: alarm on the first message"


def test_every_action_queue_has_an_age_alarm_with_a_parameter_threshold(resources: dict[str, Any]) -> None:
    sources = [n for n, q in of_type(resources, "AWS::SQS::Queue").items() if "RedrivePolicy" in q["Properties"]]
    for queue in sources:
        matching = [p for p in alarms(resources).values() if p.get("MetricName") == "ApproximateAgeOfOldestMessage"
                    and dimension_map(p) == {"QueueName": {"Fn::GetAtt": [queue, "QueueName"]}}]
        assert len(matching) == 1, queue
        assert matching[0]["Threshold"] == {"Ref": "QueueAgeAlarmSeconds"}


def test_every_function_has_errors_and_throttles_alarms(resources: dict[str, Any]) -> None:
    functions = of_type(resources, "AWS::Serverless::Function")
    assert len(functions) == len(ACTIONS) + 1
    for function in functions:
        watched = {p["MetricName"] for p in alarms(resources).values()
                   if p.get("Namespace") == "AWS/Lambda" and dimension_map(p) == {"FunctionName": {"Ref": function}}}
        assert watched == {"Errors", "Throttles"}, function


def test_ingest_http_alarms_read_the_http_api(resources: dict[str, Any]) -> None:
    by_metric: dict[str, int] = {}
    for props in alarms(resources).values():
        for metric in alarm_metrics(props):
            if metric["Namespace"] == "AWS/ApiGateway":
                assert dimension_map(metric) == {"ApiId": {"Ref": "HttpApi"}}, "HTTP API metrics: ApiId only"
                by_metric[metric["MetricName"]] = by_metric.get(metric["MetricName"], 0) + 1
    assert by_metric == {"5xx": 1, "4xx": 1, "Count": 2}


def test_every_alarm_notifies_the_topic_and_decides_about_missing_data(
        template: dict[str, Any], resources: dict[str, Any]) -> None:
    found = alarms(resources)
    assert len(found) >= 3 + 3 + 8 + 3
    for name, props in found.items():
        assert {"Ref": "AlarmTopic"} in props.get("AlarmActions", []), name
        assert {"Ref": "AlarmTopic"} in props.get("OKActions", []), name
        assert props.get("TreatMissingData") in ("notBreaching", "breaching", "ignore", "missing"), name
        threshold = props["Threshold"]
        if isinstance(threshold, dict):   # a parameter with a default, or the literal 0 of "any message"
            parameter = template["Parameters"][threshold["Ref"]]
            assert parameter["Type"] == "Number" and "Default" in parameter, name
        else:
            assert threshold == 0, f"{name}: thresholds are parameters (only 'more than 0' is literal)"


def test_every_condition_is_used(template: dict[str, Any]) -> None:
    text = json.dumps({k: v for k, v in template.items() if k != "Conditions"})
    for condition in template.get("Conditions", {}):
        assert f'"Condition": "{condition}"' in text or f'["{condition}",' in text, f"unused condition {condition}"


# ------------------------------------------------------------------------------------------------ metrics

def test_alarms_and_dashboard_read_only_metrics_the_code_emits(
        template: dict[str, Any], resources: dict[str, Any]) -> None:
    service = service_name(template)
    assert template["Globals"]["Function"]["Environment"]["Variables"]["POWERTOOLS_METRICS_NAMESPACE"] == NAMESPACE
    read: list[tuple[str, dict[str, Any]]] = []
    for props in alarms(resources).values():
        read += [(m["MetricName"], dimension_map(m)) for m in alarm_metrics(props) if m["Namespace"] == NAMESPACE]
    lines, expressions = dashboard_metrics(dashboard_body(template, resources))
    read += [(name, dims) for namespace, name, dims in lines if namespace == NAMESPACE]
    # Per-action series are SEARCH expressions (checked below), so fewer plain lines than metrics shown.
    assert len(read) + len(expressions) > 20

    for name, dims in read:
        spec = METRICS[Metric(name)]   # ValueError: not a declared metric
        assert set(dims) == spec.dimensions, f"{name} is filed under {sorted(spec.dimensions)}, read with {dims}"
        assert stack_value(dims["service"]) == service, f"{name} of service {dims['service']!r}, not this stack's"
        if "action" in dims:
            assert dims["action"] in ACTION_SLUGS, name

    searches = [e for e in expressions if "SEARCH(" in e]
    assert searches, expressions
    for expression in searches:
        namespace, dimensions, terms = search_parts(expression)
        assert namespace == NAMESPACE, expression
        assert set(dimensions) == METRICS[Metric(terms["MetricName"])].dimensions, expression


def test_alarms_read_only_this_stacks_metrics(template: dict[str, Any], resources: dict[str, Any]) -> None:
    service = service_name(template)
    read = 0
    for alarm, props in alarms(resources).items():
        for metric in alarm_metrics(props):
            if metric["Namespace"] == NAMESPACE:
                dims = dimension_map(metric)
                assert stack_value(dims.get("service")) == service, \
                    f"{alarm} reads {metric['MetricName']} of service {dims.get('service')!r}, not this stack's"
                read += 1
    assert read >= 6   # the Qualtrics 429 rate: errors and calls of the three actions


def test_dashboard_shows_only_this_stacks_metrics(template: dict[str, Any], resources: dict[str, Any]) -> None:
    service = service_name(template)
    lines, expressions = dashboard_metrics(dashboard_body(template, resources))
    ours = [(name, dims) for namespace, name, dims in lines if namespace == NAMESPACE]
    assert len(ours) + len(expressions) >= 15   # a SEARCH by action stands for one series per action
    for name, dims in ours:
        assert dims.get("service") == service, f"dashboard line {name} {dims}: not this stack's service"
    searches = [e for e in expressions if "SEARCH(" in e]
    assert len(searches) >= 6, expressions
    assert len(searches) == len(expressions), "an expression that is no SEARCH: check it reads this stack only"
    for expression in searches:
        _, dimensions, terms = search_parts(expression)
        # MetricName and service always; a further exact filter on one of its own dimensions only narrows it.
        assert {"MetricName", "service"} <= set(terms) <= {"MetricName", "service", *dimensions}, \
            f"SEARCH without the stack filter: {expression}"
        assert terms["service"] == service, f"SEARCH filtered on another service: {expression}"


def _package_sources() -> dict[str, str]:
    return {str(p.relative_to(PACKAGE)): p.read_text() for p in PACKAGE.rglob("*.py")}


def test_every_declared_metric_is_emitted_by_the_code() -> None:
    used: set[str] = set()
    for name, text in _package_sources().items():
        if name == "runtime/observability.py":
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "Metric":
                used.add(node.attr)
    declared = {m.name for m, spec in METRICS.items() if spec.emitted_by == "code"}
    assert declared - used == set(), "declared but never emitted"
    assert used - {m.name for m in Metric} == set(), "emitted but not declared"
    assert set(METRICS) == set(Metric)


def test_no_metric_bypasses_the_registry() -> None:
    for name, text in _package_sources().items():
        literal = re.findall(r"add_metric\(\s*name=[\"']([^\"']+)", text)
        assert literal == [], f"{name} emits {literal} by name: declare them in observability.METRICS"


def test_dashboard_uses_every_worker_outcome(template: dict[str, Any], resources: dict[str, Any]) -> None:
    lines, expressions = dashboard_metrics(dashboard_body(template, resources))
    shown = {name for namespace, name, _ in lines if namespace == NAMESPACE}
    shown |= {search_parts(e)[2]["MetricName"] for e in expressions if "SEARCH(" in e}
    assert {"MessagesQueued", "MessagesDelivered", "MessagesDeadLettered", "MessagesRetried", "QualtricsCalls",
            "ColdStart"} <= shown
    aws = {(namespace, name) for namespace, name, _ in lines if namespace.startswith("AWS/")}
    assert {("AWS/SQS", "ApproximateNumberOfMessagesVisible"), ("AWS/SQS", "ApproximateAgeOfOldestMessage"),
            ("AWS/Lambda", "Duration"), ("AWS/Lambda", "Errors"), ("AWS/Lambda", "Throttles"),
            ("AWS/Lambda", "ConcurrentExecutions")} <= aws


# ------------------------------------------------------------------------------------------------ tracing

def test_tracing_parameter_drives_lambda_tracing_and_powertools(template: dict[str, Any]) -> None:
    parameter = template["Parameters"]["TracingEnabled"]
    assert parameter["Default"] == "false" and set(parameter["AllowedValues"]) == {"false", "true"}
    assert template["Conditions"]["TracingOn"] == {"Fn::Equals": [{"Ref": "TracingEnabled"}, "true"]}
    function = template["Globals"]["Function"]
    assert function["Tracing"] == {"Fn::If": ["TracingOn", "Active", "PassThrough"]}
    variables = function["Environment"]["Variables"]
    assert variables["POWERTOOLS_TRACE_DISABLED"] == {"Fn::If": ["TracingOn", "false", "true"]}
    requirements = (ROOT / "layers" / "common" / "requirements.txt").read_text()
    assert re.search(r"^aws-xray-sdk==", requirements, re.MULTILINE), "Tracer needs aws-xray-sdk in the layer"


IMPORT_CHECK = ("import sys, segment_qualtrics.runtime.worker_app, segment_qualtrics.runtime.ingest_app; "
                "from segment_qualtrics.runtime.observability import tracer; "
                "print(type(tracer).__name__, 'aws_xray_sdk' in sys.modules)")


@pytest.mark.parametrize(("disabled", "expected"), [("true", "_NoTracer False"), ("false", "Tracer True")])
def test_tracer_imports_the_xray_sdk_only_when_tracing_is_on(disabled: str, expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POWERTOOLS_", "AWS_"))}
    env.update(POWERTOOLS_TRACE_DISABLED=disabled, LAMBDA_TASK_ROOT="/var/task", AWS_REGION="us-east-1",
               AWS_DEFAULT_REGION="us-east-1", POWERTOOLS_SERVICE_NAME="local")
    done = subprocess.run([sys.executable, "-c", IMPORT_CHECK], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[-2 if done.stdout.endswith("\n") else -1] == expected


def test_dashboard_graphs_every_queue_and_function(template: dict[str, Any], resources: dict[str, Any]) -> None:
    """The AWS/SQS and AWS/Lambda widgets name their resources (no SEARCH can keep them to this stack): an action
    added to the template's list without its lines there would be missing from them."""
    lines, _ = dashboard_metrics(dashboard_body(template, resources))
    shown = {(name, value) for namespace, name, dims in lines if namespace.startswith("AWS/")
             for value in dims.values()}
    for queue in of_type(resources, "AWS::SQS::Queue"):
        assert ("ApproximateNumberOfMessagesVisible", f"<{queue}.QueueName>") in shown, queue
    for queue, props in of_type(resources, "AWS::SQS::Queue").items():
        if "RedrivePolicy" in props["Properties"]:
            assert ("ApproximateAgeOfOldestMessage", f"<{queue}.QueueName>") in shown, queue
    for function in of_type(resources, "AWS::Serverless::Function"):
        for metric in ("Duration", "Errors", "Throttles", "ConcurrentExecutions"):
            assert (metric, f"<{function}>") in shown, (function, metric)
