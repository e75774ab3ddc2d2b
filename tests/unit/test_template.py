"""Checks of template.yaml: the contracts the application code and the local stack rely on."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from segment_qualtrics.destination.actions import ACTIONS

from local.template import load_template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = ROOT / "template.yaml"
AWS_ADAPTERS = ROOT / "layers" / "common" / "segment_qualtrics" / "adapters" / "aws.py"
SAM_PYTHON = ROOT / ".sam-venv" / "bin" / "python"

RUNTIME = "python3.13"
WORKER_QUEUE_VISIBILITY_FACTOR = 6  # AWS: queue VisibilityTimeout >= 6 x the consumer's Timeout
FOURTEEN_DAYS = 14 * 24 * 3600
DEFAULT_LAMBDA_TIMEOUT = 3


class ActionResources(NamedTuple):
    """One action's names in the template, all derived from its ActionDefinition (destination/actions.py)."""

    slug: str  # ACTION_SLUG
    prefix: str  # logical ids: <prefix>Queue, <prefix>DeadLetterQueue, <prefix>Function
    ingest_var: str  # the ingest's env var holding this action's queue URL

    @property
    def queue(self) -> str:
        return f"{self.prefix}Queue"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}DeadLetterQueue"

    @property
    def function(self) -> str:
        return f"{self.prefix}Function"


ACTION_RESOURCES = [ActionResources(a.slug, a.prefix, a.queue_variable) for a in ACTIONS.values()]
WORKER_CODE_URI = "functions/worker"
each_action = pytest.mark.parametrize("action", ACTION_RESOURCES, ids=[a.slug for a in ACTION_RESOURCES])

PSEUDO_PARAMETERS = {
    "AWS::AccountId",
    "AWS::NotificationARNs",
    "AWS::NoValue",
    "AWS::Partition",
    "AWS::Region",
    "AWS::StackId",
    "AWS::StackName",
    "AWS::URLSuffix",
}


def ref(name: str) -> dict[str, str]:
    return {"Ref": name}


def get_att(resource: str, attribute: str) -> dict[str, list[str]]:
    return {"Fn::GetAtt": [resource, attribute]}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE_PATH)


@pytest.fixture(scope="module")
def resources(template: dict[str, Any]) -> dict[str, Any]:
    return template["Resources"]


def of_type(resources: dict[str, Any], resource_type: str) -> dict[str, Any]:
    return {name: res for name, res in resources.items() if res["Type"] == resource_type}


def function_globals(template: dict[str, Any]) -> dict[str, Any]:
    return template.get("Globals", {}).get("Function", {})


def effective(template: dict[str, Any], function: str, prop: str, default: Any = None) -> Any:
    """A function property as SAM resolves it: the function's own value, else Globals.Function's."""
    props = template["Resources"][function]["Properties"]
    return props.get(prop, function_globals(template).get(prop, default))


def effective_env(template: dict[str, Any], function: str) -> dict[str, Any]:
    """Environment variables after SAM merges Globals.Function into the function (the function wins)."""
    global_vars = function_globals(template).get("Environment", {}).get("Variables", {})
    own_vars = template["Resources"][function]["Properties"].get("Environment", {}).get("Variables", {})
    return {**global_vars, **own_vars}


def parameter_int(template: dict[str, Any], value: Any, field: str) -> int:
    """An integer template value, or the `field` (Default, MinValue...) of the parameter it refers to."""
    if isinstance(value, dict):
        assert set(value) == {"Ref"}, f"expected a literal or a Ref to a parameter, got {value}"
        return int(template["Parameters"][value["Ref"]][field])
    return int(value)


class Grant(NamedTuple):
    """One (action, resource) an IAM statement allows, under a template condition (None: always)."""

    action: str  # as written, e.g. "sqs:SendMessage" (may be a pattern, e.g. "sqs:*")
    resource: str  # json.dumps of the Resource entry (an ARN string or an intrinsic)
    condition: str | None = None


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def resource_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def execution_role(template: dict[str, Any], function: str) -> str:
    """The logical id of the AWS::IAM::Role the function names in Role (SAM generates no role then)."""
    role = template["Resources"][function]["Properties"].get("Role")
    assert isinstance(role, dict) and set(role) == {"Fn::GetAtt"}, f"{function}: Role must be !GetAtt <role>.Arn"
    name, attribute = role["Fn::GetAtt"]
    assert attribute == "Arn", function
    assert template["Resources"][name]["Type"] == "AWS::IAM::Role", function
    return name


def role_policy_documents(template: dict[str, Any], role: str) -> list[tuple[str | None, dict[str, Any]]]:
    """(condition, policy document) of every policy that reaches `role`: its inline Policies (a conditional one as
    !If [Condition, policy, !Ref AWS::NoValue]) and every RolePolicy/Policy/ManagedPolicy resource attached to it."""
    documents: list[tuple[str | None, dict[str, Any]]] = []
    for policy in template["Resources"][role]["Properties"].get("Policies", []):
        condition = None
        if "Fn::If" in policy:
            condition, policy, otherwise = policy["Fn::If"]
            assert otherwise == ref("AWS::NoValue"), f"{role}: a conditional policy must be !If [C, policy, NoValue]"
        documents.append((condition, policy["PolicyDocument"]))
    for res in template["Resources"].values():
        props = res.get("Properties", {})
        attached = props.get("RoleName") == ref(role) or ref(role) in as_list(props.get("Roles", []))
        if res["Type"] in ("AWS::IAM::RolePolicy", "AWS::IAM::Policy", "AWS::IAM::ManagedPolicy") and attached:
            documents.append((res.get("Condition"), props["PolicyDocument"]))
    return documents


