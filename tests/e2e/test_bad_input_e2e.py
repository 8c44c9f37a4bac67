"""Bad input on the local stack: a clear error naming the setting or file and the fix, and this
session's emulator resources, registry images and Prefect objects unchanged afterwards.

One bootstrap serves every case. Each case runs the product's command line with one input
spoiled, between two snapshots. The cases run three at a time to keep the suite short: none
of them may change anything, so a change made by any case still shows in some case's snapshots.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
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


PARALLEL_CASES = 3


@dataclass
class Case:
    """One spoiled input: the environment and command to run, and a lock the run may create."""

    env: dict[str, str]
    command: list[str]
    created_lock: str | None = None


@dataclass
class Outcome:
    returncode: int
    output: str
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)


def run_case(case: Case, suffix: str, created_locks: set[str]) -> Outcome:
    """Run the case's command between two snapshots.

    A case's `created_lock` names a deploy lock its run may create: a deploy that passes every
    check creates its flow's lock before the build. Cases run side by side, so the snapshots of
    every case leave out all of `created_locks`.
    """

    def snapshot() -> dict[str, Any]:
        taken = take_snapshot(case.env, suffix)
        taken["prefect"]["limits"] = [limit for limit in taken["prefect"]["limits"] if limit[0] not in created_locks]
        return taken

    before = snapshot()
    result = run_command([sys.executable, "-m", *case.command], case.env, timeout=900)
    after = snapshot()
    return Outcome(result.returncode, result.stdout + result.stderr, before, after)


def assert_failed_unchanged(outcome: Outcome, expected: list[str]) -> None:
    assert outcome.returncode == 1, outcome.output
    for text in expected:
        assert text in outcome.output, outcome.output
    assert outcome.after == outcome.before, f"changed: {describe_difference(outcome.before, outcome.after)}"


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


def spoiled_settings(env: dict[str, str], changes: dict[str, str | None]) -> dict[str, str]:
    spoiled = {k: v for k, v in env.items() if k not in changes}
    spoiled.update({k: v for k, v in changes.items() if v is not None})
    return spoiled


def default_vpc_of(env: dict[str, str]) -> str:
    ec2 = boto3.client("ec2", region_name=env["AWS_REGION"], endpoint_url=env["AWS_ENDPOINT_URL"])
    return str(ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"])


def missing_package(suffix: str) -> str:
    return f"meta-flows-no-such-package-{suffix}"


@pytest.fixture(scope="module")
def outcomes(
    session: tuple[dict[str, str], str], foreign_subnet: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Outcome]:
    """Run every case, three at a time, and return each outcome by case id."""
    env, suffix = session
    cases: dict[str, Case] = {
        case_id: Case(spoiled_settings(env, changes), ["meta_flows.bootstrap"])
        for case_id, changes, _ in SETTINGS_CASES
    }
    cases["subnet-outside-vpc"] = Case({**env, "META_FLOWS_SUBNETS": f'["{foreign_subnet}"]'}, ["meta_flows.bootstrap"])

    def project_case(case_id: str, flows: dict[str, dict[str, str]], entries: list[dict[str, Any]], flow: str) -> Case:
        root = copy_project(tmp_path_factory.mktemp(case_id) / "project", flows, entries)
        return Case({**env, "META_FLOWS_PROJECT_ROOT": str(root)}, ["meta_flows.deploy", flow])

    for case_id, flows, entries, flow, _ in DEPLOY_CASES:
        cases[case_id] = project_case(case_id, flows, entries, flow)
    network = {"vpc_id": default_vpc_of(env), "network_configuration": {"subnets": [foreign_subnet]}}
    cases["deploy-subnet-outside-vpc"] = project_case(
        "farnet",
        {"farnet": flow_files("farnet")},
        [entry("farnet", "farnet", work_pool={"job_variables": network})],
        "farnet",
    )
    package = missing_package(suffix)
    cases["missing-package"] = project_case(
        "badreqs",
        {"badreqs": flow_files("badreqs", requirements=f"{package}==1.0\n")},
        [entry("badreqs", "badreqs")],
        "badreqs",
    )
    cases["missing-package"].created_lock = f"deploy-flow-rel-{suffix}--badreqs"

    created_locks = {case.created_lock for case in cases.values() if case.created_lock is not None}
    with ThreadPoolExecutor(PARALLEL_CASES) as pool:
        results = pool.map(lambda case: run_case(case, suffix, created_locks), cases.values())
        return dict(zip(cases, results, strict=True))


@pytest.mark.parametrize(("case", "changes", "expected"), SETTINGS_CASES, ids=[c[0] for c in SETTINGS_CASES])
def test_bootstrap_bad_setting_changes_nothing(
    outcomes: dict[str, Outcome], case: str, changes: dict[str, str | None], expected: list[str]
) -> None:
    assert_failed_unchanged(outcomes[case], expected)


def test_bootstrap_subnet_outside_vpc_changes_nothing(outcomes: dict[str, Outcome], foreign_subnet: str) -> None:
    assert_failed_unchanged(outcomes["subnet-outside-vpc"], [f"subnets ['{foreign_subnet}'] are not in VPC"])


@pytest.mark.parametrize(
    ("case", "flows", "entries", "flow", "expected"), DEPLOY_CASES, ids=[c[0] for c in DEPLOY_CASES]
)
def test_deploy_bad_flow_changes_nothing(
    outcomes: dict[str, Outcome],
    case: str,
    flows: dict[str, dict[str, str]],
    entries: list[dict[str, Any]],
    flow: str,
    expected: list[str],
) -> None:
    assert_failed_unchanged(outcomes[case], expected)


def test_deploy_subnet_outside_vpc_changes_nothing(
    outcomes: dict[str, Outcome], session: tuple[dict[str, str], str], foreign_subnet: str
) -> None:
    default_vpc = default_vpc_of(session[0])

    assert_failed_unchanged(
        outcomes["deploy-subnet-outside-vpc"], [f"subnets ['{foreign_subnet}'] are not in VPC {default_vpc}"]
    )


def test_deploy_missing_package_fails_build_pushes_nothing(
    outcomes: dict[str, Outcome], session: tuple[dict[str, str], str]
) -> None:
    package = missing_package(session[1])
    outcome = outcomes["missing-package"]

    assert_failed_unchanged(
        outcome, ["image build failed", "last build output:", f"No matching distribution found for {package}==1.0"]
    )
    assert "Pushed" not in outcome.output
