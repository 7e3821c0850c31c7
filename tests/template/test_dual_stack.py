"""FtpIpAddressType: a dual-stack load balancer (FTP's, which rsync shares) and the IPv6 network it
needs, checked on the expansion for each way a stack may set it (its own VPC or the operator's, FTP
and rsync on or off), with every condition and Fn::If decided as CloudFormation decides them.

The design these tests hold the template to: a target group serves one address family and a
listener forwards to one group, so the passive and control target groups stay IPv4. IPv4 clients
keep their addresses; IPv6 clients reach the task from the load balancer's private IPv4 address
(AWS: "Client IP preservation", NLB target group attributes). So nothing IPv6 reaches the task, and
its security group admits none."""

import ipaddress
from collections.abc import Mapping
from typing import Any

import pytest
from jsonpath_ng.ext import parse as jsonpath  # moto's: what its Step Functions evaluate paths with

from tests.template.cfn import NO_VALUE, Resolver, StandInAttributes, expand_templates, references, walk

REQUIRED = {
    "UpstreamUrl": "rsync://example.org/m/",
    "AlertEmail": "a@example.org",
    "SyncImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/mirrorkeeper:t",
}
PSEUDO = {"AWS::Region": "us-east-1", "AWS::StackName": "mk", "AWS::AccountId": "123456789012", "AWS::Partition": "aws"}
VPC_IPV6 = "2600:1f18:4c2:9e00::/56"  # what Amazon would give the VPC
LB_DNS_NAME = "mk-ftp-0123456789abcdef.elb.us-east-1.amazonaws.com"
OPERATOR = {"VpcId": "vpc-0123456789abcdef0", "SubnetIds": "subnet-0aaaaaaaaaaaaaaaa,subnet-0bbbbbbbbbbbbbbbb"}
SETS = {
    "ipv4": {},
    "dualstack": {"FtpIpAddressType": "dualstack"},
    "dualstack, operator's VPC": {"FtpIpAddressType": "dualstack", **OPERATOR},
    "dualstack, FTP off": {"FtpIpAddressType": "dualstack", "EnableFtp": "false"},
    "ipv4, operator's VPC": OPERATOR,
    "dualstack, rsync alone": {"FtpIpAddressType": "dualstack", "EnableFtp": "false", "EnableRsync": "true"},
    "ipv4, rsync on": {"EnableRsync": "true"},
}
IPV6_TYPES = ("AWS::EC2::VPCCidrBlock", "AWS::EC2::SubnetCidrBlock")


