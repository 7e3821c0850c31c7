"""One stack for a host of many mirrors (issue 13, item 3), read on the template expanded for the
parameters `make deploy` gives it from a mirrors.toml of 2 and of 50 mirrors, beside a host of one:
each mirror adds its schedule and nothing else; the alarms and the dashboard are the same whatever the
number of mirrors and watch metrics the verification sends; a host's tasks and functions read its
mirrors.toml from the bucket, and write each mirror's keys under its path but never its data or
lease; and the 50-mirror stack fits CloudFormation's quotas and lints clean."""

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from mirrorkeeper.config import SETTINGS
from mirrorkeeper.layout import DEFAULT_TRACE_PATH, MirrorLayout
from mirrorkeeper.state import STATUS_HTML_PATH, STATUS_JSON_PATH, StateStore, host_config_key
from mirrorkeeper.verify.events import EcsTaskDetail
from mirrorkeeper.verify.frontpage import MIRRORS_JSON_PATH
from mirrorkeeper.verify.metrics import host_points, mirror_points
from mirrorkeeper_dev.deploy import Host, deploy_command, read_host, stack_parameters
from tests.template.cfn import (
    NO_VALUE,
    ROOT,
    SAM_PYTHON,
    TEMPLATE,
    Resolver,
    StandInAttributes,
    allows,
    expand_templates,
    load_raw_template,
    policy_statements,
    resources_of_type,
)

STACK = "mk"
BUCKET = "mk-mirrorbucket-0001"
PSEUDO = {
    "AWS::Region": "us-east-1",
    "AWS::StackName": STACK,
    "AWS::AccountId": "123456789012",
    "AWS::Partition": "aws",
}
REQUIRED = {"AlertEmail": "a@example.org", "SyncImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/m:t"}
HOST_OF_ONE = {"UpstreamUrl": "rsync://download.example.org/openvz-download/"}
INTERVALS = ("15m", "30m", "1h", "1h", "2h", "6h", "1d")
FUNCTIONS = ("ListMirrorsFunction", "DiffManifestsFunction", "ProbeEndpointsFunction", "PublishHealthFunction")
# CloudFormation's quotas (its user guide, "Understand CloudFormation quotas").
MAX_RESOURCES, MAX_TEMPLATE_BYTES, MAX_PARAMETER_VALUE_BYTES = 500, 1_000_000, 4096
# What a scheduled run's task is told of its trigger (sync --trigger {manual,cron,push}).
SCHEDULED_TRIGGER = [{"Name": next(s.env for s in SETTINGS if s.name == "trigger"), "Value": "cron"}]


def mirrors_toml(count: int) -> str:
    """A host of `count` mirrors, every interval a schedule allows, some paused, some nested under
    a directory (linux/...), one with an rsync password, names of 20 characters or so."""
    tables = ['[host]\nname = "mirrors.example.org"\n']
    for i in range(count):
        name = f"{('debian', 'epel', 'openvz', 'ubuntu-ports')[i % 4]}-mirror-{i:02d}"
        table = f'\n[mirrors.{name}]\nupstream = "rsync://upstream{i}.example.org/{name}/"\n'
        table += f'interval = "{INTERVALS[i % len(INTERVALS)]}"\nminute = {i % 15}\n'
        table += f'path = "linux/{name}"\n' if i % 3 == 0 else ""
        table += "paused = true\n" if i % 5 == 4 else ""
        table += f'rsync_password = "secretsmanager:{STACK}/{name}"\n' if i == 1 else ""
        tables.append(table)
    return "".join(tables)