def role_grants(template: dict[str, Any], role: str) -> set[Grant]:
    grants = set()
    for condition, document in role_policy_documents(template, role):
        for statement in as_list(document["Statement"]):
            assert statement["Effect"] == "Allow", f"{role}: only Allow statements expected"
            assert "NotAction" not in statement and "NotResource" not in statement, role
            for action in as_list(statement["Action"]):
                for resource in as_list(statement["Resource"]):
                    grants.add(Grant(action, resource_key(resource), condition))
    return grants


def allowed_resources(grants: set[Grant], action: str) -> set[str]:
    """Resources on which `action` is allowed, whatever the pattern that allows it (sqs:*, *, sqs:Receive*)."""
    return {g.resource for g in grants if fnmatchcase(action.lower(), g.action.lower())}


def functions(template: dict[str, Any]) -> list[str]:
    return list(of_type(template["Resources"], "AWS::Serverless::Function"))


def log_group_of(template: dict[str, Any], function: str) -> str:
    """The logical id of the AWS::Logs::LogGroup named /aws/lambda/<function>."""
    name = {"Fn::Sub": f"/aws/lambda/${{{function}}}"}
    [group] = [n for n, r in of_type(template["Resources"], "AWS::Logs::LogGroup").items()
               if r["Properties"]["LogGroupName"] == name]
    return group


def referenced(value: Any) -> set[str]:
    """Logical ids a value names through Ref, Fn::GetAtt or Fn::Sub."""
    names = set()
    for node in walk(value):
        if isinstance(node, dict) and "Ref" in node:
            names.add(node["Ref"])
        if isinstance(node, dict) and "Fn::GetAtt" in node:
            names.add(node["Fn::GetAtt"][0])
        if isinstance(node, dict) and "Fn::Sub" in node:
            text = node["Fn::Sub"] if isinstance(node["Fn::Sub"], str) else node["Fn::Sub"][0]
            names |= {n.split(".")[0] for n in re.findall(r"\$\{([^!}][^}]*)\}", text)}
    return names


def arn(resource: str) -> str:
    return resource_key(get_att(resource, "Arn"))


XRAY_ACTIONS = ("xray:PutTraceSegments", "xray:PutTelemetryRecords")


def common_grants(template: dict[str, Any], function: str) -> set[Grant]:
    """What every function's role holds: its own log group's streams, and X-Ray when TracingEnabled=true."""
    logs = {Grant(a, arn(log_group_of(template, function))) for a in ("logs:CreateLogStream", "logs:PutLogEvents")}
    return logs | {Grant(a, resource_key("*"), "TracingOn") for a in XRAY_ACTIONS}


def boto3_calls(class_name: str, attribute: str, source: Path | None = None) -> set[str]:
    """IAM actions of the `self.<attribute>.<method>(...)` calls in one class of aws.py (or ``source``) (boto3
    snake_case -> CamelCase; an SQS *Batch call is authorized by its single-message action)."""
    module = ast.parse((source or AWS_ADAPTERS).read_text())
    [cls] = [n for n in module.body if isinstance(n, ast.ClassDef) and n.name == class_name]
    service = attribute   # self.sqs / self.dynamodb: the boto3 client of that service
    actions = set()
    for node in ast.walk(cls):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Attribute) and node.func.value.attr == attribute):
            name = "".join(part.capitalize() for part in node.func.attr.split("_"))
            if service == "sqs" and name.endswith("Batch"):
                name = name.removesuffix("Batch")
            actions.add(f"{service}:{name}")
    assert actions, f"no self.{attribute} call found in {class_name}"
    return actions


def sqs_consumers(template: dict[str, Any], queue: str) -> list[tuple[str, dict[str, Any]]]:
    """(function, SQS event properties) for every SAM SQS event reading `queue`."""
    consumers = []
    for name, res in of_type(template["Resources"], "AWS::Serverless::Function").items():
        for event in res["Properties"].get("Events", {}).values():
            if event["Type"] == "SQS" and event["Properties"]["Queue"] == get_att(queue, "Arn"):
                consumers.append((name, event["Properties"]))
    return consumers


def walk(node: Any):
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


# ------------------------------------------------------------------------------------------------ template


def test_is_a_sam_template_without_unused_sections(template: dict[str, Any]) -> None:
    # LanguageExtensions first: SAM must see the resources Fn::ForEach makes.
    assert template["Transform"] == ["AWS::LanguageExtensions", "AWS::Serverless-2016-10-31"]
    assert "Conditions" not in template or template["Conditions"], "empty Conditions section"


