"""Per-device memory stays small (tracemalloc over a few thousand devices)."""

from __future__ import annotations

import gc
import hashlib
import tracemalloc

from emulator.coap.message import Code
from emulator.csmp import csmp_pb2 as pb
from emulator.csmp.registry import T, encode_tlv
from emulator.firmware.blockstore import BlockStore, ImageKey
from emulator.node import Device, DeviceProfile, Identity, SlotImage
from emulator.node.builders import post

N = 2000
BUDGET = 2048  # bytes per idle device, identity and slots included


def _registered_device(
    i: int, profile: DeviceProfile, store: BlockStore, run: SlotImage
) -> Device:
    dev = Device(
        Identity(0x00173B0B00000000 + i, f"2001:db8::{i:x}"),
        profile,
        store,
        seed=i,
        run_image=run,
    )
    dev.power_on(0.0)
    dev.on_timer(30.0)
    due = dev.next_deadline()
    assert due is not None
    dev.on_timer(due)
    answer = encode_tlv(
        T.REPORT_SUBSCRIBE, pb.ReportSubscribe(interval=300, tlvid=["23"])
    )
    dev.on_registration_answer(
        Code.VALID, answer + encode_tlv(T.SESSION_ID, pb.SessionID(id="s")), due
    )
    dev.on_timer(due)
    dev.handle(post(encode_tlv(T.GROUP_ASSIGN, pb.Group(type=2, id=5))), due)
    return dev


def test_idle_device_memory_under_budget() -> None:
    store = BlockStore()
    run = SlotImage(
        ImageKey(hashlib.sha256(b"run").digest(), 512),
        "run.bin",
        "1.0.0",
        24114,
        "OPENCSMP",
    )
    profile = DeviceProfile()
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        devices = [_registered_device(i, profile, store, run) for i in range(N)]
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert all(d.registered for d in devices)
    assert used / N < BUDGET, f"{used / N:.0f} B per device"
