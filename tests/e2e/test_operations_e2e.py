"""End to end on the local stack: artifacts, diffs, dry run, declarative schedules, rollback, smoke runs.

The tests work on a session-unique copy of the project (see project_copy.py). They run in file
order, each building on the one before.
"""

from __future__ import annotations

import collections
import json
import re
from typing import Any

import pytest
import requests

from meta_flows.history import protected_tag
from tests.e2e.conftest import wait_for
from tests.e2e.helpers import (
    api_get,
    api_request,
    create_flow_run,
    read_deployment,
    registry_tags,
    runner_record,
    wait_for_final_state,
)
from tests.e2e.project_copy import (
    Project,
    latest_artifact,
    make_project,
    output_of,
)

RUN_TIMEOUT = 300


@pytest.fixture(scope="module")
def project(stack_env: dict[str, str], workers: Any, tmp_path_factory: pytest.TempPathFactory) -> Project:
    return make_project(stack_env, tmp_path_factory)


def history_entries(env: dict[str, str], full_name: str) -> list[dict[str, Any]]:
    slug = re.sub(r"[^a-z0-9]+", "-", full_name.lower()).strip("-")
    block = api_get(env, f"/block_types/slug/meta-flows-deployment-history/block_documents/name/history-{slug}")
    return block["data"]["entries"]  # type: ignore[no-any-return]


def scheduled_start_times(env: dict[str, str], deployment_id: str) -> list[str]:
    reply = requests.post(
        f"{env['PREFECT_API_URL']}/flow_runs/filter",
        json={"flow_runs": {"deployment_id": {"any_": [deployment_id]}, "state": {"type": {"any_": ["SCHEDULED"]}}}},
        timeout=10,
    )
    reply.raise_for_status()
    return [run["expected_start_time"] for run in reply.json()]


def test_deploy_with_smoke_run_leaves_artifacts(project: Project) -> None:
    result = project.deploy("hello", "--smoke", '{"name": "smoke"}', "--smoke-timeout", str(RUN_TIMEOUT))

    assert result.returncode == 0, output_of(result)
    assert re.search(r"^smoke run:\s+Completed in ", result.stdout, re.M), result.stdout
    image = read_deployment(project.env, project.hello)["job_variables"]["image"]
    project.images.append(image)
    image_artifact = latest_artifact(project.env, "image-hello", image)["data"]
    assert "| platform | linux/amd64 |" in image_artifact
    assert re.search(r"\| size \| [\d.]+ MiB compressed \|", image_artifact)
    assert "| build seconds |" in image_artifact
    assert "| push seconds |" in image_artifact
    deploy_artifact = latest_artifact(project.env, "deploy-hello", project.hello)["data"]
    assert "| action | created |" in deploy_artifact
    smoke_artifact = latest_artifact(project.env, "smoke-run", "Completed", project.suffix)["data"]
    assert "| final state | Completed |" in smoke_artifact


def test_kept_image_gets_protected_tag(project: Project) -> None:
    repository = f"{project.env['META_FLOWS_REPOSITORY_PREFIX']}/hello"

    assert protected_tag(project.images[0], project.hello) in registry_tags(project.env, repository)
    assert [e["desired"]["job_variables"]["image"] for e in history_entries(project.env, project.hello)] == [
        project.images[0]
    ]


def test_register_dry_run_shows_diff_writes_nothing(project: Project) -> None:
    before = read_deployment(project.env, project.hello)
    project.edit_entry("hello", parameters={"name": "dry run"})

    result = project.run_flow(
        "register", f"register_deployment(flow='hello', image={project.images[0]!r}, dry_run=True)"
    )

    assert result.returncode == 0, output_of(result)
    after = read_deployment(project.env, project.hello)
    assert after["updated"] == before["updated"]
    assert after["parameters"] == before["parameters"]
    artifact = latest_artifact(project.env, "deployment-hello", project.hello, "dry run: nothing written")["data"]
    assert "| `parameters.name` | `ECS` | `dry run` |" in artifact


def test_schedule_paused_in_ui_stays_paused(project: Project) -> None:
    project.edit_entry("hello", schedules=[{"interval": 3600, "slug": "hourly"}])
    assert project.deploy("hello").returncode == 0
    deployment = read_deployment(project.env, project.hello)
    [schedule] = deployment["schedules"]
    assert schedule["active"] is True
    api_request(project.env, "PATCH", f"/deployments/{deployment['id']}/schedules/{schedule['id']}", {"active": False})
    project.edit_entry("hello", parameters={"name": "paused"})

    result = project.deploy("hello")

    assert result.returncode == 0, output_of(result)
    [after] = read_deployment(project.env, project.hello)["schedules"]
    assert after["id"] == schedule["id"]
    assert after["active"] is False


