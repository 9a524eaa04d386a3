"""Properties of infra/template.yaml and infra/storage.yaml that a later edit must not quietly break.

Each property is a `check_*` function returning a list of violations (empty means it holds). Every
check runs twice: on the real templates, where it must find nothing, and on a copy broken on
purpose by a matching entry of MUTATIONS, where it must find something. The second run is what
proves the check can fail; a new check needs a new mutation.

Templates are parsed with cfn-lint's YAML decoder, so CloudFormation's short-form tags (!Ref,
!GetAtt, !Sub, !If, ...) arrive in their long form ({"Ref": ...}, {"Fn::GetAtt": [...]}, ...).
"""

from __future__ import annotations

import copy
import json
import pathlib
import re
from typing import Any, Callable, Iterator

import pytest
from cfnlint.decode import cfn_yaml

INFRA = pathlib.Path(__file__).resolve().parent.parent
REPO = INFRA.parent

# The only actions that may be granted on Resource "*": they have no resource type in IAM.
RESOURCELESS_ACTIONS = {"rekognition:DetectLabels", "rekognition:DetectText"}

# Topics allowed to stay unencrypted, with the reason (repeated in the template's checkov skip).
UNENCRYPTED_TOPICS = {
    "AlarmTopic": "alarm notifications only; CloudWatch cannot publish to an aws/sns-encrypted topic",
}

WORKER = "WorkerFunction"
CALLBACKS = "CallbackDelivererFunction"
LIVE_SOCKET = "LiveSocketFunction"
LIVE_PUSH = "LivePushFunction"

# What each binary reads from its environment (the Rust side's contract; infra/README.md).
TLS_CONDITION = "AmazonTrustServicesEndpoints"
REQUIRED_ENV = {
    "RequestHandlerFunction": {"LABELQ_TABLE", "LABELQ_BUCKET", "LABELQ_TOPIC_ARN", "LABELQ_CALLBACKS"},
    "StatusApiFunction": {"LABELQ_TABLE", "LABELQ_BUCKET"},
    WORKER: {
        "LABELQ_TABLE",
        "LABELQ_BUCKET",
        "LABELQ_QUEUE_URL",
        "LABELQ_MAX_RECEIVE_COUNT",
        "LABELQ_VISIBILITY_TIMEOUT",
        "LABEL_DETECTOR",
        "LABELQ_COMPLETION_TOPIC_ARN",
        "LABELQ_TOPIC_ARN",
        "LABELQ_DROP_OWNER",
        "LABELQ_DROP_OWNER_FROM_PATH",
    },
    CALLBACKS: {"LABELQ_TABLE", "LABELQ_BUCKET", "LABELQ_CALLBACK_QUEUE_URL", "LABELQ_CALLBACK_SECRET_ARN"},
    LIVE_SOCKET: {"LABELQ_TABLE", "LABELQ_BUCKET", "LABELQ_CONNECTIONS_TABLE", "LABELQ_LIVE_ENDPOINT",
                  "LABELQ_JWT_ISSUER", "LABELQ_JWT_AUDIENCE"},
    LIVE_PUSH: {"LABELQ_TABLE", "LABELQ_BUCKET", "LABELQ_CONNECTIONS_TABLE", "LABELQ_LIVE_ENDPOINT",
                "LABELQ_LIVE_QUEUE_URL"},
}
BINARIES = {
    "RequestHandlerFunction": "request-handler",
    "StatusApiFunction": "status-api",
    WORKER: "worker",
    CALLBACKS: "callback-deliverer",
    LIVE_SOCKET: "live-socket",
    LIVE_PUSH: "live-push",
}
# Binaries that are not their crate's namesake.
CRATE_OF = {"live-push": "live-socket"}
ROUTES = {
    ("POST", "/v1/images"): "RequestHandlerFunction",
    ("POST", "/v1/uploads"): "RequestHandlerFunction",
    ("GET", "/v1/callback"): "RequestHandlerFunction",
    ("PUT", "/v1/callback"): "RequestHandlerFunction",
    ("DELETE", "/v1/callback"): "RequestHandlerFunction",
    ("GET", "/v1/images"): "StatusApiFunction",
    ("GET", "/v1/images/{id}"): "StatusApiFunction",
    ("DELETE", "/v1/images/{id}"): "StatusApiFunction",
}

Template = dict[str, Any]


# --------------------------------------------------------------------------------------------------
# Reading templates
# --------------------------------------------------------------------------------------------------


def load(name: str) -> Template:
    """The template as plain dicts, lists and scalars (the decoder's node types carry positions)."""
    return json.loads(json.dumps(cfn_yaml.load(str(INFRA / name))))


@pytest.fixture(scope="module")
def templates() -> dict[str, Template]:
    return {"template": load("template.yaml"), "storage": load("storage.yaml")}


def resources(t: Template, *types: str) -> dict[str, dict]:
    return {n: r for n, r in t.get("Resources", {}).items() if not types or r.get("Type") in types}


def props(resource: dict) -> dict:
    return resource.get("Properties") or {}


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def is_true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def branches(value: Any) -> Iterator[Any]:
    """Every value an expression can take under some condition: both arms of Fn::If, no NoValue."""
    if isinstance(value, dict) and set(value) == {"Fn::If"}:
        for arm in value["Fn::If"][1:]:
            yield from branches(arm)
    elif value == {"Ref": "AWS::NoValue"}:
        return
    else:
        yield value


def render(value: Any) -> str:
    """An expression as the ARN-like string it stands for, e.g. {"Fn::GetAtt": ["B", "Arn"]} -> ${B.Arn}."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        (fn, arg), = value.items()
        if fn == "Ref":
            return "${%s}" % arg
        if fn == "Fn::GetAtt":
            return "${%s}" % (arg if isinstance(arg, str) else ".".join(arg))
        if fn == "Fn::Sub":
            text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
            for name, expr in variables.items():
                text = text.replace("${%s}" % name, render(expr))
            return text
        if fn == "Fn::Join":
            return arg[0].join(render(p) for p in arg[1])
    return json.dumps(value, sort_keys=True)


def number(t: Template, value: Any) -> int:
    """A literal number, or a Ref to one of t's parameters (its default)."""
    if isinstance(value, dict) and "Ref" in value:
        return int(t["Parameters"][value["Ref"]]["Default"])
    return int(value)


def output_target(t: Template, output: str) -> str:
    """The logical id an output's value points at (Ref X or GetAtt X.Attr)."""
    value = t["Outputs"][output]["Value"]
    return re.match(r"\$\{([^.}]+)", render(value)).group(1)


def policy_documents(t: Template) -> Iterator[tuple[str, dict]]:
    """Every IAM policy document in t: identity policies, trust policies and resource policies."""
    for name, r in resources(t).items():
        p, kind = props(r), r.get("Type")
        if kind == "AWS::IAM::Role":
            yield f"{name}.AssumeRolePolicyDocument", p.get("AssumeRolePolicyDocument", {})
            for pol in p.get("Policies", []):
                yield f"{name}.Policies.{pol.get('PolicyName')}", pol.get("PolicyDocument", {})
        elif kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::IAM::RolePolicy",
                      "AWS::S3::BucketPolicy", "AWS::SQS::QueuePolicy", "AWS::SNS::TopicPolicy"):
            yield name, p.get("PolicyDocument", {})
        elif kind == "AWS::KMS::Key":
            yield f"{name}.KeyPolicy", p.get("KeyPolicy", {})
        elif kind == "AWS::Serverless::Function":
            for i, pol in enumerate(as_list(p.get("Policies", []))):
                yield f"{name}.Policies[{i}]", pol


def statements(doc: Any) -> Iterator[dict]:
    for branch in branches(doc):
        if not isinstance(branch, dict):
            # A SAM policy template or a managed policy name: not a document.
            yield {"Effect": "Allow", "Action": ["<not an inline statement>*"], "Resource": "*"}
            continue
        for statement in as_list(branch.get("Statement", [])):
            yield from branches(statement)


def allow_statements(t: Template) -> Iterator[tuple[str, dict]]:
    for where, doc in policy_documents(t):
        for s in statements(doc):
            if s.get("Effect") == "Allow":
                yield f"{where}/{s.get('Sid', '?')}", s


def is_wildcard_resource(resource: Any) -> bool:
    """'*', or an ARN whose resource part is only a wildcard (arn:aws:s3:::*, arn:aws:sqs:*:*:*)."""
    text = render(resource)
    return text == "*" or (text.startswith("arn:") and text.split(":", 5)[-1] in ("*", "*/*"))


