"""Shared set-up of the reliability end-to-end tests: a session of unique names, project copies."""

from __future__ import annotations

import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.conftest import PROJECT_ROOT, run_command
from tests.e2e.helpers import api_request


def session_env(base: dict[str, str], tag: str) -> tuple[dict[str, str], str]:
    """Return a copy of the stack environment with names unique to one session, and its suffix."""
    suffix = f"{tag}{uuid.uuid4().hex[:6]}"
    env = dict(base)
    env.update(
        {
            "META_FLOWS_WORK_POOL": f"rel-ecs-{suffix}",
            "META_FLOWS_DEPLOYER_POOL": f"rel-deployer-{suffix}",
            "META_FLOWS_CLUSTER": f"rel-{suffix}",
            "META_FLOWS_REPOSITORY_PREFIX": f"rel-{suffix}",
            "META_FLOWS_CREDENTIALS_BLOCK": f"rel-{suffix}-aws",
            "META_FLOWS_TASK_SETTINGS_BLOCK": f"rel-{suffix}-ecs",
            # Where the snapshots look, whatever proxy the product is pointed at.
            "AWS_UPSTREAM_URL": base["AWS_ENDPOINT_URL"],
            "REGISTRY_UPSTREAM": base["META_FLOWS_REGISTRY_HOST"],
            "UPSTREAM_REGION": base["AWS_REGION"],
            "UPSTREAM_PREFECT_API_URL": base["PREFECT_API_URL"],
        }
    )
    return env, suffix


def bootstrap(env: dict[str, str]) -> str:
    result = run_command([sys.executable, "-m", "meta_flows.bootstrap"], env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def deploy(env: dict[str, str], flow: str, timeout: int = 900) -> tuple[int, str]:
    result = run_command([sys.executable, "-m", "meta_flows.deploy", flow], env, timeout=timeout)
    return result.returncode, result.stdout + result.stderr


def copy_project(
    target: Path, flows: dict[str, dict[str, str]] | None = None, entries: list[dict] | None = None
) -> Path:
    """Copy prefect.yaml and flows/ to `target`, adding flow folders (file name to text) and entries."""
    target.mkdir(parents=True, exist_ok=True)
    shutil.copytree(PROJECT_ROOT / "flows", target / "flows", ignore=shutil.ignore_patterns("__pycache__"))
    document = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())
    document["deployments"] += entries or []
    (target / "prefect.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    for folder, files in (flows or {}).items():
        (target / "flows" / folder).mkdir()
        for name, text in files.items():
            (target / "flows" / folder / name).write_text(text)
    return target


FLOW_SOURCE = """from prefect import flow


@flow(name="{name}")
def {function}(greeting: str = "hi") -> str:
    return greeting
"""


def flow_files(name: str, function: str = "main", requirements: str = "") -> dict[str, str]:
    return {"flow.py": FLOW_SOURCE.format(name=name, function=function), "requirements.txt": requirements}


def api_post(env: dict[str, str], path: str, body: dict[str, Any]) -> Any:
    return api_request(env, "POST", path, body)
