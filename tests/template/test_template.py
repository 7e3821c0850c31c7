"""template.yaml read as data: wiring, least privilege, logging, caching and the FTP plumbing."""

import json
import re
import subprocess
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest

from mirrorkeeper.config import setting
from mirrorkeeper.serve.http import CONTENT_SECURITY_POLICY
from mirrorkeeper.tiers import DEFAULT_LATE_PATTERNS
from mirrorkeeper.verify.events import DiffInput, EcsTaskDetail, ScheduledVerify, parse_event
from tests.template.cfn import (
    ROOT,
    SAM_PYTHON,
    Resolver,
    as_list,
    policy_statements,
    references,
    resources_of_type,
)

FTP_CONTAINER_PORT = 2121
RSYNC_CONTAINER_PORT = 8873
PSEUDO = {"AWS::Region": "eu-west-1", "AWS::StackName": "mk", "AWS::AccountId": "123456789012", "AWS::Partition": "aws"}
# Actions AWS grants only on "*" (no resource-level permissions), each used on purpose.
STAR_RESOURCE_ACTIONS = {
    "ecr:GetAuthorizationToken",
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
    "elasticloadbalancing:DescribeTargetGroups",
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
}


def props(template: dict[str, Any], logical_id: str) -> dict[str, Any]:
    result: dict[str, Any] = template["Resources"][logical_id]["Properties"]
    return result


def test_template_is_a_sam_template_with_the_sections_users_need(template: dict[str, Any]) -> None:
    # (the expansion leaves SAM's transform; the template itself: test_loops.py)
    assert template["Transform"] == "AWS::Serverless-2016-10-31"
    assert {"HttpUrl", "FtpUrl", "BucketName", "TopicArn", "DashboardUrl", "StatusPageUrl"} <= set(template["Outputs"])
    # every parameter without a default is one only the user can know
    required = {name for name, spec in template["Parameters"].items() if "Default" not in spec}
    assert required == {"AlertEmail", "SyncImageUri"}


@pytest.mark.parametrize(
    ("schedules", "upstream", "deployable"),
    [("-", "", False), ("-", "rsync://example.org/m/", True), ("openvz|ENABLED|cron(7 */1 * * ? *)", "", True)],
)
def test_a_host_of_one_needs_its_upstream_and_a_host_does_not(
    template: dict[str, Any], schedules: str, upstream: str, deployable: bool
) -> None:
    given = {"UpstreamUrl": upstream, "AlertEmail": "a@example.org", "SyncImageUri": "x", "MirrorSchedules": schedules}
    r = Resolver(template, given, PSEUDO)
    broken = [
        name
        for name, rule in template["Rules"].items()
        if r.resolve(rule["RuleCondition"]) and not all(r.resolve(a["Assert"]) for a in rule["Assertions"])
    ]
    assert (broken == []) == deployable, broken


def test_every_reference_names_a_parameter_resource_or_condition(template: dict[str, Any]) -> None:
    # SAM names the URL of a function with a FunctionUrlConfig <function>Url.
    urls = {f"{name}Url" for name, r in template["Resources"].items() if "FunctionUrlConfig" in r.get("Properties", {})}
    known = set(template["Parameters"]) | set(template["Resources"]) | urls
    for logical_id, resource in template["Resources"].items():
        assert references(resource) <= known, logical_id
        assert resource.get("Condition", "CreateVpc") in template["Conditions"], logical_id
    assert references(template["Outputs"]) <= known


def test_every_mapping_attribute_has_a_value(template: dict[str, Any]) -> None:
    # a comma in the text of a YAML flow mapping starts another key (with no value)
    for name, rows in template["Mappings"].items():
        for key, row in rows.items():
            assert None not in row.values(), (name, key, row)


def test_cloudfront_function_in_the_template_is_cloudfront_function_js(template: dict[str, Any]) -> None:
    # WHEN the function is changed in cloudfront/function.js (where its tests run)
    # THEN the template must carry the same code, byte for byte
    inline = props(template, "PathFunction")["FunctionCode"]
    assert inline == (ROOT / "cloudfront/function.js").read_text(), "copy cloudfront/function.js into template.yaml"
    assert props(template, "PathFunction")["FunctionConfig"]["Runtime"] == "cloudfront-js-2.0"


def test_a_host_of_ones_schedule_runs_the_sync_task_as_before(template: dict[str, Any]) -> None:
    # (a host's schedules, one per mirror: test_host.py)
    (schedule_id,) = resources_of_type(template, "AWS::Scheduler::Schedule").keys() - {"VerifySchedule"}
    assert schedule_id == "SyncSchedule"  # the logical id it has always had
    r = Resolver(template, {"UpstreamUrl": "rsync://e.org/m/", "AlertEmail": "a@e.org", "SyncImageUri": "x"}, PSEUDO)
    for logical_id in template["Resources"]:
        r.refs[logical_id] = f"{logical_id}-ref"
        r.attrs[logical_id] = {"Arn": f"{logical_id}-arn"}
    schedule = r.resolve(props(template, schedule_id))
    assert "Name" not in schedule and schedule["State"] == "ENABLED"  # CloudFormation names it
    assert schedule["ScheduleExpression"] == "cron(7 */1 * * ? *)"
    target = schedule["Target"]
    # the universal target for ECS RunTask, whose Input is the request
    assert target["Arn"] == "arn:aws:scheduler:::aws-sdk:ecs:runTask"
    request = json.loads(target["Input"])
    assert request["Cluster"] == "Cluster-arn" and request["TaskDefinition"] == "SyncTaskDefinition-ref"
    assert request["LaunchType"] == "FARGATE" and request["Count"] == 1
    assert request["NetworkConfiguration"]["AwsvpcConfiguration"] == {
        "Subnets": ["PublicSubnetA-ref", "PublicSubnetB-ref"],
        "SecurityGroups": ["SyncSecurityGroup-ref"],
        "AssignPublicIp": "ENABLED",
    }
    # the task's own command, which names no mirror: the workflow then checks the only one there is;
    # and a scheduled run says so (sync --trigger's variable)
    (override,) = request["Overrides"]["ContainerOverrides"]
    task = props(template, "SyncTaskDefinition")
    assert override == {
        "Name": task["ContainerDefinitions"][0]["Name"],
        "Command": ["sync"],
        "Environment": [{"Name": "MIRRORKEEPER_TRIGGER", "Value": "cron"}],
    }
    assert task["ContainerDefinitions"][0]["Command"] == ["sync"]
    overrides = {"containerOverrides": [{"name": override["Name"], "command": override["Command"]}]}
    assert (
        EcsTaskDetail.model_validate({"taskArn": "t", "lastStatus": "STOPPED", "overrides": overrides}).mirror is None
    )
    assert request["PropagateTags"] == "TASK_DEFINITION" and request["EnableECSManagedTags"] is True
    env = {e["Name"] for e in r.resolve(task)["ContainerDefinitions"][0]["Environment"]}
    assert {"MIRRORKEEPER_UPSTREAM", "MIRRORKEEPER_BUCKET", "MIRRORKEEPER_MAX_DELETE_PERCENT"} <= env
    assert task["EphemeralStorage"] == {"SizeInGiB": {"Ref": "EphemeralStorageGiB"}}
    assert target["DeadLetterConfig"]["Arn"] == "TriggerDeadLetterQueue-arn"
    assert target["RetryPolicy"]["MaximumRetryAttempts"] >= 1


