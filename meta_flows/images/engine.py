"""The Docker engine: found through DOCKER_HOST or the default socket, driven by its API only."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import docker
from docker.errors import APIError, DockerException, ImageNotFound

from meta_flows.aws.ecr import RegistryLogin
from meta_flows.errors import DockerUnavailableError, ImageBuildError, RegistryError

BUILD_OUTPUT_LINES_SHOWN = 15
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"


@dataclass(frozen=True)
class BaseImage:
    """The base image as given, and the immutable reference it resolves to."""

    ref: str
    image_id: str
    pinned_ref: str


@dataclass(frozen=True)
class PushResult:
    """The pushed manifest's digest, the layer counts, and the compressed bytes uploaded."""

    digest: str
    layers_pushed: int
    layers_reused: int
    bytes_pushed: int = 0


def connect_engine() -> docker.DockerClient:
    """Connect to the engine at DOCKER_HOST (or the default socket) and ping it."""
    host = os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST
    try:
        client = docker.DockerClient(base_url=host, timeout=600)
        client.ping()
    except DockerException as exc:
        raise DockerUnavailableError(
            f"Docker engine not reachable at {host} ({exc}): start Docker or set DOCKER_HOST to the engine's socket"
        ) from exc
    return client


def resolve_base_image(client: docker.DockerClient, ref: str) -> BaseImage:
    """Find the base image, pulling it when absent, and pin it by digest.

    A registry image is pinned by its repository digest. An image that exists only in the
    engine (imported, or built locally) has none, so its content-addressed image id pins it.
    """
    try:
        attributes = client.api.inspect_image(ref)
    except ImageNotFound:
        try:
            client.api.pull(ref)
            attributes = client.api.inspect_image(ref)
        except (APIError, ImageNotFound) as exc:
            raise ImageBuildError(
                f"base image {ref} not found locally and could not be pulled ({exc}): check META_FLOWS_BASE_IMAGE"
            ) from exc
    except DockerException as exc:
        raise DockerUnavailableError(f"Docker engine failed to inspect {ref}: {exc}") from exc

    image_id = str(attributes["Id"])
    repository = ref.split("@")[0].rsplit(":", 1)[0] if "/" in ref or ":" in ref else ref
    for digest_ref in attributes.get("RepoDigests") or []:
        if digest_ref.split("@")[0] == repository:
            return BaseImage(ref=ref, image_id=image_id, pinned_ref=digest_ref)
    return BaseImage(ref=ref, image_id=image_id, pinned_ref=image_id)


def build_image(
    client: docker.DockerClient,
    context_tar: bytes,
    tag: str,
    build_args: dict[str, str],
    labels: dict[str, str],
    on_line: Callable[[str], None],
) -> str:
    """Build with the engine's API, streaming each output line to `on_line`; return the image id."""
    output: list[str] = []
    try:
        stream: Iterator[dict[str, Any]] = client.api.build(
            fileobj=context_tar,
            custom_context=True,
            tag=tag,
            buildargs=build_args,
            labels=labels,
            rm=True,
            forcerm=True,
            network_mode="host",
            decode=True,
            use_config_proxy=False,
        )
        image_id = None
        for chunk in stream:
            if "stream" in chunk:
                for line in str(chunk["stream"]).splitlines():
                    if line.strip():
                        output.append(line)
                        on_line(line)
            if "aux" in chunk and "ID" in chunk["aux"]:
                image_id = str(chunk["aux"]["ID"])
            if "error" in chunk:
                raise ImageBuildError(_describe_build_failure(str(chunk["error"]), output))
    except APIError as exc:
        raise ImageBuildError(_describe_build_failure(str(exc), output)) from exc
    if image_id is None:
        raise ImageBuildError(_describe_build_failure("the engine reported no image id", output))
    return image_id


def _describe_build_failure(error: str, output: list[str]) -> str:
    shown = "\n".join(f"    {line}" for line in output[-BUILD_OUTPUT_LINES_SHOWN:])
    return f"image build failed: {error.strip()}\n  last build output:\n{shown}"


def push_image(
    client: docker.DockerClient,
    repository: str,
    tag: str,
    login: RegistryLogin,
    on_line: Callable[[str], None],
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> PushResult:
    """Push `repository:tag`; the login goes to the engine in the X-Registry-Auth header only.

    `on_line` gets one line per layer pushed; `on_progress` gets every message of the stream.
    """
    auth = {"username": login.username, "password": login.password.get_secret_value()}
    digest = None
    pushed: set[str] = set()
    reused: set[str] = set()
    layer_sizes: dict[str, int] = {}
    try:
        for chunk in client.api.push(repository, tag=tag, auth_config=auth, stream=True, decode=True):
            if on_progress is not None:
                on_progress(chunk)
            status = str(chunk.get("status", ""))
            layer = str(chunk.get("id", ""))
            if status == "Pushing":
                # progressDetail.total is the compressed size of the layer being uploaded.
                total = (chunk.get("progressDetail") or {}).get("total")
                if isinstance(total, int):
                    layer_sizes[layer] = max(total, layer_sizes.get(layer, 0))
            elif status == "Pushed":
                pushed.add(layer)
                on_line(f"layer {layer} pushed")
            elif status == "Layer already exists":
                reused.add(layer)
            if "aux" in chunk and "Digest" in chunk["aux"]:
                digest = str(chunk["aux"]["Digest"])
            if "error" in chunk:
                raise RegistryError(f"push of {repository}:{tag} failed: {chunk['error']}")
    except APIError as exc:
        raise RegistryError(f"push of {repository}:{tag} failed: {exc}") from exc
    if digest is None:
        raise RegistryError(f"push of {repository}:{tag} ended without a digest from the registry")
    return PushResult(
        digest=digest,
        layers_pushed=len(pushed),
        layers_reused=len(reused),
        bytes_pushed=sum(layer_sizes.get(layer, 0) for layer in pushed),
    )
