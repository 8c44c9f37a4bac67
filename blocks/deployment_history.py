"""The deployment history block: the versions of one deployment that rollback can return to."""

from __future__ import annotations

from typing import Any

from prefect.blocks.core import Block
from pydantic import Field


class DeploymentHistory(Block):
    """Recent versions of one deployment (image and settings), oldest first."""

    _block_type_name = "Deployment History"
    _block_type_slug = "meta-flows-deployment-history"
    _description = (
        "Versions of one deployment that register-deployment applied, oldest first. "
        "rollback-deployment returns the deployment to the version before its current one."
    )

    deployment: str = Field(description="Full name of the deployment, <flow name>/<deployment name>.")
    entries: list[dict[str, Any]] = Field(
        default_factory=list, description="One entry per applied version: image, settings, time, flow run."
    )
