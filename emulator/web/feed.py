"""What the head-end tells the live page as it happens (web layer, sans-IO).

The head-end calls into one :class:`LiveFeed`; the web app reads it back for
``/api/events`` and ``/api/series``. Nothing here reads a clock or touches a
socket: every call takes ``now``, POSIX seconds (``time.time()``), so the page
can print wall-clock times.

Two stores, both bounded:

- a ring buffer of recent :class:`FeedEvent` (refusals with their CSMP
  response code, failures, reboots, NB API operations, ...), numbered by a
  sequence number that only grows, so a poller asks for "events after n";
- a time series of one-second buckets over the last ``window`` seconds (15
  minutes by default): image blocks sent per second, multicast and unicast
  (:meth:`LiveFeed.count_blocks`), and per group the latest completion
  sample, members complete out of members (:meth:`LiveFeed.sample`).

A time earlier than the newest bucket (a clock step backwards) is counted in
the newest bucket rather than rewriting history. The feed is not thread-safe:
call it from the event loop that serves the page.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum

log = logging.getLogger(__name__)

#: Default number of events kept.
MAX_EVENTS = 1000
#: Default span of the time series, in seconds.
WINDOW = 15 * 60


class EventKind(StrEnum):
    """Event kinds the page knows how to colour; any other string is fine."""

    REFUSAL = "refusal"
    """A device answered a request with a non-zero CSMP response code."""
    FAILURE = "failure"
    """A device or a campaign step failed (image check, gave up, timeout)."""
    REBOOT = "reboot"
    """A device rebooted (into a new image) or registered again."""
    OPERATION = "operation"
    """An NB API operation: startUpload, stopUpload, scheduleReload, ..."""
    INFO = "info"
    """Anything else worth a line."""


@dataclass(frozen=True, slots=True)
class FeedEvent:
    """One line of the recent-events list."""

    seq: int
    """Sequence number, from 1, growing by one per event."""
    t: float
    """When it happened, POSIX seconds."""
    kind: str
    """An :class:`EventKind` value or another short word."""
    text: str
    """Human-readable description."""
    group: str | None = None
    """Firmware group concerned, if any."""
    eui64: str | None = None
    """Device concerned, if any (16 hex digits)."""
    code: int | None = None
    """CSMP response code of a refusal, or an NB API return code."""


@dataclass(slots=True)
class Bucket:
    """One second of the time series."""

    t: int
    """Start of the second, POSIX seconds."""
    multicast: int = 0
    """Image blocks sent multicast during that second."""
    unicast: int = 0
    """Image blocks sent unicast (resends) during that second."""
    completion: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Per group, the last (complete, total) sampled during that second."""


class LiveFeed:
    """Recent events and a one-second time series for the live page.

    Example, from the head-end::

        feed.event(now, EventKind.REFUSAL, "TransferRequest refused",
                   group="north", eui64="00173B0000000001", code=8)
        feed.count_blocks(now, multicast=1)
        feed.sample(now, "north", complete=812, total=1000)
    """

    def __init__(self, *, max_events: int = MAX_EVENTS, window: int = WINDOW) -> None:
        if max_events < 1 or window < 1:
            raise ValueError("max_events and window must be positive")
        self.window = window
        self._events: deque[FeedEvent] = deque(maxlen=max_events)
        self._seq = 0
        self._buckets: deque[Bucket] = deque()

    # -- events ------------------------------------------------------------

    def event(
        self,
        now: float,
        kind: str,
        text: str,
        *,
        group: str | None = None,
        eui64: str | None = None,
        code: int | None = None,
    ) -> FeedEvent:
        """Record an event and return it; the oldest falls out when full."""
        self._seq += 1
        item = FeedEvent(self._seq, float(now), str(kind), text, group, eui64, code)
        self._events.append(item)
        return item

    @property
    def last_seq(self) -> int:
        """Sequence number of the newest event (0 before the first)."""
        return self._seq

    def events_since(self, seq: int, limit: int | None = None) -> list[FeedEvent]:
        """Events with a sequence number above ``seq``, oldest first.

        With ``limit``, only the newest ``limit`` of them.
        """
        found: list[FeedEvent] = []
        for item in reversed(self._events):
            if item.seq <= seq or (limit is not None and len(found) >= limit):
                break
            found.append(item)
        found.reverse()
        return found

    # -- time series -------------------------------------------------------

    def count_blocks(self, now: float, multicast: int = 0, unicast: int = 0) -> None:
        """Add blocks sent at ``now`` to that second's counts."""
        if multicast < 0 or unicast < 0:
            raise ValueError("block counts cannot be negative")
        bucket = self._bucket(now)
        bucket.multicast += multicast
        bucket.unicast += unicast

    def sample(self, now: float, group: str, complete: int, total: int) -> None:
        """Record that ``complete`` of ``total`` members of ``group`` are done."""
        if complete < 0 or total < 0:
            raise ValueError("complete and total cannot be negative")
        self._bucket(now).completion[group] = (complete, total)

    @property
    def latest(self) -> int | None:
        """Start of the newest bucket, None while the series is empty."""
        return self._buckets[-1].t if self._buckets else None

    def buckets_since(self, since: float) -> Iterator[Bucket]:
        """Buckets starting at or after ``since``, oldest first.

        The newest bucket may still grow: a poller asks again from its ``t``.
        Seconds without any call have no bucket (read them as zero blocks).
        """
        start = int(since)
        for bucket in self._buckets:
            if bucket.t >= start:
                yield bucket

    def _bucket(self, now: float) -> Bucket:
        second = int(now)
        if self._buckets and second <= self._buckets[-1].t:
            return self._buckets[-1]
        bucket = Bucket(second)
        self._buckets.append(bucket)
        horizon = second - self.window
        while self._buckets[0].t <= horizon:
            self._buckets.popleft()
        return bucket
