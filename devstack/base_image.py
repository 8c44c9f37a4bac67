"""Build the base image: a debootstrap rootfs imported into Docker, then the pinned Prefect on top.

Each step is skipped when its result exists. The whole build is skipped when the image carries
the hash of its inputs as a label. The import is skipped when the rootfs image carries the hash
of the rootfs marker, and debootstrap when that marker file exists.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from devstack.config import StackPaths, base_image_ref
from devstack.mounts import unmount_below

if TYPE_CHECKING:
    import docker

SUITE = "bookworm"
ROOTFS_PACKAGES = ("python3", "python3-venv", "ca-certificates")
DEFAULT_DEBIAN_MIRROR = "http://deb.debian.org/debian"
ROOTFS_REPOSITORY = "devstack/debian-python"
ROOTFS_TAG = SUITE
INPUTS_LABEL = "devstack.inputs-sha256"
ROOTFS_LABEL = "devstack.rootfs-sha256"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
DOCKERFILE = Path(__file__).resolve().parent / "base" / "Dockerfile"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LOG_PART = "base-image"


class BuildError(RuntimeError):
    pass


@dataclass(frozen=True)
class BaseImageResult:
    ref: str
    built: bool
    steps: dict[str, float]  # seconds per step that ran


def debian_mirror() -> str:
    return os.environ.get("DEVSTACK_DEBIAN_MIRROR", DEFAULT_DEBIAN_MIRROR)


def rootfs_spec(mirror: str) -> str:
    """Describe what debootstrap makes, so a change of mirror or packages makes a new rootfs."""
    return f"debootstrap --variant=minbase --include={','.join(ROOTFS_PACKAGES)} {SUITE} {mirror}"


def inputs_hash(dockerfile: str, prefect_version: str, ca_bundle: bytes, spec: str) -> str:
    """Hash everything that goes into the base image, so an unchanged input skips the build."""
    digest = hashlib.sha256()
    for part in (
        dockerfile.encode(),
        prefect_version.encode(),
        ca_bundle,
        spec.encode(),
    ):
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


def image_label(client: docker.APIClient, ref: str, label: str) -> str | None:
    """Return the value of `label` on image `ref`, or None when the image or label is missing."""
    import docker

    try:
        details = client.inspect_image(ref)
    except docker.errors.ImageNotFound:
        return None
    labels = (details.get("Config") or {}).get("Labels") or {}
    value = labels.get(label)
    return str(value) if value is not None else None


def ensure_base_image(client: docker.APIClient, paths: StackPaths, prefect_version: str) -> BaseImageResult:
    """Return the base image reference, building what is missing first."""
    ref = base_image_ref(prefect_version)
    spec = rootfs_spec(debian_mirror())
    expected_hash = inputs_hash(DOCKERFILE.read_text(), prefect_version, HOST_CA_BUNDLE.read_bytes(), spec)
    if image_label(client, ref, INPUTS_LABEL) == expected_hash:
        return BaseImageResult(ref, built=False, steps={})

    log = paths.log(LOG_PART)
    steps: dict[str, float] = {}
    started = time.monotonic()
    rootfs_hash = ensure_rootfs(paths, spec, log)
    steps["debootstrap"] = time.monotonic() - started

    started = time.monotonic()
    ensure_rootfs_image(client, paths, rootfs_hash, log)
    steps["import"] = time.monotonic() - started

    started = time.monotonic()
    build_image(client, paths, ref, expected_hash, prefect_version, log)
    steps["build"] = time.monotonic() - started

    started = time.monotonic()
    found = image_prefect_version(client, ref)
    if found != prefect_version:
        raise BuildError(f"{ref} reports Prefect {found!r} instead of {prefect_version}")
    steps["check"] = time.monotonic() - started
    return BaseImageResult(ref, built=True, steps=steps)


# --- rootfs ---------------------------------------------------------------------------------


def rootfs_marker(paths: StackPaths) -> Path:
    """Return the marker file written after debootstrap succeeded. A rootfs without it is half made."""
    return paths.root / "rootfs.done"


def ensure_rootfs(paths: StackPaths, spec: str, log: Path) -> str:
    """Make the rootfs unless a complete one of the same spec exists, and return the marker's hash."""
    marker = rootfs_marker(paths)
    if marker.is_file() and marker.read_text().splitlines()[0] == spec:
        return hashlib.sha256(marker.read_bytes()).hexdigest()

    marker.unlink(missing_ok=True)
    remove_rootfs(paths.rootfs)
    argv = [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(ROOTFS_PACKAGES)}",
        SUITE,
        str(paths.rootfs),
        debian_mirror(),
    ]
    run_logged(argv, log, "debootstrap")
    # A fresh id per rootfs, so a remade rootfs is imported again even with the same spec.
    marker.write_text(f"{spec}\n{uuid.uuid4()}\n")
    return hashlib.sha256(marker.read_bytes()).hexdigest()


