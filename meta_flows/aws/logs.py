"""The CloudWatch log group of the flow containers, with a retention."""

from __future__ import annotations

from meta_flows.aws.calls import TAGS_MAP, call, is_managed
from meta_flows.aws.clients import aws_client
from meta_flows.plan import Step

KIND = "CloudWatch log group"


def plan_log_group(region: str, name: str, retention_days: int) -> Step:
    """Plan the log group: create it, fix the retention of ours, leave a foreign one as it is."""
    logs = aws_client("logs", region)
    groups = call("logs:DescribeLogGroups", logs.describe_log_groups, logGroupNamePrefix=name)["logGroups"]
    group = next((g for g in groups if g["logGroupName"] == name), None)

    def put_retention() -> None:
        call("logs:PutRetentionPolicy", logs.put_retention_policy, logGroupName=name, retentionInDays=retention_days)

    def create() -> None:
        call("logs:CreateLogGroup", logs.create_log_group, logGroupName=name, tags=TAGS_MAP)
        put_retention()

    if group is None:
        return Step(KIND, name, "create", f"retention {retention_days} days", create)
    arn = group["arn"].removesuffix(":*")
    tags = call("logs:ListTagsForResource", logs.list_tags_for_resource, resourceArn=arn).get("tags", {})
    if not is_managed(tags):
        return Step(KIND, name, "foreign", "not created by this project: used as it is")
    if group.get("retentionInDays") != retention_days:
        return Step(
            KIND, name, "update", f"retention {group.get('retentionInDays')} -> {retention_days} days", put_retention
        )
    return Step(KIND, name, "unchanged")


def delete_log_group(region: str, name: str) -> bool:
    """Delete the log group if it exists and is ours; return whether it was deleted."""
    logs = aws_client("logs", region)
    groups = call("logs:DescribeLogGroups", logs.describe_log_groups, logGroupNamePrefix=name)["logGroups"]
    group = next((g for g in groups if g["logGroupName"] == name), None)
    if group is None:
        return False
    tags = call("logs:ListTagsForResource", logs.list_tags_for_resource, resourceArn=group["arn"].removesuffix(":*"))
    if not is_managed(tags.get("tags", {})):
        return False
    call("logs:DeleteLogGroup", logs.delete_log_group, logGroupName=name)
    return True
