"""The settings model: seed-era names, validation messages that name the variable and the fix."""

from pathlib import Path

import pytest

from meta_flows.errors import SettingsError
from meta_flows.settings import load_settings

SETTINGS_VARIABLES = [
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "META_FLOWS_AWS_REGION",
    "ecr_image",
    "cluster",
    "execution_role_arn",
    "task_role_arn",
    "work_queue_name",
    "PREFECT_AWS_ACCESS_KEY_ID",
    "PREFECT_AWS_SECRET_ACCESS_KEY",
    "META_FLOWS_REGISTRY_HOST",
    "META_FLOWS_CPU",
    "META_FLOWS_MEMORY",
    "META_FLOWS_REPOSITORY_PREFIX",
    "META_FLOWS_CLUSTER",
    "META_FLOWS_CONTAINER_MEMORY",
    "META_FLOWS_CA_BUNDLE",
    "META_FLOWS_EXECUTION_ROLE_ARN",
    "META_FLOWS_TASK_ROLE_ARN",
    "META_FLOWS_WORK_QUEUE",
    "META_FLOWS_BASE_IMAGE",
]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in SETTINGS_VARIABLES + ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env file


def test_settings_without_region_names_every_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings()
    message = str(error.value)
    assert "META_FLOWS_AWS_REGION is missing" in message
    assert "AWS_REGION" in message
    assert "AWS_DEFAULT_REGION" in message


def test_settings_seed_era_names_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("ecr_image", "team-flows")
    monkeypatch.setenv("cluster", "data-cluster")
    monkeypatch.setenv("execution_role_arn", "arn:aws:iam::123456789012:role/exec")
    monkeypatch.setenv("task_role_arn", "arn:aws:iam::123456789012:role/task")
    monkeypatch.setenv("work_queue_name", "nightly")
    monkeypatch.setenv("PREFECT_AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("PREFECT_AWS_SECRET_ACCESS_KEY", "secret-example")

    settings = load_settings()

    assert settings.aws_region == "eu-west-1"
    assert settings.repository_prefix == "team-flows"
    assert settings.cluster == "data-cluster"
    assert settings.execution_role_arn == "arn:aws:iam::123456789012:role/exec"
    assert settings.task_role_arn == "arn:aws:iam::123456789012:role/task"
    assert settings.work_queue == "nightly"
    assert settings.aws_secret_access_key is not None
    assert settings.aws_secret_access_key.get_secret_value() == "secret-example"
    assert "secret-example" not in repr(settings)


def test_settings_ecr_image_with_host_splits_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("ecr_image", "123456789012.dkr.ecr.us-east-1.amazonaws.com/team-flows")

    settings = load_settings()

    assert settings.registry_host == "123456789012.dkr.ecr.us-east-1.amazonaws.com"
    assert settings.repository_prefix == "team-flows"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        (
            "META_FLOWS_REPOSITORY_PREFIX",
            "Team-Flows",
            "META_FLOWS_REPOSITORY_PREFIX: 'Team-Flows' is not a valid ECR repository prefix",
        ),
        (
            "execution_role_arn",
            "arn:aws:iam::12:role/x",
            "META_FLOWS_EXECUTION_ROLE_ARN: 'arn:aws:iam::12:role/x' is not an IAM role ARN",
        ),
        ("task_role_arn", "role/x", "META_FLOWS_TASK_ROLE_ARN: 'role/x' is not an IAM role ARN"),
        ("cluster", "my cluster", "META_FLOWS_CLUSTER: 'my cluster' is not an ECS cluster name"),
        ("META_FLOWS_CPU", "300", "META_FLOWS_CPU: 300 is not a Fargate CPU size"),
        (
            "META_FLOWS_CA_BUNDLE",
            "/nonexistent/ca.pem",
            "META_FLOWS_CA_BUNDLE: '/nonexistent/ca.pem' is not a readable file",
        ),
        ("META_FLOWS_PLATFORM", "windows/amd64", "META_FLOWS_PLATFORM:"),
    ],
)
def test_settings_invalid_value_names_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv(variable, value)

    with pytest.raises(SettingsError) as error:
        load_settings()

    assert expected in str(error.value)


def test_settings_fargate_pair_mismatch_names_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("META_FLOWS_CPU", "4096")
    monkeypatch.setenv("META_FLOWS_MEMORY", "2048")

    with pytest.raises(SettingsError) as error:
        load_settings()

    message = str(error.value)
    assert "META_FLOWS_MEMORY=2048 does not pair with META_FLOWS_CPU=4096" in message
    assert "8192 to 30720 MiB in steps of 1024" in message


def test_settings_lone_static_key_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("PREFECT_AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")

    with pytest.raises(SettingsError) as error:
        load_settings()

    assert "PREFECT_AWS_ACCESS_KEY_ID and PREFECT_AWS_SECRET_ACCESS_KEY must be set together" in str(error.value)


def test_settings_error_never_shows_secret_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("PREFECT_AWS_SECRET_ACCESS_KEY", "canary-secret-4711")

    with pytest.raises(SettingsError) as error:
        load_settings()

    assert "canary-secret-4711" not in str(error.value)
    assert error.value.__cause__ is None


def test_settings_container_memory_above_task_memory_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("META_FLOWS_CONTAINER_MEMORY", "4096")

    with pytest.raises(SettingsError) as error:
        load_settings()

    assert "META_FLOWS_CONTAINER_MEMORY=4096 exceeds the task memory META_FLOWS_MEMORY=2048" in str(error.value)


def test_settings_standard_aws_keys_stay_out_of_block(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIADEFAULTCHAIN")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "default-chain-secret")

    settings = load_settings()

    assert settings.aws_access_key_id is None
    assert settings.aws_secret_access_key is None


def test_settings_field_names_are_not_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("CPU", "512")
    monkeypatch.setenv("PLATFORM", "linux/arm64")

    settings = load_settings()

    assert settings.cpu == 1024
    assert settings.platform == "linux/amd64"


def test_settings_log_retention_must_be_cloudwatch_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("META_FLOWS_LOG_RETENTION_DAYS", "31")

    with pytest.raises(SettingsError) as error:
        load_settings()

    assert "META_FLOWS_LOG_RETENTION_DAYS: 31 is not a CloudWatch retention" in str(error.value)


def test_settings_container_secret_must_be_arn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("META_FLOWS_CONTAINER_SECRETS", '{"DB_URL": "plain-value"}')

    with pytest.raises(SettingsError) as error:
        load_settings()

    assert "secret 'DB_URL': 'plain-value' is not a Secrets Manager secret ARN" in str(error.value)


def test_settings_task_statement_needs_effect_action_resource(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("META_FLOWS_TASK_ROLE_STATEMENTS", '[{"Effect": "Allow", "Action": "s3:GetObject"}]')

    with pytest.raises(SettingsError) as error:
        load_settings()

    assert "statement 0 lacks Resource" in str(error.value)


def test_settings_derive_log_group_queue_and_architecture(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("META_FLOWS_CLUSTER", "arn:aws:ecs:us-east-1:123456789012:cluster/data")
    monkeypatch.setenv("META_FLOWS_PLATFORM", "linux/arm64")

    settings = load_settings()

    assert settings.effective_log_group == "/prefect/data"
    assert settings.effective_observer_queue == "ecs-pool-ecs-task-events"
    assert settings.effective_cpu_architecture == "ARM64"
