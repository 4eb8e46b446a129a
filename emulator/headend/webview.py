"""The running head-end as the live page sees it (``headend``, asyncio edge).

:class:`LiveView` implements :class:`~emulator.web.status.StatusSource` over
a :class:`~emulator.headend.core.HeadEndCore` and its
:class:`~emulator.headend.operations.HeadEndApi`, and owns the
:class:`~emulator.web.feed.LiveFeed` the page reads events and time series
from. The head-end creates one when its HTTP server runs (``[http]
live_view``) and mounts it with :func:`emulator.web.app.add_web_routes`.

Two inputs:

- the core's observer hooks (:class:`~emulator.headend.core.CoreObserver`):
  every ImageBlock sent goes straight into the feed's per-second counts;
  registrations (reboots: a known device registering again, with the version
  it ran before) and started operations become events; finished operations
  come from ``core.on_finished``;
- a snapshot, rebuilt about once a second by :meth:`LiveView.run` in slices
  of ``chunk`` devices (the event loop runs between slices): per device its
  state code in the grid legend, per group the getFirmwareUploadStatus
  counts, the action status and how many members are done. Each rebuild is
  O(devices) without sorting; the page's polls only read it. Per-member
  outcomes the engine decided since the last snapshot (a refusal with its
  CSMP code, a failure, an unreachable member, a command refused or
  unanswered) become events, each once per operation; more than
  :data:`DETAIL_LIMIT` alike in one snapshot become one summary event.
  After each rebuild every group's (complete, members) is sampled.

Group order: by id, the default group (the catch-all) last. Grid order: the
groups in that order, within a group the inventory's order (registration
order); a device keeps its cell while the group's membership stays the same.
A member's grid state follows the group's latest operation: the upload's
getFirmwareUploadStatus state, or after a newer backup/reload command that
command's (``backupSet``, ``reloadScheduled``, ``reloading``, ``running``,
``cancelled``, ``refused``, ``unreachable``, ``pending``); ``down`` marks a
silent device outside any operation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from emulator.headend.api import ImageInfoList
from emulator.headend.core import Campaign, HeadEndCore
from emulator.headend.engine import (
    CommandCampaign,
    CommandKind,
    Outcome,
    Phase,
    UploadCampaign,
    UploadStatus,
)
from emulator.headend.groups import DEFAULT_GROUP, GroupSpec
from emulator.headend.inventory import BACKUP, RUN, UPLOAD, DeviceRecord
from emulator.headend.operations import HeadEndApi
from emulator.web.feed import EventKind, LiveFeed
from emulator.web.status import DeviceDetail, DeviceGrid, GroupStatus, SlotInfo

logger = logging.getLogger(__name__)

#: Seconds between snapshots (and completion samples).
INTERVAL = 1.0
#: Share of the event loop's time snapshots may take: with a rebuild of
#: ``d`` seconds the next starts ``max(interval, d / MAX_LOAD)`` s later
#: (about 0.1 s for 100,000 devices, so still once a second).
MAX_LOAD = 0.1
#: Devices per slice of a snapshot rebuild.
CHUNK = 5000
#: Alike events per group and snapshot reported one by one; more: a summary.
DETAIL_LIMIT = 5
#: Seconds an /api/images answer is reused (it walks every member's slots).
IMAGES_TTL = 2.0

#: Grid state names by code: the getFirmwareUploadStatus names first.
LEGEND: tuple[str, ...] = (
    *(s.value for s in UploadStatus),
    "down",
    "backupSet",
    "reloadScheduled",
    "reloading",
    "running",
    "cancelled",
)
_CODE = {name: code for code, name in enumerate(LEGEND)}
NOT_STARTED = _CODE[UploadStatus.NOT_STARTED]
DOWN = _CODE["down"]
PENDING = _CODE[UploadStatus.PENDING]
COMPLETE = _CODE[UploadStatus.COMPLETE]
REFUSED = _CODE[UploadStatus.REFUSED]
FAILED = _CODE[UploadStatus.FAILED]
UNREACHABLE = _CODE[UploadStatus.UNREACHABLE]
BACKUP_SET = _CODE["backupSet"]
RELOAD_SCHEDULED = _CODE["reloadScheduled"]
RELOADING = _CODE["reloading"]
RUNNING = _CODE["running"]
CANCELLED = _CODE["cancelled"]
_UPLOAD_CODE = {s: _CODE[s.value] for s in UploadStatus}
#: Codes worth an event, once per member and operation.
_EVENT_CODES = frozenset({REFUSED, FAILED, UNREACHABLE})
_REQUEST_NAMES = {
    CommandKind.BACKUP: "SetBackupRequest",
    CommandKind.RELOAD: "LoadRequest",
    CommandKind.CANCEL: "CancelLoadRequest",
}
_OPERATION_NAMES = {
    CommandKind.BACKUP: "setBackupFirmwareImage",
    CommandKind.RELOAD: "scheduleReload",
    CommandKind.CANCEL: "cancelReload",
}
_ROLES = {RUN: "RUN", UPLOAD: "UPLOAD", BACKUP: "BACKUP"}


def _latest(upload: Campaign | None, command: Campaign | None) -> Campaign | None:
    """The group's current operation: the newer of its upload and command."""
    if command is not None and (upload is None or command.started >= upload.started):
        return command
    return upload


