"""Push progress from the engine's push stream, summed over layers and reported at most every few seconds."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

PROGRESS_INTERVAL_SECONDS = 5.0


def format_bytes(count: float) -> str:
    """Format a byte count in binary units, e.g. 41.2 MiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


class PushProgress:
    """Sums the engine's per-layer progress and emits one summary line per interval.

    The engine sends a "Pushing" message many times a second for every layer, so passing them
    on one by one would flood the run log.
    """

    def __init__(
        self,
        emit: Callable[[str], None],
        interval: float = PROGRESS_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.emit = emit
        self.interval = interval
        self.clock = clock
        self.current: dict[str, int] = {}
        self.total: dict[str, int] = {}
        self.done: set[str] = set()
        self.last_emitted = clock()

    def update(self, chunk: dict[str, Any]) -> None:
        """Take one message of the push stream; emit a summary when the interval has passed."""
        layer = str(chunk.get("id", ""))
        status = str(chunk.get("status", ""))
        detail = chunk.get("progressDetail") or {}
        if status == "Pushing" and detail.get("total"):
            self.current[layer] = int(detail.get("current") or 0)
            self.total[layer] = int(detail["total"])
        elif status in ("Pushed", "Layer already exists"):
            self.done.add(layer)
            if layer in self.total:
                self.current[layer] = self.total[layer]
        else:
            return
        now = self.clock()
        if self.total and now - self.last_emitted >= self.interval:
            self.last_emitted = now
            self.emit(self.summary())

    def summary(self) -> str:
        sent = sum(self.current.values())
        total = sum(self.total.values())
        return f"Pushing: {format_bytes(sent)} of {format_bytes(total)} sent, {len(self.done)} layers done"