def remove_rootfs(rootfs: Path) -> None:
    """Delete a half-made rootfs, first unmounting what debootstrap may have left mounted in it."""
    unmount_below(rootfs)
    if rootfs.exists():
        shutil.rmtree(rootfs)


def run_logged(argv: list[str], log: Path, step: str) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as stream:
        stream.write(f"\n--- {step}: {' '.join(argv)}\n".encode())
        stream.flush()
        result = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=stream,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if result.returncode != 0:
        raise BuildError(f"{step} failed with code {result.returncode}: read {log}")


# --- import ---------------------------------------------------------------------------------


def ensure_rootfs_image(client: docker.APIClient, paths: StackPaths, rootfs_hash: str, log: Path) -> None:
    """Import the rootfs as devstack/debian-python:bookworm unless that exact rootfs is there."""
    ref = f"{ROOTFS_REPOSITORY}:{ROOTFS_TAG}"
    if image_label(client, ref, ROOTFS_LABEL) == rootfs_hash:
        return
    # Same as `tar -C rootfs -c . | docker import - NAME`, with the stream sent through the API.
    tar = subprocess.Popen(
        [
            "tar",
            "--numeric-owner",
            "--exclude=./dev/*",
            "--exclude=./proc/*",
            "--exclude=./sys/*",
            "-C",
            str(paths.rootfs),
            "-c",
            ".",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    if tar.stdout is None:
        raise BuildError("tar started without an output pipe")
    try:
        output = client.import_image(
            src=_chunks(tar.stdout),
            repository=ROOTFS_REPOSITORY,
            tag=ROOTFS_TAG,
            changes=[
                f"LABEL {ROOTFS_LABEL}={rootfs_hash}",
                f"ENV PATH={DEFAULT_PATH}",
                'CMD ["/bin/bash"]',
            ],
            stream_src=True,
        )
    finally:
        tar_error = tar.stderr.read().decode(errors="replace") if tar.stderr else ""
        tar_code = tar.wait()
    with log.open("a") as stream:
        stream.write(f"\n--- import {ref}\n{output}\n")
    if tar_code != 0:
        raise BuildError(f"tar of {paths.rootfs} failed with code {tar_code}: {tar_error.strip()}")
    if '"error"' in str(output):
        raise BuildError(f"import of {ref} failed: read {log}")


def _chunks(stream: IO[bytes], size: int = 1 << 20) -> Iterator[bytes]:
    while True:
        chunk = stream.read(size)
        if not chunk:
            return
        yield chunk


# --- build ----------------------------------------------------------------------------------


def build_image(
    client: docker.APIClient,
    paths: StackPaths,
    ref: str,
    inputs: str,
    prefect_version: str,
    log: Path,
) -> None:
    """Build the Dockerfile beside this module with the legacy builder and host networking."""
    context = paths.root / "base-build"
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir(parents=True)
    shutil.copyfile(DOCKERFILE, context / "Dockerfile")
    shutil.copyfile(HOST_CA_BUNDLE, context / "ca-certificates.crt")

    stream = client.build(
        path=str(context),
        tag=ref,
        rm=True,
        forcerm=True,
        pull=False,
        network_mode="host",
        buildargs={"PREFECT_VERSION": prefect_version},
        labels={INPUTS_LABEL: inputs},
        decode=True,
    )
    with log.open("a") as out:
        out.write(f"\n--- build {ref}\n")
        for chunk in stream:
            write_build_chunk(out, chunk)
            if "error" in chunk or "errorDetail" in chunk:
                raise BuildError(f"build of {ref} failed: {chunk.get('error', '')}: read {log}")
    shutil.rmtree(context, ignore_errors=True)


def write_build_chunk(out: IO[str], chunk: dict[str, Any]) -> None:
    text = chunk.get("stream") or chunk.get("status") or chunk.get("error")
    if text:
        out.write(str(text) if str(text).endswith("\n") else f"{text}\n")


def image_prefect_version(client: docker.APIClient, ref: str) -> str:
    """Run `import prefect` in a container of `ref` with host networking, and return the version."""
    container = client.create_container(
        ref,
        command=["python", "-c", "import prefect; print(prefect.__version__)"],
        host_config=client.create_host_config(network_mode="host"),
    )
    try:
        client.start(container)
        status = client.wait(container, timeout=120)
        output = client.logs(container, stdout=True, stderr=True).decode(errors="replace").strip()
    finally:
        client.remove_container(container, force=True)
    if status.get("StatusCode") != 0:
        raise BuildError(f"`import prefect` in {ref} failed with code {status.get('StatusCode')}: {output}")
    return output.splitlines()[-1] if output else ""
