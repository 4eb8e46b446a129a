"""Live progress of the demo: a rich display on a terminal, plain lines otherwise.

Presentation layer. The demo feeds :class:`Snapshot` values (the head-end's
getFirmwareUploadStatus value pairs, plus block counters scraped from its
``/metrics``) to a :class:`Progress`; :func:`make_progress` picks the rich
live view when stdout is a terminal and periodic plain lines when it is not.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Protocol

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

_SHOWN = (
    "up", "down", "notStarted", "pending", "accepted", "inProgress", "partial",
    "complete", "refused", "failed", "unreachable",
)  # fmt: skip


@dataclass(frozen=True)
class Snapshot:
    at: float
    """time.monotonic() of the reading."""
    pairs: dict[str, int]
    total: int
    blocks: dict[str, float] = field(default_factory=dict)
    """Block counters by kind ("multicast", "unicast"), when known."""


class Progress(Protocol):
    def note(self, text: str) -> None: ...
    def phase(self, name: str) -> None: ...
    def phase_done(self, name: str, seconds: float) -> None: ...
    def update(self, snap: Snapshot) -> None: ...
    def close(self) -> None: ...


class _Rates:
    """Blocks per second and ETA from consecutive snapshots."""

    def __init__(self) -> None:
        self.first: Snapshot | None = None
        self.last: Snapshot | None = None
        self.rate = 0.0

    def add(self, snap: Snapshot) -> None:
        prev = self.last
        if self.first is None:
            self.first = snap
        if prev is not None and snap.at > prev.at:
            blocks = sum(snap.blocks.values()) - sum(prev.blocks.values())
            self.rate = 0.7 * self.rate + 0.3 * blocks / (snap.at - prev.at)
        self.last = snap

    def eta(self, key: str) -> float | None:
        if self.first is None or self.last is None:
            return None
        done0 = self.first.pairs.get(key, 0)
        done1 = self.last.pairs.get(key, 0)
        elapsed = self.last.at - self.first.at
        if done1 <= done0 or elapsed <= 0:
            return None
        return (self.last.total - done1) * elapsed / (done1 - done0)

    def share(self) -> str:
        if self.last is None or not self.last.blocks:
            return "-"
        mc = self.last.blocks.get("multicast", 0.0)
        total = sum(self.last.blocks.values())
        return f"{100 * mc / total:.0f} % multicast" if total else "-"


class PlainProgress:
    """Periodic plain lines (for logs and CI)."""

    def __init__(self, every: float = 5.0, console: Console | None = None) -> None:
        self.console = console or Console(highlight=False, soft_wrap=True)
        self.every = every
        self._next = 0.0
        self._phase = ""
        self._rates = _Rates()

    def note(self, text: str) -> None:
        self.console.print(text)

    def phase(self, name: str) -> None:
        self._phase = name
        self._rates = _Rates()
        self.console.print(f"[{name}] started", markup=False)

    def phase_done(self, name: str, seconds: float) -> None:
        self.console.print(f"[{name}] done in {seconds:.1f} s", markup=False)

    def update(self, snap: Snapshot) -> None:
        self._rates.add(snap)
        if snap.at < self._next:
            return
        self._next = snap.at + self.every
        counts = " ".join(f"{k}={snap.pairs[k]}" for k in _SHOWN if snap.pairs.get(k))
        self.console.print(
            f"[{self._phase}] {counts} | {self._rates.rate:.0f} blocks/s"
            f" | {self._rates.share()}",
            markup=False,
        )

    def close(self) -> None:
        pass


class RichProgress:
    """A live table on a terminal."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self._phase = ""
        self._done: list[tuple[str, float]] = []
        self._rates = _Rates()
        self._snap: Snapshot | None = None
        self._live = Live(self._render(), console=self.console, refresh_per_second=4)
        self._live.start()

    def note(self, text: str) -> None:
        self.console.print(text)

    def phase(self, name: str) -> None:
        self._phase = name
        self._rates = _Rates()
        self._live.update(self._render())

    def phase_done(self, name: str, seconds: float) -> None:
        self._done.append((name, seconds))
        self._live.update(self._render())

    def update(self, snap: Snapshot) -> None:
        self._snap = snap
        self._rates.add(snap)
        self._live.update(self._render())

    def _render(self) -> Group:
        table = Table(title=f"meshfleet demo: {self._phase or 'starting'}")
        table.add_column("state")
        table.add_column("devices", justify="right")
        snap = self._snap
        for key in _SHOWN:
            value = snap.pairs.get(key, 0) if snap else 0
            if value:
                table.add_row(key, str(value))
        eta = self._rates.eta("complete" if self._phase == "upload" else "up")
        lines = [
            f"{self._rates.rate:,.0f} blocks/s, {self._rates.share()}",
            f"ETA {eta:.0f} s" if eta is not None else "ETA -",
        ]
        lines += [f"{name}: {secs:.1f} s" for name, secs in self._done]
        return Group(table, Text("\n".join(lines)))

    def close(self) -> None:
        self._live.stop()


def make_progress() -> Progress:
    """Rich on a terminal, plain lines otherwise."""
    if sys.stdout.isatty():
        return RichProgress()
    return PlainProgress()
