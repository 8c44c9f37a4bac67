"""The kept history of each deployment: the versions rollback-deployment can return to.

register-deployment appends the version it applied (the whole desired deployment: image, job
variables, parameters, schedules, parameter schema) to a `DeploymentHistory` block named
after the deployment, and keeps the last `HISTORY_LIMIT` versions.

Each kept image also gets the tag `keep-<tag>` in its repository. An ECR lifecycle policy on
the flow repositories must start with `protected_lifecycle_rule()`. In ECR, an image that
matches the tag selection of a rule cannot be expired by a rule with a lower priority (a higher
`rulePriority` number), so no later rule of the policy can expire a kept image.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from blocks.deployment_history import DeploymentHistory
from meta_flows.aws.ecr import RegistryLogin
from meta_flows.deployments import DesiredDeployment
from meta_flows.diff import canonical
from meta_flows.errors import MetaFlowsError
from meta_flows.images.manifests import add_tag, split_image
from meta_flows.pools import ensure_block_type
from meta_flows.server_writes import server_writes

HISTORY_LIMIT = 10
PROTECTED_TAG_PREFIX = "keep-"
# ECR tags are at most 128 characters; the prefix plus a 16-character content tag fits easily.
MAX_TAG_LENGTH = 128


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


def load_history(full_name: str) -> list[HistoryEntry]:
    """Read the kept versions of `full_name`, oldest first; an empty list when none are kept."""
    try:
        block: DeploymentHistory = DeploymentHistory.load(history_block_name(full_name), validate=False)  # type: ignore[assignment]
    except ValueError:
        return []
    return [HistoryEntry.model_validate(entry) for entry in block.entries]


def save_history(client: Any, full_name: str, entries: list[HistoryEntry]) -> None:
    """Store `entries` (the last HISTORY_LIMIT of them) as the history of `full_name`."""
    # NOTE: an entry that leaves the history keeps its image's keep- tag, so the lifecycle
    # rule keeps that image too until someone deletes the tag.
    kept = entries[-HISTORY_LIMIT:]
    block = DeploymentHistory(deployment=full_name, entries=[e.model_dump(mode="json") for e in kept])
    with server_writes:
        ensure_block_type(client, DeploymentHistory)
        block.save(history_block_name(full_name), overwrite=True)


def same_version(entry: HistoryEntry, desired: DesiredDeployment) -> bool:
    """Return True when `entry` contains exactly `desired`."""
    return canonical(entry.desired.model_dump(mode="json")) == canonical(desired.model_dump(mode="json"))


def protected_tag(image: str) -> str:
    """Return the protected tag of an image: `keep-` and its tag (or the digest's first 16 hex characters)."""
    _, _, reference = split_image(image)
    name = reference.removeprefix("sha256:")[:16] if "@" in image else reference
    return f"{PROTECTED_TAG_PREFIX}{name}"[:MAX_TAG_LENGTH]


def protect_image(image: str, login: RegistryLogin) -> str:
    """Tag `image` with its protected tag, so the lifecycle policy keeps it; return the tagged address."""
    return add_tag(image, protected_tag(image), login)


def record_version(
    client: Any, desired: DesiredDeployment, get_login: Callable[[], RegistryLogin] | None, flow_run_id: str | None
) -> HistoryEntry | None:
    """Append `desired` to its history unless it is the last version kept; return the new entry.

    `get_login` is called only when a new version's image must be tagged, so an unchanged
    deploy asks ECR for no login.
    """
    entries = load_history(desired.full_name)
    if entries and same_version(entries[-1], desired):
        return None
    image = str(desired.job_variables.get("image") or "")
    protected = protect_image(image, get_login()) if image and get_login is not None else None
    entry = HistoryEntry(
        recorded_at=dt.datetime.now(dt.UTC),
        flow_run_id=flow_run_id,
        protected_image=protected,
        desired=desired,
    )
    save_history(client, desired.full_name, [*entries, entry])
    return entry


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