def test_explicit_active_wins_and_keeps_schedule_id(project: Project) -> None:
    project.edit_entry("hello", schedules=[{"interval": 3600, "slug": "hourly", "active": True}])
    schedule_id = read_deployment(project.env, project.hello)["schedules"][0]["id"]

    assert project.deploy("hello").returncode == 0
    project.edit_entry("hello", parameters={"name": "active"})
    assert project.deploy("hello").returncode == 0

    deployment = read_deployment(project.env, project.hello)
    [schedule] = deployment["schedules"]
    assert schedule["id"] == schedule_id
    assert schedule["active"] is True
    starts = scheduled_start_times(project.env, deployment["id"])
    duplicates = [time for time, count in collections.Counter(starts).items() if count > 1]
    assert duplicates == []


def test_empty_schedule_list_removes_schedules(project: Project) -> None:
    project.edit_entry("hello", schedules=[])

    result = project.deploy("hello")

    assert result.returncode == 0, output_of(result)
    assert read_deployment(project.env, project.hello)["schedules"] == []
    artifact = latest_artifact(project.env, "deployment-hello", project.hello)["data"]
    assert "| `schedules.hourly` |" in artifact


def test_code_change_redeploy_diff_shows_image(project: Project) -> None:
    flow_file = project.root / "flows" / "hello" / "flow.py"
    flow_file.write_text(flow_file.read_text() + "\n# A code change, so the image tag changes.\n")

    result = project.deploy("hello")

    assert result.returncode == 0, output_of(result)
    image = read_deployment(project.env, project.hello)["job_variables"]["image"]
    assert image != project.images[0]
    project.images.append(image)
    artifact = latest_artifact(project.env, "deployment-hello", image)["data"]
    assert f"| `job_variables.image` | `{project.images[0]}` | `{image}` |" in artifact
    assert "| `version` |" in artifact


def test_rollback_restores_previous_image_and_runs(project: Project) -> None:
    entries_before = history_entries(project.env, project.hello)
    previous = entries_before[-2]["desired"]

    result = project.run_flow("rollback", "rollback_deployment(flow='hello')")

    assert result.returncode == 0, output_of(result)
    deployment = read_deployment(project.env, project.hello)
    assert deployment["job_variables"]["image"] == project.images[0]
    assert deployment["parameters"] == previous["parameters"]
    assert len(history_entries(project.env, project.hello)) == len(entries_before) - 1
    # The version rolled back from left the history, so rollback requested ECR to remove its
    # keep- tag. On the local stack, the image is in the registry, not in the emulator's ECR.
    released_tag = entries_before[-1]["protected_image"].rpartition(":")[2]
    assert f"Tag {released_tag} is not in ECR repository" in output_of(result)
    assert entries_before[-2]["protected_image"].rpartition(":")[2] not in output_of(result)
    artifact = latest_artifact(project.env, "rollback-hello", project.hello)["data"]
    assert f"| `job_variables.image` | `{project.images[1]}` | `{project.images[0]}` |" in artifact
    flow_run_id = create_flow_run(project.env, deployment["id"], {})
    flow_run = wait_for_final_state(project.env, flow_run_id, RUN_TIMEOUT)
    assert flow_run["state_type"] == "COMPLETED"
    record = wait_for(lambda: runner_record(project.env, flow_run_id), 30, "runner record of the rolled-back run")
    assert record["image"] == project.images[0]


def test_smoke_run_over_memory_limit_explains_oom(project: Project) -> None:
    result = project.deploy("hog", "--smoke", "{}", "--smoke-timeout", str(RUN_TIMEOUT))

    # The kernel kills the flow's process (the largest in the container), so Prefect reports the
    # run Crashed with SIGKILL; a kill of the container's main process would show exit code 137.
    assert result.returncode == 1, output_of(result)
    error = result.stderr.rpartition("error: ")[2]
    assert "killed" in error
    assert "more memory than" in error
    assert "Raise `memory`" in error
    flow_run_id = re.search(r"flow-run/([0-9a-f-]{36})", error)
    assert flow_run_id, error
    flow_run = api_get(project.env, f"/flow_runs/{flow_run_id.group(1)}")
    assert flow_run["state_type"] == "CRASHED"


def test_smoke_run_missing_image_explains_pull_failure(project: Project) -> None:
    deployment = read_deployment(project.env, project.hello)
    missing = project.images[0].rpartition(":")[0] + ":not-in-registry"
    job_variables = {**deployment["job_variables"], "image": missing}
    api_request(project.env, "PATCH", f"/deployments/{deployment['id']}", {"job_variables": job_variables})

    result = project.run_flow(
        "smoke", f"smoke_run(deployment_id={deployment['id']!r}, parameters={{}}, timeout_seconds={RUN_TIMEOUT})"
    )

    assert result.returncode != 0
    assert f"ECS could not pull {missing}" in output_of(result)
    artifact = latest_artifact(project.env, "smoke-run", missing)["data"]
    assert "CannotPullContainerError" in artifact
    assert json.dumps(missing)[1:-1] in artifact