def test_every_ref_and_getatt_points_at_something_that_exists(template: dict[str, Any]) -> None:
    known = set(template["Resources"]) | set(template.get("Parameters", {})) | PSEUDO_PARAMETERS
    for node in walk(template):
        if isinstance(node, dict) and "Ref" in node:
            assert node["Ref"] in known, f"Ref to unknown {node['Ref']!r}"
        if isinstance(node, dict) and "Fn::GetAtt" in node:
            assert node["Fn::GetAtt"][0] in template["Resources"], f"GetAtt of unknown {node['Fn::GetAtt']}"
        if isinstance(node, dict) and isinstance(node.get("Fn::Sub"), str):
            for name in re.findall(r"\$\{([^!}][^}]*)\}", node["Fn::Sub"]):
                assert name.split(".")[0] in known, f"Sub of unknown {name!r}"


def test_runtime_is_python313_everywhere(template: dict[str, Any], resources: dict[str, Any]) -> None:
    functions = of_type(resources, "AWS::Serverless::Function")
    assert functions
    for name in functions:
        assert effective(template, name, "Runtime") == RUNTIME, name
        assert effective(template, name, "Architectures") == ["arm64"], name
    for name, layer in of_type(resources, "AWS::Serverless::LayerVersion").items():
        assert layer["Properties"]["CompatibleRuntimes"] == [RUNTIME], name
        assert layer["Metadata"]["BuildMethod"] == RUNTIME, name
        assert layer["Metadata"]["BuildArchitecture"] == "arm64", name
    runtime_like = {v for v in walk(template) if isinstance(v, str) and re.fullmatch(r"python\d.*", v)}
    assert runtime_like == {RUNTIME}


