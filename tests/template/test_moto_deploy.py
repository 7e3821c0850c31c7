"""Deploy the template's resources that moto implements into the moto server, in dependency order,
with every intrinsic function resolved: a reference to something that was never created, a policy
that is not JSON, or an alarm, schedule or rule pointing at the wrong thing fails here.

moto's CloudFormation does not know most of these types (alarms, schedules, subscriptions, bucket
policies) nor the AWS::LanguageExtensions transform, so the template is read with its Fn::ForEach
loops expanded (tests/template/cfn.py) and each resource is created through its own service API, as
CloudFormation would. Types moto lacks (CloudFront, SAM functions and layer, Elastic IPs on NLBs) get
a stand-in identity. The moto server runs the state machines started in it, so the FTP target
registration is run, not only read. The stack is deployed as the defaults make it (a host of one), once
more with a dual-stack FTP load balancer (FtpIpAddressType), whose IPv6 network moto makes too, and the
schedules of a host of two mirrors with what they start.
"""

import graphlib
import ipaddress
import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from moto.events.models import EventPattern

from mirrorkeeper.verify.events import EcsTaskStateChange, parse_event
from mirrorkeeper_dev.rsyncd import free_port
from mirrorkeeper_dev.services import moto_subprocess, serving
from tests.template.cfn import ROOT, Resolver, load_template, references

REGION = "us-east-1"
STACK = "mk"
PARAMETERS = {
    "UpstreamUrl": "rsync://download.example.org/openvz-download/",
    "AlertEmail": "mirroradmin@example.org",
    "PagerUrl": "https://pager.example.org/hook",
    "SyncImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/mirrorkeeper:test",
    "MirrorName": "openvz",
}


def api_names(properties: dict[str, Any], *names: str) -> dict[str, Any]:
    """CloudFormation's properties ``names`` as the ECS API spells them (Family → family)."""
    return {name[0].lower() + name[1:]: properties[name] for name in names}


