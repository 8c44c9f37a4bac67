"""Field-level differences between two versions of a deployment, and their Markdown table.

Nested dictionaries (job variables, parameters) are compared key by key, so a change reads
`job_variables.env.REPORT_FORMAT: github -> text` rather than "job_variables changed".
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

MAX_CELL_CHARACTERS = 200


class FieldChange(BaseModel):
    """One value that differs: its dotted path, the value before and the value after."""

    path: str
    before: Any = None
    after: Any = None

    @property
    def field(self) -> str:
        """Top-level field the change belongs to, e.g. `job_variables`."""
        return self.path.split(".", 1)[0]


def canonical(value: Any) -> str:
    """Return a stable JSON text of `value`, so equal values compare equal whatever their key order."""
    return json.dumps(value, sort_keys=True, default=str)


def diff_values(path: str, before: Any, after: Any) -> list[FieldChange]:
    """List the differences between `before` and `after`, descending into dictionaries."""
    if canonical(before) == canonical(after):
        return []
    if isinstance(before, dict) and isinstance(after, dict) and before and after:
        changes: list[FieldChange] = []
        for key in sorted(set(before) | set(after), key=str):
            changes += diff_values(f"{path}.{key}", before.get(key), after.get(key))
        return changes
    return [FieldChange(path=path, before=before, after=after)]


def format_cell(value: Any) -> str:
    """Format a value for a Markdown table cell: JSON, shortened, with pipes escaped."""
    if value is None:
        return "-"
    text = value if isinstance(value, str) else canonical(value)
    if len(text) > MAX_CELL_CHARACTERS:
        text = text[: MAX_CELL_CHARACTERS - 3] + "..."
    return "`" + text.replace("|", "\\|").replace("`", "'") + "`"


def render_changes_markdown(changes: list[FieldChange]) -> str:
    """Render changes as a Markdown table with one row per changed value."""
    if not changes:
        return "No differences."
    lines = ["| field | before | after |", "|---|---|---|"]
    for change in changes:
        lines.append(f"| `{change.path}` | {format_cell(change.before)} | {format_cell(change.after)} |")
    return "\n".join(lines)