def test_functions_use_the_common_layer_and_json_logs(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    assert resources["CommonLayer"]["Type"] == "AWS::Serverless::LayerVersion"
    assert resources["CommonLayer"]["Properties"]["ContentUri"].rstrip("/") == "layers/common"
    for name in of_type(resources, "AWS::Serverless::Function"):
        assert ref("CommonLayer") in effective(template, name, "Layers", []), name
        assert effective(template, name, "LoggingConfig", {}).get("LogFormat") == "JSON", name


def test_post_segment_route_goes_to_ingest(resources: dict[str, Any]) -> None:
    assert resources["HttpApi"]["Type"] == "AWS::Serverless::HttpApi"
    routes = [
        (name, event["Properties"])
        for name, res in of_type(resources, "AWS::Serverless::Function").items()
        for event in res["Properties"].get("Events", {}).values()
        if event["Type"] in ("HttpApi", "Api")
    ]
    assert len(routes) == 1
    function, route = routes[0]
    assert function == "IngestFunction"
    assert route["ApiId"] == ref("HttpApi")
    assert route["Path"] == "/segment"
    assert route["Method"].upper() == "POST"
    assert str(route.get("PayloadFormatVersion", "2.0")) == "2.0"


@each_action
def test_action_queue_dead_letters_after_enough_receives(
    template: dict[str, Any], resources: dict[str, Any], action: ActionResources
) -> None:
    queue = resources[action.queue]
    dlq_name = action.dlq
    assert queue["Type"] == resources[dlq_name]["Type"] == "AWS::SQS::Queue"
    redrive = queue["Properties"]["RedrivePolicy"]
    assert isinstance(redrive, dict), "RedrivePolicy must be a mapping, not a JSON string"
    assert redrive["deadLetterTargetArn"] == get_att(dlq_name, "Arn")
    assert redrive["maxReceiveCount"] == ref("MaxReceiveCount")
    for field in ("Default", "MinValue"):
        assert parameter_int(template, redrive["maxReceiveCount"], field) >= 5


@each_action
def test_action_queue_visibility_covers_six_consumer_timeouts(
    template: dict[str, Any], resources: dict[str, Any], action: ActionResources
) -> None:
    consumers = sqs_consumers(template, action.queue)
    assert [name for name, _ in consumers] == [action.function]
    timeout = effective(template, action.function, "Timeout", DEFAULT_LAMBDA_TIMEOUT)
    visibility = resources[action.queue]["Properties"]["VisibilityTimeout"]
    assert visibility >= WORKER_QUEUE_VISIBILITY_FACTOR * timeout


def test_dead_letter_queues_keep_messages_fourteen_days(template: dict[str, Any], resources: dict[str, Any]) -> None:
    for action in ACTION_RESOURCES:
        source = resources[action.queue]["Properties"]
        dlq = resources[action.dlq]["Properties"]
        assert parameter_int(template, dlq["MessageRetentionPeriod"], "Default") == FOURTEEN_DAYS
        # SQS keeps the original enqueue time on redrive: the DLQ must outlive the source queue's retention.
        assert source.get("MessageRetentionPeriod", 345600) < parameter_int(
            template, dlq["MessageRetentionPeriod"], "MinValue")


def test_every_queue_is_encrypted(resources: dict[str, Any]) -> None:
    queues = of_type(resources, "AWS::SQS::Queue")
    assert len(queues) == 2 * len(ACTION_RESOURCES)
    for name, queue in queues.items():
        props = queue["Properties"]
        assert props.get("SqsManagedSseEnabled") is True or "KmsMasterKeyId" in props, name


@each_action
def test_worker_event_source_reports_partial_failures_and_caps_concurrency(
    template: dict[str, Any], action: ActionResources
) -> None:
    [(_, event)] = sqs_consumers(template, action.queue)
    assert "ReportBatchItemFailures" in event["FunctionResponseTypes"]
    assert 1 <= event["BatchSize"] <= 10
    assert event["ScalingConfig"]["MaximumConcurrency"] == ref("QualtricsMaxConcurrency")
    parameter = template["Parameters"]["QualtricsMaxConcurrency"]
    assert 2 <= int(parameter["MinValue"]) <= int(parameter["Default"]) <= int(parameter["MaxValue"]) <= 1000


def test_global_environment_contract(template: dict[str, Any], resources: dict[str, Any]) -> None:
    for name in of_type(resources, "AWS::Serverless::Function"):
        env = effective_env(template, name)
        # The stack name: the EMF dimension `service` keeps each stack's metrics (alarms, dashboard) apart.
        assert env["POWERTOOLS_SERVICE_NAME"] == ref("AWS::StackName"), name
        assert env["POWERTOOLS_METRICS_NAMESPACE"] == "SegmentQualtrics", name
        assert env["POWERTOOLS_LOG_LEVEL"] == ref("LogLevel"), name
        assert env["QUALTRICS_BASE_URL"] == ref("QualtricsBaseUrl"), name
        assert env["DESTINATION_CONFIG"] == "", name
    assert template["Parameters"]["QualtricsBaseUrl"]["Default"] == ""
    assert (
        template["Parameters"]["LogLevel"]["Default"] in template["Parameters"]["LogLevel"]["AllowedValues"]
    )


@each_action
def test_worker_environment_contract(
    template: dict[str, Any], resources: dict[str, Any], action: ActionResources
) -> None:
    function = action.function
    assert resources[function]["Properties"]["Handler"] == "app.lambda_handler"
    env = effective_env(template, function)
    assert env["ACTION_SLUG"] == action.slug
    assert env["QUALTRICS_SECRET_ARN"] == ref("QualtricsSecret")
    assert env["QUEUE_URL"] == ref(action.queue)
    assert env["DEAD_LETTER_QUEUE_URL"] == ref(action.dlq)
    assert env["IDEMPOTENCY_TABLE"] == ref("IdempotencyTable")
    assert env["MAX_RECEIVE_COUNT"] == ref("MaxReceiveCount")
    assert env["DEAD_LETTER_RETENTION_SECONDS"] == ref("DeadLetterRetentionSeconds")


# ------------------------------------------------------------------------------------------------ permissions
# Every function has an explicit role: SAM then generates none, so it attaches no managed policy (for an SQS event,
# AWSLambdaSQSQueueExecutionRole: sqs:ReceiveMessage/DeleteMessage/GetQueueAttributes on every queue of the account).


def test_every_function_has_its_own_explicit_role(template: dict[str, Any], resources: dict[str, Any]) -> None:
    assert "Role" not in function_globals(template) and "Policies" not in function_globals(template)
    roles = {}
    for name in functions(template):
        props = resources[name]["Properties"]
        assert "Policies" not in props, f"{name}: SAM ignores Policies next to Role; grant in the role itself"
        roles[name] = execution_role(template, name)
    assert len(set(roles.values())) == len(roles), f"functions share a role: {roles}"
    assert set(roles.values()) == set(of_type(resources, "AWS::IAM::Role")), "a role no function uses"
    for name, role in roles.items():
        assert role == f"{name}Role", "keep SAM's logical id <Function>Role: an update then keeps the role"
        trust = resources[role]["Properties"]["AssumeRolePolicyDocument"]
        [statement] = as_list(trust["Statement"])
        assert statement["Effect"] == "Allow" and statement["Action"] in ("sts:AssumeRole", ["sts:AssumeRole"])
        assert as_list(statement["Principal"]["Service"]) == ["lambda.amazonaws.com"], role


def test_no_managed_policies(template: dict[str, Any], resources: dict[str, Any]) -> None:
    for name, role in of_type(resources, "AWS::IAM::Role").items():
        assert not role["Properties"].get("ManagedPolicyArns"), f"{name}: managed policies have broad resources"
        assert "PermissionsBoundary" not in role["Properties"], name
    assert not of_type(resources, "AWS::IAM::ManagedPolicy")
    managed = [v for v in walk(template) if isinstance(v, str) and (":iam::aws:policy/" in v or "ExecutionRole" in v)]
    assert managed == []


def test_no_wildcard_actions_or_resources(template: dict[str, Any], resources: dict[str, Any]) -> None:
    for role in of_type(resources, "AWS::IAM::Role"):
        for grant in role_grants(template, role):
            assert "*" not in grant.action, f"{role}: wildcard action {grant.action}"
            if grant.action.split(":")[0] in ("sqs", "dynamodb", "secretsmanager", "logs"):
                assert "*" not in json.loads(grant.resource), f"{role}: {grant.action} on {grant.resource}"
                assert grant.condition is None, f"{role}: {grant.action} must not depend on a condition"
            else:
                # X-Ray has no resource-level permissions: "*" is all it takes, and only when traced.
                assert grant.action in XRAY_ACTIONS, f"{role}: unexpected {grant.action}"
                assert grant.condition == "TracingOn", f"{role}: X-Ray only with TracingEnabled=true"
    assert template["Conditions"]["TracingOn"] == {"Fn::Equals": [ref("TracingEnabled"), "true"]}


@each_action
def test_worker_role_is_scoped_to_its_own_queue_dlq_secret_table_and_log_group(
    template: dict[str, Any], action: ActionResources
) -> None:
    grants = role_grants(template, execution_role(template, action.function))
    expected = common_grants(template, action.function)
    # SendMessage on its own queue: a fresh copy of a rate-limited message (worker.py, docs/throughput.md).
    expected |= {Grant(a, arn(action.queue)) for a in
                 ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility",
                  "sqs:SendMessage")}
    expected |= {Grant("sqs:SendMessage", arn(action.dlq)),
                 Grant("secretsmanager:GetSecretValue", resource_key(ref("QualtricsSecret")))}
    expected |= {Grant(a, arn("IdempotencyTable")) for a in
                 ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem")}
    assert grants == expected


@each_action
def test_a_worker_cannot_touch_another_actions_queues(template: dict[str, Any], action: ActionResources) -> None:
    grants = role_grants(template, execution_role(template, action.function))
    # The event source mapping's calls, then the worker's own, each on the worker's queue only.
    for sqs_action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes",
                       "sqs:ChangeMessageVisibility"):
        assert allowed_resources(grants, sqs_action) == {arn(action.queue)}, sqs_action
    assert allowed_resources(grants, "sqs:SendMessage") == {arn(action.dlq), arn(action.queue)}
    assert allowed_resources(grants, "sqs:PurgeQueue") == set()
    others = {q for other in ACTION_RESOURCES if other != action for q in (other.queue, other.dlq)}
    for grant in grants:
        named = referenced(json.loads(grant.resource)) & others
        assert not named, f"{action.function}: {grant.action} on {named}"