class Deployer:
    def __init__(self, endpoint: str, template: dict[str, Any], parameters: dict[str, str] | None = None) -> None:
        self.template = template
        self.client_for = lambda service: boto3.client(service, endpoint_url=endpoint, region_name=REGION)
        account = self.client_for("sts").get_caller_identity()["Account"]
        self.account = account
        self.r = Resolver(
            template,
            {**PARAMETERS, **(parameters or {})},
            {"AWS::Region": REGION, "AWS::StackName": STACK, "AWS::AccountId": account, "AWS::Partition": "aws"},
        )

    def deploy(self, roots: Callable[[str, dict[str, Any]], bool] | None = None) -> list[str]:
        """Create the stack's resources, or only those `roots` picks (by logical id and resource) and
        what they need."""
        resources = self.template["Resources"]
        active = [k for k in resources if self.r.active(k)]
        graph = {k: (references(resources[k]) | set(resources[k].get("DependsOn", []))) & set(active) for k in active}
        if roots is not None:
            needed, todo = set(), [k for k in active if roots(k, resources[k])]
            while todo:
                if (k := todo.pop()) not in needed:
                    needed.add(k)
                    todo += graph[k]
            graph = {k: graph[k] for k in needed}
        order = list(graphlib.TopologicalSorter(graph).static_order())
        for logical_id in order:
            resource = resources[logical_id]
            properties = self.r.resolve(resource.get("Properties", {}))
            create = getattr(self, "create_" + resource["Type"].replace("::", "_").lower(), self.stand_in)
            create(logical_id, properties)
        return order

    def stand_in(self, logical_id: str, _: dict[str, Any]) -> None:
        name = f"{STACK}-{logical_id}"
        arn = f"arn:aws:lambda:{REGION}:{self.account}:function:{name}"
        self.r.refs[logical_id] = name
        self.r.attrs[logical_id] = {
            "Arn": arn,
            "TopicName": name,
            "DomainName": "d111111abcdef8.cloudfront.net",
            "Id": "E2QWRUHAPOMQZL",
            "FunctionMetadata.FunctionARN": f"arn:aws:cloudfront::{self.account}:function/{name}",
            "AllocationId": "eipalloc-12345678",
        }

    # ─── network ───
    def create_aws_ec2_vpc(self, logical_id: str, p: dict[str, Any]) -> None:
        self.r.refs[logical_id] = self.client_for("ec2").create_vpc(CidrBlock=p["CidrBlock"])["Vpc"]["VpcId"]
        self.r.attrs[logical_id] = {"CidrBlock": p["CidrBlock"], "Ipv6CidrBlocks": []}

    def create_aws_ec2_vpccidrblock(self, logical_id: str, p: dict[str, Any]) -> None:
        association = self.client_for("ec2").associate_vpc_cidr_block(
            VpcId=p["VpcId"], AmazonProvidedIpv6CidrBlock=p["AmazonProvidedIpv6CidrBlock"]
        )["Ipv6CidrBlockAssociation"]
        self.r.refs[logical_id] = association["AssociationId"]
        # what GetAtt Vpc.Ipv6CidrBlocks returns from now on
        (vpc_id,) = [k for k, ref in self.r.refs.items() if ref == p["VpcId"]]
        self.r.attrs[vpc_id]["Ipv6CidrBlocks"].append(association["Ipv6CidrBlock"])

    def create_aws_ec2_subnet(self, logical_id: str, p: dict[str, Any]) -> None:
        subnet = self.client_for("ec2").create_subnet(
            VpcId=p["VpcId"], CidrBlock=p["CidrBlock"], AvailabilityZone=p["AvailabilityZone"]
        )
        self.r.refs[logical_id] = subnet["Subnet"]["SubnetId"]

    def create_aws_ec2_subnetcidrblock(self, logical_id: str, p: dict[str, Any]) -> None:
        association = self.client_for("ec2").associate_subnet_cidr_block(**p)["Ipv6CidrBlockAssociation"]
        self.r.refs[logical_id] = association["AssociationId"]

    def create_aws_ec2_internetgateway(self, logical_id: str, _: dict[str, Any]) -> None:
        gateway = self.client_for("ec2").create_internet_gateway()["InternetGateway"]
        self.r.refs[logical_id] = gateway["InternetGatewayId"]

    def create_aws_ec2_vpcgatewayattachment(self, logical_id: str, p: dict[str, Any]) -> None:
        self.client_for("ec2").attach_internet_gateway(**p)
        self.r.refs[logical_id] = f"{logical_id}-{p['VpcId']}"

    def create_aws_ec2_routetable(self, logical_id: str, p: dict[str, Any]) -> None:
        table = self.client_for("ec2").create_route_table(**p)["RouteTable"]
        self.r.refs[logical_id] = table["RouteTableId"]

    def create_aws_ec2_route(self, logical_id: str, p: dict[str, Any]) -> None:
        self.client_for("ec2").create_route(**p)
        self.r.refs[logical_id] = f"{logical_id}-{p['RouteTableId']}"

    def create_aws_ec2_subnetroutetableassociation(self, logical_id: str, p: dict[str, Any]) -> None:
        self.r.refs[logical_id] = self.client_for("ec2").associate_route_table(**p)["AssociationId"]

    def create_aws_ec2_securitygroup(self, logical_id: str, p: dict[str, Any]) -> None:
        ec2 = self.client_for("ec2")
        group = ec2.create_security_group(GroupName=logical_id, Description=p["GroupDescription"], VpcId=p["VpcId"])
        self.r.refs[logical_id] = group["GroupId"]

        self.r.attrs[logical_id] = {"GroupId": group["GroupId"]}
        ingress = [_permission(rule) for rule in p.get("SecurityGroupIngress", [])]
        if ingress:
            ec2.authorize_security_group_ingress(GroupId=group["GroupId"], IpPermissions=ingress)
        egress = [_permission(rule) for rule in p.get("SecurityGroupEgress", [])]
        ec2.authorize_security_group_egress(GroupId=group["GroupId"], IpPermissions=egress)

    def create_aws_ec2_securitygroupegress(self, logical_id: str, p: dict[str, Any]) -> None:
        self.client_for("ec2").authorize_security_group_egress(GroupId=p["GroupId"], IpPermissions=[_permission(p)])
        self.r.refs[logical_id] = f"{logical_id}-{p['GroupId']}"

    def create_aws_ec2_eip(self, logical_id: str, _: dict[str, Any]) -> None:
        address = self.client_for("ec2").allocate_address(Domain="vpc")
        self.r.refs[logical_id] = address["PublicIp"]
        self.r.attrs[logical_id] = {"AllocationId": address["AllocationId"]}

    def create_aws_elasticloadbalancingv2_loadbalancer(self, logical_id: str, p: dict[str, Any]) -> None:
        lb = self.client_for("elbv2").create_load_balancer(
            Name=f"{STACK}-{logical_id}"[:32],
            Type=p["Type"],
            Scheme=p["Scheme"],
            IpAddressType=p["IpAddressType"],
            SubnetMappings=p["SubnetMappings"],
        )["LoadBalancers"][0]
        self.r.refs[logical_id] = lb["LoadBalancerArn"]
        self.r.attrs[logical_id] = {"DNSName": lb["DNSName"]}

    def create_aws_elasticloadbalancingv2_targetgroup(self, logical_id: str, p: dict[str, Any]) -> None:
        elbv2 = self.client_for("elbv2")
        group = elbv2.create_target_group(
            Name=logical_id[:32],
            Protocol=p["Protocol"],
            Port=p["Port"],
            VpcId=p["VpcId"],
            TargetType=p["TargetType"],
            HealthCheckProtocol=p["HealthCheckProtocol"],
            HealthCheckPort=str(p.get("HealthCheckPort", "traffic-port")),
            **({"HealthCheckPath": p["HealthCheckPath"]} if "HealthCheckPath" in p else {}),
            **({"Matcher": p["Matcher"]} if "Matcher" in p else {}),
            **({"Tags": p["Tags"]} if "Tags" in p else {}),
        )["TargetGroups"][0]
        elbv2.modify_target_group_attributes(
            TargetGroupArn=group["TargetGroupArn"], Attributes=p["TargetGroupAttributes"]
        )
        self.r.refs[logical_id] = group["TargetGroupArn"]

    def create_aws_elasticloadbalancingv2_listener(self, logical_id: str, p: dict[str, Any]) -> None:
        listener = self.client_for("elbv2").create_listener(**p)["Listeners"][0]
        self.r.refs[logical_id] = listener["ListenerArn"]

    # ─── storage ───
    def create_aws_s3_bucket(self, logical_id: str, p: dict[str, Any]) -> None:
        s3, name = self.client_for("s3"), f"{STACK}-{logical_id.lower()}-0001"
        s3.create_bucket(Bucket=name)
        # CloudFormation's ServerSideEncryptionByDefault is the API's ApplyServerSideEncryptionByDefault.
        encryption = [
            {"ApplyServerSideEncryptionByDefault": rule["ServerSideEncryptionByDefault"]}
            for rule in p["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        ]
        s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": encryption})
        s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=p["PublicAccessBlockConfiguration"])
        s3.put_bucket_ownership_controls(Bucket=name, OwnershipControls=p["OwnershipControls"])
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration=p["VersioningConfiguration"])
        rules = []
        for rule in p["LifecycleConfiguration"]["Rules"]:
            api: dict[str, Any] = {
                "ID": rule["Id"],
                "Status": rule["Status"],
                "Filter": {"Prefix": rule.get("Prefix", "")},
            }
            if "ExpirationInDays" in rule:
                api["Expiration"] = {"Days": rule["ExpirationInDays"]}
            if "ExpiredObjectDeleteMarker" in rule:
                api["Expiration"] = {"ExpiredObjectDeleteMarker": rule["ExpiredObjectDeleteMarker"]}
            for key in ("NoncurrentVersionExpiration", "AbortIncompleteMultipartUpload"):
                if key in rule:
                    api[key] = rule[key]
            rules.append(api)
        s3.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={"Rules": rules})
        self.r.refs[logical_id] = name
        self.r.attrs[logical_id] = {
            "Arn": f"arn:aws:s3:::{name}",
            "RegionalDomainName": f"{name}.s3.{REGION}.amazonaws.com",
        }

    def create_aws_s3_bucketpolicy(self, _: str, p: dict[str, Any]) -> None:
        self.client_for("s3").put_bucket_policy(Bucket=p["Bucket"], Policy=json.dumps(p["PolicyDocument"]))

    # ─── identity, logs, queues, topics ───
    def create_aws_iam_role(self, logical_id: str, p: dict[str, Any]) -> None:
        iam, name = self.client_for("iam"), f"{STACK}-{logical_id}"
        role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(p["AssumeRolePolicyDocument"]))
        for policy in p.get("Policies", []):
            iam.put_role_policy(
                RoleName=name, PolicyName=policy["PolicyName"], PolicyDocument=json.dumps(policy["PolicyDocument"])
            )
        self.r.refs[logical_id] = name
        self.r.attrs[logical_id] = {"Arn": role["Role"]["Arn"]}

    def create_aws_logs_loggroup(self, logical_id: str, p: dict[str, Any]) -> None:
        logs = self.client_for("logs")
        logs.create_log_group(logGroupName=p["LogGroupName"])
        logs.put_retention_policy(logGroupName=p["LogGroupName"], retentionInDays=int(p["RetentionInDays"]))
        self.r.refs[logical_id] = p["LogGroupName"]
        self.r.attrs[logical_id] = {"Arn": f"arn:aws:logs:{REGION}:{self.account}:log-group:{p['LogGroupName']}:*"}

    def create_aws_sqs_queue(self, logical_id: str, p: dict[str, Any]) -> None:
        sqs, name = self.client_for("sqs"), f"{STACK}-{logical_id}"
        attributes = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in p.items()}
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        self.r.refs[logical_id] = url
        self.r.attrs[logical_id] = {"Arn": f"arn:aws:sqs:{REGION}:{self.account}:{name}", "QueueName": name}

    def create_aws_sqs_queuepolicy(self, _: str, p: dict[str, Any]) -> None:
        for url in p["Queues"]:
            self.client_for("sqs").set_queue_attributes(
                QueueUrl=url, Attributes={"Policy": json.dumps(p["PolicyDocument"])}
            )

    def create_aws_sns_topic(self, logical_id: str, p: dict[str, Any]) -> None:
        name = f"{STACK}-{logical_id}"
        arn = self.client_for("sns").create_topic(Name=name, Attributes={"DisplayName": p["DisplayName"]})["TopicArn"]
        self.r.refs[logical_id] = arn
        self.r.attrs[logical_id] = {"TopicName": name}

    def create_aws_sns_topicpolicy(self, _: str, p: dict[str, Any]) -> None:
        for arn in p["Topics"]:
            self.client_for("sns").set_topic_attributes(
                TopicArn=arn, AttributeName="Policy", AttributeValue=json.dumps(p["PolicyDocument"])
            )

    def create_aws_sns_subscription(self, logical_id: str, p: dict[str, Any]) -> None:
        sub = self.client_for("sns").subscribe(TopicArn=p["TopicArn"], Protocol=p["Protocol"], Endpoint=p["Endpoint"])
        self.r.refs[logical_id] = sub["SubscriptionArn"]

    # ─── sync ───
    def create_aws_ecs_cluster(self, logical_id: str, p: dict[str, Any]) -> None:
        cluster = self.client_for("ecs").create_cluster(clusterName=f"{STACK}-{logical_id}")["cluster"]
        self.r.refs[logical_id] = cluster["clusterName"]
        self.r.attrs[logical_id] = {"Arn": cluster["clusterArn"]}

    def create_aws_ecs_taskdefinition(self, logical_id: str, p: dict[str, Any]) -> None:
        containers = []
        for c in p["ContainerDefinitions"]:
            containers.append(
                {
                    "name": c["Name"],
                    "image": c["Image"],
                    "essential": c["Essential"],
                    "command": c["Command"],
                    "environment": [{"name": e["Name"], "value": str(e["Value"])} for e in c["Environment"]],
                    "portMappings": [
                        {"containerPort": m["ContainerPort"], "protocol": m["Protocol"]}
                        for m in c.get("PortMappings", [])
                    ],
                    "logConfiguration": {
                        "logDriver": c["LogConfiguration"]["LogDriver"],
                        "options": c["LogConfiguration"]["Options"],
                    },
                }
            )
        task = self.client_for("ecs").register_task_definition(
            **api_names(p, "Family", "RequiresCompatibilities", "NetworkMode", "Cpu", "Memory"),
            **api_names(p, "ExecutionRoleArn", "TaskRoleArn"),
            containerDefinitions=containers,
            **(
                {"ephemeralStorage": {"sizeInGiB": int(p["EphemeralStorage"]["SizeInGiB"])}}
                if "EphemeralStorage" in p
                else {}
            ),
        )["taskDefinition"]
        self.r.refs[logical_id] = task["taskDefinitionArn"]

    def create_aws_ecs_service(self, logical_id: str, p: dict[str, Any]) -> None:
        network = p["NetworkConfiguration"]["AwsvpcConfiguration"]
        service = self.client_for("ecs").create_service(
            **api_names(p, "Cluster", "ServiceName", "TaskDefinition", "LaunchType", "DesiredCount"),
            **api_names(p, "HealthCheckGracePeriodSeconds"),
            networkConfiguration={
                "awsvpcConfiguration": api_names(network, "Subnets", "SecurityGroups", "AssignPublicIp")
            },
            loadBalancers=[
                api_names(b, "ContainerName", "ContainerPort", "TargetGroupArn") for b in p["LoadBalancers"]
            ],
        )["service"]
        self.r.refs[logical_id] = service["serviceArn"]
        self.r.attrs[logical_id] = {"Name": service["serviceName"]}

    def create_aws_scheduler_schedulegroup(self, logical_id: str, p: dict[str, Any]) -> None:
        arn = self.client_for("scheduler").create_schedule_group(Name=p["Name"])["ScheduleGroupArn"]
        self.r.refs[logical_id] = p["Name"]
        self.r.attrs[logical_id] = {"Arn": arn}

    def create_aws_scheduler_schedule(self, logical_id: str, p: dict[str, Any]) -> None:
        # Without a Name, CloudFormation makes one of the stack's and the logical id (64 at most).
        name = p.get("Name", f"{STACK}-{logical_id}"[:64])
        arn = self.client_for("scheduler").create_schedule(
            Name=name,
            GroupName=p["GroupName"],
            ScheduleExpression=p["ScheduleExpression"],
            ScheduleExpressionTimezone=p["ScheduleExpressionTimezone"],
            FlexibleTimeWindow=p["FlexibleTimeWindow"],
            State=p["State"],
            Description=p["Description"],
            Target=p["Target"],
        )["ScheduleArn"]
        self.r.refs[logical_id] = name
        self.r.attrs[logical_id] = {"Arn": arn}

    # ─── workflows and rules ───
    def create_aws_stepfunctions_statemachine(self, logical_id: str, p: dict[str, Any]) -> None:
        self._state_machine(logical_id, p["StateMachineName"], json.dumps(p["Definition"]), p["RoleArn"])

    def create_aws_serverless_statemachine(self, logical_id: str, p: dict[str, Any]) -> None:
        definition = (ROOT / p["DefinitionUri"]).read_text()
        for name, value in p["DefinitionSubstitutions"].items():
            definition = definition.replace("${" + name + "}", value)
        assert "${" not in definition, "a DefinitionSubstitution is missing"
        role = self.client_for("iam").create_role(RoleName=f"{STACK}-{logical_id}Role", AssumeRolePolicyDocument="{}")
        self._state_machine(logical_id, p["Name"], definition, role["Role"]["Arn"])

    def _state_machine(self, logical_id: str, name: str, definition: str, role: str) -> None:
        json.loads(definition)
        arn = self.client_for("stepfunctions").create_state_machine(name=name, definition=definition, roleArn=role)
        self.r.refs[logical_id] = arn["stateMachineArn"]
        self.r.attrs[logical_id] = {"Arn": arn["stateMachineArn"], "Name": name}

    def create_aws_events_rule(self, logical_id: str, p: dict[str, Any]) -> None:
        events, name = self.client_for("events"), f"{STACK}-{logical_id}"
        arn = events.put_rule(Name=name, EventPattern=json.dumps(p["EventPattern"]), Description=p["Description"])
        events.put_targets(Rule=name, Targets=p["Targets"])
        self.r.refs[logical_id] = name
        self.r.attrs[logical_id] = {"Arn": arn["RuleArn"]}

    # ─── alerting ───
    def create_aws_cloudwatch_alarm(self, logical_id: str, p: dict[str, Any]) -> None:
        self.client_for("cloudwatch").put_metric_alarm(**p)
        self.r.refs[logical_id] = p["AlarmName"]
        self.r.attrs[logical_id] = {"Arn": f"arn:aws:cloudwatch:{REGION}:{self.account}:alarm:{p['AlarmName']}"}

    def create_aws_cloudwatch_dashboard(self, logical_id: str, p: dict[str, Any]) -> None:
        json.loads(p["DashboardBody"])
        self.client_for("cloudwatch").put_dashboard(DashboardName=p["DashboardName"], DashboardBody=p["DashboardBody"])
        self.r.refs[logical_id] = p["DashboardName"]