def test_the_schedules_role_may_run_only_the_sync_task_in_its_cluster(template: dict[str, Any]) -> None:
    # universal or templated, the target needs ecs:RunTask (and PassRole, TagResource) of its role
    task = props(template, "SyncTaskDefinition")
    statements = list(policy_statements(template["Resources"]["SyncSchedulerRole"]))
    run = next(s for s in statements if s["Action"] == "ecs:RunTask")
    assert run["Resource"]["Fn::Sub"].endswith("task-definition/" + task["Family"]["Fn::Sub"] + ":*")
    assert run["Condition"] == {"ArnEquals": {"ecs:cluster": {"Fn::GetAtt": ["Cluster", "Arn"]}}}
    passrole = next(s for s in statements if s["Action"] == "iam:PassRole")
    assert passrole["Resource"] == [task["ExecutionRoleArn"], task["TaskRoleArn"]]
    tag = next(s for s in statements if s["Action"] == "ecs:TagResource")
    assert tag["Condition"]["StringEquals"]["ecs:CreateAction"] == "RunTask"
    for schedule in resources_of_type(template, "AWS::Scheduler::Schedule").values():
        if "runTask" in json.dumps(schedule):
            assert schedule["Properties"]["Target"]["RoleArn"] == {"Fn::GetAtt": ["SyncSchedulerRole", "Arn"]}


def test_stopped_sync_task_starts_the_verify_workflow_with_the_whole_event(template: dict[str, Any]) -> None:
    rule = props(template, "SyncStoppedRule")
    pattern = rule["EventPattern"]
    assert pattern["source"] == ["aws.ecs"] and pattern["detail-type"] == ["ECS Task State Change"]
    assert pattern["detail"]["lastStatus"] == ["STOPPED"]
    assert pattern["detail"]["clusterArn"] == [{"Fn::GetAtt": ["Cluster", "Arn"]}]
    family = props(template, "SyncTaskDefinition")["Family"]["Fn::Sub"]
    assert pattern["detail"]["taskDefinitionArn"][0]["prefix"]["Fn::Sub"].endswith(f"task-definition/{family}:")
    target, wake = rule["Targets"]
    assert target["Arn"] == {"Ref": "VerifyStateMachine"}
    assert not {"Input", "InputPath", "InputTransformer"} & set(target)  # the whole event is the input
    assert target["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": ["TriggerDeadLetterQueue", "Arn"]}
    # and, with rsync, to the queue serve-rsync long-polls, which only this rule may send to
    condition, queue, absent = wake["Fn::If"]
    assert condition == "RsyncEnabled" and absent == {"Ref": "AWS::NoValue"}
    assert queue["Arn"] == {"Fn::GetAtt": ["RsyncWakeQueue", "Arn"]}
    (allowed,) = props(template, "RsyncWakeQueuePolicy")["PolicyDocument"]["Statement"]
    assert allowed["Condition"] == {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["SyncStoppedRule", "Arn"]}}}


def test_verify_schedule_sends_the_scheduled_verify_event(template: dict[str, Any]) -> None:
    target = props(template, "VerifySchedule")["Target"]
    assert target["Arn"] == {"Ref": "VerifyStateMachine"}
    event = json.loads(target["Input"])
    # each execution gets its own id (the logs' correlation id) and the time it was scheduled for
    assert event["id"] == "<aws.scheduler.execution-id>" and event["time"] == "<aws.scheduler.scheduled-time>"
    # Scheduler fills both in as it starts the workflow; what arrives is the sample in events/, and
    # the workflow's own model accepts it
    sample = json.loads((ROOT / "events" / "scheduled-verify.json").read_text())
    sent = json.loads(
        target["Input"]
        .replace("<aws.scheduler.execution-id>", sample["id"])
        .replace("<aws.scheduler.scheduled-time>", sample["time"])
    )
    assert sent == sample
    trigger = parse_event(DiffInput, {"trigger": sent}).trigger
    assert isinstance(trigger, ScheduledVerify) and trigger.id == sample["id"]
    assert props(template, "VerifySchedule")["ScheduleExpression"] == {"Fn::Sub": "cron(${VerifyMinute} * * * ? *)"}