@each_action
def test_worker_role_covers_every_aws_call_of_the_worker(template: dict[str, Any], action: ActionResources) -> None:
    """The calls aws.py makes for a worker, each allowed on the resource it targets."""
    grants = role_grants(template, execution_role(template, action.function))
    needed = {
        arn(action.dlq): boto3_calls("SqsDeadLetterQueue", "sqs"),
        arn(action.queue): boto3_calls("SqsVisibility", "sqs") | boto3_calls("SqsRequeue", "sqs"),
        arn("IdempotencyTable"): boto3_calls("DynamoIdempotencyStore", "dynamodb")
        | boto3_calls("DynamoRateLimitStore", "dynamodb", AWS_ADAPTERS.parent / "dynamodb_rate_limit.py"),
        resource_key(ref("QualtricsSecret")): {"secretsmanager:GetSecretValue"},   # parameters.get_secret
    }
    for resource, actions in needed.items():
        for needed_action in actions:
            assert resource in allowed_resources(grants, needed_action), f"{needed_action} on {resource}"


def test_ingest_role_sends_to_the_action_queues_and_reads_its_secret(template: dict[str, Any]) -> None:
    grants = role_grants(template, execution_role(template, "IngestFunction"))
    expected = common_grants(template, "IngestFunction")
    expected |= {Grant("sqs:SendMessage", arn(action.queue)) for action in ACTION_RESOURCES}
    expected |= {Grant("secretsmanager:GetSecretValue", resource_key(ref("IngestSecret")))}
    assert grants == expected
    for sqs_action in boto3_calls("SqsPublisher", "sqs"):   # SendMessageBatch
        assert allowed_resources(grants, sqs_action) == {arn(action.queue) for action in ACTION_RESOURCES}
    assert allowed_resources(grants, "secretsmanager:GetSecretValue") == {resource_key(ref("IngestSecret"))}


def test_each_role_writes_only_its_own_log_group(template: dict[str, Any], resources: dict[str, Any]) -> None:
    for name in functions(template):
        grants = role_grants(template, execution_role(template, name))
        own = log_group_of(template, name)
        logs = {g for g in grants if g.action.startswith("logs:")}
        assert logs == {Grant(a, arn(own)) for a in ("logs:CreateLogStream", "logs:PutLogEvents")}, name
        # The template creates the group (with retention); a role able to create it could race it.
        assert allowed_resources(grants, "logs:CreateLogGroup") == set(), name


@pytest.fixture(scope="module")
def sam_outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The template as SAM CLI expands it and SAM's own translator (offline, .sam-venv) turns it into
    CloudFormation: made once."""
    if not SAM_PYTHON.exists():
        pytest.skip(".sam-venv (samtranslator) is not installed")
    script = """
import json, sys
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