class Stack:
    """An expansion with its parameter values, every other resource a stand-in of its own name."""

    def __init__(self, template: dict[str, Any], parameters: dict[str, str], host: Host | None) -> None:
        self.template, self.host = template, host
        self.r = Resolver(template, {**REQUIRED, **HOST_OF_ONE, **parameters}, PSEUDO)
        # SAM names a function's URL <function>Url (its transform makes that resource).
        urls = [f"{k}Url" for k, v in template["Resources"].items() if "FunctionUrlConfig" in v.get("Properties", {})]
        for logical_id in [*template["Resources"], *urls]:
            self.r.refs[logical_id] = f"{logical_id}-ref"
            self.r.attrs[logical_id] = StandInAttributes(logical_id, {"Arn": f"{logical_id}-arn"})
        self.r.refs["MirrorBucket"], self.r.attrs["MirrorBucket"]["Arn"] = BUCKET, f"arn:aws:s3:::{BUCKET}"

    def props(self, logical_id: str) -> dict[str, Any]:
        resolved: dict[str, Any] = self.r.resolve(self.template["Resources"][logical_id].get("Properties", {}))
        return resolved

    def others(self) -> dict[str, Any]:
        """Every resource but the sync schedules."""
        return {k: v for k, v in self.template["Resources"].items() if k not in self.sync_schedules()}

    def sync_schedules(self) -> list[str]:
        return [k for k in resources_of_type(self.template, "AWS::Scheduler::Schedule") if k != "VerifySchedule"]

    def statements(self, logical_id: str) -> list[dict[str, Any]]:
        return list(policy_statements(self.r.resolve(self.template["Resources"][logical_id])))

    def environment(self, logical_id: str) -> dict[str, str]:
        if logical_id == "SyncTaskDefinition":
            found = self.props(logical_id)["ContainerDefinitions"][0]["Environment"]
            return {e["Name"]: e["Value"] for e in found}
        variables: dict[str, str] = self.r.resolve(self.template["Globals"]["Function"]["Environment"]["Variables"])
        return variables


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Host]:
    """Hosts of 2 and 50 mirrors, read from their mirrors.toml as `make deploy` reads them."""
    directory = tmp_path_factory.mktemp("hosts")
    found = {}
    for count in (2, 50):
        path = directory / f"mirrors-{count}.toml"
        path.write_text(mirrors_toml(count))
        found[count] = read_host(str(path), STACK)
    return found


@pytest.fixture(scope="module")
def stacks(hosts: dict[int, Host]) -> dict[int, Stack]:
    """The template expanded for a host of one (1) and for each host, from one run of the expansion."""
    parameters = {1: {}, **{count: stack_parameters(host) for count, host in hosts.items()}}
    templates = expand_templates(list(parameters.values()))
    return {
        count: Stack(template, parameters[count], hosts.get(count))
        for count, template in zip(parameters, templates, strict=True)
    }


def test_each_mirror_adds_its_schedule_and_nothing_else(stacks: dict[int, Stack]) -> None:
    for count in (1, 2, 50):
        assert len(stacks[count].sync_schedules()) == count
    # a host of 50 is a host of 2 and 48 more schedules, resource for resource
    assert stacks[50].others() == stacks[2].others()
    # and a host of one has the same resources (the parameters choose some of their settings)
    assert stacks[1].others().keys() == stacks[2].others().keys()
    assert stacks[1].sync_schedules() == ["SyncSchedule"]


def test_each_schedule_starts_the_sync_task_for_its_mirror(stacks: dict[int, Stack]) -> None:
    stack = stacks[50]
    assert stack.host is not None
    wanted = {m.name: m for m in stack.host.schedules}
    started = {}
    for logical_id in stack.sync_schedules():
        schedule = stack.props(logical_id)
        assert "Name" not in schedule  # the logical id changes with the item: a name would collide
        target = schedule["Target"]
        assert target["Arn"] == "arn:aws:scheduler:::aws-sdk:ecs:runTask"
        assert target["RoleArn"] == "SyncSchedulerRole-arn"
        assert target["DeadLetterConfig"] == {"Arn": "TriggerDeadLetterQueue-arn"}
        request = json.loads(target["Input"])
        assert (request["Cluster"], request["TaskDefinition"]) == ("Cluster-arn", "SyncTaskDefinition-ref")
        assert request["NetworkConfiguration"]["AwsvpcConfiguration"]["Subnets"] == [
            "PublicSubnetA-ref",
            "PublicSubnetB-ref",
        ]
        (override,) = request["Overrides"]["ContainerOverrides"]
        assert override["Name"] == stack.props("SyncTaskDefinition")["ContainerDefinitions"][0]["Name"]
        assert override["Environment"] == SCHEDULED_TRIGGER
        # the verify workflow finds the mirror in the STOPPED event's overrides, as ECS writes them
        detail = {"taskArn": "t", "lastStatus": "STOPPED"}
        detail["overrides"] = {"containerOverrides": [{"name": override["Name"], "command": override["Command"]}]}
        mirror = EcsTaskDetail.model_validate(detail).mirror
        assert override["Command"] == ["sync", "--mirror", mirror]
        started[mirror] = schedule
    assert started.keys() == wanted.keys()
    for name, schedule in started.items():
        assert schedule["ScheduleExpression"] == wanted[name].schedule.expression, name
        assert schedule["State"] == ("DISABLED" if wanted[name].paused else "ENABLED"), name
        assert name in schedule["Description"]


def test_the_schedules_parameter_takes_what_make_deploy_writes(hosts: dict[int, Host]) -> None:
    spec = load_raw_template()["Parameters"]["MirrorSchedules"]
    items = [*stack_parameters(hosts[50])["MirrorSchedules"].split(","), spec["Default"]]
    assert [item for item in items if not re.fullmatch(spec["AllowedPattern"], item)] == []