def test_workflow_calls_the_functions_in_the_order_mirrorkeeper_verify_does(template: dict[str, Any]) -> None:
    machine = props(template, "VerifyStateMachine")
    definition = json.loads((ROOT / machine["DefinitionUri"]).read_text())
    substitutions = machine["DefinitionSubstitutions"]

    def tasks(states: dict[str, Any], state: str | None) -> list[str]:
        """The functions called along Next, a Map's item processor at its place."""
        order = []
        while state:
            spec = states[state]
            if spec["Type"] == "Task":
                placeholder = spec["Resource"].removeprefix("${").removesuffix("}")
                function_id = substitutions[placeholder]["Fn::GetAtt"][0]
                order.append(props(template, function_id)["CodeUri"])
            elif spec["Type"] == "Map":
                processor = spec["ItemProcessor"]
                order += tasks(processor["States"], processor["StartAt"])
            state = spec.get("Next")
        return order

    assert tasks(definition["States"], definition["StartAt"]) == [
        "functions/list_mirrors/",
        "functions/diff_manifests/",
        "functions/probe_endpoints/",
        "functions/publish_health/",
        "functions/publish_host/",
    ]
    # AND the workflow may invoke those functions and nothing else
    invoked = [p["LambdaInvokePolicy"]["FunctionName"]["Ref"] for p in machine["Policies"]]
    assert sorted(invoked) == sorted(v["Fn::GetAtt"][0] for v in substitutions.values())


def test_every_alarm_notifies_the_topic_on_alarm_and_ok(template: dict[str, Any]) -> None:
    alarms = resources_of_type(template, "AWS::CloudWatch::Alarm")
    assert len(alarms) >= 12
    for logical_id, alarm in alarms.items():
        p = alarm["Properties"]
        assert p["AlarmActions"] == [{"Ref": "AlertTopic"}], logical_id
        assert p["OKActions"] == [{"Ref": "AlertTopic"}], logical_id
        description = p["AlarmDescription"]  # a string, or a Fn::Sub in a loop
        text = description if isinstance(description, str) else description["Fn::Sub"][0]
        assert "README.md" in text, logical_id  # each alarm says where to read what to do


@pytest.mark.parametrize("protocol", ["http", "ftp", "rsync"])
def test_freshness_alarm_per_protocol_breaches_on_missing_data(template: dict[str, Any], protocol: str) -> None:
    alarm = props(template, f"Freshness{protocol.capitalize()}Alarm")
    assert alarm["Namespace"] == "Mirrorkeeper" and alarm["MetricName"] == "FreshnessSeconds"
    assert {"Name": "Protocol", "Value": protocol} in alarm["Dimensions"]
    assert alarm["TreatMissingData"] == "breaching"
    assert alarm["Threshold"] == {"Fn::FindInMap": ["SyncInterval", {"Ref": "SyncIntervalHours"}, "FreshnessThreshold"]}
    for hours, row in template["Mappings"]["SyncInterval"].items():
        assert row["Seconds"] == int(hours) * 3600 and row["FreshnessThreshold"] == 2 * row["Seconds"]


def test_alarms_cover_what_the_issue_lists(template: dict[str, Any]) -> None:
    alarms = [a["Properties"] for a in resources_of_type(template, "AWS::CloudWatch::Alarm").values()]
    metrics = {a.get("MetricName") for a in alarms} | {
        m["MetricStat"]["Metric"]["MetricName"] for a in alarms for m in a.get("Metrics", []) if "MetricStat" in m
    }
    assert {
        "FreshnessSeconds",
        "ProbesFailed",
        "DriftObjects",
        "SyncFailed",
        "TargetErrorCount",
        "InvocationDroppedCount",
        "ApproximateNumberOfMessagesVisible",
        "Errors",
        "ExecutionsFailed",
    } <= metrics
    lambda_alarms = {a["Dimensions"][0]["Value"]["Ref"] for a in alarms if a.get("Namespace") == "AWS/Lambda"}
    assert lambda_alarms == set(resources_of_type(template, "AWS::Serverless::Function"))


