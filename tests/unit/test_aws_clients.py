"""The boto3 client cache: one client per service, region and environment, built once."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from meta_flows.aws import clients


@pytest.fixture(autouse=True)
def empty_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clients, "_clients", {})
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)


def test_threads_share_one_client(monkeypatch: pytest.MonkeyPatch) -> None:
    created: list[str] = []
    real_create = clients._create_client

    def counting_create(service: str, region: str) -> Any:
        created.append(service)
        return real_create(service, region)

    monkeypatch.setattr(clients, "_create_client", counting_create)
    start = threading.Barrier(8)
    results: list[Any] = []

    def call() -> None:
        start.wait()
        results.append(clients.aws_client("ecs", "us-east-1"))

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert created == ["ecs"]
    assert len(results) == 8
    assert all(result is results[0] for result in results)


def test_new_endpoint_gets_new_client(monkeypatch: pytest.MonkeyPatch) -> None:
    first = clients.aws_client("ecr", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:10")
    second = clients.aws_client("ecr", "us-east-1")

    assert first is not second
    assert second.meta.endpoint_url == "http://127.0.0.1:10"
    assert clients.aws_client("ecr", "us-east-1") is second


def test_client_region_and_single_attempt() -> None:
    client = clients.aws_client("sts", "eu-west-1")

    assert client.meta.region_name == "eu-west-1"
    assert client.meta.config.retries["total_max_attempts"] == 1
