"""The kept history of each deployment: the versions rollback-deployment can return to.

register-deployment appends the version it applied (the whole desired deployment: image, job
variables, parameters, schedules, parameter schema) to a `DeploymentHistory` block named
after the deployment, and keeps the last `HISTORY_LIMIT` versions.

Each kept image also gets the tag `keep-<8 hex of the deployment name>-<tag>` in its
repository, removed again in ECR when its version leaves the history
(`release_protected_tags`). An ECR lifecycle policy on
the flow repositories must start with `protected_lifecycle_rule()`. In ECR, an image that
matches the tag selection of a rule cannot be expired by a rule with a lower priority (a higher
`rulePriority` number), so no later rule of the policy can expire a kept image.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from prefect.exceptions import ObjectNotFound
from pydantic import BaseModel

from blocks.deployment_history import DeploymentHistory
from meta_flows.aws.clients import aws_client
from meta_flows.aws.ecr import RegistryLogin
from meta_flows.aws.retries import find_logger
from meta_flows.deployments import DesiredDeployment
from meta_flows.diff import canonical
from meta_flows.errors import MetaFlowsError
from meta_flows.images.manifests import add_tag, split_image
from meta_flows.pools import ensure_block_type
from meta_flows.server_writes import server_writes

HISTORY_LIMIT = 10
PROTECTED_TAG_PREFIX = "keep-"
# ECR tags are at most 128 characters; the prefix, 8 hex characters and a 16-character content tag fit easily.
MAX_TAG_LENGTH = 128
# The protected tags that protected_tag() writes: the prefix, then the deployment's 8 hex characters.
OWNED_TAG = re.compile(rf"^{PROTECTED_TAG_PREFIX}[0-9a-f]{{8}}-")
ECR_HOST = re.compile(r"^(\d{12})\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")


class RollbackError(MetaFlowsError):
    """The deployment has no earlier version to return to, or it is not where rollback expects."""


class HistoryEntry(BaseModel):
    """One applied version of a deployment."""

    recorded_at: dt.datetime
    flow_run_id: str | None = None
    protected_image: str | None = None
    desired: DesiredDeployment

    @property
    def image(self) -> str | None:
        image = self.desired.job_variables.get("image")
        return str(image) if image else None


def history_block_name(full_name: str) -> str:
    """Return the block name of a deployment's history: lower-case letters, digits and '-'."""
    slug = re.sub(r"[^a-z0-9]+", "-", full_name.lower()).strip("-")
    return f"history-{slug}"[:100]


def load_history(client: Any, full_name: str) -> list[HistoryEntry]:
    """Read the kept versions of `full_name`, oldest first, or an empty list when none are kept.

    The block document is read with the caller's client: `DeploymentHistory.load` would open a
    client of its own and build the block's schema on every call, which deploy-all-flows makes
    once per flow.
    """
    try:
        document = client.read_block_document_by_name(
            history_block_name(full_name), DeploymentHistory.get_block_type_slug(), include_secrets=False
        )
    except ObjectNotFound:
        return []
    return [HistoryEntry.model_validate(entry) for entry in document.data.get("entries") or []]


def save_history(client: Any, full_name: str, entries: list[HistoryEntry]) -> None:
    """Store `entries` (the last HISTORY_LIMIT of them) as the history of `full_name`."""
    kept = entries[-HISTORY_LIMIT:]
    block = DeploymentHistory(deployment=full_name, entries=[e.model_dump(mode="json") for e in kept])
    with server_writes:
        ensure_block_type(client, DeploymentHistory)
        block.save(history_block_name(full_name), overwrite=True)


def same_version(entry: HistoryEntry, desired: DesiredDeployment) -> bool:
    """Return True when `entry` contains exactly `desired`."""
    return canonical(entry.desired.model_dump(mode="json")) == canonical(desired.model_dump(mode="json"))


def protected_tag(image: str, full_name: str) -> str:
    """Return the protected tag of an image in the history of `full_name`.

    It is `keep-`, 8 hex characters of the deployment's name, and the image's tag (or the
    digest's first 16 hex characters). Two deployments of one flow share a repository and its
    images, so each history needs tags of its own: removing one history's tag must not unprotect
    an image that another history still refers to.
    """
    _, _, reference = split_image(image)
    name = reference.removeprefix("sha256:")[:16] if "@" in image else reference
    owner = hashlib.sha256(full_name.encode()).hexdigest()[:8]
    return f"{PROTECTED_TAG_PREFIX}{owner}-{name}"[:MAX_TAG_LENGTH]


def protect_image(image: str, full_name: str, login: RegistryLogin) -> str:
    """Tag `image` with its protected tag, so the lifecycle policy keeps it; return the tagged address."""
    return add_tag(image, protected_tag(image, full_name), login)