# --------------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------------


def check_public_access_block(ts: dict[str, Template]) -> list[str]:
    flags = ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets")
    found = []
    for which, t in ts.items():
        for name, r in resources(t, "AWS::S3::Bucket").items():
            block = props(r).get("PublicAccessBlockConfiguration", {})
            found += [f"{which}:{name}: {f} is not true" for f in flags if not is_true(block.get(f))]
    return found


def check_tls_only_bucket_policy(ts: dict[str, Template]) -> list[str]:
    """Each bucket's policy denies every S3 action, to everyone, on the bucket and its objects,
    when the request is not over TLS."""
    found = []
    for which, t in ts.items():
        for bucket in resources(t, "AWS::S3::Bucket"):
            arns = {"${%s.Arn}" % bucket, "arn:aws:s3:::${%s}" % bucket, "arn:${AWS::Partition}:s3:::${%s}" % bucket}
            covered: set[str] = set()
            for policy in resources(t, "AWS::S3::BucketPolicy").values():
                if render(props(policy).get("Bucket")) != "${%s}" % bucket:
                    continue
                for s in statements(props(policy).get("PolicyDocument", {})):
                    principal = s.get("Principal")
                    condition = s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport")
                    if (s.get("Effect") == "Deny" and principal in ("*", {"AWS": "*"})
                            and "s3:*" in as_list(s.get("Action", [])) and str(condition).lower() == "false"):
                        for res in as_list(s.get("Resource", [])):
                            text = render(res)
                            for arn in arns:
                                if text == arn:
                                    covered.add("bucket")
                                elif text == arn + "/*":
                                    covered.add("objects")
            found += [f"{which}:{bucket}: no TLS-only Deny covering its {part}"
                      for part in ("bucket", "objects") if part not in covered]
    return found


def check_encryption_at_rest(ts: dict[str, Template]) -> list[str]:
    found = []
    for which, t in ts.items():
        for name, r in resources(t, "AWS::S3::Bucket").items():
            rules = props(r).get("BucketEncryption", {}).get("ServerSideEncryptionConfiguration", [])
            algorithms = [rule.get("ServerSideEncryptionByDefault", {}).get("SSEAlgorithm") for rule in rules]
            if not algorithms or not all(a in ("AES256", "aws:kms", "aws:kms:dsse") for a in algorithms):
                found.append(f"{which}:{name}: no default server-side encryption")
        for name, r in resources(t, "AWS::DynamoDB::Table").items():
            if not is_true(props(r).get("SSESpecification", {}).get("SSEEnabled")):
                found.append(f"{which}:{name}: SSESpecification.SSEEnabled is not true")
        for name, r in resources(t, "AWS::SQS::Queue").items():
            p = props(r)
            if not (is_true(p.get("SqsManagedSseEnabled")) or p.get("KmsMasterKeyId")):
                found.append(f"{which}:{name}: neither SSE-SQS nor a KMS key")
        for name, r in resources(t, "AWS::SNS::Topic").items():
            if not props(r).get("KmsMasterKeyId") and name not in UNENCRYPTED_TOPICS:
                found.append(f"{which}:{name}: no KmsMasterKeyId")
    return found


def check_no_wildcard_actions(ts: dict[str, Template]) -> list[str]:
    """No Allow grants a wildcard action or uses NotAction. (A Deny may: it only takes away.)"""
    found = []
    for which, t in ts.items():
        for where, s in allow_statements(t):
            if "NotAction" in s:
                found.append(f"{which}:{where}: Allow with NotAction")
            for action in as_list(s.get("Action", [])):
                if not isinstance(action, str) or "*" in action:
                    found.append(f"{which}:{where}: wildcard action {action!r}")
    return found


def check_no_wildcard_resources(ts: dict[str, Template]) -> list[str]:
    """Resource "*" only for actions that have no resource type; no NotResource; no public principal."""
    found = []
    for which, t in ts.items():
        for where, s in allow_statements(t):
            if "NotResource" in s:
                found.append(f"{which}:{where}: Allow with NotResource")
            if s.get("Principal") in ("*", {"AWS": "*"}):
                found.append(f"{which}:{where}: Allow to every principal")
            # In a key policy, Resource "*" is the key itself (the only value it takes).
            if ".KeyPolicy/" not in where and any(is_wildcard_resource(r) for r in as_list(s.get("Resource", []))):
                extra = set(as_list(s.get("Action", []))) - RESOURCELESS_ACTIONS
                if extra:
                    found.append(f"{which}:{where}: Resource '*' for {sorted(map(str, extra))}")
    return found


# Each queue with a consumer: its ARN output, its dead-letter queue's, the parameter that sets
# its maxReceiveCount and the one that sets its visibility timeout, and the function consuming it.
CONSUMED_QUEUES = [
    ("QueueArn", "DeadLetterQueueArn", "MaxReceiveCount", "QueueVisibilityTimeoutSeconds", WORKER),
    ("CallbackQueueArn", "CallbackDeadLetterQueueArn", "CallbackMaxReceiveCount",
     "CallbackQueueVisibilityTimeoutSeconds", CALLBACKS),
    ("LiveQueueArn", "LiveDeadLetterQueueArn", "LiveMaxReceiveCount", "LiveQueueVisibilityTimeoutSeconds", LIVE_PUSH),
]


def check_dead_letter_redrive(ts: dict[str, Template]) -> list[str]:
    storage = ts["storage"]
    found = []
    for queue_output, dlq_output, count, _, _ in CONSUMED_QUEUES:
        queue, dlq = output_target(storage, queue_output), output_target(storage, dlq_output)
        if queue == dlq:
            found.append(f"storage: {queue_output} and {dlq_output} name the same queue")
            continue
        policy = props(resources(storage)[queue]).get("RedrivePolicy")
        if not isinstance(policy, dict):
            found.append(f"storage:{queue}: no RedrivePolicy")
            continue
        if render(policy.get("deadLetterTargetArn")) != "${%s.Arn}" % dlq:
            found.append(f"storage:{queue}: RedrivePolicy does not target {dlq}")
        if policy.get("maxReceiveCount") != {"Ref": count}:
            found.append(f"storage:{queue}: maxReceiveCount is not the {count} parameter")
    return found


def check_consumers_report_batch_item_failures(ts: dict[str, Template]) -> list[str]:
    found = []
    for queue_output, _, _, _, function in CONSUMED_QUEUES:
        events = props(resources(ts["template"])[function]).get("Events", {})
        sqs = {n: e for n, e in events.items() if e.get("Type") == "SQS"}
        if not sqs:
            found.append(f"{function}: no SQS event")
        for name, event in sqs.items():
            p = event.get("Properties", {})
            if "ReportBatchItemFailures" not in p.get("FunctionResponseTypes", []):
                found.append(f"{function}.{name}: FunctionResponseTypes lacks ReportBatchItemFailures")
            if render(p.get("Queue")) != "${Storage.Outputs.%s}" % queue_output:
                found.append(f"{function}.{name}: not the storage stack's {queue_output}")
    return found


def check_callback_queue_takes_only_callbacks(ts: dict[str, Template]) -> list[str]:
    """The callback queue subscribes to the completion topic, raw, filtered on callback = true."""
    storage = ts["storage"]
    queue = output_target(storage, "CallbackQueueArn")
    subscriptions = [props(r) for r in resources(storage, "AWS::SNS::Subscription").values()
                     if render(props(r).get("Endpoint")) == "${%s.Arn}" % queue]
    if len(subscriptions) != 1:
        return [f"{len(subscriptions)} subscriptions deliver to {queue}, expected 1"]
    (sub,) = subscriptions
    found = []
    if render(sub.get("TopicArn")) != "${%s}" % output_target(storage, "CompletionTopicArn"):
        found.append(f"{queue}: subscribed to {render(sub.get('TopicArn'))}, not the completion topic")
    if not is_true(sub.get("RawMessageDelivery")):
        found.append(f"{queue}: not raw delivery (the filter attributes would arrive inside a JSON envelope)")
    if sub.get("FilterPolicy") != {"callback": ["true"]}:
        found.append(f"{queue}: FilterPolicy is {sub.get('FilterPolicy')!r}, not callback = true")
    return found


