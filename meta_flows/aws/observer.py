"""The SQS queue and EventBridge rule that prefect-aws's ECS worker watches for crash detection.

Since prefect-aws 0.6 the worker learns that a task stopped from "ECS Task State Change" events
that EventBridge delivers to an SQS queue. The rule matches the cluster's tasks only, and the
queue accepts messages from that rule only.
"""

from __future__ import annotations

import json
from typing import Any

from meta_flows.aws.calls import TAGS_MAP, TAGS_UPPER, call, is_managed, lookup, tag_map
from meta_flows.aws.clients import aws_client
from meta_flows.plan import Step

QUEUE_MISSING_CODES = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}
RETENTION_SECONDS = "604800"  # a week: the worker reads events within seconds, a stopped worker catches up


def queue_arn(partition: str, region: str, account: str, name: str) -> str:
    return f"arn:{partition}:sqs:{region}:{account}:{name}"


def rule_arn(partition: str, region: str, account: str, name: str) -> str:
    return f"arn:{partition}:events:{region}:{account}:rule/{name}"


def event_pattern(cluster_arn: str) -> dict[str, Any]:
    return {"source": ["aws.ecs"], "detail-type": ["ECS Task State Change"], "detail": {"clusterArn": [cluster_arn]}}


def queue_attributes(queue: str, rule: str) -> dict[str, str]:
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "EventsFromTheRule",
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue,
                "Condition": {"ArnEquals": {"aws:SourceArn": rule}},
            }
        ],
    }
    return {"MessageRetentionPeriod": RETENTION_SECONDS, "Policy": json.dumps(policy, sort_keys=True)}


def plan_queue(region: str, name: str, attributes: dict[str, str]) -> Step:
    """Plan the observer queue: create it, fix the policy or retention of ours, leave a foreign one."""
    sqs = aws_client("sqs", region)
    kind = "SQS queue (task events)"
    reply = lookup("sqs:GetQueueUrl", QUEUE_MISSING_CODES, sqs.get_queue_url, QueueName=name)

    def create() -> None:
        call("sqs:CreateQueue", sqs.create_queue, QueueName=name, Attributes=attributes, tags=TAGS_MAP)

    if reply is None:
        return Step(kind, name, "create", "", create)
    url = reply["QueueUrl"]
    tags = call("sqs:ListQueueTags", sqs.list_queue_tags, QueueUrl=url).get("Tags", {})
    if not is_managed(tags):
        return Step(kind, name, "foreign", "not created by this project: used as it is")
    current = call("sqs:GetQueueAttributes", sqs.get_queue_attributes, QueueUrl=url, AttributeNames=["All"])
    current_attributes = current.get("Attributes", {})
    differences = [
        key
        for key, value in attributes.items()
        if _normalise(key, current_attributes.get(key)) != _normalise(key, value)
    ]
    if not differences:
        return Step(kind, name, "unchanged")

    def update() -> None:
        call("sqs:SetQueueAttributes", sqs.set_queue_attributes, QueueUrl=url, Attributes=attributes)

    return Step(kind, name, "update", ", ".join(differences), update)


def _normalise(key: str, value: str | None) -> Any:
    if key == "Policy" and value:
        return json.loads(value)
    return value


def plan_rule(region: str, name: str, pattern: dict[str, Any], target_arn: str) -> Step:
    """Plan the EventBridge rule that sends the cluster's task state changes to the queue."""
    events = aws_client("events", region)
    kind = "EventBridge rule (task events)"
    rule = lookup("events:DescribeRule", {"ResourceNotFoundException"}, events.describe_rule, Name=name)
    targets = [{"Id": "observer-queue", "Arn": target_arn}]

    def put() -> None:
        call(
            "events:PutRule",
            events.put_rule,
            Name=name,
            EventPattern=json.dumps(pattern),
            State="ENABLED",
            Description="ECS task state changes for the Prefect ECS worker",
            Tags=TAGS_UPPER,
        )
        call("events:PutTargets", events.put_targets, Rule=name, Targets=targets)

    if rule is None:
        return Step(kind, name, "create", "", put)
    tags = call("events:ListTagsForResource", events.list_tags_for_resource, ResourceARN=rule["Arn"]).get("Tags", [])
    if not is_managed(tag_map(tags)):
        return Step(kind, name, "foreign", "not created by this project: used as it is")
    current_targets = call("events:ListTargetsByRule", events.list_targets_by_rule, Rule=name).get("Targets", [])
    differences = []
    if json.loads(rule.get("EventPattern") or "{}") != pattern:
        differences.append("event pattern")
    if rule.get("State") != "ENABLED":
        differences.append("state")
    if [(t["Id"], t["Arn"]) for t in current_targets] != [(t["Id"], t["Arn"]) for t in targets]:
        differences.append("targets")
    if not differences:
        return Step(kind, name, "unchanged")
    return Step(kind, name, "update", ", ".join(differences), put)


def delete_rule(region: str, name: str) -> bool:
    """Delete the rule and its targets if it is ours; return whether it was deleted."""
    events = aws_client("events", region)
    rule = lookup("events:DescribeRule", {"ResourceNotFoundException"}, events.describe_rule, Name=name)
    if rule is None:
        return False
    tags = call("events:ListTagsForResource", events.list_tags_for_resource, ResourceARN=rule["Arn"]).get("Tags", [])
    if not is_managed(tag_map(tags)):
        return False
    targets = call("events:ListTargetsByRule", events.list_targets_by_rule, Rule=name).get("Targets", [])
    if targets:
        call("events:RemoveTargets", events.remove_targets, Rule=name, Ids=[t["Id"] for t in targets])
    call("events:DeleteRule", events.delete_rule, Name=name)
    return True


def delete_queue(region: str, name: str) -> bool:
    """Delete the queue if it is ours; return whether it was deleted."""
    sqs = aws_client("sqs", region)
    reply = lookup("sqs:GetQueueUrl", QUEUE_MISSING_CODES, sqs.get_queue_url, QueueName=name)
    if reply is None:
        return False
    if not is_managed(call("sqs:ListQueueTags", sqs.list_queue_tags, QueueUrl=reply["QueueUrl"]).get("Tags", {})):
        return False
    call("sqs:DeleteQueue", sqs.delete_queue, QueueUrl=reply["QueueUrl"])
    return True