def record_version(
    client: Any,
    desired: DesiredDeployment,
    get_login: Callable[[], RegistryLogin] | None,
    flow_run_id: str | None,
    region: str | None = None,
) -> HistoryEntry | None:
    """Append `desired` to its history unless it is the last version kept; return the new entry.

    `get_login` is called only when a new version's image must be tagged, so an unchanged
    deploy requests no login from ECR. With `region`, the versions that fall out of the history
    also lose their images' `keep-` tags in ECR.
    """
    entries = load_history(client, desired.full_name)
    if entries and same_version(entries[-1], desired):
        return None
    image = str(desired.job_variables.get("image") or "")
    protected = protect_image(image, desired.full_name, get_login()) if image and get_login is not None else None
    entry = HistoryEntry(
        recorded_at=dt.datetime.now(dt.UTC),
        flow_run_id=flow_run_id,
        protected_image=protected,
        desired=desired,
    )
    all_entries = [*entries, entry]
    save_history(client, desired.full_name, all_entries)
    if region is not None:
        release_protected_tags(all_entries[:-HISTORY_LIMIT], all_entries[-HISTORY_LIMIT:], region)
    return entry


def registry_id_of(host: str) -> dict[str, str]:
    """Return `{"registryId": account}` for an ECR host (<account>.dkr.ecr.<region>.amazonaws.com), else nothing."""
    match = ECR_HOST.match(host)
    return {"registryId": match.group(1)} if match else {}


def release_protected_tags(dropped: list[HistoryEntry], kept: list[HistoryEntry], region: str) -> list[str]:
    """Remove the `keep-` tag of each image that left the history; return the images untagged.

    A tag that a kept version still refers to stays. Tags are compared by repository and tag,
    whatever registry host an entry names. In ECR, BatchDeleteImage with a tag removes only that
    tag while the image has another one (its content tag), and the lifecycle policy may then
    expire the image. A tag that ECR does not have is skipped: on the local stack the images live
    in a registry that is not the emulator's ECR. Any other failure is logged and leaves the tag
    in place, so an image is kept too long rather than lost.
    """
    in_use = {split_image(entry.protected_image)[1:] for entry in kept if entry.protected_image}
    # An entry recorded without a protected address still refers to its image's tag.
    in_use |= {
        (split_image(entry.image)[1], protected_tag(entry.image, entry.desired.full_name))
        for entry in kept
        if entry.image
    }
    logger = find_logger()
    tags_by_repository: dict[tuple[str, str], set[str]] = {}
    for entry in dropped:
        if not entry.protected_image:
            continue
        host, repository, tag = split_image(entry.protected_image)
        if not OWNED_TAG.match(tag):
            # NOTE: a tag without the deployment's hash was written before each history had
            # tags of its own. Another deployment may still need it, so it stays.
            logger.info("Tag %s of ECR repository %s may be shared with another deployment; it stays", tag, repository)
            continue
        if (repository, tag) not in in_use:
            tags_by_repository.setdefault((host, repository), set()).add(tag)

    released: list[str] = []
    for (host, repository), tags in sorted(tags_by_repository.items()):
        image_ids = [{"imageTag": tag} for tag in sorted(tags)]
        try:
            reply = aws_client("ecr", region).batch_delete_image(
                repositoryName=repository, imageIds=image_ids, **registry_id_of(host)
            )
        except (BotoCoreError, ClientError) as exc:
            logger.warning(
                "Removing tags %s from ECR repository %s failed, so those images stay protected: %s",
                ", ".join(sorted(tags)),
                repository,
                exc,
            )
            continue
        released += [f"{host}/{repository}:{image_id['imageTag']}" for image_id in reply.get("imageIds", [])]
        for failure in reply.get("failures", []):
            tag = failure.get("imageId", {}).get("imageTag")
            if failure.get("failureCode") == "ImageNotFound":
                logger.info("Tag %s is not in ECR repository %s; nothing to remove", tag, repository)
            else:
                logger.warning(
                    "Removing tag %s from ECR repository %s failed (%s: %s), so that image stays protected",
                    tag,
                    repository,
                    failure.get("failureCode"),
                    failure.get("failureReason"),
                )
    for image in released:
        logger.info("Removed %s: its version left the kept history", image)
    return released


def find_rollback_target(entries: list[HistoryEntry], current_image: str | None) -> tuple[int, HistoryEntry]:
    """Return the index of the current version in `entries` and the version kept before it."""
    for index in range(len(entries) - 1, -1, -1):
        if entries[index].image == current_image:
            if index == 0:
                raise RollbackError(
                    f"the deployment runs {current_image}, the oldest version kept: there is no earlier "
                    "version to roll back to"
                )
            return index, entries[index - 1]
    kept = ", ".join(e.image or "-" for e in entries) or "none"
    raise RollbackError(
        f"the deployment runs {current_image}, which is not in its kept history ({kept}); it was "
        "changed outside register-deployment: redeploy it with deploy-flow first"
    )


def protected_lifecycle_rule(priority: int = 1) -> dict[str, Any]:
    """Return the ECR lifecycle rule that keeps every image tagged `keep-...`.

    It must have the lowest `rulePriority` of the policy. Its count is far above the number of
    kept versions, so it never expires anything in practice.
    """
    return {
        "rulePriority": priority,
        "description": "Keep images that a deployment history refers to (tag prefix keep-).",
        "selection": {
            "tagStatus": "tagged",
            "tagPrefixList": [PROTECTED_TAG_PREFIX],
            "countType": "imageCountMoreThan",
            "countNumber": 9999,
        },
        "action": {"type": "expire"},
    }
