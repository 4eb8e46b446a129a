"""Regression tests of the bugs the fault suite found (one per bug, fast).

- ``Inventory.move``/``add`` dropped another device's address entry when a
  device left an address someone else had registered from since (its reports
  then read as from an unknown device) -- found by the head-end fuzzer.
- ``UploadCampaign.on_slots``: a device answering 11 (duplicate transfer)
  without holding the image looped transfer/bitmap read until
  ``max_duration`` (an hour) -- found by the refusal scenario.
- The head-end ignored the boot failure a device reports after falling back
  from a reloaded image: per-device result "ok", status RELOADED.
- The fleet's ``reboots``/``reloads`` counters missed reboots with a boot
  time of 0.
"""

from __future__ import annotations

import asyncio

from test_fleet_support import free_port, free_port_range, start_client, wait_for
from test_headend_engine import make_wire, upload

from emulator.coap.message import Code
from emulator.csmp import csmp_pb2 as pb
from emulator.csmp.registry import T, encode_tlv
from emulator.csmp.tlv import TlvId
from emulator.fleet.config import parse_config
from emulator.fleet.runtime import Fleet
from emulator.headend.core import BOOT_FAILED
from emulator.headend.engine import CommandKind, Outcome, Phase
from emulator.headend.inventory import DeviceRecord, Inventory
from emulator.headend.nms import parse_report
from emulator.node.device import BOOT_FAILED_SUBTYPE
from emulator.node.profile import DeviceFaults


def test_inventory_keeps_the_address_of_the_device_still_there() -> None:
    inv = Inventory(600)
    a = DeviceRecord("00173BAB00000001", "fd00::1", 61628)
    b = DeviceRecord("00173BAB00000002", "fd00::2", 61628)
    inv.add(a)
    inv.add(b)
    inv.move(b, ("fd00::1", 61628))  # b registers from a's address
    assert inv.by_addr(("fd00::1", 61628)) is b
    inv.move(b, ("fd00::3", 61628))  # and moves on: a is still at fd00::1
    assert inv.by_addr(("fd00::1", 61628)) is a
    assert inv.by_addr(("fd00::3", 61628)) is b
    assert inv.by_addr(("fd00::2", 61628)) is None
    c = DeviceRecord("00173BAB00000001", "fd00::9", 61628)
    inv.add(c)  # a re-added elsewhere (store load): only its own entry goes
    assert inv.by_addr(("fd00::1", 61628)) is None
    assert inv.by_addr(("fd00::9", 61628)) is c


def test_duplicate_transfer_without_the_image_fails_in_bounded_rounds() -> None:
    wire, core = make_wire(3)
    wire.devices[0].faults = DeviceFaults(refuse_transfer_code=11)
    campaign = upload(wire, core, limit=300)
    member = campaign.members[wire.eui(wire.devices[0])]
    assert member.outcome is Outcome.FAILED
    assert "lost the transfer" in member.reason
    assert member.rounds == core.tuning.max_rounds + 1
    assert campaign.phase is Phase.DONE
    others = [campaign.members[wire.eui(d)] for d in wire.devices[1:]]
    assert all(m.outcome is Outcome.COMPLETE for m in others)


def test_boot_failure_is_read_from_the_registration() -> None:
    file_hash = bytes(range(32))
    vendor = TlvId(T.VENDOR, 26484)
    payload = encode_tlv(
        vendor, pb.VendorTlv(subType=BOOT_FAILED_SUBTYPE, value=file_hash)
    ) + encode_tlv(vendor, pb.VendorTlv(subType=1, value=b"x"))
    report = parse_report(payload + b"\x7f\xf4\xce\x01\x7f\x02\xff\xff")
    assert report.boot_failed == file_hash
    assert report.ignored == 2  # the other vendor TLV and the malformed one


def test_boot_failure_is_reported_per_device() -> None:
    wire, core = make_wire(3)
    campaign = upload(wire, core)
    assert campaign.phase is Phase.DONE
    wire.devices[0].faults = DeviceFaults(fail_boot=True)
    group = core.groups.get("meters")
    assert group is not None
    members = [d.eui for d in core.inventory.members("meters")]
    load_at = int(wire.now) + 30
    core.start_command(
        CommandKind.RELOAD,
        group,
        campaign.image.sha256,
        members,
        wire.now,
        load_time=load_at,
    )
    broken = core.inventory.get(wire.eui(wire.devices[0]))
    assert broken is not None
    assert wire.run(120, lambda: broken.results.get("reload", "").startswith("boot"))
    assert broken.results["reload"] == f"{BOOT_FAILED} (6.8.1)"
    assert wire.devices[0].running_version == "6.8.1"
    fine = core.inventory.get(wire.eui(wire.devices[1]))
    assert fine is not None and fine.results["reload"] == "ok"


async def test_fleet_counts_reboots_with_zero_boot_time() -> None:
    config = parse_config(
        {
            "fleet": {
                "devices": 1,
                "addressing": "loopback-ports",
                "port_base": free_port_range(1),
                "nms": f"[::1]:{free_port()}",
                "boot_time": 0.0,
                "power_on_jitter": 0.0,
            },
            "multicast": {"mode": "off"},
        }
    )
    fleet = Fleet(config)
    await fleet.start()
    client, transport = await start_client()
    try:
        (eui,) = fleet.devices
        reboot = encode_tlv(T.REBOOT_REQUEST, pb.RebootRequest(flag=1))
        answer = await client.request(
            fleet.local_address(eui), "c", code=Code.POST, payload=reboot
        )
        assert answer is not None and answer[0].code == Code.CREATED
        assert await wait_for(lambda: fleet.stats["reboots"] == 1, 3)
        assert fleet.stats["reloads"] == 0
        fleet.power_cycle(eui)  # control API, [[faults.device]]
        assert fleet.stats["reboots"] == 2
        await asyncio.sleep(0.2)  # its boot ends: not counted a second time
        assert fleet.stats["reboots"] == 2
    finally:
        transport.close()
        await fleet.stop()