def _command_code(campaign: CommandCampaign, record: DeviceRecord, now: float) -> int:
    member = campaign.members.get(record.eui)
    if member is None:
        return NOT_STARTED
    if member.code == 0:
        if campaign.kind is CommandKind.BACKUP:
            return BACKUP_SET
        if campaign.kind is CommandKind.CANCEL:
            return CANCELLED
        if now < campaign.load_time:
            return RELOAD_SCHEDULED
        run = record.slots.get(RUN)
        ran = run is not None and run.file_hash == campaign.file_hash
        return RUNNING if ran else RELOADING
    if member.code is not None:
        return REFUSED
    if member.failed or not campaign.active:
        return UNREACHABLE
    return PENDING


@dataclass(slots=True)
class _Group:
    """One group while a snapshot is built, then as the snapshot keeps it."""

    spec: GroupSpec
    upload: UploadCampaign | None
    command: CommandCampaign | None
    current: Campaign | None
    done_codes: frozenset[int]
    eui64: list[str] = field(default_factory=list)
    states: bytearray = field(default_factory=bytearray)
    counts: list[int] = field(default_factory=lambda: [0] * len(UploadStatus))
    status: GroupStatus | None = None
    grid: DeviceGrid | None = None


def _done_codes(current: Campaign | None, now: float) -> frozenset[int]:
    """Grid states that count as done with the group's current step."""
    if isinstance(current, UploadCampaign):
        return frozenset({COMPLETE})
    if isinstance(current, CommandCampaign):
        if current.kind is CommandKind.BACKUP:
            return frozenset({BACKUP_SET})
        if current.kind is CommandKind.CANCEL:
            return frozenset({CANCELLED})
        if now < current.load_time:
            return frozenset({RELOAD_SCHEDULED, RUNNING})
        return frozenset({RUNNING})
    return frozenset()


@dataclass(slots=True)
class _Snapshot:
    groups: list[GroupStatus]
    by_key: dict[str, _Group]
    fleet: DeviceGrid
    time: float


@dataclass(slots=True)
class _Pending:
    """Alike events of one snapshot (or second), before they are written."""

    kind: str
    text: str
    group: str | None
    code: int | None
    first: float
    euis: list[str] = field(default_factory=list)


