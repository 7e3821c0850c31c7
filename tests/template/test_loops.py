"""The template's Fn::ForEach loops: the transform that expands them, the passive FTP ports for every
FtpPassivePorts a stack may be given (checked on the expansion, as CloudFormation deploys it), and no
hand-written copy of a block a loop writes."""

import json
import re
from collections import defaultdict
from typing import Any

import pytest
from jsonpath_ng.ext import parse as jsonpath  # moto's: what its Step Functions evaluate paths with

from mirrorkeeper.config import load_serve_config
from tests.template.cfn import Resolver, expand_templates, load_raw_template, resources_of_type

RAW = load_raw_template()
COUNTS: list[str] = RAW["Parameters"]["FtpPassivePorts"]["AllowedValues"]
FIRST_PASSIVE_PORT = 60000
# An NLB has at most 50 listeners (default quota); FTP's port 21 and rsync's 873 need two.
LISTENER_QUOTA = 50
OTHER_LISTENERS = {"FtpControlListener": "FtpControlTargetGroup", "RsyncListener": "RsyncTargetGroup"}
REQUIRED = {
    "UpstreamUrl": "rsync://example.org/m/",
    "AlertEmail": "a@example.org",
    "SyncImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/mirrorkeeper:t",
}
PSEUDO = {"AWS::Region": "us-east-1", "AWS::StackName": "mk", "AWS::AccountId": "123456789012", "AWS::Partition": "aws"}
LOOP = re.compile(r"^Fn::ForEach::\w+$")


@pytest.fixture(scope="module")
def expanded() -> dict[str, dict[str, Any]]:
    """The template expanded for every allowed FtpPassivePorts, from one run of the expansion."""
    return dict(zip(COUNTS, expand_templates([{"FtpPassivePorts": count} for count in COUNTS]), strict=True))


def loops(section: dict[str, Any]) -> dict[str, list[Any]]:
    """The loops written in a section (and in other loops' bodies): loop key -> [identifier, collection, body]."""
    found = {}
    for key, value in section.items():
        if LOOP.match(key):
            found[key] = value
            found.update(loops(value[2]))
    return found


def resolver(template: dict[str, Any], count: str) -> Resolver:
    r = Resolver(template, {**REQUIRED, "FtpPassivePorts": count}, PSEUDO)
    for logical_id in template["Resources"]:
        r.refs[logical_id] = f"arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/{logical_id}/0"
        r.attrs[logical_id] = {"Arn": r.refs[logical_id]}
    return r


def test_language_extensions_expands_the_loops_before_sam_reads_the_resources() -> None:
    # AWS's rule: with both transforms, AWS::LanguageExtensions comes first
    assert RAW["Transform"] == ["AWS::LanguageExtensions", "AWS::Serverless-2016-10-31"]
    assert loops(RAW["Resources"]), "the template has no Fn::ForEach loop left: drop the transform"


def test_every_allowed_passive_port_count_has_its_ports_and_fits_the_listener_quota() -> None:
    rows = RAW["Mappings"]["FtpPassive"]
    ports = RAW["Mappings"]["FtpPassivePort"]["Port"]
    assert RAW["Parameters"]["FtpPassivePorts"]["Default"] in COUNTS
    assert sorted(rows, key=int) == COUNTS
    for count in COUNTS:
        n = int(count)
        assert n + len(OTHER_LISTENERS) <= LISTENER_QUOTA, count
        assert rows[count]["Indexes"] == [str(i) for i in range(n)], count
        assert rows[count]["Last"] == FIRST_PASSIVE_PORT + n - 1, count
    assert ports == {str(i): FIRST_PASSIVE_PORT + i for i in range(max(map(int, COUNTS)))}