class Policies:  # the managed policy map SAM would otherwise fetch from IAM
    def load(self):
        return {n: "arn:aws:iam::aws:policy/service-role/" + n for n in
                ("AWSLambdaBasicExecutionRole", "AWSLambdaSQSQueueExecutionRole", "AWSXrayWriteOnlyAccess")}

from samcli.lib.cfn_language_extensions.sam_integration import expand_language_extensions

# SAM CLI's own AWS::LanguageExtensions expansion (what `sam build` and `sam local` run), then SAM's transform.
# SAM CLI's expansion also resolves parameters to their defaults: only its resource list is compared. The
# translator gets the expansion of the local stack's loader (argv[2]), whose Refs are intact.
expanded = sorted(expand_language_extensions(yaml_parse(open(sys.argv[1]).read()), {"AWS::Region": "us-east-1"},
                                             enabled=True).expanded_template["Resources"])
tpl = json.load(open(sys.argv[2]))
for res in tpl["Resources"].values():
    for key in ("CodeUri", "ContentUri"):
        if key in res.get("Properties", {}):
            res["Properties"][key] = "s3://bucket/code.zip"
print(json.dumps({"expanded": expanded, "translated": transform(tpl, {}, Policies())}))
"""
    env = {"PATH": os.environ.get("PATH", ""), "AWS_DEFAULT_REGION": "us-east-1", "SAM_CLI_TELEMETRY": "0"}
    expanded = tmp_path_factory.mktemp("sam") / "expanded.json"
    expanded.write_text(json.dumps(load_template(TEMPLATE_PATH)))
    done = subprocess.run([str(SAM_PYTHON), "-c", script, str(TEMPLATE_PATH), str(expanded)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def sam_expanded(sam_outputs: dict[str, Any]) -> list[str]:
    """Logical ids of the resources SAM CLI's language-extensions expansion makes, before SAM's transform."""
    return sam_outputs["expanded"]


@pytest.fixture(scope="module")
def sam_translated(sam_outputs: dict[str, Any]) -> dict[str, Any]:
    return sam_outputs["translated"]


def test_sam_and_the_local_stack_expand_the_same_resources(resources: dict[str, Any], sam_expanded: list[str]) -> None:
    assert sam_expanded == sorted(resources)
    assert not [name for name in resources if "ForEach" in name or "${" in name]


def test_the_template_makes_every_actions_resources_from_its_registry_entry(
        template: dict[str, Any], resources: dict[str, Any]) -> None:
    """destination/actions.py and the template agree: one loop entry and one mapping entry per action."""
    slugs = {prefix: entry["Slug"] for prefix, entry in template["Mappings"]["Actions"].items()}
    assert slugs == {a.prefix: a.slug for a in ACTION_RESOURCES}
    for action in ACTION_RESOURCES:
        for suffix in ("Queue", "DeadLetterQueue", "Function", "FunctionRole", "FunctionLogGroup"):
            assert f"{action.prefix}{suffix}" in resources, (action.slug, suffix)
        assert effective_env(template, "IngestFunction")[action.ingest_var] == ref(action.queue)
        assert resources[action.function]["Properties"]["CodeUri"].rstrip("/") == WORKER_CODE_URI


def test_sam_generates_no_role_and_attaches_no_managed_policy(template: dict[str, Any],
                                                              sam_translated: dict[str, Any]) -> None:
    """Translate the template with SAM's own translator (offline) and read the roles it produces."""
    output = sam_translated
    generated = output["Resources"]
    assert set(of_type(generated, "AWS::IAM::Role")) == set(of_type(template["Resources"], "AWS::IAM::Role"))
    for name, role in of_type(generated, "AWS::IAM::Role").items():
        assert "ManagedPolicyArns" not in role["Properties"], name
    assert "AWSLambdaSQSQueueExecutionRole" not in json.dumps(output)
    assert ":iam::aws:policy/" not in json.dumps(output)
    for name in functions(template):
        assert generated[name]["Properties"]["Role"] == get_att(f"{name}Role", "Arn"), name


def test_ingest_function_contract(template: dict[str, Any], resources: dict[str, Any]) -> None:
    props = resources["IngestFunction"]["Properties"]
    assert props["Handler"] == "app.lambda_handler"
    assert props["Timeout"] == 10
    env = effective_env(template, "IngestFunction")
    assert env["INGEST_SECRET_ARN"] == ref("IngestSecret")
    for action in ACTION_RESOURCES:
        assert env[action.ingest_var] == ref(action.queue)
    assert "QUALTRICS_SECRET_ARN" not in env


def test_ingest_secret_generates_a_shared_secret(resources: dict[str, Any]) -> None:
    secret = resources["IngestSecret"]
    assert secret["Type"] == "AWS::SecretsManager::Secret"
    generate = secret["Properties"]["GenerateSecretString"]
    assert json.loads(generate["SecretStringTemplate"]) == {}
    assert generate["GenerateStringKey"] == "sharedSecret"
    assert generate["PasswordLength"] >= 32


def test_qualtrics_secret_holds_token_and_datacenter(resources: dict[str, Any]) -> None:
    secret = resources["QualtricsSecret"]
    assert secret["Type"] == "AWS::SecretsManager::Secret"
    value = json.loads(secret["Properties"]["SecretString"])
    assert set(value) == {"apiToken", "datacenter"}
    assert re.fullmatch(r"[a-zA-Z0-9-]+", value["datacenter"])


