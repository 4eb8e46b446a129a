"""One timer for thousands of deadlines (layer ``fleet``, sans-IO).

DESIGN.md, "Things that are easy to get wrong": a loop timer per message or a
task per device does not scale to 100,000 devices. The fleet therefore keeps
every device deadline (and every delayed datagram) in one :class:`TimerWheel`
and arms a single loop timer for :meth:`TimerWheel.next_deadline`.

Theory of operation: time is cut into slots of ``resolution`` seconds; slot
``k`` holds the keys whose deadline lies in ``[k * res, (k + 1) * res)``. A
dict maps slot -> set of keys and key -> slot, so (re)scheduling a key is
O(1), and a heap of slot numbers (each pushed once, when its set is created)
finds the earliest slot. A slot becomes due at its *end*, so no key fires
before its deadline and a key fires at most ``resolution`` late. Sparse slots
cost nothing: this is a calendar queue more than a fixed ring, which lets
deadlines hours away (report timers) share the structure with 50 ms ones.

Memory: idle devices have deadlines spread over hours, mostly one per slot;
a slot holding one key keeps the key itself (a set of one costs ~216 bytes),
and becomes a set when a second key arrives.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)

DEFAULT_RESOLUTION = 0.05
_EMPTY: Any = object()


class TimerWheel(Generic[K]):
    """Deadlines by key, bucketed in slots of ``resolution`` seconds."""

    def __init__(self, resolution: float = DEFAULT_RESOLUTION) -> None:
        if resolution <= 0:
            raise ValueError("resolution must be > 0")
        self.resolution = resolution
        self._slots: dict[int, K | set[K]] = {}
        """Slot -> its key, or the set of its keys when more than one."""
        self._slot_of: dict[K, int] = {}
        self._heap: list[int] = []

    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, key: object) -> bool:
        return key in self._slot_of

    def _slot(self, deadline: float) -> int:
        return math.floor(deadline / self.resolution)

    def schedule(self, key: K, deadline: float | None) -> None:
        """Fire ``key`` once at ``deadline`` (replacing its earlier one; None
        cancels)."""
        if deadline is None or math.isinf(deadline):
            self.cancel(key)
            return
        slot = self._slot(deadline)
        old = self._slot_of.get(key)
        if old == slot:
            return
        if old is not None:
            self._discard(key, old)
        slots = self._slots
        keys = slots.get(slot, _EMPTY)
        if keys is _EMPTY:
            slots[slot] = key
            heapq.heappush(self._heap, slot)
        elif type(keys) is set:
            keys.add(key)
        else:
            slots[slot] = {keys, key}
        self._slot_of[key] = slot

    def cancel(self, key: K) -> None:
        old = self._slot_of.pop(key, None)
        if old is not None:
            self._discard_from_slot(key, old)

    def _discard(self, key: K, slot: int) -> None:
        del self._slot_of[key]
        self._discard_from_slot(key, slot)

    def _discard_from_slot(self, key: K, slot: int) -> None:
        keys = self._slots[slot]
        if type(keys) is not set:
            del self._slots[slot]  # its heap entry goes lazily
            return
        keys.discard(key)
        if len(keys) == 1:
            self._slots[slot] = keys.pop()

    def next_deadline(self) -> float | None:
        """When the earliest non-empty slot becomes due (its end), or None."""
        heap = self._heap
        while heap and heap[0] not in self._slots:
            heapq.heappop(heap)
        if not heap:
            return None
        return (heap[0] + 1) * self.resolution

    def pop_due(self, now: float) -> list[K]:
        """Remove and return every key of every slot that ended by ``now``."""
        due: list[K] = []
        res = self.resolution
        heap, slots, slot_of = self._heap, self._slots, self._slot_of
        while heap and (heap[0] + 1) * res <= now:  # same test as next_deadline
            slot = heapq.heappop(heap)
            keys = slots.pop(slot, _EMPTY)
            if keys is _EMPTY:
                continue
            if type(keys) is set:
                for key in keys:
                    del slot_of[key]
                due.extend(keys)
            else:
                del slot_of[keys]  # type: ignore[arg-type]
                due.append(keys)  # type: ignore[arg-type]
        return due
