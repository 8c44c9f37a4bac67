"""A session-unique copy of prefect.yaml and flows/, for end-to-end tests that change them.

The copy is used through META_FLOWS_PROJECT_ROOT, with each flow deployment renamed with a
session suffix, so tests can change flows and schedules without touching the checkout or the
deployments of other sessions. The code of the meta-flows still comes from the checkout.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.e2e.conftest import PROJECT_ROOT, run_command

DEPLOY_TIMEOUT = 900

HOG_FLOW = '''"""A flow that needs more memory than its task may use (2048 MiB on the local stack)."""

from prefect import flow


@flow(name="memory-hog")
def hog(megabytes: int = 3072) -> int:
    block = b"x" * (megabytes * 1024 * 1024)
    return len(block)
'''


class Project:
    """The session's copy of the project, and what the tests learn as they go."""

    def __init__(self, root: Path, env: dict[str, str], suffix: str) -> None:
        self.root = root
        self.env = env
        self.suffix = suffix
        self.images: list[str] = []

    @property
    def hello(self) -> str:
        return f"hello/hello-{self.suffix}"

    def entry(self, folder: str) -> dict[str, Any]:
        document = yaml.safe_load((self.root / "prefect.yaml").read_text())
        return next(e for e in document["deployments"] if e["entrypoint"].startswith(f"flows/{folder}/"))

    def edit_entry(self, folder: str, **changes: Any) -> None:
        path = self.root / "prefect.yaml"
        document = yaml.safe_load(path.read_text())
        for entry in document["deployments"]:
            if entry["entrypoint"].startswith(f"flows/{folder}/"):
                for key, value in changes.items():
                    if value is None:
                        entry.pop(key, None)
                    else:
                        entry[key] = value
        path.write_text(yaml.safe_dump(document, sort_keys=False))

    def deploy(self, folder: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return run_command([sys.executable, "-m", "meta_flows.deploy", folder, *extra], self.env, DEPLOY_TIMEOUT)

    def run_flow(self, module: str, call: str) -> subprocess.CompletedProcess[str]:
        code = f"from meta_flows.{module} import *\nresult = {call}\nprint('RESULT', result.model_dump_json())"
        return run_command([sys.executable, "-c", code], self.env, DEPLOY_TIMEOUT)


def make_project(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Project:
    """Copy prefect.yaml and flows/ (plus a memory-hungry flow) and rename the flow deployments."""
    suffix = uuid.uuid4().hex[:6]
    root = tmp_path_factory.mktemp("project")
    shutil.copy(PROJECT_ROOT / "prefect.yaml", root / "prefect.yaml")
    shutil.copytree(PROJECT_ROOT / "flows", root / "flows")
    (root / "flows" / "hog").mkdir()
    (root / "flows" / "hog" / "flow.py").write_text(HOG_FLOW)
    shutil.copy(PROJECT_ROOT / "flows" / "hello" / "requirements.txt", root / "flows" / "hog" / "requirements.txt")
    document = yaml.safe_load((root / "prefect.yaml").read_text())
    for entry in document["deployments"]:
        if entry["entrypoint"].startswith("flows/"):
            entry["name"] = f"{entry['name']}-{suffix}"
    document["deployments"].append({"name": f"hog-{suffix}", "entrypoint": "flows/hog/flow.py:hog"})
    (root / "prefect.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    return Project(root, {**stack_env, "META_FLOWS_PROJECT_ROOT": str(root)}, suffix)


def output_of(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


def latest_artifact(env: dict[str, str], key: str, *containing: str) -> dict[str, Any]:
    """Return the newest artifact with `key` whose Markdown mentions every text in `containing`."""
    reply = requests.post(
        f"{env['PREFECT_API_URL']}/artifacts/filter",
        json={"artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC", "limit": 50},
        timeout=10,
    )
    reply.raise_for_status()
    for artifact in reply.json():
        if all(text in str(artifact.get("data")) for text in containing):
            return artifact  # type: ignore[no-any-return]
    raise AssertionError(f"no artifact {key} mentions {containing}")
