"""The build context of a flow image, as a deterministic tar, and its content-hash tag.

The tag is a hash of everything that goes into the image: the Dockerfile, every file of the
context after `.dockerignore` (path, mode and content), the base image by digest, the build
args and the platform. File times and owners are left out on purpose, so a fresh checkout of
unchanged code gives the same tag.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from docker.utils.build import exclude_paths

from meta_flows.images.dockerfile import APP_DIR, CA_BUNDLE_PATH, render_dockerfile

TAG_LENGTH = 16


@dataclass
class BuildContext:
    """Files of a build context keyed by their path inside it, plus the inputs of the tag."""

    files: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    build_args: dict[str, str] = field(default_factory=dict)
    platform: str = "linux/amd64"
    base_image_digest: str = ""

    def add(self, path: str, content: bytes, mode: int = 0o644) -> None:
        self.files[path] = (mode, content)

    def content_tag(self) -> str:
        """Return the content-hash tag of this context."""
        manifest = {
            "files": sorted(
                (path, mode, hashlib.sha256(content).hexdigest()) for path, (mode, content) in self.files.items()
            ),
            "build_args": sorted(self.build_args.items()),
            "platform": self.platform,
            "base_image": self.base_image_digest,
        }
        digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
        return digest[:TAG_LENGTH]

    def to_tar(self) -> bytes:
        """Pack the context as an uncompressed tar with fixed times and owners."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            for path in sorted(self.files):
                mode, content = self.files[path]
                info = tarfile.TarInfo(path)
                info.size = len(content)
                info.mode = mode
                info.mtime = 0
                archive.addfile(info, io.BytesIO(content))
        return buffer.getvalue()


def read_dockerignore(folder: Path) -> list[str]:
    """Return the patterns of the folder's .dockerignore, without comments and blank lines."""
    path = folder / ".dockerignore"
    if not path.is_file():
        return []
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def flow_files(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Return the flow folder's files after .dockerignore, keyed by relative path."""
    patterns = read_dockerignore(folder) + ["__pycache__", "**/__pycache__", "*.pyc", "**/*.pyc"]
    files: dict[str, tuple[int, bytes]] = {}
    for relative in sorted(exclude_paths(str(folder), patterns)):
        path = folder / relative
        if path.is_file() and not path.is_symlink():
            mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
            files[relative] = (mode, path.read_bytes())
    return files


def assemble_context(
    folder: Path,
    base_image_ref: str,
    base_image_digest: str,
    platform: str,
    ca_bundle: Path | None,
) -> BuildContext:
    """Assemble the build context of the flow in `folder` on the given base image."""
    context = BuildContext(platform=platform, base_image_digest=base_image_digest)
    files = flow_files(folder)
    own_dockerfile = files.pop("Dockerfile", None)

    if own_dockerfile is not None:
        # A flow's own Dockerfile gets the context as it is and the base image as a build arg.
        for path, (mode, content) in files.items():
            context.add(path, content, mode)
        context.add("Dockerfile", own_dockerfile[1])
        context.build_args["BASE_IMAGE"] = base_image_ref
    else:
        files.setdefault("requirements.txt", (0o644, b""))
        for path, (mode, content) in files.items():
            context.add(f"{APP_DIR}/{path}", content, mode)
        dockerfile = render_dockerfile(base_image_ref, folder.name, ca_bundle is not None)
        context.add("Dockerfile", dockerfile.encode())

    if ca_bundle is not None:
        context.add(CA_BUNDLE_PATH, ca_bundle.read_bytes())
    return context
