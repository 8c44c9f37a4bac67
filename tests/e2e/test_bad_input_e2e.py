"""Bad input on the local stack: a clear error naming the setting or file and the fix, and this
session's emulator resources, registry images and Prefect objects unchanged afterwards.

One bootstrap serves every case; each case runs the product's command line with one input
spoiled and compares snapshots taken before and after.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.e2e.conftest import run_command
from tests.e2e.reliability_support import bootstrap, copy_project, flow_files, session_env
from tests.support.snapshot import describe_difference, take_snapshot

REGION_VARIABLES = ("AWS_REGION", "AWS_DEFAULT_REGION", "META_FLOWS_AWS_REGION")


@pytest.fixture(scope="module")
def session(stack_env: dict[str, str]) -> Iterator[tuple[dict[str, str], str]]:
    env, suffix = session_env(stack_env, "bad")
    bootstrap(env)
    yield env, suffix


@pytest.fixture(scope="module")
def foreign_subnet(session: tuple[dict[str, str], str]) -> Iterator[str]:
    """A subnet of a second VPC, which is not the default VPC the tasks use."""
    env, suffix = session
    ec2 = boto3.client("ec2", region_name=env["AWS_REGION"], endpoint_url=env["AWS_ENDPOINT_URL"])
    vpc = ec2.create_vpc(CidrBlock="10.77.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.77.1.0/24")["Subnet"]["SubnetId"]
    yield subnet
    ec2.delete_subnet(SubnetId=subnet)
    ec2.delete_vpc(VpcId=vpc)


def assert_fails_unchanged(
    env: dict[str, str], suffix: str, command: list[str], expected: list[str], created_lock: str | None = None
) -> str:
    """Run `command`, expect exit 1 and each text of `expected`, and compare snapshots.

    `created_lock` names a deploy lock the run may create: a deploy that passes every check
    creates its flow's lock before the build.
    """
    before = take_snapshot(env, suffix)
    result = run_command([sys.executable, "-m", *command], env, timeout=900)
    after = take_snapshot(env, suffix)
    if created_lock is not None:
        after["prefect"]["limits"] = [limit for limit in after["prefect"]["limits"] if limit[0] != created_lock]
    output = result.stdout + result.stderr

    assert result.returncode == 1, output
    for text in expected:
        assert text in output, output
    assert after == before, f"changed: {describe_difference(before, after)}"
    return output


SETTINGS_CASES: list[tuple[str, dict[str, str | None], list[str]]] = [
    (
        "fargate-pair",
        {"META_FLOWS_CPU": "4096", "META_FLOWS_MEMORY": "2048"},
        ["META_FLOWS_MEMORY=2048 does not pair with META_FLOWS_CPU=4096", "use 8192 to 30720 MiB in steps of 1024"],
    ),
    (
        "upper-case-repository",
        {"META_FLOWS_REPOSITORY_PREFIX": "Flows/Team"},
        ["META_FLOWS_REPOSITORY_PREFIX: 'Flows/Team' is not a valid ECR repository prefix", "lower-case"],
    ),
    (
        "execution-role-arn",
        {"META_FLOWS_EXECUTION_ROLE_ARN": "arn:aws:iam::1234:role/x"},
        ["META_FLOWS_EXECUTION_ROLE_ARN: 'arn:aws:iam::1234:role/x' is not an IAM role ARN"],
    ),
    (
        "task-role-arn",
        {"META_FLOWS_TASK_ROLE_ARN": "role/flows"},
        ["META_FLOWS_TASK_ROLE_ARN: 'role/flows' is not an IAM role ARN"],
    ),
    (
        "region-missing",
        dict.fromkeys(REGION_VARIABLES),
        ["META_FLOWS_AWS_REGION is missing: set META_FLOWS_AWS_REGION or AWS_REGION or AWS_DEFAULT_REGION"],
    ),
    ("prefect-api-url-missing", {"PREFECT_API_URL": None}, ["PREFECT_API_URL is not set"]),
    (
        "secret-key-missing",
        {"PREFECT_AWS_ACCESS_KEY_ID": "AKIAEXAMPLE"},
        ["PREFECT_AWS_ACCESS_KEY_ID and PREFECT_AWS_SECRET_ACCESS_KEY must be set together"],
    ),
    (
        "access-key-missing",
        {"PREFECT_AWS_SECRET_ACCESS_KEY": "example-secret"},
        ["PREFECT_AWS_ACCESS_KEY_ID and PREFECT_AWS_SECRET_ACCESS_KEY must be set together"],
    ),
    (
        "security-group-missing",
        {"META_FLOWS_SECURITY_GROUPS": '["sg-0123456789abcdef0"]'},
        ["security groups ['sg-0123456789abcdef0'] do not exist in VPC"],
    ),
    (
        "api-key-in-plain-environment",
        {"PREFECT_API_KEY": "pnu_example"},
        ["PREFECT_API_KEY is set but META_FLOWS_PREFECT_API_KEY_SECRET_ARN is not"],
    ),
]


@pytest.mark.parametrize(("case", "changes", "expected"), SETTINGS_CASES, ids=[c[0] for c in SETTINGS_CASES])
def test_bootstrap_bad_setting_changes_nothing(
    session: tuple[dict[str, str], str], case: str, changes: dict[str, str | None], expected: list[str]
) -> None:
    env, suffix = session
    spoiled = {k: v for k, v in env.items() if k not in changes}
    spoiled.update({k: v for k, v in changes.items() if v is not None})

    assert_fails_unchanged(spoiled, suffix, ["meta_flows.bootstrap"], expected)


def test_bootstrap_subnet_outside_vpc_changes_nothing(session: tuple[dict[str, str], str], foreign_subnet: str) -> None:
    env, suffix = session

    assert_fails_unchanged(
        {**env, "META_FLOWS_SUBNETS": f'["{foreign_subnet}"]'},
        suffix,
        ["meta_flows.bootstrap"],
        [f"subnets ['{foreign_subnet}'] are not in VPC"],
    )


def entry(name: str, folder: str, function: str = "main", **extra: Any) -> dict[str, Any]:
    return {"name": name, "entrypoint": f"flows/{folder}/flow.py:{function}", **extra}


DEPLOY_CASES: list[tuple[str, dict[str, dict[str, str]], list[dict[str, Any]], str, list[str]]] = [
    ("folder-missing", {}, [], "nope", ["flow folder flows/nope not found; available flows: hello, report"]),
    (
        "function-missing",
        {"lost": flow_files("lost", function="main")},
        [entry("lost", "lost", function="missing")],
        "lost",
        ["flows/lost/flow.py has no function 'missing': fix the entrypoint in prefect.yaml"],
    ),
    (
        "syntax-error",
        {"broken": {"flow.py": "from prefect import flow\n\n@flow\ndef main(:\n    pass\n"}},
        [entry("broken", "broken")],
        "broken",
        ["flows/broken/flow.py line 4: syntax error"],
    ),
    (
        "dotted-job-variable",
        {"dotted": flow_files("dotted")},
        [entry("dotted", "dotted", work_pool={"job_variables": {"env.FOO": "bar"}})],
        "dotted",
        ["job variable keys ['env.FOO'] contain '.'", "env: {FOO: bar}"],
    ),
    (
        "unknown-job-variable",
        {"unknown": flow_files("unknown")},
        [entry("unknown", "unknown", work_pool={"job_variables": {"cpus": 2}})],
        "unknown",
        ["unknown job variables ['cpus']"],
    ),
    (
        "image-with-task-definition",
        {"fixed": flow_files("fixed")},
        [
            entry(
                "fixed",
                "fixed",
                work_pool={
                    "job_variables": {"task_definition_arn": "arn:aws:ecs:us-east-1:123456789012:task-definition/x:1"}
                },
            )
        ],
        "fixed",
        ["ECS cannot override the image of a fixed task definition", "remove task_definition_arn"],
    ),
    (
        "empty-subnet-list",
        {"nonet": flow_files("nonet")},
        [
            entry(
                "nonet",
                "nonet",
                work_pool={"job_variables": {"vpc_id": "vpc-1", "network_configuration": {"subnets": []}}},
            )
        ],
        "nonet",
        ["job variable network_configuration lists no subnets"],
    ),
]


@pytest.mark.parametrize(
    ("case", "flows", "entries", "flow", "expected"), DEPLOY_CASES, ids=[c[0] for c in DEPLOY_CASES]
)
def test_deploy_bad_flow_changes_nothing(
    session: tuple[dict[str, str], str],
    tmp_path: Path,
    case: str,
    flows: dict[str, dict[str, str]],
    entries: list[dict[str, Any]],
    flow: str,
    expected: list[str],
) -> None:
    env, suffix = session
    root = copy_project(tmp_path / "project", flows, entries)

    assert_fails_unchanged({**env, "META_FLOWS_PROJECT_ROOT": str(root)}, suffix, ["meta_flows.deploy", flow], expected)


def test_deploy_subnet_outside_vpc_changes_nothing(
    session: tuple[dict[str, str], str], foreign_subnet: str, tmp_path: Path
) -> None:
    env, suffix = session
    ec2 = boto3.client("ec2", region_name=env["AWS_REGION"], endpoint_url=env["AWS_ENDPOINT_URL"])
    default_vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    variables = {"vpc_id": default_vpc, "network_configuration": {"subnets": [foreign_subnet]}}
    root = copy_project(
        tmp_path / "project",
        {"farnet": flow_files("farnet")},
        [entry("farnet", "farnet", work_pool={"job_variables": variables})],
    )

    assert_fails_unchanged(
        {**env, "META_FLOWS_PROJECT_ROOT": str(root)},
        suffix,
        ["meta_flows.deploy", "farnet"],
        [f"subnets ['{foreign_subnet}'] are not in VPC {default_vpc}"],
    )


def test_deploy_missing_package_fails_build_pushes_nothing(session: tuple[dict[str, str], str], tmp_path: Path) -> None:
    env, suffix = session
    package = f"meta-flows-no-such-package-{suffix}"
    root = copy_project(
        tmp_path / "project",
        {"badreqs": flow_files("badreqs", requirements=f"{package}==1.0\n")},
        [entry("badreqs", "badreqs")],
    )

    output = assert_fails_unchanged(
        {**env, "META_FLOWS_PROJECT_ROOT": str(root)},
        suffix,
        ["meta_flows.deploy", "badreqs"],
        ["image build failed", "last build output:", f"No matching distribution found for {package}==1.0"],
        created_lock=f"deploy-flow-rel-{suffix}--badreqs",
    )

    assert "Pushed" not in output