def _permission(rule: dict[str, Any]) -> dict[str, Any]:
    """A security group rule as CloudFormation writes it, as the EC2 API takes it."""
    ranges = (
        {"Ipv6Ranges": [{"CidrIpv6": rule["CidrIpv6"], "Description": rule["Description"]}]}
        if "CidrIpv6" in rule
        else {"IpRanges": [{"CidrIp": rule["CidrIp"], "Description": rule["Description"]}]}
    )
    return {
        "IpProtocol": rule["IpProtocol"],
        "FromPort": int(rule["FromPort"]),
        "ToPort": int(rule["ToPort"]),
        **ranges,
    }


@pytest.fixture(scope="module")
def moto_running_state_machines() -> Iterator[str]:
    """A moto server of this module's own that runs the state machines started in it."""
    port = free_port()
    with serving([sys.executable, "-m", "tests.template.moto_sfn_server", str(port)], port, what="moto"):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def deployed(moto_running_state_machines: str) -> Deployer:
    """The stack with FTP and a pager, deployed once for this module's checks."""
    deployer = Deployer(moto_running_state_machines, load_template())
    deployer.deploy()
    return deployer


def sync_schedules(deployed: Deployer) -> dict[str, dict[str, Any]]:
    """The deployed schedules that start the sync task, with the RunTask request each sends, by name."""
    scheduler = deployed.client_for("scheduler")
    found = {}
    for summary in scheduler.list_schedules(GroupName=STACK)["Schedules"]:
        schedule = scheduler.get_schedule(Name=summary["Name"], GroupName=STACK)
        if schedule["Target"]["Arn"].endswith(":aws-sdk:ecs:runTask"):
            found[summary["Name"]] = schedule | {"request": json.loads(schedule["Target"]["Input"])}
    return found


