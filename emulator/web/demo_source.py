"""An in-memory :class:`~emulator.web.status.StatusSource` (test double layer).

:class:`DemoSource` holds a made-up fleet split into firmware groups and, when
:meth:`DemoSource.step` is called, plays plausible campaigns on it: a
TransferRequest some members refuse, multicast blocks with a little loss,
unicast resends of what is missing, a scheduled reload and reboots into the
new image, then a pause and the next campaign. It writes the same events and
counts into its :class:`~emulator.web.feed.LiveFeed` that the head-end would.

Tests drive it by hand instead (:meth:`DemoSource.set_states`,
:meth:`DemoSource.set_action`); the screenshot tool and ``--demo`` runs let
:func:`drive` step it on the wall clock. Seeded: the same calls give the same
fleet.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from emulator.headend.api import ImageInfo, ImageInfoList
from emulator.web.feed import EventKind, LiveFeed
from emulator.web.status import (
    KNOWN_STATES,
    DeviceDetail,
    DeviceGrid,
    GroupStatus,
    SlotInfo,
)

log = logging.getLogger(__name__)

HARDWARE_ID = "OPENCSMP"
#: (file name, version) of the images the demo campaigns alternate between.
IMAGES = (
    ("opencsmp-node-6.8.99.bin", "6.8.99"),
    ("opencsmp-node-6.9.99.bin", "6.9.99"),
)
DEFAULT_GROUPS: Mapping[str, int] = {"north": 4000, "south": 3000, "harbour": 1500}
#: What the campaigns' refusals say (CSMP TransferResponse codes).
REFUSALS = {1: "incompatible hardware", 8: "pending reboot", 11: "duplicate transfer"}

_CODE = {name: code for code, name in enumerate(KNOWN_STATES)}
_AFTER_UPLOAD = frozenset(
    _CODE[s] for s in ("UPLOADED", "BACKUP_SET", "RELOAD_SCHEDULED", "RELOADING")
)


@dataclass(slots=True)
class _Group:
    name: str
    group_id: int
    start: int
    members: int
    action: str = "IDLE"
    image: int = 0
    phase_at: float = 0.0
    next_block: int = 0
    reload_at: datetime | None = None


@dataclass(slots=True)
class _Fleet:
    running: bytearray = field(default_factory=bytearray)
    held: list[int] = field(default_factory=list)
    last_heard: list[float] = field(default_factory=list)


class DemoSource:
    """A fleet of ``sum(groups.values())`` devices in memory.

    Devices of one group sit next to each other, in group order; the first
    device is ``00173B0000000001``.
    """

    def __init__(
        self,
        groups: Mapping[str, int] | None = None,
        *,
        seed: int = 1,
        now: float | None = None,
        blocks: int = 192,
    ) -> None:
        sizes = dict(DEFAULT_GROUPS if groups is None else groups)
        now = time.time() if now is None else now
        self._feed = LiveFeed()
        self._rng = random.Random(seed)
        self.blocks = blocks
        self._groups: dict[str, _Group] = {}
        start = 0
        for number, (name, size) in enumerate(sizes.items(), start=1):
            self._groups[name.lower()] = _Group(name, number, start, size, phase_at=now)
            start += size
        self.count = start
        self.eui64 = [f"00173B{i + 1:010X}" for i in range(start)]
        self._index = {eui: i for i, eui in enumerate(self.eui64)}
        self.states = bytearray([_CODE["IDLE"]]) * start
        self._fleet = _Fleet(
            running=bytearray(start),
            held=[0] * start,
            last_heard=[now - self._rng.uniform(0, 600) for _ in range(start)],
        )
        for i in self._rng.sample(range(start), k=start // 100):
            self.states[i] = _CODE["DOWN"]

    # -- StatusSource -------------------------------------------------------

    @property
    def feed(self) -> LiveFeed:
        return self._feed

    def groups(self) -> list[GroupStatus]:
        return [self._status(group) for group in self._groups.values()]

    def grid(self, group: str | None) -> DeviceGrid | None:
        if group is None:
            return DeviceGrid(self.eui64, bytes(self.states), KNOWN_STATES)
        found = self._groups.get(group.lower())
        if found is None:
            return None
        span = slice(found.start, found.start + found.members)
        return DeviceGrid(self.eui64[span], bytes(self.states[span]), KNOWN_STATES)

    def device(self, eui64: str) -> DeviceDetail | None:
        i = self._index.get(eui64.upper())
        if i is None:
            return None
        group = self._group_of(i)
        state = KNOWN_STATES[self.states[i]]
        running = IMAGES[self._fleet.running[i]]
        campaign = IMAGES[group.image]
        held = self._fleet.held[i]
        slots: list[SlotInfo] = [
            _slot(1, "RUN", running, self.blocks, self.blocks),
            _slot(2, "UPLOAD", campaign if held else None, held, self.blocks),
            _slot(3, "BACKUP", IMAGES[0], self.blocks, self.blocks),
        ]
        return {
            "eui64": self.eui64[i],
            "address": f"2001:db8:{group.group_id:x}::{i + 1:x}",
            "hardware_id": HARDWARE_ID,
            "running_version": running[1],
            "group": group.name,
            "slots": slots,
            "last_heard": self._fleet.last_heard[i],
            "up": state != "DOWN",
            "upload_state": state,
        }

    async def image_info(self, group: str) -> ImageInfoList | None:
        found = self._groups.get(group.lower())
        if found is None:
            return None
        members = range(found.start, found.start + found.members)
        images = []
        for number, (name, version) in enumerate(IMAGES):
            running = sum(1 for i in members if self._fleet.running[i] == number)
            uploaded = 0
            if number == found.image:
                uploaded = sum(1 for i in members if self.states[i] in _AFTER_UPLOAD)
            backup = found.members if number == 0 else 0
            images.append(ImageInfo(name, version, running, uploaded, backup))
        return ImageInfoList(images, found.action, found.reload_at)

    # -- test controls ----------------------------------------------------

    def set_states(self, group: str, state: str) -> None:
        """Put every member of ``group`` in ``state`` (one of KNOWN_STATES)."""
        found = self._groups[group.lower()]
        end = found.start + found.members
        self.states[found.start : end] = bytes([_CODE[state]]) * found.members

    def set_action(self, group: str, action: str) -> None:
        """Set the action status ``group`` reports."""
        self._groups[group.lower()].action = action

    # -- simulation -------------------------------------------------------

    def start(self, now: float, group: str) -> None:
        """Start an upload campaign of the other image on ``group``."""
        found = self._groups[group.lower()]
        found.image = 1 - found.image
        found.action, found.phase_at, found.next_block = "UPLOADING", now, 0
        name = IMAGES[found.image][0]
        self._feed.event(
            now, EventKind.OPERATION, f"startUpload {name}", group=found.name, code=0
        )
        for i in self._members(found):
            if self.states[i] == _CODE["DOWN"]:
                continue
            self._fleet.held[i] = 0
            if self._rng.random() < 0.01:
                code = self._rng.choice(list(REFUSALS))
                self.states[i] = _CODE["REFUSED"]
                text = f"TransferRequest refused: {REFUSALS[code]}"
                self._feed.event(
                    now,
                    EventKind.REFUSAL,
                    text,
                    group=found.name,
                    eui64=self.eui64[i],
                    code=code,
                )
            else:
                self.states[i] = _CODE["PENDING"]

    def step(self, now: float, dt: float = 1.0) -> None:
        """Advance every group's campaign by ``dt`` seconds ending at ``now``."""
        for group in self._groups.values():
            handler = {
                "IDLE": self._idle,
                "UPLOADING": self._uploading,
                "UPLOADED": self._uploaded,
                "RELOAD_SCHEDULED": self._reload_scheduled,
                "RELOADING": self._reloading,
            }.get(group.action)
            if handler is not None:
                handler(group, now, dt)
            done = sum(1 for i in self._members(group) if self._done(group, i))
            self._feed.sample(now, group.name, done, group.members)
        for _ in range(max(1, self.count // 50)):
            i = self._rng.randrange(self.count)
            if self.states[i] != _CODE["DOWN"]:
                self._fleet.last_heard[i] = now

    def _idle(self, group: _Group, now: float, dt: float) -> None:
        if now - group.phase_at >= 20 + 10 * group.group_id:
            self.start(now, group.name)

    def _uploading(self, group: _Group, now: float, dt: float) -> None:
        multicast = min(max(1, round(8 * dt)), self.blocks - group.next_block)
        group.next_block += multicast
        budget = max(1, int(min(group.members / 100, 60) * dt)) if multicast == 0 else 0
        unicast = 0
        for i in self._members(group):
            state = self.states[i]
            if state not in (_CODE["PENDING"], _CODE["UPLOADING"]):
                continue
            self.states[i] = _CODE["UPLOADING"]
            gained = sum(1 for _ in range(multicast) if self._rng.random() > 0.003)
            if unicast < budget:
                gained, unicast = 1, unicast + 1
            self._fleet.held[i] = min(group.next_block, self._fleet.held[i] + gained)
            if self._fleet.held[i] >= self.blocks:
                self._finish_upload(group, i, now)
        self._feed.count_blocks(now, multicast=multicast, unicast=unicast)
        if not any(self.states[i] == _CODE["UPLOADING"] for i in self._members(group)):
            group.action, group.phase_at = "UPLOADED", now
            self._feed.event(now, EventKind.INFO, "upload complete", group=group.name)

    def _finish_upload(self, group: _Group, i: int, now: float) -> None:
        if self._rng.random() < 0.001:
            self.states[i] = _CODE["FAILED"]
            self._feed.event(
                now,
                EventKind.FAILURE,
                "image check failed",
                group=group.name,
                eui64=self.eui64[i],
                code=5,
            )
        else:
            self.states[i] = _CODE["UPLOADED"]

    def _uploaded(self, group: _Group, now: float, dt: float) -> None:
        if now - group.phase_at < 8:
            return
        group.action, group.phase_at = "RELOAD_SCHEDULED", now
        group.reload_at = datetime.fromtimestamp(int(now) + 15, UTC)
        text = f"scheduleReload {IMAGES[group.image][0]} at {group.reload_at:%H:%M:%S}"
        self._feed.event(now, EventKind.OPERATION, text, group=group.name, code=0)
        for i in self._members(group):
            if self.states[i] == _CODE["UPLOADED"]:
                self.states[i] = _CODE["RELOAD_SCHEDULED"]

    def _reload_scheduled(self, group: _Group, now: float, dt: float) -> None:
        if group.reload_at is not None and now >= group.reload_at.timestamp():
            group.action, group.phase_at = "RELOADING", now

    def _reloading(self, group: _Group, now: float, dt: float) -> None:
        rebooted = 0
        for i in self._members(group):
            if self.states[i] == _CODE["RELOAD_SCHEDULED"]:
                self.states[i] = _CODE["RELOADING"]
            elif self.states[i] == _CODE["RELOADING"] and self._rng.random() < 0.3:
                self.states[i] = _CODE["RUNNING"]
                self._fleet.running[i] = group.image
                self._fleet.held[i] = 0
                rebooted += 1
        if rebooted:
            text = f"{rebooted} devices rebooted into {IMAGES[group.image][1]}"
            self._feed.event(now, EventKind.REBOOT, text, group=group.name)
        if not any(self.states[i] == _CODE["RELOADING"] for i in self._members(group)):
            group.action, group.phase_at, group.reload_at = "IDLE", now, None

    # -- helpers ------------------------------------------------------------

    def _members(self, group: _Group) -> range:
        return range(group.start, group.start + group.members)

    def _group_of(self, i: int) -> _Group:
        for group in self._groups.values():
            if group.start <= i < group.start + group.members:
                return group
        raise IndexError(i)

    def _done(self, group: _Group, i: int) -> bool:
        state = self.states[i]
        if group.action in ("RELOADING", "IDLE"):
            return state == _CODE["RUNNING"]
        return state in _AFTER_UPLOAD

    def _status(self, group: _Group) -> GroupStatus:
        counts: dict[str, int] = {}
        for code in self.states[group.start : group.start + group.members]:
            name = KNOWN_STATES[code]
            counts[name] = counts.get(name, 0) + 1
        done = sum(1 for i in self._members(group) if self._done(group, i))
        return GroupStatus(
            name=group.name,
            group_id=group.group_id,
            address=f"ff15::{group.group_id:x}",
            members=group.members,
            action_status=group.action,
            upload_states=counts,
            scheduled_reload=group.reload_at,
            complete=done,
            image=IMAGES[group.image][0] if group.action != "IDLE" else None,
        )


def _slot(
    index: int, role: str, image: tuple[str, str] | None, blocks: int, total: int
) -> SlotInfo:
    if image is None:
        return SlotInfo(
            index=index, role=role, name=None, version=None, blocks=0, total_blocks=0
        )
    return SlotInfo(
        index=index,
        role=role,
        name=image[0],
        version=image[1],
        blocks=blocks,
        total_blocks=total,
    )


async def drive(source: DemoSource, *, interval: float = 0.5) -> None:
    """Step ``source`` on the wall clock every ``interval`` s until cancelled."""
    last = time.time()
    while True:
        await asyncio.sleep(interval)
        now = time.time()
        source.step(now, now - last)
        last = now
