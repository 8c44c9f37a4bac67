"""Retries, the registry login cache, pre-flight checks and unreachable-service messages."""

from __future__ import annotations

import base64
import logging
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any
from uuid import uuid4

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from pydantic import SecretStr

from blocks.ecs_task_settings import EcsTaskSettings
from meta_flows.aws.ecr import RegistryLogin
from meta_flows.aws.errors import describe_aws_failure
from meta_flows.aws.login_cache import RegistryLoginCache
from meta_flows.aws.retries import LoggedRetries, transient_reason
from meta_flows.errors import DockerUnavailableError, FlowSpecError, PrefectApiError, SettingsError
from meta_flows.images import engine
from meta_flows.pool_template import build_base_job_template, validate_job_variables

UNUSED_PORT = 5049


def error_response(status: int, code: str, message: str = "") -> tuple[Any, dict[str, Any]]:
    return SimpleNamespace(status_code=status), {"Error": {"Code": code, "Message": message}}


@pytest.mark.parametrize(
    ("status", "code", "message", "expected"),
    [
        (400, "ThrottlingException", "Rate exceeded", "ThrottlingException"),
        (400, "Throttling", "Rate exceeded", "Throttling"),
        (500, "ServerException", "", "HTTP 500 ServerException"),
        (503, "", "", "HTTP 503"),
        (
            400,
            "ClientException",
            "Too many concurrent attempts to create a new revision of the specified family.",
            "ClientException (concurrent revisions of one task definition family)",
        ),
    ],
)
def test_transient_reason_for_retryable_answers(status: int, code: str, message: str, expected: str) -> None:
    assert transient_reason(error_response(status, code, message), None) == expected


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (400, "ClientException", "Container.image should not be null or empty."),
        (400, "AccessDeniedException", "not allowed"),
        (400, "InvalidParameterException", "bad"),
        (404, "RepositoryNotFoundException", ""),
    ],
)
def test_transient_reason_none_for_client_errors(status: int, code: str, message: str) -> None:
    assert transient_reason(error_response(status, code, message), None) is None


def test_transient_reason_for_connection_errors() -> None:
    failure = EndpointConnectionError(endpoint_url="http://127.0.0.1:1")

    assert transient_reason(None, failure) == "EndpointConnectionError"
    assert transient_reason(None, ValueError("no")) is None


def test_retry_delay_full_jitter_within_cap() -> None:
    ceilings: list[float] = []
    retries = LoggedRetries(
        "ecs", max_attempts=8, base_delay=0.5, max_delay=3.0, uniform=lambda a, b: ceilings.append(b) or b
    )

    for attempt in range(2, 9):
        retries.delay_before(attempt)

    assert ceilings == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0, 3.0]


def test_retry_logged_with_delay_and_attempt(caplog: pytest.LogCaptureFixture) -> None:
    retries = LoggedRetries("ecr", max_attempts=3, uniform=lambda a, b: 0.25)
    operation = SimpleNamespace(name="CreateRepository")
    throttled = error_response(400, "ThrottlingException", "Rate exceeded")

    with caplog.at_level(logging.INFO, logger="meta_flows.aws.retries"):
        first = retries(attempts=1, response=throttled, operation=operation)
        second = retries(attempts=2, response=throttled, operation=operation)
        last = retries(attempts=3, response=throttled, operation=operation)

    assert first == 0.25
    assert second == 0.25
    assert last is None
    messages = [record.getMessage() for record in caplog.records]
    assert messages[0] == "ecr:CreateRepository failed with ThrottlingException; retrying in 0.25 s (attempt 2/3)"
    assert messages[1] == "ecr:CreateRepository failed with ThrottlingException; retrying in 0.25 s (attempt 3/3)"
    assert messages[2] == "ecr:CreateRepository failed with ThrottlingException on attempt 3/3: giving up"


def test_retry_never_for_client_error() -> None:
    retries = LoggedRetries("ecs", uniform=lambda a, b: 1.0)

    delay = retries(attempts=1, response=error_response(400, "ClusterNotFoundException"), operation=None)

    assert delay is None


def test_throttling_failure_after_retries_explains_rerun() -> None:
    failure = ClientError(
        {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}, "ResponseMetadata": {}},
        "CreateCluster",
    )

    message = str(describe_aws_failure("ecs:CreateCluster", failure))

    assert message.startswith("ecs:CreateCluster failed with ThrottlingException: Rate exceeded")
    assert "still failing after 5 attempts with backoff" in message
    assert "a rerun skips what is in place" in message


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def login_expiring(at: datetime, password: str) -> RegistryLogin:
    return RegistryLogin(username="AWS", password=SecretStr(password), expires_at=at)


def test_login_cache_reuses_token_until_margin() -> None:
    start = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    clock = FakeClock(start)
    issued = iter(["first", "second"])
    cache = RegistryLoginCache(
        lambda: login_expiring(clock.now + timedelta(hours=12), next(issued)), clock, timedelta(minutes=10)
    )

    first = cache.get()
    clock.now = start + timedelta(hours=11, minutes=49)
    reused = cache.get()
    clock.now = start + timedelta(hours=11, minutes=50)
    renewed = cache.get()

    assert first.password.get_secret_value() == "first"
    assert reused is first
    assert renewed.password.get_secret_value() == "second"
    assert cache.fetches == 2


