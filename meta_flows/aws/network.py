"""The tasks' network: subnets and security groups checked against EC2 before anything is written."""

from __future__ import annotations

from botocore.exceptions import BotoCoreError, ClientError

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