@pytest.mark.parametrize("count", COUNTS)
def test_passive_ports_follow_ftp_passive_ports(expanded: dict[str, dict[str, Any]], count: str) -> None:
    template, n = expanded[count], int(count)
    r = resolver(template, count)
    first, last = FIRST_PASSIVE_PORT, FIRST_PASSIVE_PORT + n - 1

    # N listeners beside port 21, on N contiguous ports, each forwarding to its own group on its port
    listeners = resources_of_type(template, "AWS::ElasticLoadBalancingV2::Listener")
    assert all(
        listener["Properties"]["LoadBalancerArn"] == {"Ref": "FtpLoadBalancer"} for listener in listeners.values()
    )
    passive = {k: v for k, v in listeners.items() if k not in OTHER_LISTENERS}
    assert len(passive) == n and set(listeners) - set(passive) == set(OTHER_LISTENERS)
    assert len(listeners) <= LISTENER_QUOTA
    by_port = {}
    for logical_id, listener in passive.items():
        port = r.resolve(listener["Properties"]["Port"])
        index = port - first
        assert logical_id == f"FtpPassive{index}Listener"
        (action,) = listener["Properties"]["DefaultActions"]
        assert action["TargetGroupArn"] == {"Ref": f"FtpPassive{index}TargetGroup"}
        by_port[port] = f"FtpPassive{index}TargetGroup"
    assert sorted(by_port) == list(range(first, last + 1))
    groups = resources_of_type(template, "AWS::ElasticLoadBalancingV2::TargetGroup")
    assert set(groups) == {*OTHER_LISTENERS.values(), *by_port.values()}
    for port, group_id in by_port.items():
        group = r.resolve(groups[group_id]["Properties"])
        assert group["Port"] == port and group["HealthCheckPort"] == "2121", group_id
        assert group["Tags"] == [{"Key": "mirrorkeeper:ftp-passive", "Value": "mk"}], group_id
        assert (
            groups[group_id]["Condition"] == "FtpEnabled" == passive[f"FtpPassive{port - first}Listener"]["Condition"]
        )

    # the server offers exactly those ports, and the security group lets exactly them in
    env = {e["Name"]: e["Value"] for e in r.resolve(template["Resources"]["FtpTaskDefinition"]["Properties"])[
        "ContainerDefinitions"][0]["Environment"]}  # fmt: skip
    assert env["MIRRORKEEPER_PASSIVE_PORTS"] == f"{first}-{last}"
    # with its default cap of sessions per client address, which stays below them
    ports = {"MIRRORKEEPER_PASSIVE_PORTS": env["MIRRORKEEPER_PASSIVE_PORTS"]}
    assert load_serve_config("serve-ftp", {"bucket": "mirror-test"}, ports).max_connections_per_ip < n
    ingress = r.resolve(template["Resources"]["FtpSecurityGroup"]["Properties"])["SecurityGroupIngress"]
    assert {(rule["FromPort"], rule["ToPort"]) for rule in ingress} == {(2121, 2121), (first, last)}
    assert r.resolve(template["Outputs"]["FtpPassivePortRange"]["Value"]) == f"{first}-{last}"

    # the registration workflow finds exactly those groups on the load balancer, and wants all N
    definition = r.resolve(template["Resources"]["FtpTargetsStateMachine"]["Properties"]["Definition"])
    (branch,) = definition["States"]["Groups"]["Branches"]
    describe = branch["States"][branch["StartAt"]]
    on_the_load_balancer = {
        "TargetGroups": [
            {"TargetGroupArn": r.refs[group_id], "Port": r.resolve(group["Properties"]["Port"])}
            for group_id, group in groups.items()
        ]
    }
    found = [m.value for m in jsonpath(describe["ResultSelector"]["arns.$"]).find(on_the_load_balancer)]
    assert sorted(found) == sorted(r.refs[group_id] for group_id in by_port.values())
    wanted = [c["StringEquals"] for s in branch["States"].values() if s["Type"] == "Choice" for c in s["Choices"]]
    assert wanted == [count]


def test_registration_may_touch_the_passive_groups_only(expanded: dict[str, dict[str, Any]]) -> None:
    template = expanded[RAW["Parameters"]["FtpPassivePorts"]["Default"]]
    (policy,) = template["Resources"]["FtpTargetsRole"]["Properties"]["Policies"]
    (register,) = [
        s for s in policy["PolicyDocument"]["Statement"] if "elasticloadbalancing:RegisterTargets" in s["Action"]
    ]
    assert sorted(register["Action"]) == [
        "elasticloadbalancing:DeregisterTargets",
        "elasticloadbalancing:RegisterTargets",
    ]
    assert register["Resource"]["Fn::Sub"].endswith(":targetgroup/*")
    (tag,) = register["Condition"]["StringEquals"].items()
    assert tag == ("aws:ResourceTag/mirrorkeeper:ftp-passive", {"Ref": "AWS::StackName"})
    for group_id, group in resources_of_type(template, "AWS::ElasticLoadBalancingV2::TargetGroup").items():
        tags = {t["Key"]: t["Value"] for t in group["Properties"].get("Tags", [])}
        assert (tags.get("mirrorkeeper:ftp-passive") == {"Ref": "AWS::StackName"}) == (
            group_id not in OTHER_LISTENERS.values()
        )


