"""Registry counts of a benchmark step: manifests and blobs pushed, tags, bytes uploaded.

Counts come from the registry itself (its access log and its HTTP API), so both deploy paths
are measured the same way whatever they report about themselves.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import requests

MANIFEST_PUT = re.compile(r'"PUT /v2/(?P<repository>[^ ]+)/manifests/(?P<reference>[^ ]+) HTTP/1\.1" 201 ')
BLOB_PUT = re.compile(
    r'"PUT /v2/(?P<repository>[^ ]+)/blobs/uploads/[^ ]*digest=(?P<digest>[^ &]+)[^ ]* HTTP/1\.1" 201 '
)
TIMEOUT_SECONDS = 10
KEEP_TAG_PREFIX = "keep-"


@dataclass(frozen=True)
class PushCounts:
    """Pushes of one measured step, as the registry logged them."""

    manifests: int
    blobs: int
    bytes: int


class RegistryMeter:
    """Read the registry's access log from a mark on, for repositories under given prefixes."""

    def __init__(self, host: str, log: Path, auth: tuple[str, str], prefixes: list[str]) -> None:
        self.host = host
        self.log = log
        self.auth = auth
        self.prefixes = tuple(f"{p}/" for p in prefixes)

    def mark(self) -> int:
        return self.log.stat().st_size

    def pushes_since(self, mark: int) -> PushCounts:
        with self.log.open("rb") as stream:
            stream.seek(mark)
            text = stream.read().decode(errors="replace")
        # A manifest put under a `keep-` tag re-tags an image for the deployment history; it
        # uploads no image, so it is not counted as a push (its tag still counts as created).
        manifests = [
            m
            for m in MANIFEST_PUT.finditer(text)
            if m["repository"].startswith(self.prefixes) and not m["reference"].startswith(KEEP_TAG_PREFIX)
        ]
        blobs = {
            (m["repository"], urllib.parse.unquote(m["digest"]))
            for m in BLOB_PUT.finditer(text)
            if m["repository"].startswith(self.prefixes)
        }
        size = sum(self.blob_size(repository, digest) for repository, digest in blobs)
        return PushCounts(manifests=len(manifests), blobs=len(blobs), bytes=size)

    def blob_size(self, repository: str, digest: str) -> int:
        reply = requests.head(
            f"http://{self.host}/v2/{repository}/blobs/{digest}", auth=self.auth, timeout=TIMEOUT_SECONDS
        )
        reply.raise_for_status()
        return int(reply.headers.get("Content-Length", 0))

    def tags(self, repository: str) -> set[str]:
        reply = requests.get(f"http://{self.host}/v2/{repository}/tags/list", auth=self.auth, timeout=TIMEOUT_SECONDS)
        if reply.status_code == 404:
            return set()
        reply.raise_for_status()
        return set(reply.json().get("tags") or [])

    def tag_count(self, repositories: list[str]) -> int:
        return sum(len(self.tags(r)) for r in repositories)