def test_sam_cli_reads_the_parameters_make_deploy_gives_it_over_the_saved_ones(hosts: dict[int, Host]) -> None:
    parameters = stack_parameters(hosts[50])
    saved = ('AlertEmail="a@example.org" MirrorSchedules="-" SyncIntervalHours="1"',)
    command = deploy_command(["sam", "deploy"], saved, parameters)
    overrides = command[command.index("--parameter-overrides") + 1 :]
    # SAM CLI's own reading of --parameter-overrides, in its venv
    read = (
        "import json, sys; from samcli.cli.types import CfnParameterOverridesType; "
        "print(json.dumps(CfnParameterOverridesType().convert(tuple(json.loads(sys.argv[1])), None, None)))"
    )
    done = subprocess.run(
        [SAM_PYTHON, "-c", read, json.dumps(overrides)], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(done.stdout) == {"AlertEmail": "a@example.org", **parameters}


# One mirror's figures as publish-health returns them (mirrorkeeper.verify.metrics.mirror_figures).
FIGURES = {
    "overall": 1,
    "levels": {"http": 0, "ftp": 1, "rsync": 0},
    "freshness": {"http": 60.0, "ftp": 9000.0, "rsync": 90.0},
    "passed": {"http": 18, "ftp": 17, "rsync": 18},
    "failed": {"http": 0, "ftp": 1, "rsync": 0},
    "latency": {"http": [12.0], "ftp": [40.0], "rsync": [55.0]},
    "missing": {"http": 1, "ftp": 1, "rsync": 1},
    "completion": 100.0,
    "drift": 0,
    "lag": 0,
    "sync_failed": 0,
    "sync": {"duration": 30.0, "bytes": 10, "files": 1, "requests": 12},
}
HOST_METRICS = {(p.name, p.dimensions) for p in host_points([FIGURES, FIGURES])}
MIRROR_METRICS = {p.name: p.dimensions for p in mirror_points("openvz", FIGURES)}


def test_the_alarms_are_one_fixed_set_on_the_host_wide_metrics(stacks: dict[int, Stack]) -> None:
    alarms = resources_of_type(stacks[1].template, "AWS::CloudWatch::Alarm")
    for count in (2, 50):
        assert resources_of_type(stacks[count].template, "AWS::CloudWatch::Alarm") == alarms
    ours = {k: stacks[50].props(k) for k, v in alarms.items() if v["Properties"].get("Namespace") == "Mirrorkeeper"}
    assert {p["MetricName"] for p in ours.values()} == {
        "FreshnessSeconds",
        "ProbesFailed",
        "DriftObjects",
        "SyncFailed",
        "MirrorsNotOk",
    }
    for logical_id, alarm in ours.items():
        dimensions = tuple((d["Name"], d["Value"]) for d in alarm.get("Dimensions", []))
        assert (alarm["MetricName"], dimensions) in HOST_METRICS, logical_id  # a metric publish-host sends


def test_the_dashboard_shows_every_mirror_by_metric_search(stacks: dict[int, Stack]) -> None:
    for count in (2, 50):
        assert stacks[count].template["Resources"]["Dashboard"] == stacks[1].template["Resources"]["Dashboard"]
    body = json.loads(stacks[50].props("Dashboard")["DashboardBody"])
    searched, shown = set(), set()
    for widget in (w for w in body["widgets"] if w["type"] == "metric"):
        for metric in widget["properties"]["metrics"]:
            if "expression" in metric[0]:
                # SEARCH('{Namespace,Mirror} MetricName="..."', ...): each mirror's metric of that name
                schema, name = re.fullmatch(
                    r"SEARCH\('\{(.*)\} MetricName=\"(\w+)\"'.*", metric[0]["expression"]
                ).groups()
                assert schema == "Mirrorkeeper,Mirror"
                searched.add(name)
            else:
                namespace, name, *rest = (m for m in metric if not isinstance(m, dict))
                assert namespace == "Mirrorkeeper"
                shown.add((name, tuple(zip(rest[::2], rest[1::2], strict=True))))
    # every metric a mirror sends, the two the Mirror dimension is paid for, found by search
    assert searched == set(MIRROR_METRICS) and all(d == (("Mirror", "openvz"),) for d in MIRROR_METRICS.values())
    assert shown <= HOST_METRICS


def test_a_host_reads_mirrors_toml_from_the_bucket_and_no_variable_overrides_it(stacks: dict[int, Stack]) -> None:
    config = f"s3://{BUCKET}/{host_config_key(MirrorLayout.create(BUCKET))}"
    by_variable = {s.env: s for s in SETTINGS}
    for where in ("SyncTaskDefinition", "Functions"):
        host, one = stacks[2].environment(where), stacks[1].environment(where)
        assert host["MIRRORKEEPER_CONFIG"] == config, where
        assert "MIRRORKEEPER_CONFIG" not in one, where
        # a variable wins over the file: a host's tasks and functions get none a mirror's table may set
        assert [v for v in host if v in by_variable and by_variable[v].per_mirror] == [], where
        assert {"MIRRORKEEPER_MIRROR_NAME", *one} - {"MIRRORKEEPER_CONFIG"} >= set(host) - {"MIRRORKEEPER_CONFIG"}
    # and each may read it
    arn = f"arn:aws:s3:::{BUCKET}/{host_config_key(MirrorLayout.create(BUCKET))}"
    for logical_id in ("SyncTaskRole", *FUNCTIONS, "PublishHostFunction"):
        assert allows(stacks[2].statements(logical_id), "s3:GetObject", arn), logical_id


@pytest.mark.parametrize("path", ["", "openvz", "linux/debian-mirror-00"])
def test_the_functions_write_each_mirrors_own_keys_and_never_its_data_or_lease(
    stacks: dict[int, Stack], path: str
) -> None:
    layout = MirrorLayout.create(BUCKET, "", path)
    state = StateStore(None, layout)  # type: ignore[arg-type]  # keys only
    owned = {
        "DiffManifestsFunction": {
            "s3:PutObject": {state.repair_key, state.manifest_key},
            # a repair forgets the upstream trace state too (issue 14's trace shortcut)
            "s3:DeleteObject": {state.repair_key, state.upstream_key},
        },
        "PublishHealthFunction": {
            "s3:PutObject": {state.health_key, layout.served_key(STATUS_HTML_PATH), layout.served_key(STATUS_JSON_PATH)}
        },
        # the host's pages: its front page, mirrors.json, the page of a directory above nested mirrors
        "PublishHostFunction": {
            "s3:PutObject": {
                layout.host.directory_key(""),
                layout.host.served_key(MIRRORS_JSON_PATH),
                layout.host.directory_key("linux"),
            }
        },
    }
    never = {
        state.lock_key,
        state.last_run_key,
        state.run_report_key("20260101T000000Z-0000"),
        state.listing_key,
        host_config_key(layout),
        layout.served_key("pool/main/o/openvz/vzctl_7.0_amd64.deb"),
        layout.served_key(DEFAULT_TRACE_PATH),
    }
    stack = stacks[2]
    for function in (*FUNCTIONS, "PublishHostFunction"):
        statements = stack.statements(function)
        for action in ("s3:PutObject", "s3:DeleteObject"):
            may = owned.get(function, {}).get(action, set())
            for key in may | never:
                assert allows(statements, action, f"arn:aws:s3:::{BUCKET}/{key}") == (key in may), (
                    function,
                    action,
                    key,
                )


def test_the_sync_task_reads_the_stacks_secrets_and_no_others(stacks: dict[int, Stack]) -> None:
    secret = "arn:aws:secretsmanager:us-east-1:123456789012:secret:{}-AbCdEf"
    task = stacks[2].statements("SyncTaskRole")
    assert allows(task, "secretsmanager:GetSecretValue", secret.format(f"{STACK}/debian-mirror-00"))
    assert not allows(task, "secretsmanager:GetSecretValue", secret.format("other/debian-mirror-00"))
    assert not allows(task, "secretsmanager:GetSecretValue", secret.format(f"{STACK}other/x"))
    # a host of one names no secret
    assert not [s for s in stacks[1].statements("SyncTaskRole") if "secretsmanager" in json.dumps(s)]


def test_a_hosts_outputs_leave_its_mirrors_to_mirrors_toml(stacks: dict[int, Stack]) -> None:
    def outputs(count: int) -> dict[str, Any]:
        return {k: stacks[count].r.resolve(v["Value"]) for k, v in stacks[count].template["Outputs"].items()}

    host, one = outputs(2), outputs(1)
    # what `mirrorkeeper announce --stack-name` would take for a mirror's own (it skips empty outputs)
    for name in ("MirrorName", "UpstreamUrl", "SyncSchedule", "SyncIntervalSeconds"):
        assert one[name] and host[name] == "", name
    assert one["StatusPageUrl"] == "https://Distribution.DomainName/.mirrorkeeper/status.html"
    assert host["StatusPageUrl"] == "https://Distribution.DomainName/"  # the front page, listing every mirror
    assert '"command": ["sync", "--mirror", "NAME"]' in host["RunSyncCommand"]
    assert "--overrides" not in one["RunSyncCommand"]


def test_a_50_mirror_stack_fits_cloudformation_quotas(hosts: dict[int, Host]) -> None:
    parameters = stack_parameters(hosts[50])
    (deployed,) = expand_templates([parameters], sam=True)  # loops expanded, then SAM's transform
    resources = len(deployed["Resources"])
    schedules = len(resources_of_type(deployed, "AWS::Scheduler::Schedule"))
    assert schedules == 51 and resources < MAX_RESOURCES  # and the verify schedule
    (expanded,) = expand_templates([parameters])
    sizes = {
        "template.yaml, as sam deploy uploads it": len(TEMPLATE.read_bytes()),
        "its loops expanded": len(json.dumps(expanded, indent=1).encode()),
        "after SAM's transform": len(json.dumps(deployed, indent=1).encode()),
    }
    assert max(sizes.values()) < MAX_TEMPLATE_BYTES, sizes
    assert len(parameters["MirrorSchedules"].encode()) < MAX_PARAMETER_VALUE_BYTES
    assert len(deployed["Parameters"]) <= 200 and len(deployed["Outputs"]) <= 200


@pytest.mark.timeout(600)
def test_a_50_mirror_stack_lints_clean(hosts: dict[int, Host], tmp_path: Path) -> None:
    """sam validate --lint (which is cfn-lint, run on the transformed template) and checkov, as `make
    lint-template` runs them, on the template as CloudFormation expands it for 50 mirrors."""
    (expanded,) = expand_templates([stack_parameters(hosts[50])])
    template = tmp_path / "template.json"
    template.write_text(json.dumps(expanded, indent=1))
    tools = SAM_PYTHON.parent
    checkov = ROOT / ".venv/tools/checkov/bin/checkov"
    for command in (
        [tools / "sam", "validate", "--lint", "--template", template, "--region", "us-east-1"],
        [checkov, "--file", template, "--framework", "cloudformation", "--compact", "--quiet", "--skip-download"],
    ):
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
            env={**os.environ, "SAM_CLI_TELEMETRY": "0"},
        )
        assert done.returncode == 0, f"{command[0]}:\n{done.stdout}\n{done.stderr}"


