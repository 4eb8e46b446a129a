"""The registration template renders the same bytes as the generic encoder.

``Device.registration_payload`` splices per-device values into a template
encoded once per profile (``emulator/node/template.py``); these tests compare
it with ``Device.registration_payload_generic`` (TLV by TLV, protobuf) over
identities, profiles and device states.
"""

from __future__ import annotations

import hashlib
import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.coap.message import Code
from emulator.csmp import csmp_pb2 as pb
from emulator.csmp.registry import T, encode_tlv
from emulator.firmware.blockstore import BlockStore
from emulator.firmware.image import build_image
from emulator.node import Device, DeviceFaults, DeviceProfile, Identity, describe
from emulator.node import device as device_module
from emulator.node.builders import post
from emulator.node.firmware import image_from_file
from emulator.node.template import build_template

T0 = 1_700_000_000.0
RUN = build_image(b"\x01" * 3000, hwid="OPENCSMP", version="6.8.99")
NEW = build_image(bytes(range(256)) * 12, hwid="OPENCSMP", version="7.1.2")
BS = 512


def make(
    identity: Identity,
    profile: DeviceProfile | None = None,
    faults: DeviceFaults | None = None,
    run: bool = True,
) -> tuple[Device, float]:
    store = BlockStore()
    image = image_from_file(store, RUN, BS, "run.bin") if run else None
    dev = Device(
        identity,
        profile or DeviceProfile(boot_time=0.0),
        store,
        seed=3,
        run_image=image,
        faults=faults,
    )
    dev.power_on(T0)
    now = T0 + dev.profile.boot_time
    dev.on_timer(now)
    return dev, now


def same(dev: Device, now: float) -> bytes:
    fast = dev.registration_payload(now)
    assert fast == dev.registration_payload_generic(now)
    return fast


def uses_template(dev: Device) -> bool:
    return device_module._registration_template(dev) is not None


def test_default_devices_use_the_template_and_match() -> None:
    for k in range(50):
        eui = 0x00173B0B00000000 + k * 7919
        address = f"fd00:6d66::{k:x}:217:3bff:fe0b:{k:x}"
        dev, now = make(Identity(eui, address))
        assert uses_template(dev)
        for dt in (0, 1, 5, 9, 10, 11, 3600):
            same(dev, now + dt + 0.25)


@pytest.mark.parametrize(
    "eui", [0, 1, 1 << 57, (1 << 57) - 1, (1 << 64) - 1, 0xA5C396E17B2D4F08]
)
def test_edge_eui64s(eui: int) -> None:
    dev, now = make(Identity(eui, "2001:db8::1"))
    same(dev, now)


@pytest.mark.parametrize(
    "address",
    [
        "::1",
        "2001:db8::1%eth0",
        "2001:0db8:0000::0001",
        "::ffff:1.2.3.4",
        "not an address",
        "",
        "fd5e:a1c0:93f7:2b64:e8d1:5a0c:7f36:b249",
    ],
)
def test_address_forms(address: str) -> None:
    dev, now = make(Identity(0x00173B0B00000001, address))
    same(dev, now)


@pytest.mark.parametrize(
    "serial", ["SN1", "SERIAL-0000000042", "Zähler-0000001", "00173B0B00000001"]
)
def test_custom_serials(serial: str) -> None:
    dev, now = make(Identity(0x00173B0B00000001, "2001:db8::1", serial))
    same(dev, now)


@pytest.mark.parametrize(
    "profile",
    [
        DeviceProfile(boot_time=0.0, length_width=0),
        DeviceProfile(boot_time=0.0, length_width=3),
        DeviceProfile(boot_time=0.0, vendor_tlvs=()),
        DeviceProfile(boot_time=0.0, vendor_tlvs=((1, b"x"), (2, b"y" * 300))),
        DeviceProfile(boot_time=0.0, vendor_pen=9),
        DeviceProfile(boot_time=0.0, model="R" * 200, description="d" * 150),
        # the sentinel EUI-64 inside a profile string: template refused
        DeviceProfile(boot_time=0.0, description="A5C396E17B2D4F08"),
        DeviceProfile(boot_time=0.0, report_interval=300, report_tlvs=("22", "e9.1")),
    ],
)
def test_profiles(profile: DeviceProfile) -> None:
    dev, now = make(Identity(0x00173B0B00000001, "2001:db8::1"), profile)
    same(dev, now)
    same(dev, now + 20)