def check_starts_the_sync_task(deployed: Deployer, schedule: dict[str, Any]) -> list[str]:
    """That a schedule runs the registered sync task in the cluster, in the stack's subnets, with its
    role, and keeps a dead-letter queue; the command it gives the task."""
    ecs, iam = deployed.client_for("ecs"), deployed.client_for("iam")
    request = schedule["request"]
    cluster = ecs.describe_clusters(clusters=[request["Cluster"]])["clusters"][0]
    assert cluster["status"] == "ACTIVE"
    task = ecs.describe_task_definition(taskDefinition=request["TaskDefinition"])["taskDefinition"]
    assert task["ephemeralStorage"] == {"sizeInGiB": 50}
    role = schedule["Target"]["RoleArn"].rsplit("/", 1)[1]
    policy = iam.get_role_policy(RoleName=role, PolicyName="run-sync-task")["PolicyDocument"]
    run = next(s for s in policy["Statement"] if s["Action"] == "ecs:RunTask")
    assert task["taskDefinitionArn"].startswith(run["Resource"].removesuffix("*"))
    queue = schedule["Target"]["DeadLetterConfig"]["Arn"].rsplit(":", 1)[1]
    deployed.client_for("sqs").get_queue_url(QueueName=queue)
    subnets = request["NetworkConfiguration"]["AwsvpcConfiguration"]["Subnets"]
    assert len(deployed.client_for("ec2").describe_subnets(SubnetIds=subnets)["Subnets"]) == 2
    (override,) = request["Overrides"]["ContainerOverrides"]
    assert override["Name"] == task["containerDefinitions"][0]["name"]
    command: list[str] = override["Command"]
    return command


