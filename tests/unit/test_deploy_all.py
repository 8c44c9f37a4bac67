"""deploy-all-flows: its input checks, its outcomes and its summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from meta_flows.deploy_all import (
    FlowOutcome,
    render_summary_markdown,
    render_summary_text,
    select_flows,
    validate_concurrency,
)
from meta_flows.errors import FlowSpecError, MetaFlowsError
from meta_flows.images.engine import push_image

OUTCOMES = [
    FlowOutcome(
        flow="hello",
        status="deployed",
        image="127.0.0.1:5000/p/hello:abc",
        pushed=True,
        bytes_pushed=2048,
        deployment="hello/hello",
        deployment_action="updated",
    ),
    FlowOutcome(flow="broken", status="failed", error="flows/broken/flow.py line 3: syntax error: invalid syntax"),
    FlowOutcome(
        flow="report",
        status="deployed",
        image="127.0.0.1:5000/p/report:def",
        deployment="daily-report/daily",
        deployment_action="unchanged",
    ),
]


@pytest.mark.parametrize("concurrency", [0, 33])
def test_concurrency_out_of_range_rejected(concurrency: int) -> None:
    with pytest.raises(MetaFlowsError) as error:
        validate_concurrency(concurrency)

    assert "use 1 to 32 flows deployed at once" in str(error.value)


def test_select_flows_invalid_name_rejected(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "flows" / "hello").mkdir(parents=True)
    monkeypatch.setenv("META_FLOWS_PROJECT_ROOT", str(tmp_path))
    monkeypatch.setenv("AWS_REGION", "us-east-1")

    with pytest.raises(FlowSpecError) as error:
        select_flows(["hello", "../etc"])

    assert "is not a flow folder name" in str(error.value)


def test_select_flows_defaults_to_every_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("b", "a"):
        (tmp_path / "flows" / name).mkdir(parents=True)
    monkeypatch.setenv("META_FLOWS_PROJECT_ROOT", str(tmp_path))
    monkeypatch.setenv("AWS_REGION", "us-east-1")

    assert select_flows(None) == ["a", "b"]


def test_summary_markdown_lists_failure_first_with_reason() -> None:
    markdown = render_summary_markdown(OUTCOMES)
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and "---" not in line][1:]

    assert "2 deployed, 1 failed." in markdown
    assert rows[0].startswith("| broken | failed |")
    assert "syntax error: invalid syntax" in rows[0]
    assert "| hello | deployed | `127.0.0.1:5000/p/hello:abc` | 2.0 KiB | hello/hello (updated) |" in markdown
    assert "| report | deployed | `127.0.0.1:5000/p/report:def` | no (unchanged) |" in markdown


def test_summary_text_one_line_per_flow() -> None:
    lines = render_summary_text(OUTCOMES).splitlines()

    assert lines[0].split() == [
        "broken",
        "failed",
        "flows/broken/flow.py",
        "line",
        "3:",
        "syntax",
        "error:",
        "invalid",
        "syntax",
    ]
    assert "pushed 2.0 KiB, deployment hello/hello updated" in lines[1]
    assert "image unchanged, deployment daily-report/daily unchanged" in lines[2]
    assert lines[-1] == "2 deployed, 1 failed"


class FakeApi:
    """The push stream of a code-only change: one new layer, two the registry has."""

    def push(self, repository: str, **kwargs: Any) -> list[dict[str, Any]]:
        return [
            {"status": "Preparing", "id": "aaa"},
            {"status": "Pushing", "id": "aaa", "progressDetail": {"current": 512, "total": 1536}},
            {"status": "Pushing", "id": "aaa", "progressDetail": {"current": 1536, "total": 1536}},
            {"status": "Pushed", "id": "aaa"},
            {"status": "Layer already exists", "id": "bbb"},
            {"status": "Layer already exists", "id": "ccc"},
            {"status": "tag: digest: sha256:1 size: 3", "aux": {"Tag": "t", "Digest": "sha256:1", "Size": 3}},
        ]


class FakeClient:
    api = FakeApi()


def test_push_counts_bytes_of_new_layers_only() -> None:
    from pydantic import SecretStr

    from meta_flows.aws.ecr import RegistryLogin

    login = RegistryLogin(username="AWS", password=SecretStr("x"), expires_at=None)  # type: ignore[call-arg]
    result = push_image(FakeClient(), "127.0.0.1:5000/p/hello", "t", login, lambda line: None)  # type: ignore[arg-type]

    assert result.layers_pushed == 1
    assert result.layers_reused == 2
    assert result.bytes_pushed == 1536
    assert result.digest == "sha256:1"