class LiveView:
    """StatusSource and CoreObserver of one head-end (see the module doc)."""

    def __init__(
        self,
        core: HeadEndCore,
        api: HeadEndApi,
        *,
        feed: LiveFeed | None = None,
        clock: Callable[[], float] = time.time,
        interval: float = INTERVAL,
        chunk: int = CHUNK,
    ) -> None:
        self.core = core
        self.api = api
        self.clock = clock
        self.interval = interval
        self.chunk = max(1, chunk)
        self._feed = feed if feed is not None else LiveFeed()
        self._snapshot: _Snapshot | None = None
        self._reported: set[tuple[int, str]] = set()
        self._primed = False
        self._pending: dict[tuple[str, str, str | None, int | None], _Pending] = {}
        self._images: dict[str, tuple[float, ImageInfoList]] = {}
        self._wake = asyncio.Event()
        core.observer = self
        core.on_finished.append(self._finished)

    # -------------------------------------------------------- observer

    @property
    def feed(self) -> LiveFeed:
        return self._feed

    def block_sent(self, now: float, unicast: bool) -> None:
        if unicast:
            self._feed.count_blocks(now, unicast=1)
        else:
            self._feed.count_blocks(now, multicast=1)

    def registered(
        self, now: float, record: DeviceRecord, previous_version: str | None
    ) -> None:
        group = self._name(record.group)
        if previous_version is None:
            self._hold(EventKind.INFO, "registered", group, None, now, record.eui)
        elif previous_version and previous_version != record.version:
            text = f"rebooted into {record.version} (was {previous_version})"
            self._hold(EventKind.REBOOT, text, group, None, now, record.eui)
        else:
            text = f"registered again, running {record.version or '?'}"
            self._hold(EventKind.REBOOT, text, group, None, now, record.eui)

    def campaign_started(self, now: float, campaign: Campaign) -> None:
        group = self._name(campaign.group_key)
        members = len(campaign.members)
        if isinstance(campaign, UploadCampaign):
            text = f"startUpload {campaign.image.name} to {members} members"
        else:
            text = f"{_OPERATION_NAMES[campaign.kind]} {self._image_of(campaign)}"
            if campaign.kind is CommandKind.RELOAD and campaign.load_time:
                when = datetime.fromtimestamp(campaign.load_time, UTC)
                text += f" at {when:%Y-%m-%d %H:%M:%S} UTC"
            text += f" ({members} members)"
        self._feed.event(now, EventKind.OPERATION, text, group=group, code=0)
        self._wake.set()

    def _finished(self, campaign: Campaign) -> None:
        now = campaign.finished_at or self.clock()
        group = self._name(campaign.group_key)
        kind: str = EventKind.OPERATION
        if isinstance(campaign, UploadCampaign):
            outcomes = Counter(m.outcome for m in campaign.members.values())
            text = (
                f"upload {campaign.image.name} {campaign.phase.value}: "
                f"{outcomes[Outcome.COMPLETE]} complete, "
                f"{outcomes[Outcome.REFUSED]} refused, "
                f"{outcomes[Outcome.FAILED]} failed, "
                f"{outcomes[Outcome.UNREACHABLE]} unreachable"
            )
            if campaign.reason:
                text += f" ({campaign.reason})"
            if campaign.phase is Phase.FAILED:
                kind = EventKind.FAILURE
        else:
            counts = campaign.counts()
            text = (
                f"{_OPERATION_NAMES[campaign.kind]} done: "
                f"{counts['accepted']} accepted, {counts['refused']} refused, "
                f"{counts['noResponse']} without answer"
            )
        self._feed.event(now, kind, text, group=group)
        self._wake.set()

    # ---------------------------------------------------- StatusSource

    def groups(self) -> list[GroupStatus]:
        return list(self._current().groups)

    def grid(self, group: str | None) -> DeviceGrid | None:
        snapshot = self._current()
        if group is None:
            return snapshot.fleet
        found = snapshot.by_key.get(group.strip().lower())
        return None if found is None else found.grid

    def device(self, eui64: str) -> DeviceDetail | None:
        record = self.core.inventory.get(eui64.upper())
        if record is None:
            return None
        now = self.clock()
        spec = self.core.groups.get(record.group)
        slots: list[SlotInfo] = []
        for index, role in _ROLES.items():
            slot = record.slots.get(index)
            if slot is None or not slot.file_hash:
                slots.append(
                    SlotInfo(
                        index=index,
                        role=role,
                        name=None,
                        version=None,
                        blocks=0,
                        total_blocks=0,
                    )
                )
                continue
            slots.append(
                SlotInfo(
                    index=index,
                    role=role,
                    name=slot.name or None,
                    version=slot.version or None,
                    blocks=slot.bits().bit_count(),
                    total_blocks=slot.nblocks,
                )
            )
        up = self.core.inventory.is_up(record, now)
        return {
            "eui64": record.eui,
            "address": record.address,
            "hardware_id": record.hardware_id,
            "running_version": record.version or None,
            "group": None if spec is None else spec.name,
            "slots": slots,
            "last_heard": record.last_heard or None,
            "up": up,
            "upload_state": LEGEND[self._code(record, now, up)],
        }

    async def image_info(self, group: str) -> ImageInfoList | None:
        spec = self.core.groups.get(group)
        if spec is None:
            return None
        now = self.clock()
        cached = self._images.get(spec.key)
        if cached is not None and now - cached[0] < IMAGES_TTL:
            return cached[1]
        info = self.api.image_info(spec.key)
        self._images[spec.key] = (now, info)
        return info

    # -------------------------------------------------------- snapshot

    async def run(self) -> None:
        """Rebuild the snapshot and sample about every ``interval`` s (sooner
        after an operation starts or ends, later when rebuilds are slow)."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self.refresh()
            except Exception:  # the head-end keeps running without a view
                logger.exception("live view: snapshot failed")
            took = loop.time() - started
            pause = max(self.interval, took / MAX_LOAD) - took
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.0, pause))
            except TimeoutError:
                pass
            self._wake.clear()

    async def refresh(self) -> None:
        """One snapshot, yielding to the event loop between slices."""
        now = self.clock()
        groups = self._begin(now)
        records = list(self.core.inventory)
        for start in range(0, len(records), self.chunk):
            if start:
                await asyncio.sleep(0)
            self._scan(groups, records[start : start + self.chunk], now)
        self._install(groups, self.clock())

    def refresh_now(self) -> None:
        """One snapshot at once (first use, tests)."""
        now = self.clock()
        groups = self._begin(now)
        self._scan(groups, self.core.inventory, now)
        self._install(groups, now)

    def _current(self) -> _Snapshot:
        if self._snapshot is None:
            self.refresh_now()
        assert self._snapshot is not None
        return self._snapshot

    def _begin(self, now: float) -> dict[str, _Group]:
        core = self.core
        groups: dict[str, _Group] = {}
        # By id, the catch-all default group last.
        specs = sorted(core.groups, key=lambda g: (g.key == DEFAULT_GROUP, g.id))
        for spec in specs:
            upload = core.uploads.get(spec.key)
            command = core.commands.get(spec.key)
            current = _latest(upload, command)
            groups[spec.key] = _Group(
                spec, upload, command, current, _done_codes(current, now)
            )
        return groups

    def _scan(
        self, groups: dict[str, _Group], records: Iterable[DeviceRecord], now: float
    ) -> None:
        """Add ``records`` to the snapshot being built."""
        silence = self.core.inventory.silence
        upload_codes = _UPLOAD_CODE
        for record in records:
            group = groups.get(record.group)
            if group is None:
                continue  # a group removed since the device was assigned
            upload = group.upload
            status = (
                UploadStatus.NOT_STARTED
                if upload is None
                else upload.status_of(record.eui)
            )
            group.counts[upload_codes[status]] += 1
            current = group.current
            if current is upload:
                code = upload_codes[status]
            else:
                assert isinstance(current, CommandCampaign)
                code = _command_code(current, record, now)
            if code == NOT_STARTED and now - record.last_heard > silence:
                code = DOWN
            elif code in _EVENT_CODES and current is not None:
                self._outcome(group, current, record.eui, code, now)
            group.eui64.append(record.eui)
            group.states.append(code)

    def _code(self, record: DeviceRecord, now: float, up: bool) -> int:
        """One device's grid state, from the live campaigns."""
        upload = self.core.uploads.get(record.group)
        command = self.core.commands.get(record.group)
        current = _latest(upload, command)
        if isinstance(current, CommandCampaign):
            code = _command_code(current, record, now)
        elif current is not None:
            code = _UPLOAD_CODE[current.status_of(record.eui)]
        else:
            code = NOT_STARTED
        return DOWN if code == NOT_STARTED and not up else code

    def _install(self, groups: dict[str, _Group], now: float) -> None:
        api = self.api
        statuses: list[GroupStatus] = []
        fleet_euis: list[str] = []
        fleet_states = bytearray()
        for key, group in groups.items():
            spec, current = group.spec, group.current
            done = sum(group.states.count(code) for code in group.done_codes)
            reload = self.core.reloads.get(key)
            scheduled = None
            if reload is not None and reload.at > 0:
                scheduled = datetime.fromtimestamp(reload.at, UTC)
            group.status = GroupStatus(
                name=spec.name,
                group_id=spec.id,
                address=spec.multicast or "unicast",
                members=len(group.eui64),
                action_status=api.action_status(key),
                upload_states={
                    s.value: n for s, n in zip(UploadStatus, group.counts, strict=True)
                },
                scheduled_reload=scheduled,
                complete=done,
                image=None if current is None else self._image_of(current),
            )
            group.grid = DeviceGrid(group.eui64, bytes(group.states), LEGEND)
            statuses.append(group.status)
            fleet_euis.extend(group.eui64)
            fleet_states += group.states
            self._feed.sample(now, spec.name, done, len(group.eui64))
        self._snapshot = _Snapshot(
            statuses, groups, DeviceGrid(fleet_euis, bytes(fleet_states), LEGEND), now
        )
        self._flush()
        live = {
            c.op_id
            for g in groups.values()
            for c in (g.upload, g.command)
            if c is not None
        }
        self._reported = {k for k in self._reported if k[0] in live}
        self._primed = True

    # ---------------------------------------------------------- events

    def _outcome(
        self, group: _Group, campaign: Campaign, eui: str, code: int, now: float
    ) -> None:
        """A member in a refused/failed/unreachable state: report it once."""
        key = (campaign.op_id, eui)
        if key in self._reported:
            return
        self._reported.add(key)
        if not self._primed:
            return  # decided before this view started
        name = group.spec.name
        if isinstance(campaign, UploadCampaign):
            member = campaign.members[eui]
            if code == REFUSED:
                self._hold(
                    EventKind.REFUSAL,
                    "TransferRequest refused",
                    name,
                    member.code,
                    now,
                    eui,
                )
            else:
                text = f"upload {LEGEND[code]}: {member.reason or 'no reason'}"
                self._hold(EventKind.FAILURE, text, name, None, now, eui)
            return
        command = campaign.members[eui]
        request = _REQUEST_NAMES[campaign.kind]
        if code == REFUSED:
            text = f"{request} refused"
            self._hold(EventKind.REFUSAL, text, name, command.code, now, eui)
        else:
            text = f"{request} unanswered: {command.failed or 'no answer'}"
            self._hold(EventKind.FAILURE, text, name, None, now, eui)

    def _hold(
        self,
        kind: str,
        text: str,
        group: str | None,
        code: int | None,
        now: float,
        eui: str,
    ) -> None:
        """Keep an event for the next :meth:`_flush` (alike ones are merged)."""
        key = (str(kind), text, group, code)
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Pending(kind, text, group, code, now)
        pending.euis.append(eui)

    def _flush(self) -> None:
        """Write the held events: one by one, or one summary when many."""
        held = sorted(self._pending.values(), key=lambda p: p.first)
        self._pending = {}
        feed = self._feed
        for item in held:
            if len(item.euis) <= DETAIL_LIMIT:
                for eui in item.euis:
                    feed.event(
                        item.first,
                        item.kind,
                        item.text,
                        group=item.group,
                        eui64=eui,
                        code=item.code,
                    )
                continue
            text = f"{item.text}: {len(item.euis)} devices (first {item.euis[0]})"
            feed.event(item.first, item.kind, text, group=item.group, code=item.code)

    # --------------------------------------------------------- helpers

    def _name(self, group_key: str) -> str | None:
        spec = self.core.groups.get(group_key) if group_key else None
        return None if spec is None else spec.name

    def _image_of(self, campaign: Campaign) -> str | None:
        if isinstance(campaign, UploadCampaign):
            return campaign.image.name
        stored = self.api.images.by_hash(campaign.file_hash)
        return stored.name if stored is not None else campaign.file_hash.hex()[:12]
