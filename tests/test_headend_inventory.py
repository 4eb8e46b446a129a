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


def _scan_tally(inventory: Inventory, group: str) -> dict[bytes, tuple[int, int, int]]:
    """The image counts by scanning every record (the reference)."""
    counts: dict[bytes, list[int]] = {}
    for record in inventory:
        if record.group != group:
            continue
        for index, slot in record.slots.items():
            if not slot.file_hash or (index == 2 and not slot.complete):
                continue
            counts.setdefault(slot.file_hash, [0, 0, 0])[index - 1] += 1
    return {h: (c[0], c[1], c[2]) for h, c in counts.items() if any(c)}


def test_group_index_and_image_tally_follow_every_change() -> None:
    """Members and image counts per group, kept up to date by add,
    update_slots (async reports merge, reads replace), set_backup and
    set_group, equal a full scan after every step of a random history."""
    import random

    rng = random.Random(7)
    hashes = [bytes([i]) * 32 for i in range(4)]
    groups = ["meters", "relays", ""]
    inventory = Inventory(600)

    def random_slot(index: int) -> SlotInfo:
        file_hash = rng.choice(hashes + [b""])
        partial = index == 2 and rng.random() < 0.5
        return SlotInfo(
            index,
            file_hash,
            name=f"img-{file_hash[:1].hex()}",
            version="6.1",
            size=4096,
            block_size=256,
            bitmap=bitmap.to_bytes(0b1011, 16) if partial and file_hash else None,
        )

    for step in range(3000):
        eui = f"{rng.randrange(40):016X}"
        record = inventory.get(eui)
        action = rng.random()
        if record is None or action < 0.1:  # (re)registration, a new record
            fresh = DeviceRecord(
                eui, "::1", rng.randrange(1, 9), group=rng.choice(groups)
            )
            fresh.slots = {i: random_slot(i) for i in (1, 2, 3) if rng.random() < 0.8}
            inventory.add(fresh)
        elif action < 0.6:
            infos = [random_slot(i) for i in (1, 2, 3) if rng.random() < 0.6]
            inventory.update_slots(record, infos, read=rng.random() < 0.5)
        elif action < 0.75:
            inventory.set_backup(record, rng.choice(hashes))
        else:
            inventory.set_group(record, rng.choice(groups))
        for group in groups:
            members = {r.eui for r in inventory if r.group == group}
            assert {r.eui for r in inventory.members(group)} == members, step
            tally = {
                h: (run, up, backup)
                for h, (_, run, up, backup) in inventory.image_tally(group).items()
            }
            assert tally == _scan_tally(inventory, group), step


def test_count_up_agrees_with_is_up_per_member() -> None:
    inventory = Inventory(silence=900)
    for i in range(30):
        record = DeviceRecord(f"00173BAB{i:08X}", "fd00::1", 61628 + i)
        record.last_heard = 1000.0 + 100 * i
        inventory.add(record)
        inventory.set_group(record, "meters" if i % 3 else "relays")
    for now in (1000.0, 1900.0, 2000.0, 3500.0, 5000.0):
        for group in ("meters", "relays"):
            members = inventory.members(group)
            expected = sum(inventory.is_up(r, now) for r in members)
            assert inventory.count_up(group, now) == expected
            assert set(inventory.member_euis(group)) == {r.eui for r in members}
    assert inventory.count_up("no-such-group", 0.0) == 0
    assert len(inventory.member_euis("no-such-group")) == 0