def test_login_cache_keeps_expired_arrival() -> None:
    # The emulator's token expired in 2015 already when it arrives, so its expiry is ignored.
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    issued = iter(["first", "second"])
    cache = RegistryLoginCache(lambda: login_expiring(datetime(2015, 1, 1, tzinfo=UTC), next(issued)), clock)

    first = cache.get()
    clock.now += timedelta(hours=13)
    reused = cache.get()
    cache.reject(first)
    renewed = cache.get()

    assert reused is first
    assert renewed.password.get_secret_value() == "second"
    assert cache.fetches == 2


def test_login_cache_reject_keeps_newer() -> None:
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    issued = iter(["first", "second", "third"])
    cache = RegistryLoginCache(lambda: login_expiring(clock.now + timedelta(hours=12), next(issued)), clock)

    first = cache.get()
    cache.reject(first)
    second = cache.get()
    cache.reject(first)  # a second thread reports the same stale login late

    assert cache.get() is second
    assert cache.fetches == 2


def ecs_template() -> dict[str, Any]:
    settings = EcsTaskSettings(cluster="c", execution_role_arn="arn:aws:iam::123456789012:role/x")
    return build_base_job_template(settings, uuid4())


@pytest.mark.parametrize(
    ("job_variables", "expected"),
    [
        ({"task_definition_arn": "arn:aws:ecs:us-east-1:123456789012:task-definition/x:1"}, "ECS cannot override"),
        ({"image": "x", "task_definition_arn": "arn"}, "'image' is set by build-and-push-image"),
        ({"network_configuration": {"subnets": []}, "vpc_id": "vpc-1"}, "lists no subnets"),
        ({"network_configuration": {"subnets": ["subnet-1"]}}, "needs vpc_id"),
        ({"env.FOO": "bar"}, "contain '.'"),
    ],
)
def test_job_variables_rejected_before_build(job_variables: dict[str, Any], expected: str) -> None:
    with pytest.raises(FlowSpecError, match=expected):
        validate_job_variables("demo", job_variables, ecs_template())


def test_pool_template_has_secrets_and_api_key_arn() -> None:
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prefect-api-key-AbCdEf"
    settings = EcsTaskSettings(
        cluster="c", execution_role_arn="arn:aws:iam::123456789012:role/x", prefect_api_key_secret_arn=arn
    )

    template = build_base_job_template(settings, uuid4())

    properties = template["variables"]["properties"]
    assert properties["prefect_api_key_secret_arn"]["default"] == arn
    assert properties["secrets"]["default"] == []
    container = template["job_configuration"]["task_definition"]["containerDefinitions"][0]
    assert container["secrets"] == "{{ secrets }}"


def test_api_key_without_secret_arn_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    from meta_flows.preflight import check_api_key_handling
    from meta_flows.settings import load_settings

    monkeypatch.setenv("PREFECT_API_KEY", "pnu_" + base64.b16encode(b"unit").decode())
    settings = load_settings(AWS_REGION="us-east-1")

    with pytest.raises(SettingsError, match="META_FLOWS_PREFECT_API_KEY_SECRET_ARN is not"):
        check_api_key_handling(settings)


def test_settings_reject_malformed_vpc_and_secret_arn() -> None:
    from meta_flows.settings import load_settings

    with pytest.raises(SettingsError) as caught:
        load_settings(
            AWS_REGION="us-east-1", META_FLOWS_VPC_ID="default", META_FLOWS_PREFECT_API_KEY_SECRET_ARN="prefect-key"
        )

    assert "META_FLOWS_VPC_ID: 'default' is not a VPC id" in str(caught.value)
    assert "META_FLOWS_PREFECT_API_KEY_SECRET_ARN: 'prefect-key' is not a Secrets Manager secret ARN" in str(
        caught.value
    )


def test_engine_unreachable_names_docker_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")

    with pytest.raises(DockerUnavailableError) as caught:
        engine.connect_engine()

    message = str(caught.value)
    assert "Docker engine not reachable at unix:///nonexistent/docker.sock" in message
    assert "start Docker or set DOCKER_HOST" in message


def test_prefect_api_unreachable_names_url() -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from meta_flows.preflight import require_prefect_api

    url = f"http://127.0.0.1:{UNUSED_PORT}/api"
    with temporary_settings({PREFECT_API_URL: url}), pytest.raises(PrefectApiError) as caught:
        require_prefect_api()

    message = str(caught.value)
    assert f"Prefect API not reachable at PREFECT_API_URL={url}" in message
    assert "start the server or set PREFECT_API_URL" in message


def test_prefect_api_url_unset_named() -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from meta_flows.preflight import require_prefect_api

    with temporary_settings(restore_defaults={PREFECT_API_URL}), pytest.raises(PrefectApiError) as caught:
        require_prefect_api()

    assert "PREFECT_API_URL is not set" in str(caught.value)
