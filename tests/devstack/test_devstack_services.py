"""Unit tests of the registry config, the htpasswd file and the docker engine options."""

import shutil
from pathlib import Path

import pytest
import yaml

from devstack import docker_engine, services
from devstack.config import StackPaths


def test_registry_config_content(tmp_path: Path) -> None:
    text = services.render_registry_config(tmp_path / "data dir", tmp_path / "htpasswd", "0123abcd")

    config = yaml.safe_load(text)

    assert config["http"]["addr"] == "127.0.0.1:5000"
    assert config["http"]["secret"] == "0123abcd"
    assert config["storage"]["filesystem"]["rootdirectory"] == str(tmp_path / "data dir")
    assert config["storage"]["delete"]["enabled"] is True
    assert config["auth"]["htpasswd"]["path"] == str(tmp_path / "htpasswd")


def test_registry_auth_header_is_emulator_token() -> None:
    header = services.registry_auth_header()

    # base64 of "AWS:123456789012-auth-token"
    assert header == {"Authorization": "Basic QVdTOjEyMzQ1Njc4OTAxMi1hdXRoLXRva2Vu"}


@pytest.mark.skipif(shutil.which("htpasswd") is None, reason="htpasswd not installed")
def test_htpasswd_accepts_only_token(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"

    services.write_htpasswd(path)

    content = path.read_text()
    assert content.startswith("AWS:$2y$")
    assert "auth-token" not in content
    assert path.stat().st_mode & 0o777 == 0o600
    assert services.htpasswd_accepts(path)
    path.write_text(content.replace("AWS:", "OTHER:"))
    assert not services.htpasswd_accepts(path)


def test_moto_env_stays_local(tmp_path: Path) -> None:
    env = services.moto_env(StackPaths(tmp_path))

    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:5001"
    assert env["AWS_EC2_METADATA_DISABLED"] == "true"
    assert env["MOTO_EVENTS_INVOKE_HTTP"] == "false"
    assert env["MOTO_PORT"] == "5001"


def test_prefect_env_uses_state_folder(tmp_path: Path) -> None:
    env = services.prefect_env(StackPaths(tmp_path))

    assert env["PREFECT_HOME"] == str(tmp_path / "prefect")
    assert env["PREFECT_API_DATABASE_CONNECTION_URL"] == (f"sqlite+aiosqlite:///{tmp_path / 'prefect' / 'prefect.db'}")
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert env["PREFECT_UI_API_URL"] == "http://127.0.0.1:4200/api"


def test_dockerd_argv_has_no_tcp_listener(tmp_path: Path) -> None:
    layout = docker_engine.DockerLayout.of(StackPaths(tmp_path))

    argv = docker_engine.dockerd_argv(layout, tmp_path / "data")

    assert f"--host=unix://{tmp_path}/docker/docker.sock" in argv
    assert f"--data-root={tmp_path}/data" in argv
    for flag in ("--storage-driver=overlay2", "--iptables=false", "--bridge=none"):
        assert flag in argv
    assert not any("tcp://" in word for word in argv)


@pytest.mark.parametrize(
    "host",
    ["unix:///var/run/docker.sock", "tcp://127.0.0.1:2375", "tcp://localhost:2375"],
)
def test_local_docker_hosts_accepted(host: str) -> None:
    docker_engine.check_local_host(host)


@pytest.mark.parametrize("host", ["tcp://10.0.0.5:2376", "ssh://user@build-host"])
def test_remote_docker_hosts_rejected(host: str) -> None:
    with pytest.raises(RuntimeError, match="only uses a local engine"):
        docker_engine.check_local_host(host)
