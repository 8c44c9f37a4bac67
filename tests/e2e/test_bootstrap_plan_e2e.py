"""bootstrap-pool's plan and apply on the local stack: dry run, counted idempotency, drift,
foreign resources, teardown. Each test session uses names of its own."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests

from tests.e2e.bootstrap_support import (
    Counters,
    assert_prefect_unchanged,
    aws,
    aws_snapshot,
    bootstrap,
    mutating_aws_calls,
    prefect_object_writes,
    prefect_snapshot,
    rows_of,
    session_env,
    teardown,
)
from tests.e2e.helpers import api_request

UNTAGGED = "not created by this project"


@pytest.fixture(scope="module")
def counters(stack_env: dict[str, str]) -> Iterator[Counters]:
    with Counters(stack_env) as started:
        yield started


@pytest.fixture(scope="module")
def plan_env(stack_env: dict[str, str]) -> Iterator[dict[str, str]]:
    env = session_env("plan")
    yield env
    teardown(env)


def test_dry_run_on_empty_account_changes_nothing(plan_env: dict[str, str], counters: Counters) -> None:
    aws_before, prefect_before = aws_snapshot(plan_env), prefect_snapshot(plan_env)
    counters.clear()

    result = bootstrap(counters.route(plan_env), "--dry-run")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Dry run: nothing was created or changed." in result.stdout
    rows = rows_of(result.stdout)
    for kind in (
        "ECS cluster",
        "CloudWatch log group",
        "IAM execution role",
        "IAM task role",
        "IAM worker role",
        "ECR repository",
        "SQS queue (task events)",
        "EventBridge rule (task events)",
        "credentials block",
        "ECS task settings block",
        "work pool (ecs)",
        "work pool (process)",
    ):
        assert any(k == kind and action == "create" for (k, _), action in rows.items()), (kind, result.stdout)
    assert any(k == "deployment" for k, _ in rows)
    assert mutating_aws_calls(counters.aws.requests) == []
    assert prefect_object_writes(counters.prefect.requests) == []
    assert aws_snapshot(plan_env) == aws_before
    assert_prefect_unchanged(prefect_before, prefect_snapshot(plan_env))


def test_second_bootstrap_makes_no_write(plan_env: dict[str, str], counters: Counters) -> None:
    first = bootstrap(plan_env)
    assert first.returncode == 0, first.stdout + first.stderr
    counters.clear()

    second = bootstrap(counters.route(plan_env))

    assert second.returncode == 0, second.stdout + second.stderr
    assert set(rows_of(second.stdout).values()) == {"unchanged"}, second.stdout
    assert "Nothing to do: every item is unchanged." in second.stdout
    assert counters.aws.requests, "no AWS request went through the counting proxy"
    assert counters.prefect.requests, "no Prefect request went through the counting proxy"
    assert mutating_aws_calls(counters.aws.requests) == []
    assert prefect_object_writes(counters.prefect.requests) == []


def test_first_bootstrap_tags_and_configures_resources(plan_env: dict[str, str]) -> None:
    cluster, prefix = plan_env["META_FLOWS_CLUSTER"], plan_env["META_FLOWS_REPOSITORY_PREFIX"]
    ecr = aws(plan_env, "ecr")
    repository = ecr.describe_repositories(repositoryNames=[f"{prefix}/hello"])["repositories"][0]
    lifecycle = json.loads(ecr.get_lifecycle_policy(repositoryName=f"{prefix}/hello")["lifecyclePolicyText"])
    group = aws(plan_env, "logs").describe_log_groups(logGroupNamePrefix=f"/prefect/{cluster}")["logGroups"][0]
    role = aws(plan_env, "iam").get_role(RoleName=f"{cluster}-task")["Role"]

    assert repository["imageTagMutability"] == "IMMUTABLE"
    assert repository["imageScanningConfiguration"]["scanOnPush"] is True
    assert lifecycle["rules"][0]["selection"]["tagPrefixList"] == ["keep-"]
    assert lifecycle["rules"][1]["selection"]["countNumber"] == 30
    assert group["retentionInDays"] == 30
    assert {"Key": "managed-by", "Value": "meta-flows"} in role["Tags"]
    assert aws(plan_env, "iam").list_role_policies(RoleName=f"{cluster}-task")["PolicyNames"] == []
    assert aws(plan_env, "iam").list_users()["Users"] == [] or all(
        not u["UserName"].startswith(cluster) for u in aws(plan_env, "iam").list_users()["Users"]
    )


def test_dry_run_after_drift_plans_update(plan_env: dict[str, str], counters: Counters) -> None:
    cluster, prefix = plan_env["META_FLOWS_CLUSTER"], plan_env["META_FLOWS_REPOSITORY_PREFIX"]
    aws(plan_env, "logs").put_retention_policy(logGroupName=f"/prefect/{cluster}", retentionInDays=7)
    aws(plan_env, "ecr").put_image_tag_mutability(repositoryName=f"{prefix}/hello", imageTagMutability="MUTABLE")
    aws_before, prefect_before = aws_snapshot(plan_env), prefect_snapshot(plan_env)
    counters.clear()

    planned = bootstrap(counters.route(plan_env), "--dry-run")

    assert planned.returncode == 0, planned.stdout + planned.stderr
    rows = rows_of(planned.stdout)
    assert rows[("CloudWatch log group", f"/prefect/{cluster}")] == "update"
    assert rows[("ECR repository", f"{prefix}/hello")] == "update"
    assert "retention 7 -> 30 days" in planned.stdout
    assert mutating_aws_calls(counters.aws.requests) == []
    assert prefect_object_writes(counters.prefect.requests) == []
    assert aws_snapshot(plan_env) == aws_before
    assert_prefect_unchanged(prefect_before, prefect_snapshot(plan_env))

    applied = bootstrap(plan_env)

    assert rows_of(applied.stdout)[("CloudWatch log group", f"/prefect/{cluster}")] == "updated"
    assert aws_snapshot(plan_env)["log_groups"] == [(f"/prefect/{cluster}", 30)]
    assert (f"{prefix}/hello", "IMMUTABLE") in aws_snapshot(plan_env)["repositories"]


def create_foreign_resources(env: dict[str, str]) -> None:
    """Create, without the managed-by tag, every AWS resource bootstrap would otherwise create."""
    cluster, prefix = env["META_FLOWS_CLUSTER"], env["META_FLOWS_REPOSITORY_PREFIX"]
    queue = f"{env['META_FLOWS_WORK_POOL']}-ecs-task-events"
    trust = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"}
            ],
        }
    )
    aws(env, "ecs").create_cluster(clusterName=cluster)
    aws(env, "logs").create_log_group(logGroupName=f"/prefect/{cluster}")
    aws(env, "logs").put_retention_policy(logGroupName=f"/prefect/{cluster}", retentionInDays=7)
    for suffix in ("execution", "task", "worker"):
        aws(env, "iam").create_role(RoleName=f"{cluster}-{suffix}", AssumeRolePolicyDocument=trust)
    for flow in ("hello", "report"):
        aws(env, "ecr").create_repository(repositoryName=f"{prefix}/{flow}")
    aws(env, "sqs").create_queue(QueueName=queue)
    aws(env, "events").put_rule(Name=queue, EventPattern=json.dumps({"source": ["aws.ecs"]}))


def test_foreign_resources_are_used_and_kept(stack_env: dict[str, str]) -> None:
    env = session_env("foreign")
    create_foreign_resources(env)
    pool_url = f"{env['PREFECT_API_URL']}/work_pools/"
    api_request(env, "POST", "/work_pools/", {"name": env["META_FLOWS_WORK_POOL"], "type": "ecs"})
    before = aws_snapshot(env)

    try:
        result = bootstrap(env)
        removed = teardown(env)
        pool_after = requests.get(f"{pool_url}{env['META_FLOWS_WORK_POOL']}", timeout=10)
    finally:
        requests.delete(f"{pool_url}{env['META_FLOWS_WORK_POOL']}", timeout=10)

    assert result.returncode == 0, result.stdout + result.stderr
    rows = rows_of(result.stdout)
    aws_kinds = {
        "ECS cluster",
        "CloudWatch log group",
        "IAM execution role",
        "IAM task role",
        "IAM worker role",
        "ECR repository",
        "SQS queue (task events)",
        "EventBridge rule (task events)",
    }
    aws_rows = {key: action for key, action in rows.items() if key[0] in aws_kinds}
    assert len(aws_rows) == 9, result.stdout
    assert set(aws_rows.values()) == {"foreign"}, result.stdout
    assert UNTAGGED in result.stdout
    assert rows[("work pool (ecs)", env["META_FLOWS_WORK_POOL"])] == "foreign"
    assert pool_after.status_code == 200
    assert removed.returncode == 0, removed.stdout + removed.stderr
    after = aws_snapshot(env)
    assert after == before
    assert after["log_groups"] == [(f"/prefect/{env['META_FLOWS_CLUSTER']}", 7)]


def test_teardown_removes_ours_in_order(stack_env: dict[str, str]) -> None:
    env = session_env("teardown")
    created = bootstrap(env)
    assert created.returncode == 0, created.stdout + created.stderr

    removed = teardown(env)

    assert removed.returncode == 0, removed.stdout + removed.stderr
    snapshot = aws_snapshot(env)
    assert [c["status"] for c in snapshot["clusters"]] in ([], ["INACTIVE"])
    assert snapshot["repositories"] == []
    assert snapshot["roles"] == []
    assert snapshot["log_groups"] == []
    assert snapshot["queues"] == []
    assert snapshot["rules"] == []
    lines = removed.stdout.splitlines()
    order = [
        next(i for i, line in enumerate(lines) if line.startswith(kind))
        for kind in (
            "work pool",
            "EventBridge rule",
            "SQS queue",
            "ECR repository",
            "IAM execution role",
            "ECS cluster",
        )
    ]
    assert order == sorted(order)


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("META_FLOWS_SUBNETS", '["subnet-00000000000000000"]', "subnets ['subnet-00000000000000000'] are not in VPC"),
        (
            "META_FLOWS_SECURITY_GROUPS",
            '["sg-00000000000000000"]',
            "security groups ['sg-00000000000000000'] do not exist in VPC",
        ),
    ],
)
def test_invalid_network_fails_before_any_change(
    stack_env: dict[str, str], counters: Counters, variable: str, value: str, expected: str
) -> None:
    env = session_env("network")
    env[variable] = value
    counters.clear()

    result = bootstrap(counters.route(env))

    assert result.returncode == 1
    assert expected in result.stderr
    assert mutating_aws_calls(counters.aws.requests) == []
    assert prefect_object_writes(counters.prefect.requests) == []


def test_subnet_outside_vpc_is_rejected(stack_env: dict[str, str]) -> None:
    env = session_env("vpc")
    ec2 = aws(env, "ec2")
    other_vpc = ec2.create_vpc(CidrBlock="10.251.0.0/16")["Vpc"]["VpcId"]
    default_subnet = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"][0]
    env["META_FLOWS_VPC_ID"] = other_vpc
    env["META_FLOWS_SUBNETS"] = json.dumps([default_subnet["SubnetId"]])

    try:
        result = bootstrap(env)
    finally:
        ec2.delete_vpc(VpcId=other_vpc)

    assert result.returncode == 1
    assert f"are not in VPC {other_vpc}" in result.stderr
