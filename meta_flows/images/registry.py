"""Questions to a registry through its own HTTP API (the OCI distribution API, served by ECR too).

The emulator's ECR never receives pushes to the local registry, so `ecr:DescribeImages` cannot
tell whether a tag exists. The registry itself can, on AWS and locally alike.
"""

from __future__ import annotations

import ipaddress

import requests

from meta_flows.aws.ecr import RegistryLogin
from meta_flows.errors import RegistryError

MANIFEST_MEDIA_TYPES = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
TIMEOUT_SECONDS = 30


def registry_base_url(host: str) -> str:
    """Return the API base URL of `host`: plain HTTP only on loopback, HTTPS elsewhere."""
    name = host.rsplit(":", 1)[0].strip("[]")
    try:
        loopback = ipaddress.ip_address(name).is_loopback
    except ValueError:
        loopback = name == "localhost"
    return f"{'http' if loopback else 'https'}://{host}"


def find_manifest_digest(host: str, repository: str, tag: str, login: RegistryLogin) -> str | None:
    """Return the digest of `repository:tag` in the registry, or None when the tag is absent."""
    url = f"{registry_base_url(host)}/v2/{repository}/manifests/{tag}"
    try:
        reply = requests.head(
            url,
            auth=(login.username, login.password.get_secret_value()),
            headers={"Accept": MANIFEST_MEDIA_TYPES},
            timeout=TIMEOUT_SECONDS,
        )
    except requests.RequestException as exc:
        raise RegistryError(f"registry {host} cannot be reached: {exc}; check META_FLOWS_REGISTRY_HOST") from exc

    if reply.status_code == 404:
        return None
    if reply.status_code == 401:
        raise RegistryError(
            f"registry {host} rejected the login from ecr:GetAuthorizationToken (HTTP 401): check "
            "that META_FLOWS_REGISTRY_HOST is the registry of this account and region"
        )
    if reply.status_code != 200:
        raise RegistryError(f"registry {host} returned HTTP {reply.status_code} for {repository}:{tag}")
    return reply.headers.get("Docker-Content-Digest")
