"""keep- tags released in the emulator's ECR when their version leaves the deployment history.

The images are put into the emulator's ECR directly (PutImage with a manifest), since on the
local stack pushes go to a registry that is not the emulator's ECR.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from meta_flows.deployments import DesiredDeployment
from meta_flows.history import HistoryEntry, protected_tag, release_protected_tags

HOST = "123456789012.dkr.ecr.us-east-1.amazonaws.com"


def manifest(seed: str) -> str:
    config = {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 1, "digest": "sha256:" + seed * 64}
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": config,
            "layers": [],
        }
    )


def keep(repository: str, tag: str) -> str:
    """Return the protected tag the history of flow/default gives `repository:tag`."""
    return protected_tag(f"{HOST}/{repository}:{tag}", "flow/default")


@pytest.fixture
def repository(stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, str]]:
    """A repository in the emulator's ECR with images a, b and c, each with its content and protected tag."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        monkeypatch.setenv(name, stack_env[name])
    ecr = boto3.client("ecr", region_name=stack_env["AWS_REGION"], endpoint_url=stack_env["AWS_ENDPOINT_URL"])
    name = f"e2e-history-{uuid.uuid4().hex[:6]}/flow"
    ecr.create_repository(repositoryName=name)
    for seed in ("a", "b", "c"):
        for tag in (f"tag{seed}", keep(name, f"tag{seed}")):
            ecr.put_image(repositoryName=name, imageManifest=manifest(seed), imageTag=tag)
    yield ecr, name
    ecr.delete_repository(repositoryName=name, force=True)


def entry(repository: str, tag: str, protected: bool = True) -> HistoryEntry:
    image = f"{HOST}/{repository}:{tag}"
    desired = DesiredDeployment.model_construct(flow_name="flow", name="default", job_variables={"image": image})
    address = f"{HOST}/{repository}:{protected_tag(image, desired.full_name)}"
    return HistoryEntry.model_construct(protected_image=address if protected else None, desired=desired)


def tags_in(ecr: Any, repository: str) -> list[str]:
    details = ecr.describe_images(repositoryName=repository)["imageDetails"]
    return sorted(tag for detail in details for tag in detail.get("imageTags", []))


def test_dropped_version_loses_keep_tag_only(repository: tuple[Any, str], stack_env: dict[str, str]) -> None:
    ecr, name = repository

    released = release_protected_tags([entry(name, "taga")], [entry(name, "tagb")], stack_env["AWS_REGION"])

    assert released == [f"{HOST}/{name}:{keep(name, 'taga')}"]
    assert tags_in(ecr, name) == sorted([keep(name, "tagb"), keep(name, "tagc"), "taga", "tagb", "tagc"])


def test_tag_still_used_by_kept_version_stays(repository: tuple[Any, str], stack_env: dict[str, str]) -> None:
    ecr, name = repository
    # The same image was deployed again later (say with other parameters); that version is kept,
    # even though its entry has no protected address recorded.
    kept = [entry(name, "taga", protected=False), entry(name, "tagc")]

    released = release_protected_tags([entry(name, "taga"), entry(name, "tagb")], kept, stack_env["AWS_REGION"])

    assert released == [f"{HOST}/{name}:{keep(name, 'tagb')}"]
    assert tags_in(ecr, name) == sorted([keep(name, "taga"), keep(name, "tagc"), "taga", "tagb", "tagc"])


def test_tag_missing_from_ecr_skipped(repository: tuple[Any, str], stack_env: dict[str, str]) -> None:
    ecr, name = repository

    released = release_protected_tags([entry(name, "tagz"), entry(name, "tagc")], [], stack_env["AWS_REGION"])

    assert released == [f"{HOST}/{name}:{keep(name, 'tagc')}"]
    assert tags_in(ecr, name) == sorted([keep(name, "taga"), keep(name, "tagb"), "taga", "tagb", "tagc"])


def test_other_history_tag_of_same_image_stays(repository: tuple[Any, str], stack_env: dict[str, str]) -> None:
    ecr, name = repository
    image = f"{HOST}/{name}:taga"
    other = protected_tag(image, "flow/other")
    ecr.put_image(repositoryName=name, imageManifest=manifest("a"), imageTag=other)

    released = release_protected_tags([entry(name, "taga")], [], stack_env["AWS_REGION"])

    assert released == [f"{HOST}/{name}:{keep(name, 'taga')}"]
    assert other in tags_in(ecr, name)
    assert keep(name, "taga") not in tags_in(ecr, name)