def test_a_host_of_ones_resources_resolve_as_before(stacks: dict[int, Stack]) -> None:
    # no Fn::If of a host of one leaves a property out that its stack had
    task = stacks[1].environment("SyncTaskDefinition")
    assert {"MIRRORKEEPER_UPSTREAM", "MIRRORKEEPER_MIRROR_NAME", "MIRRORKEEPER_MAX_DELETE_PERCENT"} <= set(task)
    functions = stacks[1].environment("Functions")
    assert {"MIRRORKEEPER_MIRROR_NAME", "MIRRORKEEPER_SYNC_INTERVAL"} <= set(functions)
    assert NO_VALUE not in task.values() and NO_VALUE not in functions.values()


def test_the_push_function_of_a_host_reaches_each_mirrors_push_state_and_secret_and_no_more(
    stacks: dict[int, Stack],
) -> None:
    push = stacks[2].statements("PushFunction")
    state = StateStore(None, MirrorLayout.create(BUCKET, path="linux/debian-mirror-00"))  # type: ignore[arg-type]
    key = f"arn:aws:s3:::{BUCKET}/{{}}".format
    # a mirror's lease and push state under its path, and the host's config, are readable
    for readable in (state.lock_key, state.push_key, host_config_key(MirrorLayout.create(BUCKET))):
        assert allows(push, "s3:GetObject", key(readable)), readable
    # only its push state and the replay marks are writable; its manifest or served files are not
    assert allows(push, "s3:PutObject", key(state.push_key))
    for untouchable in (state.manifest_key, state.lock_key, "pub/linux/debian-mirror-00/Release"):
        assert not allows(push, "s3:PutObject", key(untouchable)), untouchable
    secret = "arn:aws:secretsmanager:us-east-1:123456789012:secret:{}-AbCdEf"
    assert allows(push, "secretsmanager:GetSecretValue", secret.format(f"{STACK}/debian-mirror-00-push"))
    assert not allows(push, "secretsmanager:GetSecretValue", secret.format("other/debian-mirror-00-push"))
    # AND a host of one reaches only its own
    one = stacks[1].statements("PushFunction")
    assert not allows(one, "s3:PutObject", key(state.push_key))
    assert not allows(one, "secretsmanager:GetSecretValue", secret.format(f"{STACK}/debian-mirror-00-push"))
