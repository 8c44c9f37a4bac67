"""Manifests of images already in a registry, through the OCI distribution API: size and tags.

Tagging copies the manifest to a new tag (GET the manifest, PUT it under the new tag), so no
layer moves and the digest stays the same. ECR serves the same API, so it also works there.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import requests

from meta_flows.aws.ecr import RegistryLogin
from meta_flows.aws.login_cache import RegistryLoginCache
from meta_flows.errors import RegistryError
from meta_flows.images.registry import (
    MANIFEST_MEDIA_TYPES,
    check_manifest_reply,
    registry_base_url,
    send_or_explain,
    send_request,
)


def split_image(image: str) -> tuple[str, str, str]:
    """Split `host/repository:tag` or `host/repository@sha256:...` into host, repository, reference."""
    host, _, rest = image.partition("/")
    if "@" in rest:
        repository, _, reference = rest.partition("@")
    else:
        repository, _, reference = rest.rpartition(":")
    if not host or not repository or not reference:
        raise RegistryError(f"image {image!r} is not <registry>/<repository>:<tag> or <registry>/<repository>@<digest>")
    return host, repository, reference


def add_tag(image: str, new_tag: str, credentials: RegistryLogin | RegistryLoginCache) -> str:
    """Tag the manifest of `image` with `new_tag` in the same repository; return the tagged address."""
    host, repository, reference = split_image(image)
    base = f"{registry_base_url(host)}/v2/{repository}/manifests"
    try:
        manifest = send_request("GET", f"{base}/{reference}", credentials, headers={"Accept": MANIFEST_MEDIA_TYPES})
        if manifest.status_code == 404:
            raise RegistryError(f"image {image} not found in the registry, so it cannot be tagged {new_tag}")
        manifest.raise_for_status()
        content_type = manifest.headers.get("Content-Type", "application/vnd.docker.distribution.manifest.v2+json")
        reply = send_request(
            "PUT", f"{base}/{new_tag}", credentials, headers={"Content-Type": content_type}, data=manifest.content
        )
        reply.raise_for_status()
    except requests.RequestException as exc:
        raise RegistryError(f"tagging {image} as {new_tag} failed: {exc}") from exc
    return f"{host}/{repository}:{new_tag}"


@dataclass(frozen=True)
class ManifestFacts:
    """Digest and size of one manifest, from a single read; the size is None for a multi-platform index."""

    digest: str
    size_bytes: int | None


def read_manifest(image: str, credentials: RegistryLogin | RegistryLoginCache) -> ManifestFacts | None:
    """Read the manifest of `image` once: its digest and its size, or None when it is absent.

    The size is the config plus the compressed layers, in bytes. One GET returns both, where a
    HEAD for the digest and a GET for the size would cost two requests.
    """
    host, repository, reference = split_image(image)
    url = f"{registry_base_url(host)}/v2/{repository}/manifests/{reference}"
    reply = send_or_explain("GET", url, host, credentials)
    if reply.status_code == 404:
        return None
    check_manifest_reply(reply, host, f"{repository}:{reference}")
    try:
        manifest = json.loads(reply.content)
    except ValueError as exc:
        raise RegistryError(
            f"the manifest of {image} in the registry is not JSON: {exc}; check that "
            "META_FLOWS_REGISTRY_HOST is a container registry"
        ) from exc
    digest = reply.headers.get("Docker-Content-Digest") or f"sha256:{hashlib.sha256(reply.content).hexdigest()}"
    return ManifestFacts(digest=digest, size_bytes=manifest_size(manifest))


def manifest_size(manifest: dict[str, Any]) -> int | None:
    if "layers" not in manifest:
        return None
    parts = [manifest.get("config") or {}, *manifest["layers"]]
    return sum(int(part.get("size") or 0) for part in parts)


def compressed_size(image: str, credentials: RegistryLogin | RegistryLoginCache) -> int | None:
    """Return the size of `image`, which must be in the registry (see `read_manifest`)."""
    facts = read_manifest(image, credentials)
    if facts is None:
        raise RegistryError(
            f"image {image} is not in the registry right after its push, so its size cannot be read; "
            "run the deploy again"
        )
    return facts.size_bytes