def test_a_host_of_ones_schedule_starts_the_registered_sync_task(deployed: Deployer) -> None:
    (schedule,) = sync_schedules(deployed).values()
    assert schedule["ScheduleExpression"] == "cron(7 */1 * * ? *)"
    assert check_starts_the_sync_task(deployed, schedule) == ["sync"]
    task = deployed.client_for("ecs").describe_task_definition(taskDefinition=schedule["request"]["TaskDefinition"])
    env = {e["name"]: e["value"] for e in task["taskDefinition"]["containerDefinitions"][0]["environment"]}
    assert env["MIRRORKEEPER_UPSTREAM"] == PARAMETERS["UpstreamUrl"]
    deployed.client_for("s3").head_bucket(Bucket=env["MIRRORKEEPER_BUCKET"])


def test_alarms_exist_and_notify_a_topic_with_an_email_subscription(deployed: Deployer) -> None:
    cloudwatch, sns = deployed.client_for("cloudwatch"), deployed.client_for("sns")
    alarms = cloudwatch.describe_alarms(AlarmNamePrefix=STACK)
    every = alarms["MetricAlarms"] + alarms.get("CompositeAlarms", [])
    assert len(every) == 17
    topics = {a for alarm in every for a in alarm["AlarmActions"] + alarm["OKActions"]}
    (topic,) = topics
    subscriptions = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    assert {s["Protocol"] for s in subscriptions} == {"email", "https"}
    freshness = next(a for a in every if a["AlarmName"] == f"{STACK}-freshness-ftp")
    assert freshness["TreatMissingData"] == "breaching" and freshness["Threshold"] == 7200