def collection_values(collection: Any) -> list[str]:
    """Every value a loop's collection takes, whatever the parameters: a list, Fn::FindInMap over a
    parameter's rows, or a list parameter's default (its other values are the operator's, and make
    names no hand-written block could take: test_host.py)."""
    if isinstance(collection, list):
        return [str(v) for v in collection]
    if "Ref" in collection:
        return str(RAW["Parameters"][collection["Ref"]]["Default"]).split(",")
    name, row, key = collection["Fn::FindInMap"]
    rows = RAW["Mappings"][name]
    chosen = list(rows) if isinstance(row, dict) else [row]
    return sorted({str(v) for r in chosen for v in rows[r][key]})


def test_no_hand_written_copy_of_a_block_a_loop_writes() -> None:
    # a resource the loop would make for some value of its collection (an exact copy only collides
    # in the transform for the values a stack is given)
    for section in ("Resources", "Outputs", "Conditions"):
        written = {k for k in RAW.get(section, {}) if not LOOP.match(k)}
        for loop_key, (identifier, collection, body) in loops(RAW.get(section, {})).items():
            for value in collection_values(collection):
                alphanumeric = re.sub(r"[^A-Za-z0-9]", "", value)  # what &{...} leaves of a value
                made = {
                    k.replace("${" + identifier + "}", value).replace("&{" + identifier + "}", alphanumeric)
                    for k in body
                    if not LOOP.match(k)
                }
                assert not made & written, f"{made & written} written beside {loop_key}: extend its collection"
    # numbered copies of one block: the same resource but for its digits
    shapes = defaultdict(list)
    for logical_id, resource in RAW["Resources"].items():
        if not LOOP.match(logical_id):
            shapes[re.sub(r"\d+", "#", json.dumps(resource, sort_keys=True))].append(logical_id)
    copies = [ids for ids in shapes.values() if len(ids) > 1]
    # two subnets, each with its own zone and address block: a loop would need a mapping for two rows
    assert copies == [["PublicSubnetA", "PublicSubnetB"]]


def test_loop_identifiers_appear_only_where_every_implementation_substitutes_them() -> None:
    # CloudFormation and SAM CLI substitute ${X} in every string of a loop's body; cfn-lint (which
    # checks the expansion in `make lint-template`) only in keys, Fn::Sub strings and `Ref: X`. Bodies
    # keep to the common part, so the three expand them alike: another resource of the iteration is
    # named with `Ref: {Fn::Sub: ...}`, as AWS's examples do.
    def strays(value: Any, names: tuple[str, ...]) -> list[str]:
        if isinstance(value, str):
            return [value] if any(name in value for name in names) else []
        if isinstance(value, list):
            return [s for item in value for s in strays(item, names)]
        if isinstance(value, dict):
            if set(value) == {"Fn::Sub"}:
                sub = value["Fn::Sub"]
                return [] if isinstance(sub, str) else strays(sub[1], names)
            return [s for item in value.values() for s in strays(item, names)]  # keys are substituted
        return []

    for section in ("Resources", "Outputs", "Conditions"):
        for loop_key, (identifier, _, body) in loops(RAW.get(section, {})).items():
            assert not strays(body, ("${" + identifier + "}", "&{" + identifier + "}")), loop_key


def test_expansion_changes_nothing_but_the_loops(template: dict[str, Any]) -> None:
    for section in ("Parameters", "Mappings", "Conditions", "Resources", "Outputs", "Globals", "Metadata"):
        written = {k: v for k, v in RAW.get(section, {}).items() if not LOOP.match(k)}
        assert {k: template[section][k] for k in written} == written, section
        assert not [k for k in template.get(section, {}) if LOOP.match(k)], section
