"""Plan, then apply: one step per resource, computed by look-ups only, applied in order.

`--dry-run` prints the plan; an apply runs the very same steps, so the two never diverge. A
step whose planned action is `unchanged` or `foreign` makes no call when applied.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from meta_flows.report import ResourceResult

PlannedAction = Literal["create", "update", "unchanged", "foreign"]

PAST_TENSE: dict[PlannedAction, Literal["created", "updated", "unchanged", "foreign"]] = {
    "create": "created",
    "update": "updated",
    "unchanged": "unchanged",
    "foreign": "foreign",
}


@dataclass
class Step:
    """One resource, the action planned for it, and the call that carries the action out."""

    kind: str
    name: str
    action: PlannedAction
    detail: str = ""
    run: Callable[[], None] | None = None

    def planned(self) -> ResourceResult:
        """Return the step as a row of the dry-run table."""
        return ResourceResult(self.kind, self.name, self.action, self.detail)

    def apply(self) -> ResourceResult:
        """Carry out a `create` or `update`; the other actions make no call."""
        if self.action in ("create", "update"):
            if self.run is None:
                raise RuntimeError(f"step {self.kind} {self.name} plans {self.action} but has nothing to run")
            self.run()
        return ResourceResult(self.kind, self.name, PAST_TENSE[self.action], self.detail)


def unchanged_or_update(kind: str, name: str, differences: list[str], run: Callable[[], None]) -> Step:
    """Return an `update` step naming what differs, or an `unchanged` one when nothing does."""
    if not differences:
        return Step(kind, name, "unchanged")
    return Step(kind, name, "update", ", ".join(differences), run)
