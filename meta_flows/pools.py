"""Shared helpers for blocks and work pools on the Prefect server (used by prefect_plan.py)."""

from __future__ import annotations

import json
from typing import Any

from prefect.blocks.core import Block
from prefect.client.orchestration import SyncPrefectClient
from prefect.exceptions import ObjectNotFound

MANAGED_MARKER = "Managed by meta-flows (bootstrap-pool)."


def ensure_block_type(client: SyncPrefectClient, block_class: type[Block]) -> None:
    """Register the block's type and schema unless the server has this exact schema already."""
    try:
        client.read_block_type_by_slug(block_class.get_block_type_slug())
        client.read_block_schema_by_checksum(block_class._calculate_schema_checksum())
    except ObjectNotFound:
        block_class.register_type_and_schema()


def _block_values(block: Block) -> dict[str, Any]:
    # SecretStr compares by value, so equal keys compare equal without being revealed.
    return {name: getattr(block, name) for name in type(block).model_fields}


def _same_template(left: dict[str, Any], right: dict[str, Any]) -> bool:
    return json.dumps(left, sort_keys=True) == json.dumps(right, sort_keys=True)