def _iam_documents(template: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for logical_id, resource in template["Resources"].items():
        for statement in policy_statements(resource):
            found.append((logical_id, statement))
        p = resource.get("Properties", {})
        if resource["Type"] in ("AWS::S3::BucketPolicy", "AWS::SQS::QueuePolicy", "AWS::SNS::TopicPolicy"):
            found += [(logical_id, s) for s in p["PolicyDocument"]["Statement"]]
    return found


def test_no_wildcard_iam_where_aws_allows_narrower(template: dict[str, Any]) -> None:
    documents = _iam_documents(template)
    assert len(documents) > 20
    for logical_id, statement in documents:
        actions = as_list(statement["Action"])
        if statement["Effect"] == "Deny":
            continue  # the TLS-only denials are meant to cover everything
        assert not [a for a in actions if a == "*" or a.endswith(":*")], (logical_id, actions)
        if statement.get("Resource") == "*":
            assert set(actions) <= STAR_RESOURCE_ACTIONS, (logical_id, actions)
        assert statement.get("Principal") != "*", logical_id


def test_bucket_policy_lets_only_this_distribution_get_and_list(template: dict[str, Any]) -> None:
    statements = props(template, "MirrorBucketPolicy")["PolicyDocument"]["Statement"]
    cloudfront = [s for s in statements if s.get("Principal") == {"Service": "cloudfront.amazonaws.com"}]
    granted = {s["Action"]: s for s in cloudfront}
    assert set(granted) == {"s3:GetObject", "s3:ListBucket"}
    # GetObject only in the served tree; ListBucket on the bucket (S3's 404-not-403 rule)
    assert granted["s3:GetObject"]["Resource"] == {"Fn::Sub": "${MirrorBucket.Arn}/pub/*"}
    assert granted["s3:ListBucket"]["Resource"] == {"Fn::GetAtt": ["MirrorBucket", "Arn"]}
    for statement in cloudfront:
        assert "Distribution" in references(statement["Condition"]["StringEquals"]["AWS:SourceArn"])
    tls = next(s for s in statements if s["Effect"] == "Deny")
    assert tls["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    origin = props(template, "Distribution")["DistributionConfig"]["Origins"][0]
    assert origin["OriginPath"] == "/pub" and origin["OriginAccessControlId"]


def test_every_cloudfront_answer_carries_serve_https_sandbox_csp(template: dict[str, Any]) -> None:
    # GIVEN the one response headers policy
    policy = props(template, "ResponseHeadersPolicy")["ResponseHeadersPolicyConfig"]["SecurityHeadersConfig"]
    # THEN it sends serve-http's CSP, replacing anything the origin might send
    assert policy["ContentSecurityPolicy"] == {"ContentSecurityPolicy": CONTENT_SECURITY_POLICY, "Override": True}
    assert CONTENT_SECURITY_POLICY.split()[0] == "sandbox" and "allow-scripts" not in CONTENT_SECURITY_POLICY
    # AND every path gets it: CloudFront cannot pick a header by content type, and upstream HTML can be anywhere
    config = props(template, "Distribution")["DistributionConfig"]
    for behavior in [config["DefaultCacheBehavior"], *config["CacheBehaviors"]]:
        assert behavior["ResponseHeadersPolicyId"] == {"Ref": "ResponseHeadersPolicy"}, behavior.get("PathPattern")


def test_bucket_is_private_owner_enforced_encrypted_and_versioned(template: dict[str, Any]) -> None:
    bucket = props(template, "MirrorBucket")
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert bucket["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    assert bucket["VersioningConfiguration"]["Status"] == "Enabled"
    rules = bucket["LifecycleConfiguration"]["Rules"]
    assert any("NoncurrentVersionExpiration" in r for r in rules)  # versions are an undo, not a second mirror


def _log_group_retained(template: dict[str, Any], ref: Any) -> bool:
    logical_id = ref["Ref"] if "Ref" in ref else ref["Fn::GetAtt"][0]
    resource = template["Resources"][logical_id]
    return resource["Type"] == "AWS::Logs::LogGroup" and "RetentionInDays" in resource["Properties"]


def test_every_function_is_python313_and_logs_to_a_group_with_retention(template: dict[str, Any]) -> None:
    globals_ = template["Globals"]["Function"]
    functions = resources_of_type(template, "AWS::Serverless::Function", "AWS::Lambda::Function")
    assert len(functions) == 6
    for logical_id, function in functions.items():
        p = function["Properties"]
        assert p.get("Runtime", globals_["Runtime"]) == "python3.13", logical_id
        assert p.get("Handler", globals_["Handler"]) == "app.handler", logical_id
        assert _log_group_retained(template, p["LoggingConfig"]["LogGroup"]), logical_id
    assert props(template, "MirrorkeeperLayer")["CompatibleRuntimes"] == ["python3.13"]


def test_every_log_group_has_retention_and_everything_logs_to_one(template: dict[str, Any]) -> None:
    for logical_id, group in resources_of_type(template, "AWS::Logs::LogGroup").items():
        assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}, logical_id
    for logical_id, task in resources_of_type(template, "AWS::ECS::TaskDefinition").items():
        options = task["Properties"]["ContainerDefinitions"][0]["LogConfiguration"]["Options"]
        assert _log_group_retained(template, options["awslogs-group"]), logical_id
    machines = resources_of_type(template, "AWS::Serverless::StateMachine", "AWS::StepFunctions::StateMachine")
    for logical_id, machine in machines.items():
        p = machine["Properties"]
        logging = p.get("Logging") or p["LoggingConfiguration"]
        destination = logging["Destinations"][0]["CloudWatchLogsLogGroup"]["LogGroupArn"]
        assert _log_group_retained(template, destination), logical_id


def test_functions_get_the_environment_and_permissions_of_the_contract(template: dict[str, Any]) -> None:
    # (what a host's functions get, and may write under each mirror's path: test_host.py)
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert set(env) == {
        "MIRRORKEEPER_BUCKET",
        "MIRRORKEEPER_PREFIX",
        "MIRRORKEEPER_CONFIG",
        "MIRRORKEEPER_MIRROR_NAME",
        "MIRRORKEEPER_HTTP_URL",
        "MIRRORKEEPER_FTP_URL",
        "MIRRORKEEPER_RSYNC_URL",
        "MIRRORKEEPER_SYNC_INTERVAL",
        "MIRRORKEEPER_TOPIC_ARN",
        "POWERTOOLS_SERVICE_NAME",
        "POWERTOOLS_METRICS_NAMESPACE",
    }
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == "Mirrorkeeper"

    def grants(function_id: str) -> set[tuple[str, str]]:
        out = set()
        for statement in policy_statements(template["Resources"][function_id]):
            for action in as_list(statement["Action"]):
                for resource in as_list(statement["Resource"]):
                    out.add((action, json.dumps(resource, sort_keys=True)))
        return out

    def keys(*found: str) -> set[str]:
        return {json.dumps({"Fn::Sub": f"${{MirrorBucket.Arn}}/{key}"}) for key in found}

    bucket = json.dumps({"Fn::GetAtt": ["MirrorBucket", "Arn"]})
    (state,) = keys("state/*")
    # each mirror's own, at the root (a host of one) or under its path (IAM's * matches "/" too)
    repair = keys("state/repair.json", "state/*/repair.json")
    # marks the manifest for repair (a copy onto itself with new metadata)
    manifest = keys("state/manifest.jsonl.gz", "state/*/manifest.jsonl.gz")
    # and forgets the upstream trace state, so that the repairing sync lists upstream in full
    upstream = keys("state/upstream.json", "state/*/upstream.json")
    assert grants("DiffManifestsFunction") == {("s3:ListBucket", bucket), ("s3:GetObject", state)} | {
        (action, key) for key in repair for action in ("s3:PutObject", "s3:DeleteObject")
    } | {("s3:PutObject", key) for key in manifest} | {("s3:DeleteObject", key) for key in upstream}
    assert grants("ProbeEndpointsFunction") == {("s3:GetObject", state)}
    owned = keys(
        "state/health.json",
        "state/*/health.json",
        "pub/.mirrorkeeper/status.html",
        "pub/.mirrorkeeper/status.json",
        "pub/*/.mirrorkeeper/status.html",
        "pub/*/.mirrorkeeper/status.json",
    )
    assert grants("PublishHealthFunction") == {("s3:GetObject", state)} | {("s3:PutObject", key) for key in owned}
    # the health function cannot write the manifest, the lease or a run report (nor the repair list)
    written = {r for action, r in grants("PublishHealthFunction") if action == "s3:PutObject"}
    for private in ("manifest.jsonl.gz", "lock.json", "runs/", "repair.json"):
        assert not any(private in r for r in written), private
    assert state not in written
    assert grants("ListMirrorsFunction") == {("s3:GetObject", *keys("state/.host/mirrors.toml"))}
    publish_policies = props(template, "PublishHealthFunction")["Policies"]
    assert {"SNSPublishMessagePolicy": {"TopicName": {"Fn::GetAtt": ["AlertTopic", "TopicName"]}}} in publish_policies


def test_the_push_function_is_a_public_url_that_may_start_the_sync_task_and_little_else(
    template: dict[str, Any],
) -> None:
    push = props(template, "PushFunction")
    # the push's HMAC is the authentication: an upstream is no AWS principal
    assert push["FunctionUrlConfig"] == {"AuthType": "NONE"}
    assert template["Outputs"]["PushUrl"]["Value"] == {"Fn::GetAtt": ["PushFunctionUrl", "FunctionUrl"]}
    env = push["Environment"]["Variables"]
    # a host's mirrors name their own push secrets in mirrors.toml, which a variable would override
    secret_ref = {"Fn::If": ["HostOfOne", {"Fn::Sub": "secretsmanager:${PushSecret}"}, {"Ref": "AWS::NoValue"}]}
    assert env[setting("push_secret").env] == secret_ref
    assert env[setting("sync_task_definition").env] == {"Ref": "SyncTaskDefinition"}
    assert env[setting("sync_cluster").env] == {"Ref": "Cluster"}
    assert env[setting("sync_security_groups").env] == {"Ref": "SyncSecurityGroup"}
    # AND the sync task knows the mirror takes pushes, so a run follows up those that came meanwhile
    task = props(template, "SyncTaskDefinition")["ContainerDefinitions"][0]
    assert {
        "Fn::If": [
            "HostOfOne",
            {"Name": setting("push_secret").env, "Value": secret_ref["Fn::If"][1]},
            {"Ref": "AWS::NoValue"},
        ]
    } in task["Environment"]
    # AND it may run that task definition in the stack's cluster, pass its two roles, read its secret,
    # and write only the push state and the replay marks
    grants = {
        action: s for s in policy_statements(template["Resources"]["PushFunction"]) for action in as_list(s["Action"])
    }
    assert set(grants) == {
        "s3:ListBucket",
        "s3:GetObject",
        "s3:PutObject",
        "secretsmanager:GetSecretValue",
        "ecs:RunTask",
        "iam:PassRole",
    }
    host_only = {"Fn::If": ["HostOfOne", {"Ref": "AWS::NoValue"}, {"Fn::Sub": "${MirrorBucket.Arn}/state/*/push.json"}]}
    assert grants["s3:PutObject"]["Resource"] == [
        {"Fn::Sub": "${MirrorBucket.Arn}/state/push.json"},
        host_only,
        {"Fn::Sub": "${MirrorBucket.Arn}/state/.host/push/seen/*"},
    ]
    assert grants["secretsmanager:GetSecretValue"]["Resource"][0] == {"Ref": "PushSecret"}
    assert grants["ecs:RunTask"]["Condition"] == {"ArnEquals": {"ecs:cluster": {"Fn::GetAtt": ["Cluster", "Arn"]}}}
    assert grants["iam:PassRole"]["Resource"] == [
        {"Fn::GetAtt": ["TaskExecutionRole", "Arn"]},
        {"Fn::GetAtt": ["SyncTaskRole", "Arn"]},
    ]
    # AND a used signature is forgotten a day later (the window it guards is 5 minutes)
    rules = props(template, "MirrorBucket")["LifecycleConfiguration"]["Rules"]
    marks = {"Id": "push-signatures-for-a-day", "Status": "Enabled", "Prefix": "state/.host/push/seen/"}
    assert marks | {"ExpirationInDays": 1} in rules


def test_the_task_execution_role_pulls_from_the_image_repository_alone(template: dict[str, Any]) -> None:
    (statement,) = [s for _, s in _iam_documents(template) if "ecr:BatchGetImage" in as_list(s["Action"])]
    for uri, repository in (
        ("123456789012.dkr.ecr.eu-west-1.amazonaws.com/mirrorkeeper:20261129-abc", "mirrorkeeper"),
        ("123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/mirrorkeeper@sha256:" + "a" * 64, "team/mirrorkeeper"),
    ):
        given = {"UpstreamUrl": "rsync://example.org/m/", "AlertEmail": "a@example.org", "SyncImageUri": uri}
        resolved = Resolver(template, given, PSEUDO).resolve(statement["Resource"])
        assert resolved == f"arn:aws:ecr:eu-west-1:123456789012:repository/{repository}"
        assert re.fullmatch(template["Parameters"]["SyncImageUri"]["AllowedPattern"], uri)
    for foreign in (
        "docker.io/library/python:3.13",
        "public.ecr.aws/x/y:1",
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com/x",
    ):
        assert not re.fullmatch(template["Parameters"]["SyncImageUri"]["AllowedPattern"], foreign)


def test_the_sync_task_invalidates_the_stacks_distribution_and_nothing_else(template: dict[str, Any]) -> None:
    # GIVEN the sync task's environment: the stack's distribution under the setting's variable
    task = props(template, "SyncTaskDefinition")
    env = {e["Name"]: e["Value"] for e in task["ContainerDefinitions"][0]["Environment"] if "Name" in e}
    assert env[setting("cloudfront_distribution_id").env] == {"Ref": "Distribution"}
    # THEN the task role, and no one else, may create and read invalidations, on that distribution alone
    invalidating = [
        (logical_id, statement)
        for logical_id, statement in _iam_documents(template)
        if any(action.startswith("cloudfront:") for action in as_list(statement["Action"]))
    ]
    assert [logical_id for logical_id, _ in invalidating] == ["SyncTaskRole"]
    ((_, statement),) = invalidating
    assert sorted(as_list(statement["Action"])) == ["cloudfront:CreateInvalidation", "cloudfront:GetInvalidation"]
    assert references(statement["Resource"]) == {"Distribution"}
    resolver = Resolver(
        template, {"UpstreamUrl": "rsync://e.org/m/", "AlertEmail": "a@e.org", "SyncImageUri": "x"}, PSEUDO
    )
    resolver.refs["Distribution"] = "E2QWRUHAPOMQZL"
    assert resolver.resolve(statement["Resource"]) == "arn:aws:cloudfront::123456789012:distribution/E2QWRUHAPOMQZL"


def test_the_pager_url_is_no_echo_and_sam_never_saves_it(template: dict[str, Any], tmp_path: Path) -> None:
    assert template["Parameters"]["PagerUrl"]["NoEcho"] is True
    assert "PagerUrl" not in (ROOT / "samconfig.toml").read_text()
    # SAM CLI's own guided deploy, answering every parameter, writes samconfig.toml without it
    script = tmp_path / "guided.py"
    script.write_text(GUIDED_SAVE)
    result = subprocess.run(
        [str(SAM_PYTHON), str(script), str(ROOT / "template.yaml"), str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    saved = (tmp_path / "samconfig.toml").read_text()
    assert "MirrorName=" in saved and "PagerUrl" not in saved and "pager.example" not in saved


# Runs in the SAM CLI's venv: its guided deploy's prompt for every parameter (answered here) and its
# saving of the answers, as `sam deploy --guided` does.
GUIDED_SAVE = """
import sys
from pathlib import Path
from samcli.commands.deploy import guided_context
from samcli.commands.deploy.guided_config import GuidedConfig
from samcli.lib.config.samconfig import SamConfig
from samcli.yamlhelper import yaml_parse

template, out = sys.argv[1], Path(sys.argv[2])
parameters = yaml_parse(Path(template).read_text())["Parameters"]
guided_context.prompt = lambda text, **kwargs: "https://pager.example/key" if "PagerUrl" in text else "x"
class Asker:
    _get_parameter_value = staticmethod(lambda key, props, cmdline: props.get("Default", ""))
answers = guided_context.GuidedContext.prompt_parameters(Asker(), parameters, {}, "", "")
config = GuidedConfig(template, section="parameters")
samconfig = SamConfig(str(out))
config._save_parameter_overrides(["deploy"], "default", answers, samconfig)
samconfig.flush()
"""


def test_short_ttl_paths_cover_the_trace_status_index_pages_and_every_late_index_file(template: dict[str, Any]) -> None:
    config = props(template, "Distribution")["DistributionConfig"]
    assert config["DefaultCacheBehavior"]["CachePolicyId"] == {"Ref": "DataCachePolicy"}
    short = [b["PathPattern"] for b in config["CacheBehaviors"] if b["CachePolicyId"] == {"Ref": "ShortCachePolicy"}]
    assert len(short) == len(config["CacheBehaviors"]) <= 25  # CloudFront's quota of behaviours

    def is_short(path: str) -> bool:  # CloudFront's * and ? match like fnmatch's (including "/")
        return any(fnmatchcase(path, pattern) for pattern in short)

    late = [pattern for tier in DEFAULT_LATE_PATTERNS for pattern in tier]
    for pattern in late:
        assert is_short("/dists/stable/main/" + pattern.replace("*", "x")), pattern
    for path in ("/.mirrorkeeper/trace", "/.mirrorkeeper/status.html", "/", "/virtuozzo/releases/"):
        assert is_short(path), path
    for path in ("/virtuozzo/releases/7.0/x86_64/os/vzctl-7.0.1.rpm", "/iso/openvz.iso", "/README"):
        assert not is_short(path), path
    behaviours = [config["DefaultCacheBehavior"], *config["CacheBehaviors"]]
    for behaviour in behaviours:
        assert behaviour["FunctionAssociations"] == [
            {
                "EventType": "viewer-request",
                "FunctionARN": {"Fn::GetAtt": ["PathFunction", "FunctionMetadata.FunctionARN"]},
            }
        ]
        assert behaviour["AllowedMethods"] == ["GET", "HEAD"]
    errors = {e["ErrorCode"]: e["ErrorCachingMinTTL"] for e in config["CustomErrorResponses"]}
    assert errors[404] <= 10  # a file that appears with the next sync is not hidden by a cached 404
    short_policy = props(template, "ShortCachePolicy")["CachePolicyConfig"]
    data_policy = props(template, "DataCachePolicy")["CachePolicyConfig"]
    assert short_policy["MaxTTL"] <= 300 < data_policy["DefaultTTL"]


def test_ftp_task_serves_unprivileged_behind_the_control_listener_alone(template: dict[str, Any]) -> None:
    # (the passive ports, for every FtpPassivePorts: test_loops.py)
    task = props(template, "FtpTaskDefinition")["ContainerDefinitions"][0]
    env = {e["Name"]: e["Value"] for e in task["Environment"]}
    assert env["MIRRORKEEPER_MASQUERADE_ADDRESS"] == {"Ref": "FtpAddress"}
    # (the host, IPv6 or not with FtpIpAddressType: test_dual_stack.py)
    assert task["Command"][:2] + task["Command"][3:] == ["serve-ftp", "--host", "--port", str(FTP_CONTAINER_PORT)]
    control = props(template, "FtpControlListener")
    assert control["Port"] == 21 and control["DefaultActions"][0]["TargetGroupArn"] == {"Ref": "FtpControlTargetGroup"}
    group = props(template, "FtpControlTargetGroup")
    assert group["TargetType"] == "ip" and group["Port"] == FTP_CONTAINER_PORT
    attributes = {a["Key"]: a["Value"] for a in group["TargetGroupAttributes"]}
    assert attributes["preserve_client_ip.enabled"] == "true"  # pyftpdlib checks data comes from the client
    # one task at a time, attached to the control port only (ECS allows five target groups)
    service = props(template, "FtpService")
    assert service["DesiredCount"] == 1 and service["DeploymentConfiguration"]["MaximumPercent"] == 100
    assert [lb["ContainerPort"] for lb in service["LoadBalancers"]] == [FTP_CONTAINER_PORT]
    # its state changes start the registration in the passive groups, whose trigger exists first
    assert "FtpTaskChangedRule" in template["Resources"]["FtpService"]["DependsOn"]
    rule = props(template, "FtpTaskChangedRule")
    assert rule["EventPattern"]["detail"]["group"] == [
        {"Fn::Sub": "service:" + props(template, "FtpService")["ServiceName"]["Fn::Sub"]}
    ]
    assert rule["Targets"][0]["Arn"] == {"Ref": "FtpTargetsStateMachine"}
    mapping = props(template, "FtpLoadBalancer")["SubnetMappings"]
    assert mapping == [{**mapping[0], "AllocationId": {"Fn::GetAtt": ["FtpAddress", "AllocationId"]}}]


def test_ftp_targets_workflow_registers_in_the_groups_it_finds_on_the_ftp_load_balancer(
    template: dict[str, Any],
) -> None:
    states = props(template, "FtpTargetsStateMachine")["Definition"]["States"]
    (branch,) = states["Groups"]["Branches"]
    describe = branch["States"][branch["StartAt"]]
    assert describe["Resource"].endswith(":aws-sdk:elasticloadbalancingv2:describeTargetGroups")
    assert describe["Parameters"]["LoadBalancerArn"] == {"Ref": "FtpLoadBalancer"}
    # too few groups (a listener still being created) is retried before the workflow fails
    missing = next(s for s in branch["States"].values() if s["Type"] == "Fail")["Error"]
    assert missing in states["Groups"]["Retry"][0]["ErrorEquals"]
    for name, api in (("Register", "registerTargets"), ("Deregister", "deregisterTargets")):
        state = states[name]
        assert state["Type"] == "Map" and state["ItemsPath"] == states["Groups"]["ResultPath"] + ".arns"
        task = state["ItemProcessor"]["States"][state["ItemProcessor"]["StartAt"]]
        assert task["Resource"].endswith(f":aws-sdk:elasticloadbalancingv2:{api}")
        assert task["Parameters"] == {"TargetGroupArn.$": "$.group", "Targets": [{"Id.$": "$.ip"}]}
    choices = {c["StringEquals"]: c["Next"] for c in states["Action"]["Choices"]}
    assert choices == {"STOPPED": "Deregister", "RUNNING": "Register"}


RSYNC_ON = {"UpstreamUrl": "rsync://example.org/m/", "AlertEmail": "a@example.org", "SyncImageUri": "x"}


@pytest.mark.parametrize(("ftp", "rsync"), [("true", "false"), ("false", "false"), ("true", "true"), ("false", "true")])
def test_rsync_is_optional_and_shares_the_load_balancer_with_ftp(
    template: dict[str, Any], ftp: str, rsync: str
) -> None:
    r = Resolver(template, {**RSYNC_ON, "EnableFtp": ftp, "EnableRsync": rsync}, PSEUDO)
    assert template["Parameters"]["EnableRsync"]["Default"] == "false"
    own = [k for k in template["Resources"] if k.startswith("Rsync")]
    assert len(own) == 9 and all(r.active(k) == (rsync == "true") for k in own)
    # one load balancer and address, there when either protocol is
    for shared in ("FtpLoadBalancer", "FtpAddress"):
        assert r.active(shared) == ("true" in (ftp, rsync)), shared
    for protocol in ("ftp", "rsync"):
        on = {"ftp": ftp, "rsync": rsync}[protocol] == "true"
        alarms = [f"Freshness{protocol.capitalize()}Alarm", f"ProbesFailed{protocol.capitalize()}Alarm"]
        assert all(r.active(alarm) == on for alarm in alarms), protocol
    r.refs["FtpAddress"] = "192.0.2.10"
    expected = "rsync://192.0.2.10/" if rsync == "true" else ""
    assert r.resolve(template["Outputs"]["RsyncUrl"]["Value"]) == expected


@pytest.mark.parametrize(
    ("schedules", "url"),
    [("-", "rsync://192.0.2.10/mirror/"), ("openvz|ENABLED|cron(7 */1 * * ? *)", "rsync://192.0.2.10/")],
)
def test_verification_probes_rsync_at_the_module_a_host_of_one_or_a_hosts_mirrors_are_served_as(
    template: dict[str, Any], schedules: str, url: str
) -> None:
    r = Resolver(template, {**RSYNC_ON, "EnableRsync": "true", "MirrorSchedules": schedules}, PSEUDO)
    r.refs.update(FtpAddress="192.0.2.10", MirrorBucket="mk-mirror", RsyncWakeQueue="https://sqs.test/1/wake")
    # (a host's verify makes it each mirror's: rsync://HOST/<module of its path>/, config.mirror_url)
    assert r.resolve(template["Globals"]["Function"]["Environment"]["Variables"]["MIRRORKEEPER_RSYNC_URL"]) == url
    # and the task serves the host's config file's mirrors, or the one mirror as module 'mirror'
    (task,) = props(template, "RsyncTaskDefinition")["ContainerDefinitions"]
    env = {e["Name"]: e["Value"] for e in r.resolve(task["Environment"])}
    assert ("MIRRORKEEPER_CONFIG" in env) == (schedules != "-") and "MIRRORKEEPER_MODULE" not in env


def test_rsync_task_serves_unprivileged_from_its_disk_behind_port_873(template: dict[str, Any]) -> None:
    task_definition = props(template, "RsyncTaskDefinition")
    # its disk, sized by a parameter within Fargate's limits, holds the replica
    assert task_definition["EphemeralStorage"] == {"SizeInGiB": {"Ref": "RsyncStorageGiB"}}
    size = template["Parameters"]["RsyncStorageGiB"]
    assert (size["MinValue"], size["MaxValue"]) == (21, 200) and 21 <= size["Default"] <= 200
    (task,) = task_definition["ContainerDefinitions"]
    command = task["Command"]
    # (the host, IPv6 or not with FtpIpAddressType: test_dual_stack.py)
    assert command[0] == "serve-rsync" and command[command.index("--port") + 1] == str(RSYNC_CONTAINER_PORT)
    assert command[command.index("--replica-dir") + 1] == "/var/lib/mirrorkeeper"  # the image's user's home
    health_port = int(command[command.index("--health-port") + 1])
    assert task["PortMappings"] == [
        {"ContainerPort": port, "Protocol": "tcp"} for port in (RSYNC_CONTAINER_PORT, health_port)
    ]
    # its own log group, with the stack's retention
    assert task["LogConfiguration"]["Options"]["awslogs-group"] == {"Ref": "RsyncLogGroup"}
    assert props(template, "RsyncLogGroup")["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    # port 873 of the load balancer FTP uses, to a health-checked group keeping clients' addresses
    listener = props(template, "RsyncListener")
    assert listener["LoadBalancerArn"] == {"Ref": "FtpLoadBalancer"} and listener["Port"] == 873
    assert listener["DefaultActions"] == [{"Type": "forward", "TargetGroupArn": {"Ref": "RsyncTargetGroup"}}]
    group = props(template, "RsyncTargetGroup")
    assert group["TargetType"] == "ip" and group["Port"] == RSYNC_CONTAINER_PORT
    # healthy once the replica is complete (serve-rsync --health-port), not when the daemon merely listens
    assert (group["HealthCheckProtocol"], group["HealthCheckPort"], group["Matcher"]) == (
        "HTTP",
        str(health_port),
        {"HttpCode": "200"},
    )
    assert {"Key": "preserve_client_ip.enabled", "Value": "true"} in group["TargetGroupAttributes"]
    service = props(template, "RsyncService")
    assert service["LoadBalancers"] == [
        {"ContainerName": "rsync", "ContainerPort": RSYNC_CONTAINER_PORT, "TargetGroupArn": {"Ref": "RsyncTargetGroup"}}
    ]
    assert service["DesiredCount"] == 1 and service["NetworkConfiguration"]["AwsvpcConfiguration"][
        "SecurityGroups"
    ] == [{"Ref": "RsyncSecurityGroup"}]
    # a deployment starts the new task beside the old, which serves until the new one is healthy
    deployment = service["DeploymentConfiguration"]
    assert (deployment["MinimumHealthyPercent"], deployment["MaximumPercent"]) == (100, 200)
    assert service["HealthCheckGracePeriodSeconds"] >= 3600  # a build of a large replica is not a failure
    ingress = props(template, "RsyncSecurityGroup")["SecurityGroupIngress"]
    assert [(rule["FromPort"], rule["ToPort"]) for rule in ingress] == [
        (RSYNC_CONTAINER_PORT, RSYNC_CONTAINER_PORT),
        (health_port, health_port),
    ]
    # it reads the files, the manifests and the host's config file, and writes nothing; it takes the
    # wake-up queue's messages
    actions = {
        a
        for policy in props(template, "RsyncTaskRole")["Policies"]
        for st in policy["PolicyDocument"]["Statement"]
        for a in as_list(st["Action"])
    }
    assert actions == {"s3:ListBucket", "s3:GetObject", "sqs:ReceiveMessage", "sqs:DeleteMessage"}
    env = {e["Name"]: e["Value"] for e in task["Environment"] if "Name" in e}
    assert env["MIRRORKEEPER_WAKE_QUEUE_URL"] == {"Ref": "RsyncWakeQueue"}


def test_skipped_checks_say_why(template: dict[str, Any]) -> None:
    skipped = 0
    for logical_id, resource in template["Resources"].items():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            assert skip["id"].startswith("CKV") and len(skip.get("comment", "")) > 30, (logical_id, skip)
            skipped += 1
    assert skipped > 0
    text = (ROOT / "template.yaml").read_text()
    assert text.count("ignore_checks: [") == text.count("# W1030") >= 1  # the one cfn-lint ignore has its reason


@pytest.mark.parametrize(("ftp", "rsync"), [("true", "false"), ("false", "false"), ("true", "true"), ("false", "true")])
def test_dashboard_body_is_json_with_or_without_ftp_and_rsync(template: dict[str, Any], ftp: str, rsync: str) -> None:
    resolver = Resolver(
        template,
        {
            "UpstreamUrl": "rsync://example.org/m/",
            "AlertEmail": "a@example.org",
            "SyncImageUri": "img",
            "EnableFtp": ftp,
            "EnableRsync": rsync,
        },
        {"AWS::Region": "us-east-1", "AWS::StackName": "mk", "AWS::AccountId": "123456789012", "AWS::Partition": "aws"},
    )
    for logical_id in resources_of_type(template, "AWS::CloudWatch::Alarm"):
        resolver.attrs[logical_id] = {"Arn": f"arn:aws:cloudwatch:us-east-1:123456789012:alarm:{logical_id}"}
    body = json.loads(resolver.resolve(props(template, "Dashboard")["DashboardBody"]))
    (alarm_widget,) = [w for w in body["widgets"] if w["type"] == "alarm"]
    active = [a for a in resources_of_type(template, "AWS::CloudWatch::Alarm") if resolver.active(a)]
    assert sorted(a.rsplit(":", 1)[1] for a in alarm_widget["properties"]["alarms"]) == sorted(active)


def test_build_and_lint_tools_are_pinned() -> None:
    for name in ("requirements-sam.txt", "requirements-checkov.txt", "requirements-layer.txt"):
        lines = [ln for ln in Path(ROOT / name).read_text().splitlines() if ln and not ln.startswith("#")]
        assert lines and all("==" in ln for ln in lines), name