class Stack:
    """One expansion with its parameter values: what CloudFormation would create, and with what."""

    def __init__(self, template: dict[str, Any], parameters: Mapping[str, str]) -> None:
        self.template = template
        self.r = Resolver(template, {**REQUIRED, **parameters}, PSEUDO)
        known = {"Vpc": {"Ipv6CidrBlocks": [VPC_IPV6]}, "FtpLoadBalancer": {"DNSName": LB_DNS_NAME}}
        for logical_id in template["Resources"]:
            self.r.refs[logical_id] = f"{logical_id}-id"
            self.r.attrs[logical_id] = StandInAttributes(logical_id, known.get(logical_id, {}))

    def active(self, *types: str) -> list[str]:
        return [
            k for k, v in self.template["Resources"].items() if self.r.active(k) and (not types or v["Type"] in types)
        ]

    def props(self, logical_id: str) -> dict[str, Any]:
        resolved: dict[str, Any] = self.r.resolve(self.template["Resources"][logical_id].get("Properties", {}))
        return resolved

    def ref(self, logical_id: str) -> str:
        return self.r.refs[logical_id]

    def needs(self, logical_id: str) -> set[str]:
        """The resources CloudFormation makes before this one: its DependsOn, and those it refers to
        in the branches of its Fn::If that the conditions choose."""
        resource = self.template["Resources"][logical_id]
        depends = resource.get("DependsOn", [])
        named = set([depends] if isinstance(depends, str) else depends) | references(self._chosen(resource))
        return named & set(self.template["Resources"])

    def _chosen(self, value: Any) -> Any:
        if isinstance(value, list):
            return [v for v in (self._chosen(item) for item in value) if v is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if set(value) == {"Fn::If"}:
            condition, when_true, when_false = value["Fn::If"]
            return self._chosen(when_true if self.r.conditions[condition] else when_false)
        if value == {"Ref": "AWS::NoValue"}:
            return NO_VALUE
        return {k: v for k, v in ((k, self._chosen(v)) for k, v in value.items()) if v is not NO_VALUE}


@pytest.fixture(scope="module")
def stacks() -> dict[str, Stack]:
    """The template expanded for each set of SETS, from one run of the expansion."""
    templates = expand_templates(list(SETS.values()))
    return {name: Stack(template, SETS[name]) for name, template in zip(SETS, templates, strict=True)}


def test_dual_stack_gives_the_vpc_an_amazon_ipv6_block_and_each_subnet_a_64_of_it(stacks: dict[str, Stack]) -> None:
    s = stacks["dualstack"]
    (block,) = s.active("AWS::EC2::VPCCidrBlock")
    assert s.props(block) == {"VpcId": s.ref("Vpc"), "AmazonProvidedIpv6CidrBlock": True}
    subnets = s.active("AWS::EC2::Subnet")
    assert len(subnets) == 2
    given = {}
    for association in s.active("AWS::EC2::SubnetCidrBlock"):
        # the VPC's Ipv6CidrBlocks is empty until its block is associated
        assert block in s.needs(association), association
        p = s.props(association)
        given[p["SubnetId"]] = ipaddress.ip_network(p["Ipv6CidrBlock"])
    assert set(given) == {s.ref(subnet) for subnet in subnets}
    assert all(n.prefixlen == 64 and n.subnet_of(ipaddress.ip_network(VPC_IPV6)) for n in given.values())
    assert len(set(given.values())) == len(given)  # each its own
    # and they hand out no IPv6 addresses: only the load balancer uses IPv6
    assert not any(s.props(subnet).get("AssignIpv6AddressOnCreation") for subnet in subnets)


def test_dual_stack_routes_ipv6_from_every_subnet_to_the_internet_gateway(stacks: dict[str, Stack]) -> None:
    s = stacks["dualstack"]
    (route,) = [r for r in s.active("AWS::EC2::Route") if "DestinationIpv6CidrBlock" in s.props(r)]
    p = s.props(route)
    assert p["DestinationIpv6CidrBlock"] == "::/0" and p["GatewayId"] == s.ref("InternetGateway")
    assert {"InternetGatewayAttachment", "VpcIpv6Cidr"} <= s.needs(route)
    associations = [s.props(a) for a in s.active("AWS::EC2::SubnetRouteTableAssociation")]
    tables = {a["SubnetId"]: a["RouteTableId"] for a in associations}
    assert set(tables) == {s.ref(subnet) for subnet in s.active("AWS::EC2::Subnet")}
    assert set(tables.values()) == {p["RouteTableId"]}


def test_dual_stack_load_balancer_comes_after_the_ipv6_of_its_subnet(stacks: dict[str, Stack]) -> None:
    s = stacks["dualstack"]
    lb = s.props("FtpLoadBalancer")
    assert lb["IpAddressType"] == "dualstack"
    (mapping,) = lb["SubnetMappings"]
    (block,) = [b for b in s.active("AWS::EC2::SubnetCidrBlock") if s.props(b)["SubnetId"] == mapping["SubnetId"]]
    (route,) = [r for r in s.active("AWS::EC2::Route") if "DestinationIpv6CidrBlock" in s.props(r)]
    assert {block, route} <= s.needs("FtpLoadBalancer")
    # its DNS name answers A (the Elastic IP) and AAAA: the dual-stack URL
    assert s.r.resolve(s.template["Outputs"]["FtpDualStackUrl"]["Value"]) == f"ftp://{LB_DNS_NAME}/"
    assert s.r.resolve(s.template["Outputs"]["FtpUrl"]["Value"]) == f"ftp://{s.ref('FtpAddress')}/"  # as before


def test_dual_stack_in_the_operators_vpc_uses_its_ipv6_and_makes_none(stacks: dict[str, Stack]) -> None:
    s = stacks["dualstack, operator's VPC"]
    assert not s.active("AWS::EC2::VPC", "AWS::EC2::Route", *IPV6_TYPES)
    lb = s.props("FtpLoadBalancer")
    assert lb["IpAddressType"] == "dualstack"
    assert [m["SubnetId"] for m in lb["SubnetMappings"]] == [OPERATOR["SubnetIds"].split(",")[0]]
    assert s.needs("FtpLoadBalancer") <= set(s.active())


def _registered(s: Stack, event: dict[str, Any]) -> list[Any]:
    """The address the FTP targets workflow registers for an ECS task state change event."""
    states = s.props("FtpTargetsStateMachine")["Definition"]["States"]
    return [m.value for m in jsonpath(states["Address"]["Parameters"]["ips.$"]).find(event)]


def test_dual_stack_task_listens_on_both_families_behind_ipv4_target_groups(stacks: dict[str, Stack]) -> None:
    s = stacks["dualstack"]
    command = s.props("FtpTaskDefinition")["ContainerDefinitions"][0]["Command"]
    assert command[command.index("--host") + 1] == "::"
    # every group is IPv4 and keeps IPv4 clients' addresses (an IPv6 group would hand all IPv4
    # clients, most of them, over from the load balancer's address instead)
    groups = s.active("AWS::ElasticLoadBalancingV2::TargetGroup")
    assert len(groups) == 1 + int(s.r.values["FtpPassivePorts"])
    for group in groups:
        p = s.props(group)
        assert p.get("IpAddressType", "ipv4") == "ipv4" and p["TargetType"] == "ip", group
        assert {"Key": "preserve_client_ip.enabled", "Value": "true"} in p["TargetGroupAttributes"], group
    # so the workflow registers the task's IPv4 address, even when its subnet gives it an IPv6 one too
    details = [
        {"name": "subnetId", "value": "subnet-0"},
        {"name": "privateIPv4Address", "value": "10.42.0.7"},
        {"name": "ipv6Address", "value": "2600:1f18:4c2:9e00::7"},
    ]
    assert _registered(s, {"detail": {"attachments": [{"type": "eni", "details": details}]}}) == ["10.42.0.7"]
    # and the task admits the load balancer's private IPv4 address, no IPv6
    vpc = ipaddress.ip_network(s.props("Vpc")["CidrBlock"])
    ingress = s.props("FtpSecurityGroup")["SecurityGroupIngress"]
    assert all(vpc.subnet_of(ipaddress.ip_network(rule["CidrIp"])) for rule in ingress)
    assert not [rule for rule in ingress if "CidrIpv6" in rule]


@pytest.mark.parametrize("name", ["dualstack", "dualstack, operator's VPC"])
def test_dual_stack_lets_the_sync_reach_an_ipv6_upstream(stacks: dict[str, Stack], name: str) -> None:
    # a task in an IPv6 subnet may get an IPv6 address: rsync then tries the upstream's first
    s = stacks[name]
    upstream = s.r.values["UpstreamPort"]
    egress = [s.props(e) for e in s.active("AWS::EC2::SecurityGroupEgress")]
    assert egress == [
        {
            "GroupId": "SyncSecurityGroup.GroupId",
            "IpProtocol": "tcp",
            "FromPort": upstream,
            "ToPort": upstream,
            "CidrIpv6": "::/0",
            "Description": "upstream rsync daemon over IPv6",
        }
    ]


def test_rsync_alone_keeps_the_load_balancer_and_its_dual_stack(stacks: dict[str, Stack]) -> None:
    s = stacks["dualstack, rsync alone"]
    assert not [k for k in s.active() if k.startswith("FtpPassive") or k.startswith("FtpControl")]
    lb = s.props("FtpLoadBalancer")
    assert lb["IpAddressType"] == "dualstack"
    (route,) = [r for r in s.active("AWS::EC2::Route") if "DestinationIpv6CidrBlock" in s.props(r)]
    assert route in s.needs("FtpLoadBalancer")
    assert s.props("RsyncListener") == {
        "LoadBalancerArn": s.ref("FtpLoadBalancer"),
        "Protocol": "TCP",
        "Port": 873,
        "DefaultActions": [{"Type": "forward", "TargetGroupArn": s.ref("RsyncTargetGroup")}],
    }
    # the daemon listens on both families, behind an IPv4 group that keeps IPv4 clients' addresses
    command = s.props("RsyncTaskDefinition")["ContainerDefinitions"][0]["Command"]
    assert command[command.index("--host") + 1] == "::"
    (group,) = s.active("AWS::ElasticLoadBalancingV2::TargetGroup")
    p = s.props(group)
    assert p.get("IpAddressType", "ipv4") == "ipv4" and p["TargetType"] == "ip"
    assert {"Key": "preserve_client_ip.enabled", "Value": "true"} in p["TargetGroupAttributes"]
    ingress = s.props("RsyncSecurityGroup")["SecurityGroupIngress"]
    assert not [rule for rule in ingress if "CidrIpv6" in rule]
    assert s.r.resolve(s.template["Outputs"]["FtpDualStackUrl"]["Value"]) == ""  # FTP is off


@pytest.mark.parametrize("name", ["ipv4", "ipv4, operator's VPC", "dualstack, FTP off", "ipv4, rsync on"])
def test_without_dual_stack_nothing_ipv6_appears(stacks: dict[str, Stack], name: str) -> None:
    s = stacks[name]
    assert not s.active(*IPV6_TYPES, "AWS::EC2::SecurityGroupEgress")
    active = {logical_id: s.props(logical_id) for logical_id in s.active()}
    found = [
        (logical_id, node)
        for logical_id, p in active.items()
        for node in walk(p)
        if (isinstance(node, str) and (node in ("::", "dualstack") or "::/" in node))
        or (isinstance(node, dict) and {"CidrIpv6", "DestinationIpv6CidrBlock", "Ipv6CidrBlock"} & set(node))
    ]
    assert found == []
    if "FtpLoadBalancer" in active:
        assert active["FtpLoadBalancer"]["IpAddressType"] == "ipv4"
    for task in ("FtpTaskDefinition", "RsyncTaskDefinition"):
        if task in active:
            command = active[task]["ContainerDefinitions"][0]["Command"]
            assert command[command.index("--host") + 1] == "0.0.0.0", task
    assert s.r.resolve(s.template["Outputs"]["FtpDualStackUrl"]["Value"]) == ""
