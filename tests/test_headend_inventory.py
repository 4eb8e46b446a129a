"""The inventory keeps what devices reported, in the face of stale reports."""

from __future__ import annotations

from emulator.firmware import bitmap
from emulator.headend.inventory import DeviceRecord, Inventory, SlotInfo

HASH = b"h" * 32
UPLOAD = 2


def _slot(bits: int | None, nblocks: int = 16) -> SlotInfo:
    wire = None if bits is None else bitmap.to_bytes(bits, nblocks)
    return SlotInfo(UPLOAD, HASH, "fw.bin", "6.9.1", nblocks * 512, 512, wire)


def _record(inventory: Inventory) -> DeviceRecord:
    record = DeviceRecord("00173BAB00000001", "fd00::1", 61628)
    inventory.add(record)
    return record


def test_late_partial_report_does_not_undo_a_complete_slot() -> None:
    inventory = Inventory(silence=900)
    record = _record(inventory)
    inventory.update_slots(record, [_slot(None)])  # complete
    inventory.update_slots(record, [_slot(0b1111)])  # an old async report
    assert record.slots[UPLOAD].complete


def test_out_of_order_reports_merge_their_bitmaps() -> None:
    inventory = Inventory(silence=900)
    record = _record(inventory)
    inventory.update_slots(record, [_slot(0b1100)])
    inventory.update_slots(record, [_slot(0b0011)])
    assert record.slots[UPLOAD].bits() == 0b1111
    inventory.update_slots(record, [_slot(bitmap.full(16) & ~1)])
    inventory.update_slots(record, [_slot(1)])
    assert record.slots[UPLOAD].complete  # all blocks seen: complete


def test_our_own_read_replaces_what_we_knew() -> None:
    inventory = Inventory(silence=900)
    record = _record(inventory)
    inventory.update_slots(record, [_slot(None)])
    inventory.update_slots(record, [_slot(0b1)], read=True)  # erased, restarted
    assert record.slots[UPLOAD].bits() == 0b1


def test_download_progress_is_written_less_often_than_durable_changes() -> None:
    inventory = Inventory(900.0)
    record = _record(inventory)
    inventory.take_dirty()
    inventory.update_slots(record, [_slot(0b1)])
    assert inventory.take_dirty(volatile=False) == [record]  # new slot: durable
    inventory.update_slots(record, [_slot(0b11)])
    inventory.touch(record, 5.0)
    assert inventory.take_dirty(volatile=False) == []  # progress only
    assert inventory.take_dirty() == [record]  # the slower flush writes it
    inventory.update_slots(record, [_slot(None)])
    assert inventory.take_dirty(volatile=False) == [record]  # complete: durable