# What each function does to the jobs table's items, the default callbacks' included.
TABLE_ACTIONS = {
    "RequestHandlerRole": {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:DeleteItem"},
    "CallbackDelivererRole": {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"},
}


def check_table_access_for_default_callbacks(ts: dict[str, Template]) -> list[str]:
    """The request-handler may read, set and remove a default callback; the callback-deliverer
    may disable one (UpdateItem)."""
    template = ts["template"]
    table = "${Storage.Outputs.TableArn}"
    found = []
    for role, needed in TABLE_ACTIONS.items():
        granted = {action for name, st in allow_statements(template) if name.startswith(f"{role}.Policies.")
                   and table in [render(r) for r in as_list(st.get("Resource"))]
                   for action in as_list(st.get("Action"))}
        if not needed <= granted:
            found.append(f"{role}: lacks {sorted(needed - granted)} on the jobs table")
    return found


def nested_parameter(ts: dict[str, Template], name: str) -> int:
    """The value the template passes to storage.yaml's parameter, or that parameter's default."""
    template, storage = ts["template"], ts["storage"]
    passed = props(resources(template)["Storage"]).get("Parameters", {})
    if name in passed:
        return number(template, passed[name])
    return int(storage["Parameters"][name]["Default"])


def check_visibility_covers_consumer_timeout(ts: dict[str, Template]) -> list[str]:
    storage = ts["storage"]
    found = []
    for queue_output, _, _, parameter, function in CONSUMED_QUEUES:
        queue = props(resources(storage)[output_target(storage, queue_output)])
        raw = queue.get("VisibilityTimeout", 30)  # SQS's default
        if raw == {"Ref": parameter}:
            visibility = nested_parameter(ts, parameter)
        else:
            visibility = number(storage, raw)
        timeout = number(ts["template"], props(resources(ts["template"])[function]).get("Timeout", 3))
        if visibility < 6 * timeout:
            found.append(f"{queue_output}: visibility {visibility} s < 6 x {function} timeout {timeout} s")
    return found


def check_log_retention(ts: dict[str, Template]) -> list[str]:
    found = []
    for which, t in ts.items():
        groups = resources(t, "AWS::Logs::LogGroup")
        for name, r in groups.items():
            if "RetentionInDays" not in props(r):
                found.append(f"{which}:{name}: no RetentionInDays")
        for name, r in resources(t, "AWS::Serverless::Function", "AWS::Lambda::Function").items():
            logging = props(r).get("LoggingConfig", {})
            target = logging.get("LogGroup")
            if not (isinstance(target, dict) and target.get("Ref") in groups):
                found.append(f"{which}:{name}: logs to a group this stack does not manage (no retention)")
            if logging.get("LogFormat") != "JSON":
                found.append(f"{which}:{name}: LogFormat is not JSON")
    return found


def check_point_in_time_recovery(ts: dict[str, Template]) -> list[str]:
    found = []
    for which, t in ts.items():
        for name, r in resources(t, "AWS::DynamoDB::Table").items():
            spec = props(r).get("PointInTimeRecoverySpecification", {})
            if not is_true(spec.get("PointInTimeRecoveryEnabled")):
                found.append(f"{which}:{name}: point-in-time recovery is off")
    return found


def check_max_receive_count_agrees(ts: dict[str, Template]) -> list[str]:
    """The worker fails the job on the delivery SQS will dead-letter after: both read one parameter."""
    template = ts["template"]
    passed = props(resources(template)["Storage"]).get("Parameters", {}).get("MaxReceiveCount")
    told = props(resources(template)[WORKER]).get("Environment", {}).get("Variables", {}).get(
        "LABELQ_MAX_RECEIVE_COUNT")
    if passed is None or passed != told:
        return [f"Storage gets MaxReceiveCount {passed!r}, the worker LABELQ_MAX_RECEIVE_COUNT {told!r}"]
    return []


def check_functions_are_own_role_rust_arm64(ts: dict[str, Template]) -> list[str]:
    """Each function: provided.al2023 on arm64, built by cargo-lambda from its own binary, with its
    own role (no SAM-generated role, which would attach broad managed policies)."""
    template = ts["template"]
    roles = resources(template, "AWS::IAM::Role")
    found, used_roles = [], []
    functions = resources(template, "AWS::Serverless::Function")
    if set(functions) != set(BINARIES):
        found.append(f"functions are {sorted(functions)}, expected {sorted(BINARIES)}")
    for name, r in functions.items():
        p, meta = props(r), r.get("Metadata", {})
        if p.get("Runtime") != "provided.al2023" or p.get("Architectures") != ["arm64"]:
            found.append(f"{name}: not provided.al2023 on arm64")
        binary = meta.get("BuildProperties", {}).get("Binary")
        if meta.get("BuildMethod") != "rust-cargolambda" or binary != BINARIES.get(name):
            found.append(f"{name}: not built by rust-cargolambda as {BINARIES.get(name)}")
        elif not (REPO / CRATE_OF.get(binary, binary) / "Cargo.toml").is_file():
            found.append(f"{name}: no crate {CRATE_OF.get(binary, binary)}/ in the workspace")
        role = re.fullmatch(r"\$\{(\w+)\.Arn\}", render(p.get("Role", "")))
        if not role or role.group(1) not in roles:
            found.append(f"{name}: no Role of its own in this template")
        else:
            used_roles.append(role.group(1))
        if "Policies" in p:
            found.append(f"{name}: SAM Policies (use the role's inline statements)")
    if len(used_roles) != len(set(used_roles)):
        found.append("two functions share a role")
    for name, r in roles.items():
        if props(r).get("ManagedPolicyArns"):
            found.append(f"{name}: managed policies attached")
    return found


def check_environment_contract(ts: dict[str, Template]) -> list[str]:
    found = []
    functions = resources(ts["template"], "AWS::Serverless::Function")
    for name, required in REQUIRED_ENV.items():
        variables = props(functions.get(name, {})).get("Environment", {}).get("Variables", {})
        missing = required - set(variables)
        if missing:
            found.append(f"{name}: missing {sorted(missing)}")
    # The worker's lease must be the queue's visibility timeout (the parameter passed to Storage).
    worker_env = props(functions.get(WORKER, {})).get("Environment", {}).get("Variables", {})
    storage = props(resources(ts["template"], "AWS::Serverless::Application").get("Storage", {}))
    visibility = storage.get("Parameters", {}).get("QueueVisibilityTimeoutSeconds")
    if str(worker_env.get("LABELQ_VISIBILITY_TIMEOUT")) != f"{visibility}s":
        found.append(f"{WORKER}: LABELQ_VISIBILITY_TIMEOUT differs from the queue's visibility ({visibility}s)")
    # Trusting only the Amazon roots is right in the aws and aws-us-gov partitions and nowhere else.
    partitions = ts["template"].get("Conditions", {}).get(TLS_CONDITION)
    if partitions != {"Fn::Or": [{"Fn::Equals": [{"Ref": "AWS::Partition"}, p]} for p in ("aws", "aws-us-gov")]}:
        found.append(f"{TLS_CONDITION}: not exactly the aws and aws-us-gov partitions")
    for name in REQUIRED_ENV:
        trust = props(functions.get(name, {})).get("Environment", {}).get("Variables", {}).get("LABELQ_TLS_TRUST")
        if trust != {"Fn::If": [TLS_CONDITION, "amazon", "native"]}:
            found.append(f"{name}: LABELQ_TLS_TRUST is {trust!r}, not amazon only where {TLS_CONDITION}")
    return found


def check_routes_need_a_jwt(ts: dict[str, Template]) -> list[str]:
    template = ts["template"]
    apis = resources(template, "AWS::Serverless::HttpApi")
    found = []
    for name, r in apis.items():
        auth = props(r).get("Auth", {})
        default = auth.get("DefaultAuthorizer")
        if default is None or "JwtConfiguration" not in auth.get("Authorizers", {}).get(default, {}):
            found.append(f"{name}: the default authorizer is not a JWT authorizer")
    routes = {}
    for fname, r in resources(template, "AWS::Serverless::Function").items():
        for ename, e in props(r).get("Events", {}).items():
            if e.get("Type") != "HttpApi":
                continue
            p = e.get("Properties", {})
            routes[(str(p.get("Method")).upper(), p.get("Path"))] = fname
            if "Auth" in p:
                found.append(f"{fname}.{ename}: overrides the default (JWT) authorizer")
            if render(p.get("ApiId")) not in {"${%s}" % a for a in apis}:
                found.append(f"{fname}.{ename}: not on this template's HTTP API")
    if routes != ROUTES:
        found.append(f"routes are {sorted(routes.items())}, expected {sorted(ROUTES.items())}")
    return found


LIVE_ROUTES = {"$connect", "$disconnect", "subscribe", "unsubscribe", "$default"}


def check_live_api_routes_reach_the_socket_function(ts: dict[str, Template]) -> list[str]:
    """The WebSocket API selects routes on the message's action, and every route runs the
    live-socket function (which checks the JWT on $connect), invocable from this API only."""
    template = ts["template"]
    apis = resources(template, "AWS::ApiGatewayV2::Api")
    found = []
    sockets = {n for n, r in apis.items() if props(r).get("ProtocolType") == "WEBSOCKET"}
    if len(sockets) != 1:
        return [f"{len(sockets)} WebSocket APIs, expected 1"]
    (api,) = sockets
    if props(apis[api]).get("RouteSelectionExpression") != "$request.body.action":
        found.append(f"{api}: routes are not selected on $request.body.action")
    integrations = {n for n, r in resources(template, "AWS::ApiGatewayV2::Integration").items()
                    if props(r).get("IntegrationType") == "AWS_PROXY"
                    and "${%s.Arn}" % LIVE_SOCKET in render(props(r).get("IntegrationUri"))}
    routes = {}
    for name, r in resources(template, "AWS::ApiGatewayV2::Route").items():
        p = props(r)
        if p.get("ApiId") != {"Ref": api}:
            continue
        target = render(p.get("Target"))
        if not any(target == "integrations/${%s}" % i for i in integrations):
            found.append(f"{name}: does not run {LIVE_SOCKET}")
        routes[p.get("RouteKey")] = name
    if set(routes) != LIVE_ROUTES:
        found.append(f"routes are {sorted(routes)}, expected {sorted(LIVE_ROUTES)}")
    permissions = [props(r) for r in resources(template, "AWS::Lambda::Permission").values()
                   if props(r).get("FunctionName") == {"Ref": LIVE_SOCKET}]
    if not any(p.get("Principal") == "apigateway.amazonaws.com"
               and render(p.get("SourceArn")).endswith(":${%s}/*" % api) for p in permissions):
        found.append(f"{LIVE_SOCKET}: no invoke permission scoped to {api}")
    return found


def check_live_functions_post_to_their_stage(ts: dict[str, Template]) -> list[str]:
    """Both live functions post to the one stage's connections: the endpoint they are told names
    the stage (the management API lives under it), and ManageConnections is granted for its
    @connections only."""
    template = ts["template"]
    stages = [props(r) for r in resources(template, "AWS::ApiGatewayV2::Stage").values()]
    if len(stages) != 1:
        return [f"{len(stages)} WebSocket stages, expected 1"]
    stage, api = stages[0].get("StageName"), stages[0].get("ApiId", {}).get("Ref")
    found = []
    for function in (LIVE_SOCKET, LIVE_PUSH):
        variables = props(resources(template)[function]).get("Environment", {}).get("Variables", {})
        endpoint = render(variables.get("LABELQ_LIVE_ENDPOINT"))
        if not (endpoint.startswith("https://${%s}.execute-api." % api) and endpoint.endswith(f"/{stage}")):
            found.append(f"{function}: LABELQ_LIVE_ENDPOINT {endpoint!r} is not the {stage} stage of {api}")
        role = re.fullmatch(r"\$\{(\w+)\.Arn\}", render(props(resources(template)[function]).get("Role")))
        grants = [st for name, st in allow_statements(template)
                  if role and name.startswith(f"{role.group(1)}.Policies.")
                  and "execute-api:ManageConnections" in as_list(st.get("Action"))]
        if not grants:
            found.append(f"{function}: may not post to connections")
        for st in grants:
            for resource in as_list(st.get("Resource")):
                if not render(resource).endswith(":${%s}/%s/POST/@connections/*" % (api, stage)):
                    found.append(f"{function}: ManageConnections on {render(resource)}")
    return found


def check_connections_expire_and_are_found_by_owner(ts: dict[str, Template]) -> list[str]:
    """The connections table's items expire (TTL on expires_at, as DynamoLiveConnections writes
    it) and are found per owner through by-owner, which carries whole items (a push decodes
    them); the live queue takes every finished job, held back a little so the index has caught
    up with a subscription written just before."""
    storage = ts["storage"]
    table = props(resources(storage)[output_target(storage, "ConnectionsTableArn")])
    found = []
    ttl = table.get("TimeToLiveSpecification", {})
    if ttl.get("AttributeName") != "expires_at" or not is_true(ttl.get("Enabled")):
        found.append(f"connections table: TTL is {ttl!r}, not on expires_at")
    indexes = {i.get("IndexName"): i for i in table.get("GlobalSecondaryIndexes", [])}
    keys = [k.get("AttributeName") for k in indexes.get("by-owner", {}).get("KeySchema", [])]
    if keys[:1] != ["owner"]:
        found.append(f"connections table: no by-owner index keyed on owner ({sorted(indexes)})")
    projection = indexes.get("by-owner", {}).get("Projection", {}).get("ProjectionType")
    if projection != "ALL":
        found.append(f"connections table: by-owner projects {projection!r}, not ALL")
    queue = output_target(storage, "LiveQueueArn")
    delay = number(storage, props(resources(storage)[queue]).get("DelaySeconds", 0))
    if delay < 1:
        found.append(f"{queue}: no delay ({delay} s), so a push may not see a new subscription")
    subscriptions = [props(r) for r in resources(storage, "AWS::SNS::Subscription").values()
                     if render(props(r).get("Endpoint")) == "${%s.Arn}" % queue]
    if len(subscriptions) != 1:
        return found + [f"{len(subscriptions)} subscriptions deliver to {queue}, expected 1"]
    (sub,) = subscriptions
    if render(sub.get("TopicArn")) != "${%s}" % output_target(storage, "CompletionTopicArn"):
        found.append(f"{queue}: not subscribed to the completion topic")
    if not is_true(sub.get("RawMessageDelivery")):
        found.append(f"{queue}: not raw delivery")
    if "FilterPolicy" in sub:
        found.append(f"{queue}: filtered, but any finished job may have followers")
    return found


# The alarms the service needs, by what they watch: (namespace, metric or metric-math ids).
REQUIRED_ALARMS = {
    "dead-letter queue not empty": ("AWS/SQS", "ApproximateNumberOfMessagesVisible"),
    "age of the oldest queued message": ("AWS/SQS", "ApproximateAgeOfOldestMessage"),
    "worker errors": ("AWS/Lambda", "Errors"),
    "API 5xx rate": ("AWS/ApiGateway", "5xx/Count"),
    "API p99 latency": ("AWS/ApiGateway", "Latency"),
}


def alarm_signature(alarm: dict) -> tuple[str, str]:
    p = props(alarm)
    if "Metrics" in p:
        stats = [m["MetricStat"]["Metric"] for m in p["Metrics"] if "MetricStat" in m]
        return stats[0]["Namespace"], "/".join(s["MetricName"] for s in stats)
    return p.get("Namespace"), p.get("MetricName")


def check_alarms_notify_the_topic(ts: dict[str, Template]) -> list[str]:
    template = ts["template"]
    alarms = resources(template, "AWS::CloudWatch::Alarm")
    found = []
    signatures = {alarm_signature(a): n for n, a in alarms.items()}
    for what, signature in REQUIRED_ALARMS.items():
        if signature not in signatures:
            found.append(f"no alarm on {what} {signature}")
    for name, alarm in alarms.items():
        if {"Ref": "AlarmTopic"} not in props(alarm).get("AlarmActions", []):
            found.append(f"{name}: does not notify AlarmTopic")
    # Every dead-letter queue is watched, and each such alarm watches a dead-letter queue.
    dlq_names = {dlq.removesuffix("Arn") + "Name" for _, dlq, _, _, _ in CONSUMED_QUEUES}
    dlq = [n for n, a in alarms.items() if alarm_signature(a) == REQUIRED_ALARMS["dead-letter queue not empty"]]
    watched = set()
    for name in dlq:
        outputs = {render(d.get("Value")).removeprefix("${Storage.Outputs.").removesuffix("}")
                   for d in props(alarms[name]).get("Dimensions", []) if d.get("Name") == "QueueName"}
        if not outputs & dlq_names:
            found.append(f"{name}: does not watch a dead-letter queue")
        watched |= outputs
    found.extend(f"no alarm watches {n}" for n in sorted(dlq_names - watched))
    return found


# --------------------------------------------------------------------------------------------------
# Mutations: one way (or more) to break each check's property
# --------------------------------------------------------------------------------------------------


def bucket_name_pattern(t: Template) -> str:
    return render(props(first(t, "AWS::S3::Bucket")).get("BucketName"))


# What clients write into the bucket, announced to the worker: nothing the service writes.
CLIENT_PREFIXES = ("drops/", "uploads/")


def check_drops_reach_the_worker_and_nothing_it_writes_does(ts: dict[str, Template]) -> list[str]:
    """Objects created under drops/ and uploads/ (and only there) are announced on the job topic,
    which only this stack's bucket may publish to (and encrypt for); the worker writes nothing
    under either."""
    storage, found = ts["storage"], []
    bucket = props(first(storage, "AWS::S3::Bucket"))
    topic = output_target(storage, "TopicArn")
    configs = bucket.get("NotificationConfiguration", {})
    topics = as_list(configs.get("TopicConfigurations"))
    if set(configs) - {"TopicConfigurations"} or len(topics) != len(CLIENT_PREFIXES):
        return [f"the bucket's notifications are {configs!r}, expected one topic configuration per "
                f"prefix of {CLIENT_PREFIXES}"]
    prefixes = []
    for config in topics:
        if render(config.get("Topic")) != "${%s}" % topic:
            found.append(f"objects are announced on {render(config.get('Topic'))}, not the job topic")
        if config.get("Event") != "s3:ObjectCreated:*":
            found.append(f"objects are announced for {config.get('Event')!r}, not every object created")
        rules = config.get("Filter", {}).get("S3Key", {}).get("Rules", [])
        if len(rules) != 1 or rules[0].get("Name") != "prefix":
            found.append(f"a notification filter is {rules!r}, not one prefix")
            continue
        prefixes.append(rules[0].get("Value"))
    if sorted(prefixes) != sorted(CLIENT_PREFIXES) and not found:
        found.append(f"the notifications' prefixes are {prefixes}, expected {list(CLIENT_PREFIXES)}")
    if "TopicPolicy" not in as_list(first(storage, "AWS::S3::Bucket").get("DependsOn")):
        found.append("the bucket does not wait for the topic policy (S3 checks it when configured)")
    name = bucket_name_pattern(storage)
    policy = next((props(p) for p in resources(storage, "AWS::SNS::TopicPolicy").values()
                   if "${%s}" % topic in [render(t) for t in as_list(props(p).get("Topics"))]), None)
    grants = [] if policy is None else [s for s in as_list(policy["PolicyDocument"]["Statement"])
                                        if s.get("Principal") == {"Service": "s3.amazonaws.com"}]
    key = props(resources(storage).get(render(props(resources(storage)[topic]).get("KmsMasterKeyId"))[2:-1], {}))
    key_grants = [s for s in as_list(key.get("KeyPolicy", {}).get("Statement"))
                  if s.get("Principal") == {"Service": "s3.amazonaws.com"}]
    for what, statements in (("topic policy", grants), ("topic key's policy", key_grants)):
        if len(statements) != 1:
            found.append(f"the {what} has {len(statements)} statements for S3, expected 1")
            continue
        condition = statements[0].get("Condition", {})
        if render(condition.get("StringEquals", {}).get("aws:SourceAccount")) != "${AWS::AccountId}":
            found.append(f"the {what} lets S3 of any account in")
        arn = render(condition.get("ArnLike", {}).get("aws:SourceArn"))
        if arn != "arn:${AWS::Partition}:s3:::" + name:
            found.append(f"the {what} lets S3 publish for {arn!r}, not this stack's bucket {name!r}")
    for s in role_statements(ts["template"], "WorkerRole"):
        arm = s["Fn::If"][1] if "Fn::If" in s else s
        writes = {a for a in as_list(arm.get("Action", [])) if a in ("s3:PutObject", "s3:DeleteObject")}
        for resource in as_list(arm.get("Resource", [])) if writes else []:
            text = render(resource)
            if any(f"/{prefix}" in text for prefix in CLIENT_PREFIXES) or text.endswith("}/*"):
                found.append(f"WorkerRole.{arm.get('Sid')} writes {text}: its writes could be announced")
    # Both publishers of the job topic can use its key (S3's grant is in the key's policy).
    for role in ("RequestHandlerRole", "WorkerRole"):
        try:
            grant = statement(ts["template"], role, "EncryptJobMessages")
        except LookupError:
            found.append(f"{role} cannot use the job topic's key")
            continue
        if render(grant.get("Resource")) != "${Storage.Outputs.TopicKeyArn}" or \
                set(as_list(grant.get("Action"))) != {"kms:GenerateDataKey", "kms:Decrypt"}:
            found.append(f"{role}.EncryptJobMessages is not GenerateDataKey and Decrypt on the topic's key")
    return found


def check_direct_uploads(ts: dict[str, Template]) -> list[str]:
    """Direct uploads: only the request-handler's PresignUploads grant (whose credentials sign
    the presigned PUTs) may put objects under uploads/, and it nowhere else; the worker may read
    them and tell a missing one from a denial; they expire with the images; browsers may PUT only
    from the origins the parameter names (no CORS rule without one); a job message comes back at
    least once."""
    template, storage, found = ts["template"], ts["storage"], []
    try:
        grant = statement(template, "RequestHandlerRole", "PresignUploads")
        if as_list(grant.get("Action")) != ["s3:PutObject"] or \
                [render(r) for r in as_list(grant.get("Resource"))] != ["${Storage.Outputs.BucketArn}/uploads/*"]:
            found.append(f"RequestHandlerRole.PresignUploads is {grant!r}, not PutObject on uploads/* alone")
    except LookupError:
        found.append("the request-handler cannot put the uploads its URLs name")
    # Every other grant of PutObject, in any role, stays out of uploads/ (a whole-bucket grant too).
    for role, r in resources(template, "AWS::IAM::Role").items():
        for s in [] if not props(r).get("Policies") else role_statements(template, role):
            arm = s["Fn::If"][1] if "Fn::If" in s else s
            if (role, arm.get("Sid")) == ("RequestHandlerRole", "PresignUploads"):
                continue
            puts = {a for a in as_list(arm.get("Action", [])) if a in ("s3:PutObject", "s3:*", "*")}
            for text in [render(r) for r in as_list(arm.get("Resource", []))] if puts else []:
                if "/uploads/" in text or text.endswith("}/*") or text == "*":
                    found.append(f"{role}.{arm.get('Sid')} may put objects under uploads/ ({text})")
    try:
        reads = [render(r) for r in as_list(statement(template, "WorkerRole", "ReadImages").get("Resource"))]
        if "${Storage.Outputs.BucketArn}/uploads/*" not in reads:
            found.append("the worker cannot read uploads")
        listed = statement(template, "WorkerRole", "TellMissingObjects")
        if as_list(listed.get("Action")) != ["s3:ListBucket"] or \
                render(listed.get("Resource")) != "${Storage.Outputs.BucketArn}" or "Condition" in listed:
            found.append("the worker cannot tell an upload not yet made from a denial "
                         f"(ListBucket on the bucket, with no condition): {listed!r}")
    except LookupError as e:
        found.append(str(e))
    bucket = props(first(storage, "AWS::S3::Bucket"))
    rules = {r.get("Prefix"): r for r in bucket.get("LifecycleConfiguration", {}).get("Rules", [])}
    if "uploads/" not in rules:
        found.append("no lifecycle rule removes uploads")
    elif rules["uploads/"].get("ExpirationInDays") != rules.get("images/", {}).get("ExpirationInDays"):
        found.append("uploads do not expire with the images")
    cors = bucket.get("CorsConfiguration")
    arms = cors.get("Fn::If", []) if isinstance(cors, dict) else []
    if len(arms) != 3 or arms[0] != "AllowBrowserUploads" or arms[2] != {"Ref": "AWS::NoValue"}:
        found.append(f"the bucket's CORS rule is {cors!r}, not one only where UploadAllowedOrigins names origins")
    else:
        for rule in arms[1].get("CorsRules", []):
            if rule.get("AllowedMethods") != ["PUT"]:
                found.append(f"browsers may {rule.get('AllowedMethods')} objects, not only PUT uploads")
            if rule.get("AllowedOrigins") != {"Ref": "UploadAllowedOrigins"}:
                found.append(f"browser uploads are allowed from {rule.get('AllowedOrigins')!r}")
    if storage.get("Parameters", {}).get("UploadAllowedOrigins", {}).get("Default") != "":
        found.append("browser origins are allowed by default")
    # A job never uploaded fails when its own message comes back: it must be allowed to.
    for name, t in (("template", template), ("storage", storage)):
        least = t.get("Parameters", {}).get("MaxReceiveCount", {}).get("MinValue")
        if not isinstance(least, int) or least < 2:
            found.append(f"{name}'s MaxReceiveCount may be {least!r}: an upload's message could never come back")
    return found


def first(t: Template, kind: str, where: Callable[[str, dict], bool] = lambda n, r: True) -> dict:
    for name, r in resources(t, kind).items():
        if where(name, r):
            return r
    raise LookupError(f"no {kind} to mutate")


def role_statements(t: Template, role: str) -> list:
    return props(resources(t)[role])["Policies"][0]["PolicyDocument"]["Statement"]


def statement(t: Template, role: str, sid: str) -> dict:
    """The role's statement with this Sid (looking inside Fn::If, whose true arm is returned)."""
    for s in role_statements(t, role):
        arm = s["Fn::If"][1] if "Fn::If" in s else s
        if arm.get("Sid") == sid:
            return arm
    raise LookupError(f"{role} has no statement {sid}")


def tls_deny(t: Template) -> dict:
    for policy in resources(t, "AWS::S3::BucketPolicy").values():
        for s in as_list(props(policy)["PolicyDocument"]["Statement"]):
            if s.get("Effect") == "Deny" and "aws:SecureTransport" in json.dumps(s.get("Condition", {})):
                return s
    raise LookupError("no TLS-only Deny statement")


def set_path(obj: dict, path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for key in parents:
        obj = obj.setdefault(key, {})
    obj[last] = value


def drop_path(obj: dict, path: str) -> None:
    *parents, last = path.split(".")
    for key in parents:
        obj = obj[key]
    del obj[last]


def storage_queue(t: Template) -> dict:
    return props(resources(t)[output_target(t, "QueueArn")])


MUTATIONS: list[tuple[str, Callable, Callable[[dict[str, Template]], None]]] = [
    ("drops announced for every key", check_drops_reach_the_worker_and_nothing_it_writes_does,
     lambda ts: props(first(ts["storage"], "AWS::S3::Bucket"))["NotificationConfiguration"]["TopicConfigurations"][0]
     .pop("Filter")),
    ("uploads not announced", check_drops_reach_the_worker_and_nothing_it_writes_does,
     lambda ts: props(first(ts["storage"], "AWS::S3::Bucket"))["NotificationConfiguration"]["TopicConfigurations"]
     .pop()),
    ("the request-handler may put anywhere", check_direct_uploads,
     lambda ts: statement(ts["template"], "RequestHandlerRole", "PresignUploads")["Resource"]["Fn::Sub"]
     .__setitem__(0, "${BucketArn}/*")),
    ("the request-handler cannot presign uploads", check_direct_uploads,
     lambda ts: role_statements(ts["template"], "RequestHandlerRole").remove(
         statement(ts["template"], "RequestHandlerRole", "PresignUploads"))),
    ("the request-handler stores images anywhere", check_direct_uploads,
     lambda ts: statement(ts["template"], "RequestHandlerRole", "StoreImages")["Resource"]["Fn::Sub"]
     .__setitem__(0, "${BucketArn}/*")),
    ("a live role writes uploads", check_direct_uploads,
     lambda ts: role_statements(ts["template"], "LivePushRole").append(
         {"Sid": "Sneaky", "Effect": "Allow", "Action": "s3:PutObject",
          "Resource": {"Fn::Sub": ["${BucketArn}/uploads/*", {"BucketArn": "x"}]}})),
    ("the worker writes uploads", check_direct_uploads,
     lambda ts: statement(ts["template"], "WorkerRole", "SubmitDrops")["Resource"]["Fn::Sub"].__setitem__(
         0, "${BucketArn}/uploads/*")),
    ("the worker cannot read uploads", check_direct_uploads,
     lambda ts: statement(ts["template"], "WorkerRole", "ReadImages").__setitem__(
         "Resource", statement(ts["template"], "WorkerRole", "ReadImages")["Resource"][:1])),
    ("a missing upload reads as a denial", check_direct_uploads,
     lambda ts: statement(ts["template"], "WorkerRole", "TellMissingObjects")
     .__setitem__("Condition", {"StringLike": {"s3:prefix": ["images/*", "uploads/*"]}})),
    ("one delivery per job message", check_direct_uploads,
     lambda ts: ts["template"]["Parameters"]["MaxReceiveCount"].__setitem__("MinValue", 1)),
    ("uploads never expire", check_direct_uploads,
     lambda ts: props(first(ts["storage"], "AWS::S3::Bucket"))["LifecycleConfiguration"].__setitem__(
         "Rules", [r for r in props(first(ts["storage"], "AWS::S3::Bucket"))["LifecycleConfiguration"]["Rules"]
                   if r.get("Prefix") != "uploads/"])),
    ("browsers may upload from anywhere", check_direct_uploads,
     lambda ts: props(first(ts["storage"], "AWS::S3::Bucket"))["CorsConfiguration"]["Fn::If"][1]["CorsRules"][0]
     .__setitem__("AllowedOrigins", ["*"])),
    ("browsers may delete", check_direct_uploads,
     lambda ts: props(first(ts["storage"], "AWS::S3::Bucket"))["CorsConfiguration"]["Fn::If"][1]["CorsRules"][0]
     .__setitem__("AllowedMethods", ["PUT", "DELETE"])),
    ("drop results written under drops/", check_drops_reach_the_worker_and_nothing_it_writes_does,
     lambda ts: statement(ts["template"], "WorkerRole", "WriteDropResults")["Resource"]["Fn::Sub"].__setitem__(
         0, "${BucketArn}/drops/results/*")),
    ("any bucket may publish drops", check_drops_reach_the_worker_and_nothing_it_writes_does,
     lambda ts: props(resources(ts["storage"])["TopicPolicy"])["PolicyDocument"]["Statement"][0]["Condition"]
     .pop("ArnLike")),
    ("S3 of any account may use the topic key", check_drops_reach_the_worker_and_nothing_it_writes_does,
     lambda ts: props(resources(ts["storage"])["TopicKey"])["KeyPolicy"]["Statement"][1]["Condition"]
     .pop("StringEquals")),
    ("the worker may write anywhere in the bucket", check_drops_reach_the_worker_and_nothing_it_writes_does,
     lambda ts: statement(ts["template"], "WorkerRole", "SubmitDrops")["Resource"]["Fn::Sub"].__setitem__(
         0, "${BucketArn}/*")),
    ("the worker cannot encrypt drop jobs' messages", check_drops_reach_the_worker_and_nothing_it_writes_does,
     lambda ts: role_statements(ts["template"], "WorkerRole").remove(
         statement(ts["template"], "WorkerRole", "EncryptJobMessages"))),
    ("the bucket does not wait for the topic policy", check_drops_reach_the_worker_and_nothing_it_writes_does,
     lambda ts: first(ts["storage"], "AWS::S3::Bucket").pop("DependsOn")),
    ("public access block loosened", check_public_access_block,
     lambda ts: set_path(props(first(ts["storage"], "AWS::S3::Bucket")),
                         "PublicAccessBlockConfiguration.RestrictPublicBuckets", False)),
    ("TLS-only Deny removed", check_tls_only_bucket_policy,
     lambda ts: tls_deny(ts["storage"]).update(Effect="Allow")),
    ("TLS-only Deny narrowed to GetObject", check_tls_only_bucket_policy,
     lambda ts: tls_deny(ts["storage"]).update(Action="s3:GetObject")),
    ("TLS-only Deny no longer covers objects", check_tls_only_bucket_policy,
     lambda ts: tls_deny(ts["storage"]).update(Resource=[r for r in as_list(tls_deny(ts["storage"])["Resource"])
                                                        if not render(r).endswith("/*")])),
    ("bucket encryption removed", check_encryption_at_rest,
     lambda ts: drop_path(props(first(ts["storage"], "AWS::S3::Bucket")), "BucketEncryption")),
    ("table encryption off", check_encryption_at_rest,
     lambda ts: set_path(props(first(ts["storage"], "AWS::DynamoDB::Table")), "SSESpecification.SSEEnabled", False)),
    ("queue encryption off", check_encryption_at_rest,
     lambda ts: [props(first(ts["storage"], "AWS::SQS::Queue")).pop(k, None)
                 for k in ("SqsManagedSseEnabled", "KmsMasterKeyId")]),
    ("topic encryption off", check_encryption_at_rest,
     lambda ts: props(first(ts["storage"], "AWS::SNS::Topic")).pop("KmsMasterKeyId")),
    ("the deliverer cannot disable a default callback", check_table_access_for_default_callbacks,
     lambda ts: statement(ts["template"], "CallbackDelivererRole", "RecordCallbacks").update(
         Action=["dynamodb:GetItem", "dynamodb:PutItem"])),
    ("wildcard action granted", check_no_wildcard_actions,
     lambda ts: statement(ts["template"], "StatusApiRole", "ReadAndDeleteJobs").update(Action="dynamodb:*")),
    ("NotAction granted", check_no_wildcard_actions,
     lambda ts: role_statements(ts["template"], "WorkerRole").append(
         {"Effect": "Allow", "NotAction": "iam:PassRole", "Resource": {"Fn::GetAtt": ["WorkerLogGroup", "Arn"]}})),
    ("wildcard action in a conditional statement", check_no_wildcard_actions,
     lambda ts: statement(ts["template"], "WorkerRole", "DetectLabels").update(Action="rekognition:*")),
    ("wildcard resource for S3", check_no_wildcard_resources,
     lambda ts: statement(ts["template"], "RequestHandlerRole", "StoreImages").update(Resource="*")),
    ("all-bucket ARN for S3", check_no_wildcard_resources,
     lambda ts: statement(ts["template"], "WorkerRole", "ReadImages").update(Resource="arn:aws:s3:::*")),
    ("extra action beside DetectLabels on '*'", check_no_wildcard_resources,
     lambda ts: statement(ts["template"], "WorkerRole", "DetectLabels").update(
         Action=["rekognition:DetectLabels", "s3:GetObject"])),
    ("public principal allowed", check_no_wildcard_resources,
     lambda ts: props(resources(ts["template"])["AlarmTopicPolicy"])["PolicyDocument"]["Statement"][0].update(
         Principal="*")),
    ("redrive removed", check_dead_letter_redrive,
     lambda ts: storage_queue(ts["storage"]).pop("RedrivePolicy")),
    ("callback queue's redrive removed", check_dead_letter_redrive,
     lambda ts: props(resources(ts["storage"])["CallbackQueue"]).pop("RedrivePolicy")),
    ("callback queue's redrive count is the job queue's", check_dead_letter_redrive,
     lambda ts: props(resources(ts["storage"])["CallbackQueue"])["RedrivePolicy"].update(
         maxReceiveCount={"Ref": "MaxReceiveCount"})),
    ("callback deliverer's ReportBatchItemFailures removed", check_consumers_report_batch_item_failures,
     lambda ts: props(resources(ts["template"])[CALLBACKS])["Events"]["CallbackQueue"]["Properties"].pop(
         "FunctionResponseTypes")),
    ("callback deliverer consumes the job queue", check_consumers_report_batch_item_failures,
     lambda ts: props(resources(ts["template"])[CALLBACKS])["Events"]["CallbackQueue"]["Properties"].update(
         Queue={"Fn::GetAtt": ["Storage", "Outputs.QueueArn"]})),
    ("callback deliverer's timeout raised", check_visibility_covers_consumer_timeout,
     lambda ts: props(resources(ts["template"])[CALLBACKS]).update(Timeout=30)),
    ("callback queue unfiltered", check_callback_queue_takes_only_callbacks,
     lambda ts: props(resources(ts["storage"])["CallbackQueueSubscription"]).pop("FilterPolicy")),
    ("callback queue filtered on status", check_callback_queue_takes_only_callbacks,
     lambda ts: props(resources(ts["storage"])["CallbackQueueSubscription"]).update(
         FilterPolicy={"status": ["SUCCEEDED"]})),
    ("callback queue on the job topic", check_callback_queue_takes_only_callbacks,
     lambda ts: props(resources(ts["storage"])["CallbackQueueSubscription"]).update(TopicArn={"Ref": "Topic"})),
    ("callback subscription wrapped in envelopes", check_callback_queue_takes_only_callbacks,
     lambda ts: props(resources(ts["storage"])["CallbackQueueSubscription"]).update(RawMessageDelivery=False)),
    ("request-handler refuses callbacks", check_environment_contract,
     lambda ts: props(resources(ts["template"])["RequestHandlerFunction"])["Environment"]["Variables"].pop(
         "LABELQ_CALLBACKS")),
    ("callback DLQ alarm removed", check_alarms_notify_the_topic,
     lambda ts: ts["template"]["Resources"].pop("CallbackDeadLetterQueueNotEmptyAlarm")),
    ("redrive count hard-coded", check_dead_letter_redrive,
     lambda ts: storage_queue(ts["storage"])["RedrivePolicy"].update(maxReceiveCount=3)),
    ("ReportBatchItemFailures removed", check_consumers_report_batch_item_failures,
     lambda ts: [e["Properties"].pop("FunctionResponseTypes")
                 for e in props(resources(ts["template"])[WORKER])["Events"].values() if e["Type"] == "SQS"]),
    ("worker timeout raised", check_visibility_covers_consumer_timeout,
     lambda ts: props(resources(ts["template"])[WORKER]).update(Timeout=31)),
    ("visibility passed to storage lowered", check_visibility_covers_consumer_timeout,
     lambda ts: props(resources(ts["template"])["Storage"])["Parameters"].update(QueueVisibilityTimeoutSeconds=120)),
    ("visibility no longer passed, storage default too low", check_visibility_covers_consumer_timeout,
     lambda ts: (props(resources(ts["template"])["Storage"])["Parameters"].pop("QueueVisibilityTimeoutSeconds"),
                 ts["storage"]["Parameters"]["QueueVisibilityTimeoutSeconds"].update(Default=60))),
    ("log retention removed", check_log_retention,
     lambda ts: props(resources(ts["template"])["WorkerLogGroup"]).pop("RetentionInDays")),
    ("function logs to an unmanaged group", check_log_retention,
     lambda ts: props(resources(ts["template"])["StatusApiFunction"])["LoggingConfig"].pop("LogGroup")),
    ("text logs", check_log_retention,
     lambda ts: props(resources(ts["template"])["RequestHandlerFunction"])["LoggingConfig"].update(LogFormat="Text")),
    ("PITR off", check_point_in_time_recovery,
     lambda ts: set_path(props(first(ts["storage"], "AWS::DynamoDB::Table")),
                         "PointInTimeRecoverySpecification.PointInTimeRecoveryEnabled", False)),
    ("worker told another receive count", check_max_receive_count_agrees,
     lambda ts: props(resources(ts["template"])[WORKER])["Environment"]["Variables"].update(
         LABELQ_MAX_RECEIVE_COUNT="5")),
    ("SAM policy template on a function", check_functions_are_own_role_rust_arm64,
     lambda ts: props(resources(ts["template"])["StatusApiFunction"]).update(
         Policies=[{"DynamoDBCrudPolicy": {"TableName": "t"}}])),
    ("x86_64", check_functions_are_own_role_rust_arm64,
     lambda ts: props(resources(ts["template"])[WORKER]).update(Architectures=["x86_64"])),
    ("managed policy on a role", check_functions_are_own_role_rust_arm64,
     lambda ts: props(resources(ts["template"])["WorkerRole"]).update(
         ManagedPolicyArns=["arn:aws:iam::aws:policy/service-role/AWSLambdaSQSQueueExecutionRole"])),
    ("required variable dropped", check_environment_contract,
     lambda ts: props(resources(ts["template"])[WORKER])["Environment"]["Variables"].pop("LABELQ_QUEUE_URL")),
    ("worker lease out of step with the queue's visibility", check_environment_contract,
     lambda ts: props(resources(ts["template"])[WORKER])["Environment"]["Variables"].update(
         LABELQ_VISIBILITY_TIMEOUT="30s")),
    ("Amazon-only trust in every partition", check_environment_contract,
     lambda ts: props(resources(ts["template"])[WORKER])["Environment"]["Variables"].update(
         LABELQ_TLS_TRUST="amazon")),
    ("Amazon-only trust in aws-cn too", check_environment_contract,
     lambda ts: ts["template"]["Conditions"][TLS_CONDITION]["Fn::Or"].append(
         {"Fn::Equals": [{"Ref": "AWS::Partition"}, "aws-cn"]})),
    ("an alarm without its action", check_alarms_notify_the_topic,
     lambda ts: props(resources(ts["template"])["WorkerErrorsAlarm"]).pop("AlarmActions")),
    ("DLQ alarm watching the main queue", check_alarms_notify_the_topic,
     lambda ts: props(resources(ts["template"])["DeadLetterQueueNotEmptyAlarm"])["Dimensions"][0].update(
         Value={"Fn::GetAtt": ["Storage", "Outputs.QueueName"]})),
    ("latency alarm removed", check_alarms_notify_the_topic,
     lambda ts: ts["template"]["Resources"].pop("ApiLatencyP99Alarm")),
    ("a route without the JWT", check_routes_need_a_jwt,
     lambda ts: props(resources(ts["template"])["StatusApiFunction"])["Events"]["GetImage"]["Properties"].update(
         Auth={"Authorizer": "NONE"})),
    ("an extra route", check_routes_need_a_jwt,
     lambda ts: props(resources(ts["template"])["StatusApiFunction"])["Events"].update(
         Debug={"Type": "HttpApi", "Properties": {"ApiId": {"Ref": "Api"}, "Path": "/debug", "Method": "GET"}})),
    ("a live route missing", check_live_api_routes_reach_the_socket_function,
     lambda ts: ts["template"]["Resources"].pop("LiveSubscribeRoute")),
    ("a live route running something else", check_live_api_routes_reach_the_socket_function,
     lambda ts: props(resources(ts["template"])["LiveDefaultRoute"]).update(Target="integrations/other")),
    ("live routes selected on another field", check_live_api_routes_reach_the_socket_function,
     lambda ts: props(resources(ts["template"])["LiveApi"]).update(RouteSelectionExpression="$request.body.type")),
    ("the socket function invocable from any API", check_live_api_routes_reach_the_socket_function,
     lambda ts: props(resources(ts["template"])["LiveSocketInvokePermission"]).pop("SourceArn")),
    ("the management endpoint without its stage", check_live_functions_post_to_their_stage,
     lambda ts: props(resources(ts["template"])[LIVE_PUSH])["Environment"]["Variables"].update(
         LABELQ_LIVE_ENDPOINT={"Fn::Sub": "https://${LiveApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}"})),
    ("ManageConnections on every stage", check_live_functions_post_to_their_stage,
     lambda ts: statement(ts["template"], "LiveSocketRole", "PostToConnections").update(Resource={
         "Fn::Sub": "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${LiveApi}/*"})),
    ("the push function may not post", check_live_functions_post_to_their_stage,
     lambda ts: role_statements(ts["template"], "LivePushRole").remove(
         statement(ts["template"], "LivePushRole", "PostToConnections"))),
    ("connections never expire", check_connections_expire_and_are_found_by_owner,
     lambda ts: props(resources(ts["storage"])["ConnectionsTable"]).pop("TimeToLiveSpecification")),
    ("connections expire on another attribute", check_connections_expire_and_are_found_by_owner,
     lambda ts: props(resources(ts["storage"])["ConnectionsTable"])["TimeToLiveSpecification"].update(
         AttributeName="ttl")),
    ("no by-owner index", check_connections_expire_and_are_found_by_owner,
     lambda ts: props(resources(ts["storage"])["ConnectionsTable"]).pop("GlobalSecondaryIndexes")),
    ("by-owner projects keys only", check_connections_expire_and_are_found_by_owner,
     lambda ts: props(resources(ts["storage"])["ConnectionsTable"])["GlobalSecondaryIndexes"][0].update(
         Projection={"ProjectionType": "KEYS_ONLY"})),
    ("live queue without delay", check_connections_expire_and_are_found_by_owner,
     lambda ts: props(resources(ts["storage"])["LiveQueue"]).pop("DelaySeconds")),
    ("live queue filtered on callbacks", check_connections_expire_and_are_found_by_owner,
     lambda ts: props(resources(ts["storage"])["LiveQueueSubscription"]).update(FilterPolicy={"callback": ["true"]})),
    ("live push's ReportBatchItemFailures removed", check_consumers_report_batch_item_failures,
     lambda ts: props(resources(ts["template"])[LIVE_PUSH])["Events"]["LiveQueue"]["Properties"].pop(
         "FunctionResponseTypes")),
    ("live push's timeout raised", check_visibility_covers_consumer_timeout,
     lambda ts: props(resources(ts["template"])[LIVE_PUSH]).update(Timeout=11)),
    ("live DLQ alarm removed", check_alarms_notify_the_topic,
     lambda ts: ts["template"]["Resources"].pop("LiveDeadLetterQueueNotEmptyAlarm")),
]

CHECKS = sorted({check for _, check, _ in MUTATIONS}, key=lambda c: c.__name__)


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
def test_property_holds(templates, check):
    assert check(templates) == []


@pytest.mark.parametrize("description, check, mutate", MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_check_fails_on_a_broken_copy(templates, description, check, mutate):
    broken = copy.deepcopy(templates)
    mutate(broken)
    assert broken != templates, f"the mutation '{description}' changed nothing"
    assert check(broken), f"{check.__name__} did not notice: {description}"


def test_every_check_has_a_mutation():
    defined = {f for n, f in globals().items() if n.startswith("check_") and callable(f)}
    assert defined == set(CHECKS)


def test_rekognition_is_granted_only_when_it_is_the_detector(templates):
    grant = role_statements(templates["template"], "WorkerRole")[-1]
    assert grant["Fn::If"][0] == "UseRekognitionDetector"
    assert grant["Fn::If"][1]["Action"] == ["rekognition:DetectLabels", "rekognition:DetectText"]
    assert grant["Fn::If"][2] == {"Ref": "AWS::NoValue"}


def test_model_layer_exists_only_for_onnx(templates):
    template = templates["template"]
    layer = resources(template)["ModelLayer"]
    assert layer.get("Condition") == "UseOnnxDetector"
    assert props(layer)["CompatibleArchitectures"] == ["arm64"]
    meta = layer["Metadata"]
    assert (meta["BuildMethod"], meta["BuildArchitecture"]) == ("makefile", "arm64")
    assert (INFRA / meta["ContextPath"] / "Makefile").is_file()
    assert (INFRA / props(layer)["ContentUri"] / "prepare.py").is_file()
    worker = props(resources(template)[WORKER])
    assert worker["Layers"]["Fn::If"][0] == "UseOnnxDetector"
    # The layer is mounted at /opt; the Makefile puts the model directory at labelq-model/.
    assert worker["Environment"]["Variables"]["LABELQ_MODEL_DIR"] == {
        "Fn::If": ["UseOnnxDetector", "/opt/labelq-model", {"Ref": "AWS::NoValue"}]}


def test_every_storage_output_the_template_reads_exists(templates):
    text = json.dumps(templates["template"])
    used = set(re.findall(r'"Storage", "Outputs\.(\w+)"', text)) | set(re.findall(r"\$\{Storage\.Outputs\.(\w+)\}", text))
    assert used, "the template reads no storage outputs"
    assert used <= set(templates["storage"]["Outputs"])


def test_every_parameter_passed_to_storage_is_declared_there(templates):
    passed = set(props(resources(templates["template"])["Storage"])["Parameters"])
    assert passed <= set(templates["storage"]["Parameters"])


def test_the_cold_start_entropy_setting_is_applied_at_build_time():
    # aws-lc-sys reads AWS_LC_SYS_NO_JITTER_ENTROPY in its build script; as a function environment
    # variable it would do nothing.
    config = (pathlib.Path(__file__).resolve().parents[2] / ".cargo" / "config.toml").read_text()
    assert 'AWS_LC_SYS_NO_JITTER_ENTROPY = "1"' in config


def test_dashboard_is_valid_json_and_shows_every_alarm(templates):
    template = templates["template"]
    body = props(resources(template)["Dashboard"])["DashboardBody"]["Fn::Sub"]
    text, variables = body if isinstance(body, list) else (body, {})
    names = set(re.findall(r"\$\{([^}]+)\}", text))
    declared = set(template["Parameters"]) | set(resources(template)) | set(variables)
    unknown = {n for n in names if n.split(".")[0] not in declared and not n.startswith("AWS::")}
    assert not unknown, f"the dashboard refers to {unknown}"
    rendered = json.loads(re.sub(r"\$\{[^}]+\}", "1", text))
    shown = set(re.findall(r"\$\{(\w+)\.Arn\}", text))
    assert shown == set(resources(template, "AWS::CloudWatch::Alarm"))
    assert rendered["widgets"]
