"""The Prefect UI in a real browser: a deploy-flow run, its artifact and the deployment diff are shown.

Headless Chromium (Debian's `chromium`) loads pages of the local Prefect server only. Set
META_FLOWS_SCREENSHOT_DIR to keep the screenshot; the README's image was taken this way.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.e2e.browser import Browser
from tests.e2e.project_copy import Project, latest_artifact, make_project, output_of

# The debugging port: one of the loopback ports reserved for these tests.
DEBUGGING_PORT = 5061
UI_URL = "http://127.0.0.1:4200"


@pytest.fixture(scope="module")
def project(
    stack_env: dict[str, str],
    bootstrap_outputs: list[subprocess.CompletedProcess[str]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Project:
    return make_project(stack_env, tmp_path_factory)


def test_ui_shows_deploy_run_and_diff(project: Project, tmp_path: Path) -> None:
    assert project.deploy("hello").returncode == 0
    project.edit_entry("hello", parameters={"name": "browser"})
    result = project.deploy("hello")
    assert result.returncode == 0, output_of(result)
    run_url = re.search(r"^run:\s+(http://127\.0\.0\.1:4200/runs/flow-run/[0-9a-f-]{36})$", result.stdout, re.M)
    assert run_url, result.stdout
    artifact = latest_artifact(project.env, "deploy-hello", project.hello, "browser")

    with Browser(DEBUGGING_PORT) as browser:
        browser.open(run_url.group(1))
        browser.wait_for_text("deploy-flow", "Completed")
        browser.click_text("Artifacts")
        browser.wait_for_text("deploy-hello")
        browser.open(f"{UI_URL}/artifacts/artifact/{artifact['id']}")
        text = browser.wait_for_text("Changes against the previous version", "parameters.name", project.hello)
        browser.scroll_to_text("Deployment")
        screenshot = Path(os.environ.get("META_FLOWS_SCREENSHOT_DIR") or tmp_path) / "deploy-artifact.png"
        browser.screenshot(screenshot)

    assert "browser" in text
    assert "updated" in text
    assert screenshot.stat().st_size > 0