def test_idempotency_table_matches_powertools(resources: dict[str, Any]) -> None:
    table = resources["IdempotencyTable"]
    assert table["Type"] == "AWS::DynamoDB::Table"
    props = table["Properties"]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert props["AttributeDefinitions"] == [{"AttributeName": "id", "AttributeType": "S"}]
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}
    assert props["SSESpecification"]["SSEEnabled"] is True


def test_every_function_has_a_log_group_with_retention(resources: dict[str, Any]) -> None:
    log_groups = {
        json.dumps(res["Properties"]["LogGroupName"]): res["Properties"]
        for res in of_type(resources, "AWS::Logs::LogGroup").values()
    }
    for name in of_type(resources, "AWS::Serverless::Function"):
        group = log_groups.get(json.dumps({"Fn::Sub": f"/aws/lambda/${{{name}}}"}))
        assert group is not None, f"no log group for {name}"
        assert group["RetentionInDays"] == ref("LogRetentionDays")


def test_outputs_name_the_queues_secrets_and_table(template: dict[str, Any]) -> None:
    outputs = {name: out["Value"] for name, out in template["Outputs"].items()}
    assert outputs["IngestSecretArn"] == ref("IngestSecret")
    assert outputs["QualtricsSecretArn"] == ref("QualtricsSecret")
    assert outputs["IdempotencyTableName"] == ref("IdempotencyTable")
    for action in ACTION_RESOURCES:
        assert outputs[f"{action.queue}Url"] == ref(action.queue)
        assert outputs[f"{action.dlq}Url"] == ref(action.dlq)


def test_code_folders_exist(resources: dict[str, Any]) -> None:
    functions = of_type(resources, "AWS::Serverless::Function")
    code_uris = {res["Properties"]["CodeUri"].rstrip("/") for res in functions.values()}
    assert code_uris == {"functions/ingest", WORKER_CODE_URI}
    for code_uri in code_uris:
        assert (ROOT / code_uri).is_dir(), code_uri
        assert (ROOT / code_uri / "requirements.txt").is_file(), code_uri
    for name, layer in of_type(resources, "AWS::Serverless::LayerVersion").items():
        content = ROOT / layer["Properties"]["ContentUri"]
        assert content.is_dir(), name
        # BuildMethod python3.x copies ContentUri into python/: packages must sit directly under it.
        assert not (content / "python").exists(), f"{name}: would end up as python/python/"
        assert (content / "requirements.txt").is_file(), name


# --- the public endpoint: signature form, throttling, reserved concurrency ------------------------------

def parameter_defaults(template: dict[str, Any]) -> dict[str, str]:
    """Parameters as the local stack and CloudFormation see them when nothing is passed: their defaults."""
    return {k: str(v.get("Default", "")) for k, v in template["Parameters"].items()}


def test_the_batch_first_element_signature_is_off_by_default_and_says_what_it_gives_up(
        template: dict[str, Any]) -> None:
    from segment_qualtrics.runtime.settings import IngestSettings

    from local.stack import Intrinsics
    parameter = template["Parameters"]["AcceptBatchFirstElementSignature"]
    assert (parameter["Default"], parameter["AllowedValues"]) == ("false", ["false", "true"])
    assert "first element" in parameter["Description"] and "replay" in parameter["Description"]
    env = effective_env(template, "IngestFunction")
    assert env["ACCEPT_BATCH_FIRST_ELEMENT_SIGNATURE"] == ref("AcceptBatchFirstElementSignature")
    # The local stack resolves the Ref to the default, and the ingest reads it as off.
    value = Intrinsics(template, parameter_defaults(template)).resolve(env["ACCEPT_BATCH_FIRST_ELEMENT_SIGNATURE"])
    settings = IngestSettings.from_environ({"INGEST_SECRET_ARN": "arn", "ACCEPT_BATCH_FIRST_ELEMENT_SIGNATURE": value})
    assert settings.ACCEPT_BATCH_FIRST_ELEMENT_SIGNATURE is False


def test_the_http_api_throttles_every_route(template: dict[str, Any], resources: dict[str, Any]) -> None:
    route_settings = resources["HttpApi"]["Properties"]["DefaultRouteSettings"]
    assert route_settings == {"ThrottlingRateLimit": ref("IngestRateLimit"),
                              "ThrottlingBurstLimit": ref("IngestBurstLimit")}
    rate, burst = (template["Parameters"][name] for name in ("IngestRateLimit", "IngestBurstLimit"))
    assert rate["Type"] == burst["Type"] == "Number"
    assert rate["MinValue"] >= 1 and burst["MinValue"] >= 1
    assert burst["Default"] >= rate["Default"] > 0
    assert "429" in rate["Description"]


