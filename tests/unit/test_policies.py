"""The generated IAM policies: scoped to ARNs, no "*" action, "*" resources only where AWS requires."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from meta_flows.aws.policies import (
    WILDCARD_ONLY_ACTIONS,
    PolicyScope,
    deployer_policy,
    execution_policy,
    task_policy,
    wildcard_findings,
    worker_policy,
)

SCOPE = PolicyScope(
    partition="aws",
    account="123456789012",
    region="eu-west-1",
    repository_prefix="team-flows",
    cluster_name="data",
    log_group="/prefect/data",
    observer_queue="ecs-pool-ecs-task-events",
    execution_role_arn="arn:aws:iam::123456789012:role/data-execution",
    task_role_arn="arn:aws:iam::123456789012:role/data-task",
    secret_arns=(
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf",
        "arn:aws:ssm:eu-west-1:123456789012:parameter/team/token",
    ),
)


def all_policies() -> dict[str, dict]:  # type: ignore[type-arg]
    return {
        "execution": execution_policy(SCOPE),
        "worker": worker_policy(SCOPE),
        "deployer": deployer_policy(SCOPE),
    }


@pytest.mark.parametrize("name", ["execution", "worker", "deployer"])
def test_policy_has_no_wildcard_beyond_aws_limits(name: str) -> None:
    assert wildcard_findings(all_policies()[name]) == []


def test_wildcard_check_flags_star_action_and_resource() -> None:
    policy = {
        "Statement": [
            {"Effect": "Allow", "Action": "ecr:*", "Resource": "arn:aws:ecr:eu-west-1:123456789012:repository/x"},
            {"Effect": "Allow", "Action": ["ecs:RunTask"], "Resource": "*"},
        ]
    }

    findings = wildcard_findings(policy)

    assert "wildcard action 'ecr:*'" in findings
    assert "ecs:RunTask on '*'" in findings


def test_wildcard_only_actions_are_read_or_login_calls() -> None:
    # Each is a call that AWS authorizes on "*" only; none creates or deletes a resource.
    for action in WILDCARD_ONLY_ACTIONS:
        verb = action.split(":")[1]
        assert verb.startswith(("Get", "Describe", "Register", "Deregister")), action


def test_execution_policy_scopes_pull_logs_and_secrets() -> None:
    statements = {s["Sid"]: s for s in execution_policy(SCOPE)["Statement"]}

    assert statements["PullFlowImages"]["Resource"] == "arn:aws:ecr:eu-west-1:123456789012:repository/team-flows/*"
    assert statements["WriteLogs"]["Resource"] == (
        "arn:aws:logs:eu-west-1:123456789012:log-group:/prefect/data:log-stream:*"
    )
    assert statements["ReadContainerSecrets"]["Resource"] == [SCOPE.secret_arns[0]]
    assert statements["ReadContainerParameters"]["Resource"] == [SCOPE.secret_arns[1]]
    assert "logs:CreateLogGroup" not in str(statements)


def test_task_policy_empty_unless_statements_given() -> None:
    statement = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::bucket/*"}

    assert task_policy([]) is None
    assert task_policy([statement]) == {"Version": "2012-10-17", "Statement": [statement]}


def test_worker_policy_passes_only_the_flow_roles() -> None:
    statements = {s["Sid"]: s for s in worker_policy(SCOPE)["Statement"]}

    assert statements["PassTaskRoles"]["Resource"] == [SCOPE.execution_role_arn, SCOPE.task_role_arn]
    assert statements["ObserveTaskEvents"]["Resource"] == (
        "arn:aws:sqs:eu-west-1:123456789012:ecs-pool-ecs-task-events"
    )
    assert statements["DescribeCluster"]["Resource"] == "arn:aws:ecs:eu-west-1:123456789012:cluster/data"


def test_deployer_policy_pushes_to_its_repositories_only() -> None:
    statements = {s["Sid"]: s for s in deployer_policy(SCOPE)["Statement"]}

    assert statements["PushFlowImages"]["Resource"] == "arn:aws:ecr:eu-west-1:123456789012:repository/team-flows/*"
    assert "ecr:PutImage" in statements["PushFlowImages"]["Action"]
    assert "ecr:DeleteRepository" not in statements["PushFlowImages"]["Action"]
    iam_actions = {a for s in statements.values() for a in s["Action"] if a.startswith("iam:")}
    assert iam_actions == {"iam:PassRole"}
    assert "*" not in statements["PassTaskRoles"]["Resource"]
    assert all(":role/" in arn for arn in statements["PassTaskRoles"]["Resource"])


README_POLICY_SCRIPT = """
import json
from meta_flows.aws.policies import deployer_policy, execution_policy, worker_policy
from meta_flows.aws.resources import policy_scope_for
from meta_flows.settings import load_settings

scope = policy_scope_for(load_settings(), "123456789012")
for policy in (execution_policy(scope), worker_policy(scope), deployer_policy(scope)):
    statements = [json.dumps(statement) for statement in policy["Statement"]]
    print('{"Version": "2012-10-17", "Statement": [\\n  ' + ",\\n  ".join(statements) + "\\n]}")
    print("---")
"""


def test_readme_policies_match_generator(tmp_path: Path) -> None:
    """The README prints the policies for the default settings; they must be what the code generates."""
    root = Path(__file__).resolve().parents[2]
    # A clean environment, so the defaults apply whatever the test session has set.
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "AWS_REGION": "us-east-1",
        "PYTHONPATH": str(root),
    }
    result = subprocess.run(
        [sys.executable, "-c", README_POLICY_SCRIPT], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    generated = [block.strip() for block in result.stdout.split("---\n") if block.strip()]
    readme = (root / "README.md").read_text()
    printed = re.findall(r'```json\n(\{"Version": "2012-10-17", "Statement": \[\n.*?\n\]\})\n```', readme, re.S)

    assert len(generated) == 3
    assert printed == generated
