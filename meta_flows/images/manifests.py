"""Manifests of images already in a registry, through the OCI distribution API: size and tags.

Tagging copies the manifest to a new tag (GET the manifest, PUT it under the new tag), so no
layer moves and the digest stays the same. ECR serves the same API, so it also works there.
"""

from __future__ import annotations

import json

import requests

from meta_flows.aws.ecr import RegistryLogin
from meta_flows.errors import RegistryError
from meta_flows.images.registry import MANIFEST_MEDIA_TYPES, registry_base_url, send_request


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


def add_tag(image: str, new_tag: str, login: RegistryLogin) -> str:
    """Tag the manifest of `image` with `new_tag` in the same repository; return the tagged address."""
    host, repository, reference = split_image(image)
    base = f"{registry_base_url(host)}/v2/{repository}/manifests"
    try:
        manifest = send_request("GET", f"{base}/{reference}", login, headers={"Accept": MANIFEST_MEDIA_TYPES})
        if manifest.status_code == 404:
            raise RegistryError(f"image {image} not found in the registry, so it cannot be tagged {new_tag}")
        manifest.raise_for_status()
        content_type = manifest.headers.get("Content-Type", "application/vnd.docker.distribution.manifest.v2+json")
        reply = send_request(
            "PUT", f"{base}/{new_tag}", login, headers={"Content-Type": content_type}, data=manifest.content
        )
        reply.raise_for_status()
    except requests.RequestException as exc:
        raise RegistryError(f"tagging {image} as {new_tag} failed: {exc}") from exc
    return f"{host}/{repository}:{new_tag}"


def compressed_size(image: str, login: RegistryLogin) -> int | None:
    """Return the image's size in the registry (config plus compressed layers), in bytes.

    None when the manifest is an index (several platforms), which has no single size.
    """
    host, repository, reference = split_image(image)
    url = f"{registry_base_url(host)}/v2/{repository}/manifests/{reference}"
    try:
        reply = send_request("GET", url, login, headers={"Accept": MANIFEST_MEDIA_TYPES})
        reply.raise_for_status()
        manifest = json.loads(reply.content)
    except (requests.RequestException, ValueError) as exc:
        raise RegistryError(f"reading the manifest of {image} failed: {exc}") from exc
    if "layers" not in manifest:
        return None
    parts = [manifest.get("config") or {}, *manifest["layers"]]
    return sum(int(part.get("size") or 0) for part in parts)
