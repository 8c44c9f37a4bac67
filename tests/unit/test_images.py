"""Build contexts, content-hash tags and Dockerfile rendering, without a Docker engine."""

from pathlib import Path

import pytest

from meta_flows.images.context import assemble_context
from meta_flows.images.dockerfile import render_dockerfile
from meta_flows.images.registry import registry_base_url


def make_flow(root: Path, files: dict[str, str]) -> Path:
    folder = root / "demo"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def tag_of(folder: Path, base_digest: str = "sha256:aaa", platform: str = "linux/amd64") -> str:
    return assemble_context(folder, "base@" + base_digest, base_digest, platform, None).content_tag()


def test_tag_unchanged_input_gives_same_tag(tmp_path: Path) -> None:
    folder = make_flow(tmp_path, {"flow.py": "print(1)\n", "requirements.txt": "tabulate\n"})
    first = tag_of(folder)

    (folder / "flow.py").touch()  # a new mtime alone changes nothing

    assert tag_of(folder) == first


@pytest.mark.parametrize(
    "change",
    ["code", "requirements", "base", "platform"],
)
def test_tag_any_input_change_gives_new_tag(tmp_path: Path, change: str) -> None:
    folder = make_flow(tmp_path, {"flow.py": "print(1)\n", "requirements.txt": "tabulate\n"})
    before = tag_of(folder)
    base, platform = "sha256:aaa", "linux/amd64"
    if change == "code":
        (folder / "flow.py").write_text("print(2)\n")
    elif change == "requirements":
        (folder / "requirements.txt").write_text("tabulate==0.9.0\n")
    elif change == "base":
        base = "sha256:bbb"
    else:
        platform = "linux/arm64"

    assert tag_of(folder, base, platform) != before


def test_tag_ignores_files_in_dockerignore(tmp_path: Path) -> None:
    folder = make_flow(tmp_path, {"flow.py": "x = 1\n", ".dockerignore": "*.log\n"})
    before = tag_of(folder)

    (folder / "debug.log").write_text("noise\n")
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "flow.cpython-311.pyc").write_bytes(b"\x00")

    assert tag_of(folder) == before


def test_context_puts_code_under_app_and_adds_empty_requirements(tmp_path: Path) -> None:
    folder = make_flow(tmp_path, {"flow.py": "x = 1\n"})

    context = assemble_context(folder, "base", "sha256:aaa", "linux/amd64", None)

    assert set(context.files) == {"Dockerfile", "app/flow.py", "app/requirements.txt"}
    assert context.files["app/requirements.txt"][1] == b""


def test_context_with_ca_bundle_copies_it_outside_app(tmp_path: Path) -> None:
    folder = make_flow(tmp_path, {"flow.py": "x = 1\n"})
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")

    context = assemble_context(folder, "base", "sha256:aaa", "linux/amd64", bundle)

    assert ".meta-flows/ca-bundle.crt" in context.files
    dockerfile = context.files["Dockerfile"][1].decode()
    assert "PIP_CERT=/usr/local/share/meta-flows/ca-bundle.crt" in dockerfile


def test_context_own_dockerfile_gets_base_image_build_arg(tmp_path: Path) -> None:
    folder = make_flow(tmp_path, {"flow.py": "x = 1\n", "Dockerfile": "ARG BASE_IMAGE\nFROM $BASE_IMAGE\n"})

    context = assemble_context(folder, "base@sha256:aaa", "sha256:aaa", "linux/amd64", None)

    assert context.build_args == {"BASE_IMAGE": "base@sha256:aaa"}
    assert context.files["Dockerfile"][1].startswith(b"ARG BASE_IMAGE")


def test_dockerfile_installs_requirements_before_code() -> None:
    dockerfile = render_dockerfile("base@sha256:aaa", "hello", with_ca_bundle=False)
    lines = dockerfile.splitlines()

    assert lines[0] == "FROM base@sha256:aaa"
    install = next(i for i, line in enumerate(lines) if "pip install" in line)
    copy_code = lines.index("COPY app/ ./")
    assert install < copy_code
    assert "WORKDIR /opt/prefect/flows/hello" in lines


def test_context_tar_is_deterministic(tmp_path: Path) -> None:
    folder = make_flow(tmp_path, {"flow.py": "x = 1\n", "b.txt": "b", "a.txt": "a"})

    first = assemble_context(folder, "base", "sha256:aaa", "linux/amd64", None).to_tar()
    second = assemble_context(folder, "base", "sha256:aaa", "linux/amd64", None).to_tar()

    assert first == second


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("localhost:5000", "http://localhost:5000"),
        ("123456789012.dkr.ecr.us-east-1.amazonaws.com", "https://123456789012.dkr.ecr.us-east-1.amazonaws.com"),
        ("10.0.0.5:5000", "https://10.0.0.5:5000"),
    ],
)
def test_registry_base_url_plain_http_only_on_loopback(host: str, url: str) -> None:
    assert registry_base_url(host) == url
