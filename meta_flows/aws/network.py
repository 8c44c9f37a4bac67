"""The tasks' network: subnets and security groups checked against EC2 before anything is written."""

from __future__ import annotations

from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

from meta_flows.aws.calls import call
from meta_flows.aws.clients import aws_client
from meta_flows.aws.errors import describe_aws_failure
from meta_flows.errors import SettingsError


def find_vpc(region: str, vpc_id: str | None) -> str:
    """Return `vpc_id` when it exists, else the region's default VPC."""
    ec2 = aws_client("ec2", region)
    filters = [{"Name": "vpc-id", "Values": [vpc_id]}] if vpc_id else [{"Name": "is-default", "Values": ["true"]}]
    try:
        vpcs = ec2.describe_vpcs(Filters=filters)["Vpcs"]
    except (ClientError, BotoCoreError) as exc:
        raise describe_aws_failure("ec2:DescribeVpcs", exc) from exc
    if not vpcs:
        if vpc_id:
            raise SettingsError(f"VPC {vpc_id} not found in {region}: check META_FLOWS_VPC_ID and AWS_REGION")
        raise SettingsError(f"{region} has no default VPC: set META_FLOWS_VPC_ID and META_FLOWS_SUBNETS")
    return str(vpcs[0]["VpcId"])


def check_network(region: str, vpc_id: str | None, subnets: list[str], security_groups: list[str], source: str) -> None:
    """Raise SettingsError unless every subnet is in the VPC and every security group exists there.

    `source` names where the values came from (a variable or a job variable), for the message.
    """
    vpc = find_vpc(region, vpc_id)
    ec2 = aws_client("ec2", region)
    try:
        in_vpc = {s["SubnetId"] for s in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]}
        groups = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["SecurityGroups"]
    except (ClientError, BotoCoreError) as exc:
        raise describe_aws_failure("ec2:DescribeSubnets", exc) from exc

    outside = sorted(set(subnets) - in_vpc)
    if outside:
        raise SettingsError(
            f"{source}: subnets {outside} are not in VPC {vpc}; use subnets of that VPC "
            f"({', '.join(sorted(in_vpc)) or 'none'}) or set the VPC they belong to"
        )
    missing = sorted(set(security_groups) - {g["GroupId"] for g in groups})
    if missing:
        raise SettingsError(
            f"{source}: security groups {missing} do not exist in VPC {vpc}; create them or remove them"
        )


@dataclass(frozen=True)
class Network:
    """A VPC and the subnets and security groups the tasks use in it."""

    vpc_id: str
    subnets: list[str]
    security_groups: list[str]


def default_vpc(region: str) -> str:
    """Return the default VPC's id, or raise SettingsError naming the variables to set instead."""
    ec2 = aws_client("ec2", region)
    vpcs = call("ec2:DescribeVpcs", ec2.describe_vpcs, Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        raise SettingsError(
            f"region {region} has no default VPC: set META_FLOWS_VPC_ID, META_FLOWS_SUBNETS and "
            "META_FLOWS_SECURITY_GROUPS"
        )
    return str(vpcs[0]["VpcId"])


def validate_network(region: str, vpc_id: str | None, subnets: list[str], security_groups: list[str]) -> Network:
    """Check that every subnet is in the VPC and every security group exists there.

    Without META_FLOWS_VPC_ID the VPC is the first subnet's, or the default VPC when no subnets
    are given, which is what the ECS worker uses then.
    """
    ec2 = aws_client("ec2", region)
    vpc = vpc_id
    if subnets:
        found = call("ec2:DescribeSubnets", ec2.describe_subnets, Filters=[{"Name": "subnet-id", "Values": subnets}])
        vpc_of = {s["SubnetId"]: s["VpcId"] for s in found["Subnets"]}
        missing = [s for s in subnets if s not in vpc_of]
        if missing:
            raise SettingsError(f"META_FLOWS_SUBNETS: subnets {missing} not found in {region}: check the ids")
        vpc = vpc or vpc_of[subnets[0]]
        outside = [s for s in subnets if vpc_of[s] != vpc]
        if outside:
            raise SettingsError(
                f"META_FLOWS_SUBNETS: subnets {outside} are not in VPC {vpc}: list subnets of one VPC, "
                "and set META_FLOWS_VPC_ID to it"
            )
    vpc = vpc or default_vpc(region)
    if security_groups:
        found = call(
            "ec2:DescribeSecurityGroups",
            ec2.describe_security_groups,
            Filters=[{"Name": "group-id", "Values": security_groups}, {"Name": "vpc-id", "Values": [vpc]}],
        )
        existing = {g["GroupId"] for g in found["SecurityGroups"]}
        missing = [g for g in security_groups if g not in existing]
        if missing:
            raise SettingsError(
                f"META_FLOWS_SECURITY_GROUPS: security groups {missing} not found in VPC {vpc}: check the ids"
            )
    return Network(vpc, list(subnets), list(security_groups))


def service_subnets(region: str, network: Network) -> list[str]:
    """Return the subnets for the worker service: the configured ones, else the default VPC's."""
    if network.subnets:
        return network.subnets
    ec2 = aws_client("ec2", region)
    found = call(
        "ec2:DescribeSubnets",
        ec2.describe_subnets,
        Filters=[{"Name": "vpc-id", "Values": [network.vpc_id]}, {"Name": "default-for-az", "Values": ["true"]}],
    )
    return sorted(s["SubnetId"] for s in found["Subnets"])


def service_security_groups(region: str, network: Network) -> list[str]:
    """Return the security groups for the worker service: the configured ones, else the VPC's default.

    ECS falls back to the VPC's default group when none is given, so naming it gives the same
    result. moto 5.2.5's CreateService also fails without securityGroups.
    """
    if network.security_groups:
        return network.security_groups
    ec2 = aws_client("ec2", region)
    found = call(
        "ec2:DescribeSecurityGroups",
        ec2.describe_security_groups,
        Filters=[{"Name": "vpc-id", "Values": [network.vpc_id]}, {"Name": "group-name", "Values": ["default"]}],
    )
    return [g["GroupId"] for g in found["SecurityGroups"]]