def test_sentinel_collision_falls_back_to_generic() -> None:
    profile = DeviceProfile(boot_time=0.0, description="A5C396E17B2D4F08")
    dev, _now = make(Identity(0x00173B0B00000001, "2001:db8::1"), profile)
    assert not uses_template(dev)


def test_no_run_image() -> None:
    dev, now = make(Identity(0x00173B0B00000001, "2001:db8::1"), run=False)
    same(dev, now)


def test_state_groups_subscription_download_and_boot_failure() -> None:
    dev, now = make(Identity(0x00173B0B00000001, "2001:db8::1"), faults=DeviceFaults())
    for tlv, msg in (
        (T.GROUP_ASSIGN, pb.Group(type=2, id=77)),
        (T.GROUP_ASSIGN, pb.Group(type=1, id=3)),
        (T.REPORT_SUBSCRIBE, pb.ReportSubscribe(interval=300, tlvid=["23", "25"])),
        (T.SESSION_ID, pb.SessionID(id="s-1")),
    ):
        dev.handle(post(encode_tlv(tlv, msg)), now)
        same(dev, now)
    transfer = pb.TransferRequest(
        fileHash=hashlib.sha256(NEW).digest(),
        fileName="new.bin",
        version="7.1.2",
        fileSize=len(NEW),
        blockSize=BS,
    )
    transfer.hwInfo.hwId = "OPENCSMP"
    dev.handle(post(encode_tlv(T.TRANSFER_REQUEST, transfer)), now)
    for num in range(-(-len(NEW) // BS)):
        block = pb.ImageBlock(
            fileHash=transfer.fileHash,
            blockNum=num,
            blockData=NEW[num * BS : (num + 1) * BS],
        )
        dev.handle(post(encode_tlv(T.IMAGE_BLOCK, block)), now)
        same(dev, now)
    assert dev.faults is not None
    dev.faults.fail_boot = True
    load = pb.LoadRequest(fileHash=transfer.fileHash)
    resp = dev.handle(post(encode_tlv(T.LOAD_REQUEST, load)), now)
    assert resp is not None and resp.code == Code.CREATED
    for t in (now + 1, now + 1.5):
        dev.on_timer(t)
    assert dev._boot_failed is not None
    payload = same(dev, now + 2)
    assert payload.endswith(dev._boot_failed_tlv())


@settings(max_examples=150, deadline=None)
@given(
    eui=st.integers(0, (1 << 64) - 1),
    iid=st.integers(0, (1 << 64) - 1),
    serial=st.one_of(st.just(""), st.text(max_size=24)),
    width=st.sampled_from([0, 2]),
    dt=st.floats(0, 1e6),
)
def test_random_identities(
    eui: int, iid: int, serial: str, width: int, dt: float
) -> None:
    address = str(ipaddress.IPv6Address((0xFD006D66 << 96) | iid))
    profile = DeviceProfile(boot_time=0.0, length_width=width)
    dev, now = make(Identity(eui, address, serial), profile)
    same(dev, now + dt)


@pytest.mark.parametrize(
    "text",
    ["::1", "2001:db8::1%lo", "::ffff:1.2.3.4", "1::2::3", "12345::1", "", "x"],
)
def test_packed_address_matches_ipaddress(text: str) -> None:
    try:
        expected = ipaddress.IPv6Address(text.split("%", 1)[0]).packed
    except ValueError:
        expected = bytes(16)
    assert describe.packed_address(text) == expected


def test_template_build_checks_counts_and_overlaps() -> None:
    sentinels = [(0, b"AB", 1), (1, b"BC", 1)]
    assert build_template([b"xxABxxBCxx"], sentinels) is not None
    assert build_template([b"xxABCxx"], sentinels) is None  # overlap
    assert build_template([b"xxABxx"], sentinels) is None  # BC missing
    assert build_template([b"ABAB", b"BC"], sentinels) is None  # AB twice
    tpl = build_template([b"<", 7, b"AB>", b"BC"], sentinels)
    assert tpl is not None
    values = [b"a", b"b", b"", b"", b"", b"", b"", b"T"]
    assert tpl.render(values) == b"<Ta>b"
