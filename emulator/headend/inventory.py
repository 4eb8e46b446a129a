"""The head-end's device inventory (layer ``headend``, sans-IO).

Every device that registered (CSMP.md "Transport": POST ``/r``): address,
EUI-64, hardware id, running version, its three firmware slots as last
reported in FirmwareImageInfo (TLV 75; CSMP.md "Firmware slots"), when it was
last heard from, its firmware group, and the outcome of the last group
commands per device. A device is *up* while it was heard from within the
silence limit, *down* after it.

The inventory keeps two indexes up to date as records change: the members of
each group, and per group how many members run, hold complete in UPLOAD, or
keep as BACKUP each image (by file hash). getFirmwareImageInfoList and the
campaigns read them instead of scanning every record (at 10,000 devices a scan
cost 20-40 ms per call, most of the head-end while a client polled during a
reload). Slots and groups therefore change only through :meth:`Inventory.add`,
:meth:`~Inventory.update_slots`, :meth:`~Inventory.set_backup` and
:meth:`~Inventory.set_group`.

Pure data with ``now`` passed in; persistence reads :meth:`Inventory.take_dirty`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator, KeysView
from dataclasses import dataclass, field, replace
from operator import attrgetter
from typing import Any

from emulator.csmp import csmp_pb2 as pb
from emulator.firmware import bitmap

logger = logging.getLogger(__name__)

SNAPSHOT_SLOTS = 7
"""Index of the slots in :meth:`DeviceRecord.snapshot`."""
_NO_MEMBERS: dict[str, DeviceRecord] = {}
_LAST_HEARD = attrgetter("last_heard")

RUN, UPLOAD, BACKUP = 1, 2, 3


@dataclass(frozen=True, slots=True)
class SlotInfo:
    """One firmware slot as a device reported it (TLV 75)."""

    index: int
    file_hash: bytes = b""
    name: str = ""
    version: str = ""
    size: int = 0
    block_size: int = 0
    bitmap: bytes | None = None
    """Wire bitmap; present only while the UPLOAD slot is downloading."""
    load_time: int = 0
    hwid: str = ""

    @property
    def nblocks(self) -> int:
        return -(-self.size // self.block_size) if self.block_size else 0

    @property
    def complete(self) -> bool:
        """Holds a whole image (not downloading)."""
        return bool(self.file_hash) and self.bitmap is None

    def bits(self) -> int:
        """The bitmap as an int (block n at bit n); full when complete."""
        n = self.nblocks
        if not 0 <= n <= bitmap.MAX_BLOCKS:
            return 0  # a size no bitmap describes: nothing we can count
        if self.bitmap is None:
            return bitmap.full(n) if self.file_hash else 0
        try:
            return bitmap.from_bytes(self.bitmap, n)
        except ValueError:
            return 0

    @classmethod
    def from_tlv(cls, msg: pb.FirmwareImageInfo) -> SlotInfo:
        return cls(
            index=msg.index,
            file_hash=msg.fileHash,
            name=msg.fileName,
            version=msg.version,
            size=msg.fileSize,
            block_size=msg.blockSize,
            bitmap=msg.bitmap if msg.HasField("bitmap") else None,
            load_time=msg.loadTime,
            hwid=msg.hwInfo.hwId if msg.HasField("hwInfo") else "",
        )

    def to_row(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "hash": self.file_hash.hex(),
            "name": self.name,
            "version": self.version,
            "size": self.size,
            "block_size": self.block_size,
            "bitmap": None if self.bitmap is None else self.bitmap.hex(),
            "load_time": self.load_time,
            "hwid": self.hwid,
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> SlotInfo:
        bm = row.get("bitmap")
        return cls(
            index=int(row["index"]),
            file_hash=bytes.fromhex(row.get("hash", "")),
            name=str(row.get("name", "")),
            version=str(row.get("version", "")),
            size=int(row.get("size", 0)),
            block_size=int(row.get("block_size", 0)),
            bitmap=None if bm is None else bytes.fromhex(bm),
            load_time=int(row.get("load_time", 0)),
            hwid=str(row.get("hwid", "")),
        )


@dataclass(slots=True)
class DeviceRecord:
    """One device of the inventory."""

    eui: str
    """EUI-64, 16 upper-case hex digits."""
    address: str
    port: int
    hardware_id: str = ""
    version: str = ""
    """Running firmware version (HardwareDesc FirmwareRev or the RUN slot)."""
    function: int = 0
    group: str = ""
    """Key of the firmware group (lower-case name)."""
    slots: dict[int, SlotInfo] = field(default_factory=dict)
    first_seen: float = 0.0
    last_heard: float = 0.0
    registrations: int = 0
    session: str = ""
    results: dict[str, str] = field(default_factory=dict)
    """Last outcome per command kind ("backup", "reload"), e.g. "ok", "refused 3"."""

    @property
    def addr(self) -> tuple[str, int]:
        return self.address, self.port

    def is_up(self, now: float, silence: float) -> bool:
        return now - self.last_heard <= silence

    def runs(self, file_hash: bytes) -> bool:
        """The RUN slot holds the image ``file_hash``."""
        run = self.slots.get(RUN)
        return run is not None and run.file_hash == file_hash

    def to_row(self) -> dict[str, Any]:
        return DeviceRecord.row_of(self.snapshot())

    def snapshot(self) -> tuple[Any, ...]:
        """The persisted fields as immutable values (slots are frozen); the
        slots are at :data:`SNAPSHOT_SLOTS`."""
        return (
            self.eui,
            self.address,
            self.port,
            self.hardware_id,
            self.version,
            self.function,
            self.group,
            tuple(self.slots.values()),
            self.first_seen,
            self.last_heard,
            self.registrations,
            self.session,
            tuple(self.results.items()) if self.results else (),
        )

    @staticmethod
    def row_of(state: tuple[Any, ...]) -> dict[str, Any]:
        """The store row of a :meth:`snapshot` (any thread)."""
        (eui, address, port, hwid, version, function, group, slots, first_seen,
         last_heard, registrations, session, results) = state  # fmt: skip
        return {
            "eui": eui,
            "address": address,
            "port": port,
            "hardware_id": hwid,
            "version": version,
            "function": function,
            "group": group,
            "slots": [s.to_row() for s in slots],
            "first_seen": first_seen,
            "last_heard": last_heard,
            "registrations": registrations,
            "session": session,
            "results": dict(results),
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> DeviceRecord:
        slots = [SlotInfo.from_row(s) for s in row.get("slots", [])]
        return cls(
            eui=str(row["eui"]),
            address=str(row["address"]),
            port=int(row["port"]),
            hardware_id=str(row.get("hardware_id", "")),
            version=str(row.get("version", "")),
            function=int(row.get("function", 0)),
            group=str(row.get("group", "")),
            slots={s.index: s for s in slots},
            first_seen=float(row.get("first_seen", 0.0)),
            last_heard=float(row.get("last_heard", 0.0)),
            registrations=int(row.get("registrations", 0)),
            session=str(row.get("session", "")),
            results=dict(row.get("results", {})),
        )


class Inventory:
    """Devices by EUI-64, with an index by source address."""

    def __init__(self, silence: float) -> None:
        self.silence = silence
        """Seconds of silence after which a device is down."""
        self._devices: dict[str, DeviceRecord] = {}
        self._by_addr: dict[tuple[str, int], str] = {}
        self._dirty: set[str] = set()
        """Records with changes that must reach the store at the next flush."""
        self._volatile: set[str] = set()
        """Records whose only changes are last_heard or the bitmap of a
        download in progress: written less often (see :meth:`take_dirty`)."""
        self._groups: dict[str, dict[str, DeviceRecord]] = {}
        """Group key -> EUI -> record (the members)."""
        self._tallies: dict[str, Counter[tuple[bytes, int]]] = {}
        """Group key -> (file hash, RUN/UPLOAD/BACKUP) -> members holding it
        there (UPLOAD: complete only)."""
        self._slot_of: dict[bytes, SlotInfo] = {}
        """File hash -> the first slot seen with it (name and version)."""

    def __len__(self) -> int:
        return len(self._devices)

    def __iter__(self) -> Iterator[DeviceRecord]:
        return iter(self._devices.values())

    def __contains__(self, eui: object) -> bool:
        return eui in self._devices

    def get(self, eui: str) -> DeviceRecord | None:
        return self._devices.get(eui)

    def by_addr(self, addr: tuple[str, int]) -> DeviceRecord | None:
        eui = self._by_addr.get(addr)
        return None if eui is None else self._devices.get(eui)

    def add(self, record: DeviceRecord) -> None:
        """Insert or replace a record (registration, or loading the store)."""
        old = self._devices.get(record.eui)
        if old is not None:
            if old.addr != record.addr:
                self._unindex(old)
            self._leave(old)
        self._devices[record.eui] = record
        self._by_addr[record.addr] = record.eui
        self._join(record)

    def set_group(self, record: DeviceRecord, group_key: str) -> None:
        """Move a record to another firmware group."""
        self._leave(record)
        record.group = group_key
        self._join(record)

    def _join(self, record: DeviceRecord) -> None:
        self._groups.setdefault(record.group, {})[record.eui] = record
        self._count(record, 1)

    def _leave(self, record: DeviceRecord) -> None:
        if self._counted(record):
            del self._groups[record.group][record.eui]
            self._count(record, -1)

    def _counted(self, record: DeviceRecord) -> bool:
        """``record`` is the inventory's (not a replaced one)."""
        return self._groups.get(record.group, {}).get(record.eui) is record

    def _count(self, record: DeviceRecord, step: int) -> None:
        """Add (1) or take back (-1) what ``record``'s slots add to its
        group's image tally."""
        tally = self._tallies.setdefault(record.group, Counter())
        for index, slot in record.slots.items():
            if not slot.file_hash or (index == UPLOAD and not slot.complete):
                continue
            if index in (RUN, UPLOAD, BACKUP):
                key = (slot.file_hash, index)
                tally[key] += step
                if tally[key] <= 0:
                    del tally[key]
                self._slot_of.setdefault(slot.file_hash, slot)

    def image_tally(
        self, group_key: str
    ) -> dict[bytes, tuple[SlotInfo, int, int, int]]:
        """File hash -> (a slot naming it, members running it, with it
        complete in UPLOAD, with it as BACKUP) over the group's members."""
        out: dict[bytes, list[Any]] = {}
        for (file_hash, index), n in self._tallies.get(group_key, {}).items():
            entry = out.setdefault(file_hash, [self._slot_of[file_hash], 0, 0, 0])
            entry[index] += n
        return {h: (e[0], e[1], e[2], e[3]) for h, e in out.items()}

    def move(self, record: DeviceRecord, addr: tuple[str, int]) -> None:
        """A device registered from a new address."""
        if record.addr != addr:
            self._unindex(record)
            record.address, record.port = addr
            self._by_addr[addr] = record.eui

    def _unindex(self, record: DeviceRecord) -> None:
        """``record`` leaves its address (rare: a device moved).

        Another device may have registered from that address since: its
        entry is not ours to drop. When the entry was ours, a device that
        still claims the address (it registered there before us) gets it
        back, or its reports would be refused as from an unknown device.
        """
        addr = record.addr
        if self._by_addr.get(addr) != record.eui:
            return
        del self._by_addr[addr]
        for other in self._devices.values():
            if other is not record and other.addr == addr:
                self._by_addr[addr] = other.eui
                break

    def touch(self, record: DeviceRecord, now: float) -> None:
        """The device was heard from (a volatile change)."""
        record.last_heard = now
        self._volatile.add(record.eui)

    def mark(self, eui: str) -> None:
        self._dirty.add(eui)

    def take_dirty(self, volatile: bool = True) -> list[DeviceRecord]:
        """Records changed since the last call (for the store).

        With ``volatile`` False only records with durable changes: a report
        that only moves last_heard or a download's bitmap is written at the
        next call with ``volatile`` (the campaign keeps its own progress).
        """
        dirty, self._dirty = self._dirty, set()
        if volatile:
            dirty |= self._volatile
            self._volatile = set()
        else:
            self._volatile -= dirty
        return [self._devices[e] for e in dirty if e in self._devices]

    def members(self, group_key: str) -> list[DeviceRecord]:
        return list(self._groups.get(group_key, {}).values())

    def member_euis(self, group_key: str) -> KeysView[str]:
        """The EUIs in ``group_key`` (a live view: do not keep it across
        changes)."""
        return self._groups.get(group_key, _NO_MEMBERS).keys()

    def group_keys(self) -> list[str]:
        """Keys of the groups that have members."""
        return [key for key, members in self._groups.items() if members]

    def count_up_all(self, now: float) -> int:
        """Devices up at ``now``, in any group (as :meth:`count_up`)."""
        return self._count_up(self._devices.values(), now)

    def count_up(self, group_key: str, now: float) -> int:
        """Members of ``group_key`` that are up at ``now`` (:meth:`is_up`),
        without a list or a call per member (10,000 members: ~1 ms)."""
        return self._count_up(self._groups.get(group_key, _NO_MEMBERS).values(), now)

    def _count_up(self, records: Iterable[DeviceRecord], now: float) -> int:
        silence = self.silence
        return sum(1 for last in map(_LAST_HEARD, records) if now - last <= silence)

    def is_up(self, record: DeviceRecord, now: float) -> bool:
        return record.is_up(now, self.silence)

    def update_slots(
        self, record: DeviceRecord, infos: list[SlotInfo], *, read: bool = False
    ) -> None:
        """Store the slots a device reported.

        Async reports can arrive late and out of order, so an UPLOAD slot of
        the same image only gains blocks from them (bitmaps are merged, a
        complete slot stays complete); the answer to our own GET (``read``)
        is current and replaces what we knew.
        """
        durable = False
        counted = self._counted(record)
        if counted:
            self._count(record, -1)
        for info in infos:
            if info.index in (RUN, UPLOAD, BACKUP):
                old = record.slots.get(info.index)
                if not read and info.index == UPLOAD and old is not None:
                    info = _merged_upload(old, info)
                if old != info:
                    record.slots[info.index] = info
                    durable = durable or not _progress_only(old, info)
                if info.index == RUN and info.version:
                    record.version = info.version
                if info.index == RUN and info.hwid and not record.hardware_id:
                    record.hardware_id = info.hwid
        if counted:
            self._count(record, 1)
        (self._dirty if durable else self._volatile).add(record.eui)

    def set_backup(self, record: DeviceRecord, file_hash: bytes) -> None:
        """A device accepted SetBackupRequest: its BACKUP slot now holds the
        image (until its next report says otherwise)."""
        source = next(
            (s for s in record.slots.values() if s.file_hash == file_hash), None
        )
        if source is not None:
            counted = self._counted(record)
            if counted:
                self._count(record, -1)
            record.slots[BACKUP] = replace(source, index=BACKUP, bitmap=None)
            if counted:
                self._count(record, 1)
            self._dirty.add(record.eui)


def _progress_only(old: SlotInfo | None, new: SlotInfo) -> bool:
    """``new`` only adds blocks to the download ``old`` described."""
    return (
        old is not None
        and new.index == UPLOAD
        and old.bitmap is not None
        and new.bitmap is not None
        and old.file_hash == new.file_hash
    )


def _merged_upload(old: SlotInfo, new: SlotInfo) -> SlotInfo:
    """``new`` as a possibly stale report of the same download as ``old``."""
    if old.file_hash != new.file_hash or new.complete:
        return new
    if old.complete:
        return old
    n = new.nblocks
    if not 0 < n <= bitmap.MAX_BLOCKS:
        return new
    bits = old.bits() | new.bits()
    merged = None if bits == bitmap.full(n) else bitmap.to_bytes(bits, n)
    return replace(new, bitmap=merged)
