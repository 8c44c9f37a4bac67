"""Unit tests of the local stack's env file, Prefect pin and state folder."""

from pathlib import Path

import pytest

from devstack.config import (
    DEFAULT_PREFECT_VERSION,
    StackPaths,
    base_image_ref,
    parse_env_file,
    parse_prefect_pin,
    read_prefect_pin,
    render_env_file,
    stack_env,
)


def make_env(root: Path) -> dict[str, str]:
    paths = StackPaths(root)
    return stack_env(paths, "unix:///state dir/docker.sock", base_image_ref("3.9.1"))


def test_env_file_lines_and_order(tmp_path: Path) -> None:
    lines = render_env_file(make_env(tmp_path)).splitlines()

    assert lines[0] == "export PREFECT_API_URL=http://127.0.0.1:4200/api"
    assert "export AWS_ENDPOINT_URL=http://127.0.0.1:5001" in lines
    assert "export AWS_DEFAULT_REGION=us-east-1" in lines
    assert "export AWS_REGION=us-east-1" in lines
    assert "export META_FLOWS_REGISTRY_HOST=127.0.0.1:5000" in lines
    assert "export META_FLOWS_BASE_IMAGE=devstack/prefect-base:3.9.1" in lines
    assert "export META_FLOWS_CONTAINER_MEMORY=512" in lines
    assert lines[-1] == f"export DEVSTACK_STATE_DIR={tmp_path}"
    assert all(line.startswith("export ") for line in lines)


def test_env_file_quotes_spaces(tmp_path: Path) -> None:
    text = render_env_file(make_env(tmp_path))

    assert "export DOCKER_HOST='unix:///state dir/docker.sock'" in text


def test_env_file_round_trip(tmp_path: Path) -> None:
    env = make_env(tmp_path)

    assert parse_env_file(render_env_file(env)) == env


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("prefect==3.9.1\n", "3.9.1"),
        ("# pins\nprefect-aws==0.7.12\nprefect == 3.10.0  # server\n", "3.10.0"),
        ("prefect[aws]==3.9.2\n", "3.9.2"),
        ("PREFECT==3.9.1\n", "3.9.1"),
        ("prefect-aws==0.7.12\nprefect>=3\n", None),
        ("# prefect==1.0\n", None),
    ],
)
def test_prefect_pin_parsing(text: str, expected: str | None) -> None:
    assert parse_prefect_pin(text) == expected


def test_prefect_pin_default_without_file(tmp_path: Path) -> None:
    assert read_prefect_pin(tmp_path / "requirements.txt") == DEFAULT_PREFECT_VERSION


def test_state_dir_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVSTACK_STATE_DIR", str(tmp_path / "state"))

    paths = StackPaths.from_env()

    assert paths.root == tmp_path / "state"
    assert paths.pidfile("registry") == tmp_path / "state" / "run" / "registry.pid"
    assert paths.log("registry") == tmp_path / "state" / "logs" / "registry.log"


def test_state_dir_ignored_by_git(tmp_path: Path) -> None:
    paths = StackPaths(tmp_path / "state")

    paths.ensure()

    assert (paths.root / ".gitignore").read_text() == "*\n"
    assert paths.logs.is_dir()
    assert paths.run.is_dir()