def test_dashboard_shows_every_alarm_that_exists(deployed: Deployer) -> None:
    cloudwatch = deployed.client_for("cloudwatch")
    body = json.loads(cloudwatch.get_dashboard(DashboardName=STACK)["DashboardBody"])
    (widget,) = [w for w in body["widgets"] if w["type"] == "alarm"]
    names = [arn.rsplit(":", 1)[1] for arn in widget["properties"]["alarms"]]
    existing = {a["AlarmName"] for a in cloudwatch.describe_alarms(AlarmNames=names)["MetricAlarms"]}
    assert set(names) == existing and len(names) == 17  # every alarm of the stack
    # metrics, or a search of each mirror's metric of a name
    metrics = {
        m[1] if isinstance(m[0], str) else m[0]["expression"].split('MetricName="')[1].split('"')[0]
        for w in body["widgets"]
        if w["type"] == "metric"
        for m in w["properties"]["metrics"]
    }
    assert {
        "FreshnessSeconds",
        "SyncDurationSeconds",
        "SyncBytes",
        "SyncFilesChanged",
        "SyncS3Requests",
        "CompletionPercent",
        "ProbeLatency",
        "ProbesPassed",
        "ProbesFailed",
        "HealthLevel",
        "MirrorsNotOk",
    } <= metrics


def test_triggers_start_state_machines_that_exist(deployed: Deployer) -> None:
    events, sfn = deployed.client_for("events"), deployed.client_for("stepfunctions")
    for rule in (f"{STACK}-SyncStoppedRule", f"{STACK}-FtpTaskChangedRule"):
        (target,) = events.list_targets_by_rule(Rule=rule)["Targets"]
        sfn.describe_state_machine(stateMachineArn=target["Arn"])
    verify = deployed.client_for("scheduler").get_schedule(Name=f"{STACK}-verify", GroupName=STACK)["Target"]
    assert sfn.describe_state_machine(stateMachineArn=verify["Arn"])["name"] == f"{STACK}-verify"


