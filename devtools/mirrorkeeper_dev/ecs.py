"""The sync task as a push starts it in AWS, made in a moto server: a cluster, the Fargate task definition
with its ``sync`` container, and the public subnet and security group it runs in. moto records every
task RunTask starts (``list_tasks``, ``describe_tasks``) and runs none of them."""

from dataclasses import dataclass

import boto3


@dataclass(frozen=True)
class SyncTask:
    cluster: str
    task_definition: str
    subnet: str
    security_group: str

    def flags(self) -> list[str]:
        """serve-push's flags that start this task."""
        return [
            "--sync-cluster",
            self.cluster,
            "--sync-task-definition",
            self.task_definition,
            "--sync-subnets",
            self.subnet,
            "--sync-security-groups",
            self.security_group,
        ]

    def environment(self) -> dict[str, str]:
        """The push function's environment that starts this task (as the stack sets it)."""
        return {
            "MIRRORKEEPER_SYNC_CLUSTER": self.cluster,
            "MIRRORKEEPER_SYNC_TASK_DEFINITION": self.task_definition,
            "MIRRORKEEPER_SYNC_SUBNETS": self.subnet,
            "MIRRORKEEPER_SYNC_SECURITY_GROUPS": self.security_group,
        }


def sync_task(endpoint: str, region: str = "us-east-1", family: str = "mirrorkeeper-sync") -> SyncTask:
    """Create the sync task's cluster, task definition and network in the moto server at ``endpoint``."""
    ec2 = boto3.client("ec2", endpoint_url=endpoint, region_name=region)
    ecs = boto3.client("ecs", endpoint_url=endpoint, region_name=region)
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    # As the stack's VPC has them; moto also needs them to give a Fargate task its network interface
    # (without, RunTask fails on the interface's missing DNS name: getmoto/moto#9179).
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.42.0.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="sync", Description="the sync task", VpcId=vpc)["GroupId"]
    cluster = ecs.create_cluster(clusterName="mirrorkeeper")["cluster"]["clusterArn"]
    definition = ecs.register_task_definition(
        family=family,
        networkMode="awsvpc",
        requiresCompatibilities=["FARGATE"],
        cpu="1024",
        memory="2048",
        # The container's own memory: moto sums the containers' to place a task (the stack sets the task's only).
        containerDefinitions=[
            {"name": "sync", "image": "mirrorkeeper:test", "command": ["sync"], "essential": True, "memory": 2048}
        ],
    )["taskDefinition"]["taskDefinitionArn"]
    return SyncTask(str(cluster), str(definition), str(subnet), str(group))