def test_the_ingest_has_reserved_concurrency_unless_set_to_zero(
        template: dict[str, Any], resources: dict[str, Any]) -> None:
    parameter = template["Parameters"]["IngestReservedConcurrency"]
    assert parameter["Type"] == "Number" and parameter["MinValue"] == 0 and parameter["Default"] >= 1
    assert "workers" in parameter["Description"] and "0" in parameter["Description"]
    assert resources["IngestFunction"]["Properties"]["ReservedConcurrentExecutions"] == {
        "Fn::If": ["IngestConcurrencyReserved", ref("IngestReservedConcurrency"), ref("AWS::NoValue")]}
    assert template["Conditions"]["IngestConcurrencyReserved"] == {
        "Fn::Not": [{"Fn::Equals": [ref("IngestReservedConcurrency"), 0]}]}


def test_sam_puts_the_throttling_on_the_http_apis_stage(sam_translated: dict[str, Any]) -> None:
    stages = of_type(sam_translated["Resources"], "AWS::ApiGatewayV2::Stage")
    assert [s["Properties"]["DefaultRouteSettings"] for s in stages.values()] == [
        {"ThrottlingRateLimit": ref("IngestRateLimit"), "ThrottlingBurstLimit": ref("IngestBurstLimit")}]
# ------------------------------------------------------------------------------------------------ error model
# What the worker's guarantees (docs/error-model.md) need from the template: time for a whole call within the
# function timeout, a visibility that outlasts retries of the invocation, spare receives above the worker's own
# attempts, and idempotency records that outlive every message a redrive can bring back.


@each_action
def test_a_worker_invocation_has_time_for_a_whole_qualtrics_call(
    template: dict[str, Any], resources: dict[str, Any], action: ActionResources
) -> None:
    from segment_qualtrics.adapters.qualtrics import CONNECT_TIMEOUT, READ_TIMEOUT
    from segment_qualtrics.runtime.worker_app import CALL_SECONDS

    timeout = effective(template, action.function, "Timeout", DEFAULT_LAMBDA_TIMEOUT)
    # The worker starts no call with less than CALL_SECONDS left (worst connect + read, plus a margin to settle the
    # batch), so however slow Qualtrics is, an invocation ends before its timeout; the first call must fit.
    assert CALL_SECONDS >= CONNECT_TIMEOUT + READ_TIMEOUT
    assert timeout > CALL_SECONDS + 5   # + the start of the invocation (claims, a cold secret fetch)
    visibility = resources[action.queue]["Properties"]["VisibilityTimeout"]
    assert visibility >= 6 * timeout


@each_action
def test_sqs_keeps_spare_receives_above_the_workers_attempts(
    template: dict[str, Any], resources: dict[str, Any], action: ActionResources
) -> None:
    from segment_qualtrics.runtime.settings import CRASH_MARGIN_RECEIVES, WorkerSettings

    redrive = resources[action.queue]["Properties"]["RedrivePolicy"]
    env = effective_env(template, action.function)
    assert env["MAX_RECEIVE_COUNT"] == redrive["maxReceiveCount"] == ref("MaxReceiveCount")
    assert "MAX_ATTEMPTS" not in env   # derived from MAX_RECEIVE_COUNT, never set apart from it
    assert CRASH_MARGIN_RECEIVES >= 3
    for field in ("Default", "MinValue"):
        receives = parameter_int(template, redrive["maxReceiveCount"], field)
        settings = WorkerSettings(ACTION_SLUG=action.slug, QUALTRICS_SECRET_ARN="a", QUEUE_URL="q",
                                  DEAD_LETTER_QUEUE_URL="d", IDEMPOTENCY_TABLE="t", MAX_RECEIVE_COUNT=receives)
        assert settings.max_attempts() == receives - CRASH_MARGIN_RECEIVES >= 3
    assert parameter_int(template, redrive["maxReceiveCount"], "Default") - CRASH_MARGIN_RECEIVES == 5


@each_action
def test_idempotency_records_outlive_every_redrive(
    template: dict[str, Any], resources: dict[str, Any], action: ActionResources
) -> None:
    from segment_qualtrics.runtime.settings import IDEMPOTENCY_MARGIN_SECONDS, WorkerSettings

    source = resources[action.queue]["Properties"]
    dlq = resources[action.dlq]["Properties"]
    env = effective_env(template, action.function)
    # One parameter sets both the DLQ's retention and the workers' idempotency TTL.
    assert dlq["MessageRetentionPeriod"] == env["DEAD_LETTER_RETENTION_SECONDS"] == ref("DeadLetterRetentionSeconds")
    assert IDEMPOTENCY_MARGIN_SECONDS >= source.get("MessageRetentionPeriod", 345600) + 24 * 3600
    for field in ("Default", "MinValue", "MaxValue"):
        retention = parameter_int(template, dlq["MessageRetentionPeriod"], field)
        settings = WorkerSettings(ACTION_SLUG=action.slug, QUALTRICS_SECRET_ARN="a", QUEUE_URL="q",
                                  DEAD_LETTER_QUEUE_URL="d", IDEMPOTENCY_TABLE="t",
                                  DEAD_LETTER_RETENTION_SECONDS=retention)
        assert settings.idempotency_keep_seconds() >= retention + source.get("MessageRetentionPeriod", 345600)
