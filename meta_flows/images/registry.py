"""Questions to a registry through its own HTTP API (the OCI distribution API, served by ECR too).

The emulator's ECR never receives pushes to the local registry, so `ecr:DescribeImages` cannot
tell whether a tag exists. The registry itself can, on AWS and locally alike.

Every request retries connection failures, timeouts, HTTP 429 and 5xx responses with the same
bounded, jittered and logged backoff as the AWS calls. Each request this module and
`manifests` send is idempotent (HEAD and GET, and a PUT of a manifest under a tag).
"""

from __future__ import annotations

import ipaddress
import time
from urllib.parse import urlsplit

import requests

from meta_flows.aws.ecr import RegistryLogin
from meta_flows.aws.login_cache import RegistryLoginCache
from meta_flows.aws.retries import MAX_ATTEMPTS, TRANSIENT_STATUS_CODES, LoggedRetries, find_logger
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


def send_request(
    method: str,
    url: str,
    credentials: RegistryLogin | RegistryLoginCache,
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
) -> requests.Response:
    """Send one registry API request, repeating it while it fails in a way that may pass.

    With a login cache, a login that the registry rejects (HTTP 401) is replaced by a new one
    once. Returns the last response, whatever its status. Raises the last
    `requests.RequestException` when no attempt reached the registry.
    """
    if isinstance(credentials, RegistryLogin):
        return send_with_retries(method, url, credentials, headers, data)
    login = credentials.get()
    reply = send_with_retries(method, url, login, headers, data)
    if reply.status_code != 401:
        return reply
    where = urlsplit(url).path
    find_logger().info("registry %s rejected the cached login with HTTP 401, so a new one is fetched", where)
    credentials.reject(login)
    return send_with_retries(method, url, credentials.get(), headers, data)


def send_with_retries(
    method: str,
    url: str,
    login: RegistryLogin,
    headers: dict[str, str] | None,
    data: bytes | None,
) -> requests.Response:
    backoff = LoggedRetries("registry")
    where = f"{method} {urlsplit(url).path}"
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            reply = requests.request(
                method,
                url,
                auth=(login.username, login.password.get_secret_value()),
                headers=headers,
                data=data,
                timeout=TIMEOUT_SECONDS,
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            if attempt == MAX_ATTEMPTS:
                log_giving_up(where, type(exc).__name__, attempt)
                raise
            reason = type(exc).__name__
        else:
            if reply.status_code not in TRANSIENT_STATUS_CODES:
                return reply
            if attempt == MAX_ATTEMPTS:
                log_giving_up(where, f"HTTP {reply.status_code}", attempt)
                return reply
            reason = f"HTTP {reply.status_code}"
        delay = backoff.delay_before(attempt + 1)
        find_logger().warning(
            "registry %s failed with %s; retrying in %.2f s (attempt %d/%d)",
            where,
            reason,
            delay,
            attempt + 1,
            MAX_ATTEMPTS,
        )
        pause(delay)
    raise AssertionError("unreachable: the last attempt returns or raises")


def pause(seconds: float) -> None:
    """Wait before the next attempt; tests replace it to record the delays."""
    time.sleep(seconds)


def log_giving_up(where: str, reason: str, attempts: int) -> None:
    find_logger().error("registry %s failed with %s on attempt %d/%d: giving up", where, reason, attempts, attempts)


def find_manifest_digest(
    host: str, repository: str, tag: str, credentials: RegistryLogin | RegistryLoginCache
) -> str | None:
    """Return the digest of `repository:tag` in the registry, or None when the tag is absent."""
    url = f"{registry_base_url(host)}/v2/{repository}/manifests/{tag}"
    reply = send_or_explain("HEAD", url, host, credentials)
    if reply.status_code == 404:
        return None
    check_manifest_reply(reply, host, f"{repository}:{tag}")
    return reply.headers.get("Docker-Content-Digest")


def send_or_explain(
    method: str, url: str, host: str, credentials: RegistryLogin | RegistryLoginCache
) -> requests.Response:
    """Send a manifest request; a registry that no attempt reached becomes a RegistryError."""
    try:
        return send_request(method, url, credentials, headers={"Accept": MANIFEST_MEDIA_TYPES})
    except requests.RequestException as exc:
        raise RegistryError(f"registry {host} cannot be reached: {exc}; check META_FLOWS_REGISTRY_HOST") from exc


def check_manifest_reply(reply: requests.Response, host: str, image: str) -> None:
    """Raise a RegistryError that names what to check unless the registry replied 200."""
    if reply.status_code == 401:
        raise RegistryError(
            f"registry {host} rejected the login from ecr:GetAuthorizationToken (HTTP 401): check "
            "that META_FLOWS_REGISTRY_HOST is the registry of this account and region"
        )
    if reply.status_code != 200:
        raise RegistryError(f"registry {host} returned HTTP {reply.status_code} for {image}")
