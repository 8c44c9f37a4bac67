"""Results of a meta-flow per resource, and their Markdown rendering for artifacts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# The past tense after an apply; the present tense (`create`, `update`) in a dry-run plan.
Action = Literal["created", "updated", "unchanged", "foreign", "create", "update"]

MANAGED_TAG_KEY = "managed-by"
MANAGED_TAG_VALUE = "meta-flows"


@dataclass(frozen=True)
class ResourceResult:
    """One resource and what was done to it; `foreign` means it exists and was used as it is."""

    kind: str
    name: str
    action: Action
    detail: str = ""


def render_markdown_table(results: list[ResourceResult]) -> str:
    """Render results as a Markdown table for a Prefect artifact."""
    lines = ["| resource | name | action | detail |", "|---|---|---|---|"]
    for result in results:
        lines.append(f"| {result.kind} | `{result.name}` | {result.action} | {result.detail} |")
    return "\n".join(lines)


def render_text_table(results: list[ResourceResult]) -> str:
    """Render results as aligned text for a terminal."""
    width_kind = max([len("resource")] + [len(r.kind) for r in results])
    width_name = max([len("name")] + [len(r.name) for r in results])
    lines = [f"{'resource':<{width_kind}}  {'name':<{width_name}}  action"]
    for result in results:
        line = f"{result.kind:<{width_kind}}  {result.name:<{width_name}}  {result.action}"
        lines.append(f"{line}  ({result.detail})" if result.detail and result.action != "unchanged" else line)
    return "\n".join(lines)
