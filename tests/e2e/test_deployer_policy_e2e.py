"""The generated deployer policy is enough to deploy: a deploy under a role holding only it.

A second moto on 127.0.0.1:5031 enforces IAM (INITIAL_NO_AUTH_ACTION_COUNT), so every call
the deployer makes is checked against the policy of the role it assumed. The registry and the
Prefect server stay those of the shared stack; only AWS_ENDPOINT_URL points at this moto.

moto 5.2.5 authorizes ECR and STS calls against the resource "*" (it derives no resource ARN
for them), so a statement scoped to repository ARNs would never match there. The role
therefore has the policy's exact actions on "*": this test proves the action list is
complete, and tests/unit/test_policies.py checks the resource scoping.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from meta_flows.aws.policies import PolicyScope, deployer_policy
from tests.e2e.bootstrap_support import bootstrap, session_env
from tests.e2e.conftest import run_command

ENFORCING_PORT = 5031
ACCOUNT = "123456789012"
# Requests moto serves before it starts enforcing IAM: creating the admin user, its policy and key.
NO_AUTH_REQUESTS = 3
ADMIN_POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


def wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"moto did not listen on 127.0.0.1:{port} within {timeout} s")


@pytest.fixture(scope="module")
def enforcing_moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(NO_AUTH_REQUESTS)}
    with open(log, "w") as output:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(ENFORCING_PORT)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port(ENFORCING_PORT, 30)
            yield f"http://127.0.0.1:{ENFORCING_PORT}"
        finally:
            process.terminate()
            process.wait(timeout=30)


def client(service: str, endpoint: str, credentials: dict[str, str]) -> object:
    return boto3.client(service, region_name="us-east-1", endpoint_url=endpoint, **credentials)


def admin_credentials(endpoint: str) -> dict[str, str]:
    """Spend the unauthenticated requests on an administrator user of the emulator."""
    iam = boto3.client("iam", region_name="us-east-1", endpoint_url=endpoint)
    arn = iam.create_user(UserName="emulator-admin")["User"]["Arn"]
    iam.put_user_policy(UserName="emulator-admin", PolicyName="admin", PolicyDocument=json.dumps(ADMIN_POLICY))
    key = iam.create_access_key(UserName="emulator-admin")["AccessKey"]
    return {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"], "arn": arn}


def actions_on_any_resource(policy: dict) -> dict:  # type: ignore[type-arg]
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": s["Action"], "Resource": "*"} for s in policy["Statement"]],
    }


def deployer_credentials(endpoint: str, admin: dict[str, str], prefix: str) -> dict[str, str]:
    """Create the deployer role with the generated policy and assume it."""
    admin = dict(admin)
    admin_arn = admin.pop("arn")
    scope = PolicyScope("aws", ACCOUNT, "us-east-1", prefix, "unused", "unused", "unused", "unused", "unused")
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": admin_arn}, "Action": "sts:AssumeRole"}],
    }
    iam = client("iam", endpoint, admin)
    role = iam.create_role(RoleName="deployer", AssumeRolePolicyDocument=json.dumps(trust))["Role"]  # type: ignore[attr-defined]
    iam.put_role_policy(  # type: ignore[attr-defined]
        RoleName="deployer",
        PolicyName="meta-flows-deployer",
        PolicyDocument=json.dumps(actions_on_any_resource(deployer_policy(scope))),
    )
    assumed = client("sts", endpoint, admin).assume_role(RoleArn=role["Arn"], RoleSessionName="deploy")  # type: ignore[attr-defined]
    return {
        "AWS_ACCESS_KEY_ID": assumed["Credentials"]["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": assumed["Credentials"]["SecretAccessKey"],
        "AWS_SESSION_TOKEN": assumed["Credentials"]["SessionToken"],
    }


def test_deploy_under_deployer_policy_only(enforcing_moto: str) -> None:
    env = session_env("iam")
    env["AWS_ENDPOINT_URL"] = enforcing_moto
    admin = admin_credentials(enforcing_moto)
    admin_env = {
        **env,
        "AWS_ACCESS_KEY_ID": admin["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": admin["aws_secret_access_key"],
    }
    admin_env.pop("AWS_SESSION_TOKEN", None)
    admin_keys = {k: v for k, v in admin.items() if k != "arn"}
    created = bootstrap(admin_env)
    assert created.returncode == 0, created.stdout + created.stderr
    deployer = deployer_credentials(enforcing_moto, admin, env["META_FLOWS_REPOSITORY_PREFIX"])
    deployer_env = {**env, **deployer}
    denied_ecr = boto3.client(
        "ecr",
        region_name="us-east-1",
        endpoint_url=enforcing_moto,
        aws_access_key_id=deployer["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=deployer["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=deployer["AWS_SESSION_TOKEN"],
    )

    # Enforcement is on: an action outside the policy is denied.
    with pytest.raises(ClientError) as denied:
        denied_ecr.delete_repository(repositoryName=f"{env['META_FLOWS_REPOSITORY_PREFIX']}/hello", force=True)
    assert denied.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403

    # The deployer creates a missing repository itself: remove the one bootstrap made.
    client("ecr", enforcing_moto, admin_keys).delete_repository(  # type: ignore[attr-defined]
        repositoryName=f"{env['META_FLOWS_REPOSITORY_PREFIX']}/hello", force=True
    )

    deployed = run_command([sys.executable, "-m", "meta_flows.deploy", "hello"], deployer_env, timeout=900)

    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert "deployment: hello/hello-iam-" in deployed.stdout
    assert "outcome:    built and pushed" in deployed.stdout
    tags = client("ecr", enforcing_moto, admin_keys).list_tags_for_resource(  # type: ignore[attr-defined]
        resourceArn=f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/{env['META_FLOWS_REPOSITORY_PREFIX']}/hello"
    )["tags"]
    assert {"Key": "managed-by", "Value": "meta-flows"} in tags