def test_bucket_is_private_and_its_policy_names_the_served_prefix(deployed: Deployer) -> None:
    s3, bucket = deployed.client_for("s3"), deployed.r.refs["MirrorBucket"]
    assert all(s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"].values())
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    resources = {json.dumps(s["Resource"]) for s in policy["Statement"] if s["Effect"] == "Allow"}
    assert resources == {json.dumps(f"arn:aws:s3:::{bucket}/pub/*"), json.dumps(f"arn:aws:s3:::{bucket}")}


def _run(deployed: Deployer, state_machine: str, event: dict[str, Any]) -> dict[str, Any]:
    sfn = deployed.client_for("stepfunctions")
    arn = sfn.start_execution(
        stateMachineArn=deployed.r.refs[state_machine], name=uuid.uuid4().hex, input=json.dumps(event)
    )["executionArn"]
    deadline = time.monotonic() + 60
    while (execution := sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
        assert time.monotonic() < deadline, f"{state_machine} still running"
        time.sleep(0.2)
    return execution  # type: ignore[no-any-return]


def _ftp_task_event(last: str, desired: str, ipv6: str | None = None) -> dict[str, Any]:
    """An ECS Task State Change event of the FTP service, as far as the workflow reads it; with an
    IPv6 address for a task in an IPv6 subnet of an account with ECS's dualStackIPv6 setting on."""
    details = [{"name": "subnetId", "value": "subnet-0"}, {"name": "privateIPv4Address", "value": "10.42.0.7"}]
    details += [{"name": "ipv6Address", "value": ipv6}] if ipv6 else []
    return {
        "source": "aws.ecs",
        "detail-type": "ECS Task State Change",
        "detail": {"lastStatus": last, "desiredStatus": desired, "attachments": [{"type": "eni", "details": details}]},
    }


def _targets(deployed: Deployer) -> dict[int, list[str]]:
    """The FTP load balancer's target groups by port, with the addresses registered in each."""
    elbv2 = deployed.client_for("elbv2")
    groups = elbv2.describe_target_groups(LoadBalancerArn=deployed.r.refs["FtpLoadBalancer"])["TargetGroups"]
    return {
        g["Port"]: [
            t["Target"]["Id"]
            for t in elbv2.describe_target_health(TargetGroupArn=g["TargetGroupArn"])["TargetHealthDescriptions"]
        ]
        for g in groups
    }


def test_ftp_task_is_registered_in_every_passive_group_and_nowhere_else(deployed: Deployer) -> None:
    passive = set(range(60000, 60000 + int(deployed.r.values["FtpPassivePorts"])))
    assert set(_targets(deployed)) == {2121, *passive}
    # WHEN the task runs THEN it is in every passive group; the control group is ECS's to fill
    assert _run(deployed, "FtpTargetsStateMachine", _ftp_task_event("RUNNING", "RUNNING"))["status"] == "SUCCEEDED"
    assert _targets(deployed) == {2121: [], **{port: ["10.42.0.7"] for port in passive}}
    # WHEN it is on its way out THEN it leaves them all
    assert _run(deployed, "FtpTargetsStateMachine", _ftp_task_event("DEACTIVATING", "STOPPED"))["status"] == "SUCCEEDED"
    assert _targets(deployed) == {port: [] for port in {2121, *passive}}


DUAL_STACK = {"FtpIpAddressType": "dualstack"}


def _network_and_ftp_targets(logical_id: str, resource: dict[str, Any]) -> bool:
    return resource["Type"].startswith(("AWS::EC2::", "AWS::ElasticLoadBalancingV2::")) or (
        logical_id == "FtpTargetsStateMachine"
    )


@pytest.fixture(scope="module")
def deployed_dual_stack() -> Iterator[Deployer]:
    """The network, the FTP load balancer and its target registration of a stack with a dual-stack
    FTP load balancer, in a moto server of its own (the rest is as `deployed` has it)."""
    port = free_port()
    with serving([sys.executable, "-m", "tests.template.moto_sfn_server", str(port)], port, what="moto"):
        deployer = Deployer(f"http://127.0.0.1:{port}", load_template(DUAL_STACK), DUAL_STACK)
        deployer.deploy(_network_and_ftp_targets)
        yield deployer


def test_dual_stack_makes_the_ipv6_network_its_load_balancer_needs(deployed_dual_stack: Deployer) -> None:
    d = deployed_dual_stack
    ec2 = d.client_for("ec2")
    (vpc,) = ec2.describe_vpcs(VpcIds=[d.r.refs["Vpc"]])["Vpcs"]
    (block,) = [ipaddress.ip_network(a["Ipv6CidrBlock"]) for a in vpc["Ipv6CidrBlockAssociationSet"]]
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["Subnets"]
    assert len(subnets) == 2
    given = [ipaddress.ip_network(a["Ipv6CidrBlock"]) for s in subnets for a in s["Ipv6CidrBlockAssociationSet"]]
    assert len(set(given)) == len(subnets) and all(n.prefixlen == 64 and n.subnet_of(block) for n in given)
    for subnet in subnets:
        filters = [{"Name": "association.subnet-id", "Values": [subnet["SubnetId"]]}]
        (table,) = ec2.describe_route_tables(Filters=filters)["RouteTables"]
        to_the_internet = [r for r in table["Routes"] if r.get("DestinationIpv6CidrBlock") == "::/0"]
        assert [r["GatewayId"] for r in to_the_internet] == [d.r.refs["InternetGateway"]], subnet["SubnetId"]
    elbv2 = d.client_for("elbv2")
    (lb,) = elbv2.describe_load_balancers(LoadBalancerArns=[d.r.refs["FtpLoadBalancer"]])["LoadBalancers"]
    assert lb["IpAddressType"] == "dualstack"
    assert d.r.resolve(d.template["Outputs"]["FtpDualStackUrl"]["Value"]) == f"ftp://{lb['DNSName']}/"
    # the sync task may go to the upstream over IPv6
    (sync,) = ec2.describe_security_groups(GroupIds=[d.r.refs["SyncSecurityGroup"]])["SecurityGroups"]
    tcp = [p for p in sync["IpPermissionsEgress"] if p["IpProtocol"] == "tcp"]
    assert [(p["FromPort"], r["CidrIpv6"]) for p in tcp for r in p.get("Ipv6Ranges", [])] == [(873, "::/0")]


def test_dual_stack_registers_the_ftp_task_by_its_ipv4_address(deployed_dual_stack: Deployer) -> None:
    # the target groups are IPv4: IPv6 clients reach the task from the load balancer's IPv4 address
    d = deployed_dual_stack
    passive = set(range(60000, 60000 + int(d.r.values["FtpPassivePorts"])))
    event = _ftp_task_event("RUNNING", "RUNNING", ipv6="2600:1f18:4c2:9e00::7")
    assert _run(d, "FtpTargetsStateMachine", event)["status"] == "SUCCEEDED"
    assert _targets(d) == {2121: [], **{port: ["10.42.0.7"] for port in passive}}


HOST = {"MirrorSchedules": "openvz|ENABLED|cron(7 */1 * * ? *),debian-security|DISABLED|cron(25 */6 * * ? *)"}


@pytest.fixture(scope="module")
def deployed_host() -> Iterator[Deployer]:
    """A host of two mirrors' schedules, what they start and the STOPPED rule, in a moto server of
    its own (the rest is as `deployed` has it)."""
    with moto_subprocess() as url:
        deployer = Deployer(url, load_template(HOST), HOST)
        deployer.deploy(
            lambda logical_id, resource: (
                resource["Type"] == "AWS::Scheduler::Schedule" or (logical_id == "SyncStoppedRule")
            )
        )
        yield deployer


def test_each_mirrors_schedule_syncs_that_mirror_and_its_stop_starts_the_workflow(deployed_host: Deployer) -> None:
    d = deployed_host
    schedules = sync_schedules(d)
    assert len(schedules) == 2
    by_mirror = {}
    for schedule in schedules.values():
        command = check_starts_the_sync_task(d, schedule)
        assert command[:2] == ["sync", "--mirror"] and len(command) == 3
        by_mirror[command[2]] = schedule
    assert by_mirror["openvz"]["State"] == "ENABLED" and by_mirror["openvz"]["ScheduleExpression"] == (
        "cron(7 */1 * * ? *)"
    )
    assert by_mirror["debian-security"]["State"] == "DISABLED"  # paused
    # WHEN the task a schedule started stops, as ECS tells it (the request's overrides, in ECS's case)
    events = d.client_for("events")
    rule = events.describe_rule(Name=f"{STACK}-SyncStoppedRule")
    (target,) = events.list_targets_by_rule(Rule=f"{STACK}-SyncStoppedRule")["Targets"]
    for mirror, schedule in by_mirror.items():
        request = schedule["request"]
        (override,) = request["Overrides"]["ContainerOverrides"]
        event = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "ECS Task State Change",
            "source": "aws.ecs",
            "account": d.account,
            "time": "2026-01-01T00:07:42Z",
            "region": REGION,
            "resources": [f"arn:aws:ecs:{REGION}:{d.account}:task/{STACK}-Cluster/0123456789abcdef"],
            "detail": {
                "clusterArn": request["Cluster"],
                "taskArn": f"arn:aws:ecs:{REGION}:{d.account}:task/{STACK}-Cluster/0123456789abcdef",
                "taskDefinitionArn": request["TaskDefinition"],
                "lastStatus": "STOPPED",
                "overrides": {"containerOverrides": [{"name": override["Name"], "command": override["Command"]}]},
                "containers": [{"name": override["Name"], "exitCode": 0}],
            },
        }
        # THEN the rule starts the verify workflow (the rule as deployed, matched by moto's matcher: its
        # TestEventPattern API is not implemented), whose first step reads which mirror it was
        assert EventPattern.load(rule["EventPattern"]).matches_event(event), mirror
        assert target["Arn"] == d.r.refs["VerifyStateMachine"]
        trigger = parse_event(EcsTaskStateChange, event)
        assert trigger.detail.mirror == mirror
        # and the FTP service's tasks, in the same cluster, start nothing
        other = json.loads(json.dumps(event))
        other["detail"]["taskDefinitionArn"] = request["TaskDefinition"].replace(f"{STACK}-sync:", f"{STACK}-ftp:")
        assert not EventPattern.load(rule["EventPattern"]).matches_event(other)


RSYNC = {"EnableRsync": "true"}


@pytest.fixture(scope="module")
def deployed_rsync() -> Iterator[Deployer]:
    """The rsync service, what it needs and the STOPPED rule, of a stack with EnableRsync, in a moto
    server of its own (the rest is as `deployed` has it)."""
    with moto_subprocess() as url:
        deployer = Deployer(url, load_template(RSYNC), RSYNC)
        deployer.deploy(lambda logical_id, _: logical_id.startswith("Rsync") or logical_id == "SyncStoppedRule")
        yield deployer


def test_the_rsync_service_is_healthy_by_its_health_port_and_a_stopped_sync_wakes_it(deployed_rsync: Deployer) -> None:
    d = deployed_rsync
    ecs, elbv2, sqs = d.client_for("ecs"), d.client_for("elbv2"), d.client_for("sqs")
    (service,) = ecs.describe_services(cluster=d.r.refs["Cluster"], services=[f"{STACK}-rsync"])["services"]
    (task,) = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"][
        "containerDefinitions"
    ]
    command = task["command"]
    health_port = int(command[command.index("--health-port") + 1])
    # THEN the load balancer asks the port serve-rsync answers its health on, which the task maps
    (balanced,) = service["loadBalancers"]
    (group,) = elbv2.describe_target_groups(TargetGroupArns=[balanced["targetGroupArn"]])["TargetGroups"]
    assert (group["HealthCheckProtocol"], group["HealthCheckPort"]) == ("HTTP", str(health_port))
    assert {"containerPort": health_port, "protocol": "tcp"} in [
        {k: m[k] for k in ("containerPort", "protocol")} for m in task["portMappings"]
    ]
    # AND the security group lets the load balancer reach it
    (group_id,) = service["networkConfiguration"]["awsvpcConfiguration"]["securityGroups"]
    (security,) = d.client_for("ec2").describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
    assert health_port in {rule["FromPort"] for rule in security["IpPermissions"]}
    # WHEN a sync task stops, as ECS tells EventBridge
    environment = {e["name"]: e["value"] for e in task["environment"]}
    queue = environment["MIRRORKEEPER_WAKE_QUEUE_URL"]
    event = {
        "lastStatus": "STOPPED",
        "clusterArn": d.r.attrs["Cluster"]["Arn"],
        "taskDefinitionArn": f"arn:aws:ecs:{REGION}:{d.account}:task-definition/{STACK}-sync:3",
    }
    events = d.client_for("events")
    # (moto delivers to SQS targets but not to state machines: the verify target leaves this copy of
    # the rule; test_each_mirrors_schedule_syncs_that_mirror_and_its_stop_starts_the_workflow checks it)
    events.remove_targets(Rule=f"{STACK}-SyncStoppedRule", Ids=["verify"])
    sent = events.put_events(
        Entries=[{"Source": "aws.ecs", "DetailType": "ECS Task State Change", "Detail": json.dumps(event)}]
    )
    assert sent["FailedEntryCount"] == 0
    # THEN the queue the rsync task long-polls holds the nudge (moto delivers to the rule's SQS target)
    received = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=5)["Messages"]
    assert json.loads(received[0]["Body"])["detail"]["lastStatus"] == "STOPPED"
    # AND only that rule may send to it, and the task's role may take from it
    policy = json.loads(sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["Policy"])["Attributes"]["Policy"])
    (statement,) = policy["Statement"]
    rule_arn = events.describe_rule(Name=f"{STACK}-SyncStoppedRule")["Arn"]
    assert statement["Condition"]["ArnEquals"]["aws:SourceArn"] == rule_arn
