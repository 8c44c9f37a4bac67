"""Deployment diffs, the kept history and push progress: the pure parts."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest

from meta_flows import history
from meta_flows.deployments import DesiredDeployment
from meta_flows.diff import diff_values, render_changes_markdown
from meta_flows.history import (
    HistoryEntry,
    RollbackError,
    find_rollback_target,
    history_block_name,
    protected_lifecycle_rule,
    protected_tag,
    release_protected_tags,
)
from meta_flows.images.progress import PushProgress, format_bytes


def test_diff_descends_into_job_variables() -> None:
    before = {"image": "r/hello:aaa", "env": {"MODE": "a", "KEEP": "1"}}
    after = {"image": "r/hello:bbb", "env": {"MODE": "b", "KEEP": "1"}}

    changes = diff_values("job_variables", before, after)

    assert [c.path for c in changes] == ["job_variables.env.MODE", "job_variables.image"]
    assert changes[1].before == "r/hello:aaa"
    assert changes[1].after == "r/hello:bbb"


def test_diff_of_equal_values_is_empty() -> None:
    assert diff_values("parameters", {"a": 1, "b": [1, 2]}, {"b": [1, 2], "a": 1}) == []


def test_changes_table_escapes_pipes() -> None:
    table = render_changes_markdown(diff_values("description", "a|b", "c"))

    assert "| `description` | `a\\|b` | `c` |" in table


def entry(image: str) -> HistoryEntry:
    desired = DesiredDeployment(
        flow_name="hello",
        name="hello",
        entrypoint="flow.py:hello",
        work_pool_name="ecs",
        work_queue_name="default",
        job_variables={"image": image},
        version=image.rpartition(":")[2],
    )
    return HistoryEntry(recorded_at=dt.datetime.now(dt.UTC), desired=desired)


def test_rollback_target_is_version_before_current() -> None:
    entries = [entry("r/hello:a"), entry("r/hello:b"), entry("r/hello:c")]

    index, target = find_rollback_target(entries, "r/hello:c")

    assert index == 2
    assert target.image == "r/hello:b"


def test_rollback_of_oldest_version_rejected() -> None:
    with pytest.raises(RollbackError, match="no earlier version"):
        find_rollback_target([entry("r/hello:a")], "r/hello:a")


def test_rollback_of_unknown_image_rejected() -> None:
    with pytest.raises(RollbackError, match="not in its kept history"):
        find_rollback_target([entry("r/hello:a"), entry("r/hello:b")], "r/hello:manual")


def test_protected_tag_and_lifecycle_rule_agree() -> None:
    rule = protected_lifecycle_rule()

    owner = hashlib.sha256(b"hello/hello").hexdigest()[:8]
    assert protected_tag("127.0.0.1:5000/p/hello:3f9a1c2b4d5e6f70", "hello/hello") == f"keep-{owner}-3f9a1c2b4d5e6f70"
    assert protected_tag("h/p/hello@sha256:" + "ab" * 32, "hello/hello") == f"keep-{owner}-" + "ab" * 8
    assert protected_tag("h/p/hello:t", "hello/other") != protected_tag("h/p/hello:t", "hello/hello")
    assert rule["selection"]["tagPrefixList"] == ["keep-"]
    assert rule["rulePriority"] == 1


def test_history_block_name_is_a_valid_block_name() -> None:
    assert history_block_name("daily-report/daily") == "history-daily-report-daily"


def test_push_progress_reports_once_per_interval() -> None:
    lines: list[str] = []
    now = [0.0]
    progress = PushProgress(lines.append, interval=5.0, clock=lambda: now[0])

    for current in range(0, 100, 10):
        now[0] += 1.0
        progress.update({"status": "Pushing", "id": "a", "progressDetail": {"current": current, "total": 1024 * 1024}})
    progress.update({"status": "Pushed", "id": "a"})

    assert len(lines) == 2
    assert lines[0].startswith("Pushing: ")
    assert "of 1.0 MiB sent" in lines[0]
    assert format_bytes(512) == "512 B"


class RecordingEcr:
    """An ECR client that records BatchDeleteImage requests and reports every tag removed."""

    def __init__(self) -> None:
        self.requests: list[dict[str, object]] = []

    def batch_delete_image(self, **request: object) -> dict[str, object]:
        self.requests.append(request)
        return {"imageIds": request["imageIds"], "failures": []}


def kept_entry(image: str, protected_image: str | None, full_name: str = "flow/default") -> HistoryEntry:
    flow_name, _, name = full_name.partition("/")
    desired = DesiredDeployment.model_construct(flow_name=flow_name, name=name, job_variables={"image": image})
    return HistoryEntry.model_construct(protected_image=protected_image, desired=desired)


def test_release_keeps_used_and_shared_tags(monkeypatch: pytest.MonkeyPatch) -> None:
    ecr = RecordingEcr()
    monkeypatch.setattr(history, "aws_client", lambda service, region: ecr)
    host = "123456789012.dkr.ecr.us-east-1.amazonaws.com"

    def owned(tag: str) -> HistoryEntry:
        image = f"{host}/p/flow:{tag}"
        return kept_entry(image, f"{host}/p/flow:{protected_tag(image, 'flow/default')}")

    old_format = kept_entry(f"{host}/p/flow:aaa", f"{host}/p/flow:keep-aaa")
    unprotected = kept_entry(f"{host}/p/flow:ddd", None)
    dropped = [old_format, owned("bbb"), owned("ccc"), unprotected]
    # ccc is deployed again by a kept version that has no protected address recorded.
    kept = [kept_entry(f"{host}/p/flow:ccc", None)]

    released = release_protected_tags(dropped, kept, "us-east-1")

    bbb = protected_tag(f"{host}/p/flow:bbb", "flow/default")
    assert ecr.requests == [{"repositoryName": "p/flow", "imageIds": [{"imageTag": bbb}], "registryId": "123456789012"}]
    assert released == [f"{host}/p/flow:{bbb}"]
