"""Fuzzing the CoAP/CSMP input paths: the fleet's datagram path and the head-end core.

Property: whatever arrives (random bytes, truncated or mutated messages,
well-formed CoAP with random options and TLVs) the fleet and the head-end
never raise, the fleet still answers a valid GET with the device's own
DeviceID, every device's state still snapshots and restores, and the head-end
inventory stays consistent (address index, EUI-64 form, group keys).
"""

from __future__ import annotations

import hashlib
import random
import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from fuzz_support import SEED_TLVS, coap_datagrams, mutated, tlv_payloads
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fleet_support import free_port, free_port_range

from emulator.coap.exchange import Addr
from emulator.coap.message import Code, Message, Type, decode, encode, request_options
from emulator.csmp import csmp_pb2 as pb
from emulator.csmp.registry import decode_as
from emulator.csmp.tlv import pull_tlvs
from emulator.firmware.image import build_image
from emulator.fleet.config import parse_config
from emulator.fleet.runtime import Fleet
from emulator.headend.core import HeadEndCore
from emulator.headend.engine import ImageRef
from emulator.headend.groups import make_group
from emulator.headend.testing import (
    GROUP_ADDR,
    HEADEND_ADDR,
    MemoryWire,
    build_core,
    device_addr,
)
from emulator.node.device import Device

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
CHECKER: Addr = ("::1", 9)
HWID = "OPENCSMP"


# ------------------------------------------------------------------- fleet


def _fleet(devices: int = 3) -> Fleet:
    config = parse_config(
        {
            "fleet": {
                "devices": devices,
                "addressing": "loopback-ports",
                "port_base": free_port_range(devices),
                "nms": f"[::1]:{free_port()}",
                "boot_time": 0.0,
                "power_on_jitter": 0.0,
            },
            "multicast": {"mode": "relay", "relay": f"[::1]:{free_port()}"},
        }
    )
    return Fleet(config)


class _Capture:
    """Stands in for Fleet._flush: keeps what the fleet would send."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.sent: list[Any] = []

    def __call__(self, now: float) -> None:
        self.sent.extend(self.fleet.exchange.datagrams_to_send())


def _check_device(fleet: Fleet, capture: _Capture, eui: int, mid: int) -> None:
    local = fleet.local_address(eui)
    get = Message(Type.CON, Code.GET, mid, b"ok", request_options("c/2"))
    capture.sent.clear()
    fleet._on_datagrams([(encode(get), local, CHECKER)], time.time())
    answers = [d for d in capture.sent if d.remote == CHECKER and d.local == local]
    assert answers, "no answer to a valid GET"
    msg = decode(answers[-1].data)
    assert msg.code == Code.CONTENT and msg.token == b"ok"
    (tlv,) = pull_tlvs(msg.payload)
    assert decode_as(tlv, pb.DeviceID).id.lower() == f"{eui:016x}"
    device = fleet.devices[eui]
    snap = device.snapshot()
    again = Device.restore(
        device.identity, device.profile, fleet.store, snap, seed=1, now=time.time()
    )
    assert again.snapshot() == snap


async def test_fleet_datagram_path_survives_fuzz() -> None:
    fleet = _fleet()
    await fleet.start()
    capture = _Capture(fleet)
    fleet._flush = capture  # type: ignore[method-assign]
    euis = list(fleet.devices)
    assert fleet.relay_address is not None
    targets = [fleet.local_address(e) for e in euis] + [fleet.relay_address]
    mids = iter(range(1, 1 << 30))
    try:

        @FUZZ
        @given(
            st.lists(
                st.tuples(
                    coap_datagrams(),
                    st.sampled_from(targets),
                    st.sampled_from([("::1", 5683), ("::1", 61628), ("fe80::1", 1)]),
                ),
                min_size=1,
                max_size=4,
            )
        )
        def check(batch: list[tuple[bytes, Addr, Addr]]) -> None:
            fleet._on_datagrams(batch, time.time())
            fleet._on_tick()
            for eui in euis:
                _check_device(fleet, capture, eui, next(mids) & 0xFFFF)

        check()
    finally:
        await fleet.stop()


# ---------------------------------------------------------------- head-end


def _firmware(version: str, size: int, seed: int) -> bytes:
    payload = random.Random(seed).randbytes(size)
    return build_image(payload, hwid=HWID, version=version, name="mesh")


def _check_inventory(core: HeadEndCore) -> None:
    for record in core.inventory:
        assert len(record.eui) == 16 and record.eui == record.eui.upper()
        assert int(record.eui, 16) >= 0
        # every address still resolves, to the device last heard there
        holder = core.inventory.by_addr(record.addr)
        assert holder is not None and holder.addr == record.addr
        assert record.group == "" or core.groups.get(record.group) is not None


def _registration(wire: MemoryWire, i: int) -> bytes:
    return wire.devices[i].registration_payload(wire.now)


def test_headend_core_survives_fuzz() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    group = make_group("Meters", id=7, multicast=GROUP_ADDR, hardware_ids=[HWID])
    core = build_core([group], key)
    wire = MemoryWire(core)
    wire.add_devices(3, _firmware("6.8.1", 2000, 1))
    assert wire.run(60, lambda: len(core.inventory) == 3)
    new = _firmware("6.9.1", 8000, 2)
    ref = ImageRef("new.bin", "6.9.1", hashlib.sha256(new).digest(), HWID, new, 256)
    members = [d.eui for d in core.inventory.members("meters")]
    campaign = core.start_upload(group, ref, members, wire.now)
    seeds = [_registration(wire, i) for i in range(3)]
    remotes = [device_addr(i) for i in range(3)] + [("fd00::99", 61628)]
    payloads = st.one_of(
        tlv_payloads(),
        st.sampled_from(seeds),
        mutated(st.sampled_from(seeds)),
        st.lists(st.sampled_from(SEED_TLVS + tuple(seeds)), max_size=4).map(b"".join),
    )
    mids = iter(range(1, 1 << 30))

    def message(kind: int, path: str, payload: bytes) -> bytes:
        mid = next(mids) & 0xFFFF
        options = request_options(path)
        return encode(Message(kind, Code.POST, mid, b"t", options, payload))

    requests = st.builds(
        message,
        st.sampled_from((Type.CON, Type.NON)),
        st.sampled_from(("r", "c", "x")),
        payloads,
    )

    @FUZZ
    @given(
        st.lists(
            st.tuples(st.one_of(requests, coap_datagrams()), st.sampled_from(remotes)),
            min_size=1,
            max_size=4,
        )
    )
    def check(batch: list[tuple[bytes, Addr]]) -> None:
        for data, remote in batch:
            core.receive_datagram(data, HEADEND_ADDR, remote, wire.now)
        wire.now += 0.05
        core.handle_timer(wire.now)
        core.datagrams_to_send()
        core.take_changes()
        _check_inventory(core)

    check()
    # still working: the devices re-register and the upload can still finish
    for device in wire.devices:
        device.power_cycle(wire.now)
    assert wire.run(120, lambda: not campaign.active)
    assert len(core.inventory) >= 3
    _check_inventory(core)
    for i in range(3):
        record = core.inventory.by_addr(device_addr(i))
        assert record is not None and record.eui == wire.eui(wire.devices[i])
