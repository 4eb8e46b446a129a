"""The head-end core and campaign engine against real emulated devices, in memory.

Layer ``headend`` (CSMP.md "Group flows", "What FND does with it"): devices of
:mod:`emulator.node.device` and the :class:`HeadEndCore` exchange CoAP through
:class:`MemoryWire` with a virtual clock and seeded loss.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import replace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from emulator.firmware.image import build_image
from emulator.headend.core import REGISTRATION_REUSE, HeadEndCore
from emulator.headend.engine import (
    CommandKind,
    ImageRef,
    Outcome,
    Phase,
    UploadCampaign,
    UploadStatus,
)
from emulator.headend.groups import make_group
from emulator.headend.testing import (
    GROUP_ADDR,
    HEADEND_ADDR,
    MemoryWire,
    build_core,
    signing_profile,
)
from emulator.node.profile import DeviceFaults, UploadState

HWID = "OPENCSMP"


def firmware(version: str, size: int, seed: int = 1) -> bytes:
    payload = random.Random(seed).randbytes(size)
    return build_image(payload, hwid=HWID, version=version, name="mesh")


RUN_IMAGE = firmware("6.8.1", 3000)
NEW_IMAGE = firmware("6.9.1", 20_000, seed=2)


def image_ref(data: bytes = NEW_IMAGE, block_size: int = 256) -> ImageRef:
    return ImageRef(
        "mesh-6.9.1.bin",
        "6.9.1",
        hashlib.sha256(data).digest(),
        HWID,
        data,
        block_size,
    )


def make_wire(
    count: int,
    *,
    multicast: bool = True,
    loss: float = 0.0,
    **upload: Any,
) -> tuple[MemoryWire, HeadEndCore]:
    key = ec.generate_private_key(ec.SECP256R1())
    group = make_group(
        "Meters", id=7, multicast=GROUP_ADDR if multicast else "", hardware_ids=[HWID]
    )
    core = build_core([group], key, **upload)
    wire = MemoryWire(core, loss=loss)
    wire.add_devices(count, RUN_IMAGE, profile=signing_profile(key))
    assert wire.run(60, lambda: len(core.inventory) == count)
    assert wire.run(10, lambda: all(d.registered for d in wire.devices))
    return wire, core


def upload(wire: MemoryWire, core: HeadEndCore, limit: float = 600) -> UploadCampaign:
    group = core.groups.get("meters")
    assert group is not None
    members = [d.eui for d in core.inventory.members("meters")]
    campaign = core.start_upload(group, image_ref(), members, wire.now)
    assert wire.run(limit, lambda: not campaign.active), campaign.phase
    return campaign


def test_registration_fills_inventory_and_assigns_group() -> None:
    wire, core = make_wire(5)
    for device in wire.devices:
        record = core.inventory.get(wire.eui(device))
        assert record is not None
        assert record.group == "meters"
        assert record.hardware_id == HWID
        assert record.version == "6.8.1"
        assert set(record.slots) == {1, 2, 3}
        assert device.groups == {2: 7}
        assert device.session_id == record.session
    assert core.stats["registrations"] == 5
    assert core.stats["bad_input"] == 0


def test_multicast_upload_without_loss_needs_no_unicast_blocks() -> None:
    wire, core = make_wire(6)
    campaign = upload(wire, core)
    assert campaign.phase is Phase.DONE
    assert all(m.outcome is Outcome.COMPLETE for m in campaign.members.values())
    assert all(d.upload_state is UploadState.COMPLETE for d in wire.devices)
    assert campaign.stats["multicast_blocks"] == image_ref().nblocks
    assert campaign.stats["unicast_blocks"] == 0


def test_multicast_upload_with_loss_fills_in_by_unicast() -> None:
    wire, core = make_wire(12, loss=0.1)
    campaign = upload(wire, core)
    assert campaign.phase is Phase.DONE
    outcomes = {m.outcome for m in campaign.members.values()}
    assert outcomes == {Outcome.COMPLETE}
    assert all(d.upload_state is UploadState.COMPLETE for d in wire.devices)
    assert campaign.stats["unicast_blocks"] > 0
    record = core.inventory.get(wire.eui(wire.devices[0]))
    assert record is not None and record.slots[2].complete


def test_devices_deaf_to_multicast_complete_by_unicast() -> None:
    wire, core = make_wire(4)
    wire.deaf.update({1, 3})
    campaign = upload(wire, core)
    assert all(m.outcome is Outcome.COMPLETE for m in campaign.members.values())
    assert campaign.stats["unicast_blocks"] >= 2 * image_ref().nblocks


def test_unicast_mode_group() -> None:
    wire, core = make_wire(3, multicast=False, loss=0.05)
    campaign = upload(wire, core)
    assert campaign.stats["multicast_blocks"] == 0
    assert all(m.outcome is Outcome.COMPLETE for m in campaign.members.values())


def test_refusals_carry_the_device_code() -> None:
    wire, core = make_wire(4)
    wire.devices[0].faults = DeviceFaults(refuse_transfer_code=4)
    wire.devices[1].faults = DeviceFaults(refuse_transfer_code=10)
    campaign = upload(wire, core)
    by_eui = campaign.members
    first, second = (by_eui[wire.eui(d)] for d in wire.devices[:2])
    assert (first.outcome, first.code) == (Outcome.REFUSED, 4)
    assert (second.outcome, second.code) == (Outcome.REFUSED, 10)
    assert campaign.status_of(wire.eui(wire.devices[2])) is UploadStatus.COMPLETE
    assert campaign.phase is Phase.DONE


def test_no_member_accepting_fails_the_upload() -> None:
    wire, core = make_wire(2)
    for device in wire.devices:
        device.faults = DeviceFaults(refuse_transfer_code=1)
    campaign = upload(wire, core)
    assert campaign.phase is Phase.FAILED
    assert campaign.reason == "no member accepted the transfer"


def test_silent_member_becomes_unreachable() -> None:
    wire, core = make_wire(3, max_attempts=1)
    core.exchange.tuning = replace(core.exchange.tuning, max_retransmit=1)
    wire.silent.add(2)
    campaign = upload(wire, core)
    silent = campaign.members[wire.eui(wire.devices[2])]
    assert silent.outcome is Outcome.UNREACHABLE
    assert campaign.phase is Phase.DONE


def test_stop_keeps_partial_uploads() -> None:
    wire, core = make_wire(3, pace=20.0)
    group = core.groups.get("meters")
    assert group is not None
    members = [d.eui for d in core.inventory.members("meters")]
    campaign = core.start_upload(group, image_ref(), members, wire.now)
    wire.run(60, lambda: campaign.next_block > 20)
    assert core.stop_upload("meters", wire.now)
    sent = campaign.stats["multicast_blocks"]
    wire.run(30)
    assert campaign.stats["multicast_blocks"] == sent
    assert campaign.phase is Phase.STOPPED
    assert all(d.upload_state is UploadState.DOWNLOADING for d in wire.devices)
    assert not core.stop_upload("meters", wire.now)


def test_max_rounds_bounds_a_device_that_never_completes() -> None:
    wire, core = make_wire(2, max_rounds=2)
    wire.devices[0].faults = DeviceFaults(flash_write_error_rate=1.0)
    campaign = upload(wire, core)
    broken = campaign.members[wire.eui(wire.devices[0])]
    assert broken.outcome is Outcome.FAILED
    assert "gave up after 2 rounds" in broken.reason


@pytest.mark.parametrize("multicast", [True, False])
def test_backup_and_reload_commands(multicast: bool) -> None:
    wire, core = make_wire(5, multicast=multicast, loss=0.05)
    upload(wire, core)
    group = core.groups.get("meters")
    assert group is not None
    members = [d.eui for d in core.inventory.members("meters")]
    sha = image_ref().sha256
    backup = core.start_command(CommandKind.BACKUP, group, sha, members, wire.now)
    assert wire.run(300, lambda: not backup.active)
    assert backup.counts()["accepted"] == 5
    assert all(d.firmware.backup is not None for d in wire.devices)
    at = int(wire.now) + 30
    reload = core.start_command(
        CommandKind.RELOAD, group, sha, members, wire.now, load_time=at
    )
    assert wire.run(300, lambda: not reload.active)
    assert reload.counts()["accepted"] == 5
    assert core.reloads["meters"].at == at
    assert wire.run(
        120, lambda: all(d.running_version == "6.9.1" for d in wire.devices)
    )
    assert wire.run(60, lambda: all(d.registered for d in wire.devices))
    record = core.inventory.get(wire.eui(wire.devices[0]))
    assert record is not None and record.version == "6.9.1"
    assert record.results["reload"] == "ok"


def test_bad_input_is_counted_not_raised() -> None:
    wire, core = make_wire(1)
    device_addr = core.inventory.get(wire.eui(wire.devices[0]))
    assert device_addr is not None
    from emulator.coap.message import Code, Message, Type, encode, request_options

    bad = Message(Type.NON, Code.POST, 9, b"", request_options("c"), b"\xff\xff\xff")
    core.receive_datagram(encode(bad), HEADEND_ADDR, device_addr.addr, wire.now)
    core.receive_datagram(b"\x00garbage", HEADEND_ADDR, device_addr.addr, wire.now)
    reg = Message(Type.CON, Code.POST, 10, b"t", request_options("r"), b"\x02\x00")
    core.receive_datagram(encode(reg), HEADEND_ADDR, ("fd00::99", 61628), wire.now)
    assert core.stats["bad_input"] == 2
    answers = core.datagrams_to_send()
    assert answers and answers[-1].remote == ("fd00::99", 61628)


def test_metrics_collector_aggregates(tmp_path: object) -> None:
    from pathlib import Path

    from prometheus_client import CollectorRegistry

    from emulator.headend.images import ImageStore
    from emulator.headend.metrics import HeadEndCollector

    wire, core = make_wire(3, loss=0.05)
    upload(wire, core)
    registry = CollectorRegistry()
    registry.register(HeadEndCollector(core, ImageStore(Path(".")), lambda: wire.now))

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value("meshfleet_headend_" + name, labels)

    assert sample("devices", state="up") == 3
    assert sample("upload_devices", state="complete") == 3
    assert sample("operations", kind="upload", status="done") == 1
    assert sample("blocks_sent_total", mode="multicast") == image_ref().nblocks
    assert (sample("registrations_total") or 0) >= 3
    assert sample("bytes_sent_total")


def test_metrics_follow_devices_that_change_group_after_an_upload() -> None:
    from pathlib import Path

    from prometheus_client import CollectorRegistry

    from emulator.headend.images import ImageStore
    from emulator.headend.metrics import HeadEndCollector

    wire, core = make_wire(3)
    upload(wire, core)
    registry = CollectorRegistry()
    registry.register(HeadEndCollector(core, ImageStore(Path(".")), lambda: wire.now))
    meters = make_group("Meters", id=7, multicast=GROUP_ADDR, hardware_ids=[HWID])
    pinned = make_group("pinned", id=11, euis=[wire.eui(wire.devices[0])])
    assert core.apply_groups([meters, pinned], wire.now) == 1

    def sample(state: str) -> float | None:
        labels = {"state": state}
        return registry.get_sample_value("meshfleet_headend_upload_devices", labels)

    assert sample("complete") == 2  # the two left in the upload's group
    assert sample("notStarted") == 1  # the moved one: no upload in its group
    wire.now += core.inventory.silence + 1  # everyone silent since
    assert (
        registry.get_sample_value("meshfleet_headend_devices", {"state": "down"}) == 3
    )


def test_group_change_is_pushed_by_unicast_group_assign() -> None:
    wire, core = make_wire(2)
    meters = make_group("Meters", id=7, multicast=GROUP_ADDR, hardware_ids=[HWID])
    pinned = make_group("pinned", id=11, euis=[wire.eui(wire.devices[0])])
    assert core.apply_groups([meters, pinned], wire.now) == 1
    assert wire.run(10, lambda: wire.devices[0].groups == {2: 11})
    assert wire.devices[1].groups == {2: 7}
    assert core.stats["group_assigns"] == 1
    record = core.inventory.get(wire.eui(wire.devices[0]))
    assert record is not None and record.group == "pinned"


def test_unicast_transfers_beyond_the_parallel_limit_go_on() -> None:
    """A member answering its unicast TransferRequest frees its place at once
    (TRANSFER_UNICAST used to wait until the upload's deadline)."""
    wire, core = make_wire(4, unicast_parallel=1)
    wire.deaf.update({0, 1, 2, 3})
    campaign = upload(wire, core, limit=120)
    assert campaign.phase is Phase.DONE
    assert all(m.outcome is Outcome.COMPLETE for m in campaign.members.values())


def _recount(campaign: UploadCampaign) -> tuple[dict[UploadStatus, int], int]:
    counts = dict.fromkeys(UploadStatus, 0)
    partial = 0
    for eui in campaign.members:
        counts[campaign.status_of(eui)] += 1
        partial += 0 < campaign.blocks_of(eui) < campaign.image.nblocks
    return counts, partial


@pytest.mark.parametrize("seed", range(5))
def test_running_tally_equals_a_full_recount(seed: int) -> None:
    """getFirmwareUploadStatus counts from the campaign's running tally are
    those of visiting every member, after any sequence of events."""
    from emulator.firmware import bitmap
    from emulator.headend.engine import Purpose, UploadTuning
    from emulator.headend.inventory import UPLOAD, SlotInfo

    rng = random.Random(seed)
    image = image_ref()
    euis = [f"{i:016X}" for i in range(40)]
    tuning = UploadTuning(async_window=1, grace=0.5, pace=0, unicast_parallel=4)
    campaign = UploadCampaign(
        1, "meters", 7, image, euis, tuning, multicast=True, now=0.0
    )
    campaign.start(0.0)
    now = 0.0
    for _ in range(600):
        now += rng.random()
        eui = rng.choice(euis + ["00000000DEADBEEF"])
        event = rng.randrange(8)
        if event == 0:
            campaign.on_transfer_response(eui, rng.choice([0, 0, 11, 3]), now)
        elif event == 1:
            bits = rng.getrandbits(image.nblocks) if rng.random() < 0.8 else 0
            wire_bits = bitmap.to_bytes(bits, image.nblocks)
            slot = SlotInfo(
                UPLOAD,
                image.sha256,
                size=image.size,
                block_size=image.block_size,
                bitmap=wire_bits,
            )
            if rng.random() < 0.1:
                slot = replace(slot, bitmap=None)  # complete
            campaign.on_slots(eui, [slot], now, read=rng.random() < 0.5)
        elif event == 2:
            campaign.on_slots(eui, [SlotInfo(UPLOAD)], now, read=True)
        elif event == 3:
            purpose = rng.choice([Purpose.TRANSFER, Purpose.BITMAP])
            campaign.on_failed(eui, purpose, "timeout", now)
        elif event == 4:
            campaign.on_transfer_applied(eui, now)
        elif event == 5:
            campaign.add_member(f"{rng.randrange(40, 60):016X}")
            euis = list(campaign.members)
        elif event == 6 and rng.random() < 0.02:
            campaign.stop(now)
        campaign.poll(now)
        if rng.random() < 0.3:
            assert campaign.tally() == _recount(campaign)
    assert campaign.tally() == _recount(campaign)
    assert sum(campaign.tally()[0].values()) == len(campaign.members)


def test_registering_again_soon_gets_the_same_signed_answer() -> None:
    """A duplicate registration (answer late or lost) is answered from the
    previous signed answer: same SessionID, no new signature."""
    wire, core = make_wire(1)
    device = wire.devices[0]
    record = core.inventory.get(wire.eui(device))
    assert record is not None
    core.answer = replace(core.answer, reg_min=30)  # the window: 10 s
    wire.run(REGISTRATION_REUSE + 1)
    device.power_cycle(wire.now)
    assert wire.run(5, lambda: record.registrations == 2 and device.registered)
    session = record.session
    assert device.session_id == session
    reused = core.stats["registrations_reused"]
    device.power_cycle(wire.now)
    assert wire.run(5, lambda: record.registrations == 3)
    assert record.session == session
    assert core.stats["registrations_reused"] == reused + 1
    assert wire.run(5, lambda: device.registered and device.session_id == session)
    wire.run(REGISTRATION_REUSE + 1)
    device.power_cycle(wire.now)
    assert wire.run(5, lambda: record.registrations == 4)
    assert record.session != session  # a new answer after the reuse window
    assert core.stats["registrations_reused"] == reused + 1
    assert wire.run(5, lambda: device.registered and device.session_id != session)


def test_member_reached_after_the_load_time_loads_at_once(
    image_loads: list[int],
) -> None:
    """scheduleReload for "now": a member that missed the multicast
    LoadRequest gets it by unicast after the load time, as loadTime 0. The
    others reboot before their async answers go out; registering again with
    the image running counts as their answer, so each device loads once (a
    unicast LoadRequest would make them load the UPLOAD slot again)."""
    wire, core = make_wire(3)
    upload(wire, core)
    wire.deaf.add(1)
    group = core.groups.get("meters")
    assert group is not None
    members = [d.eui for d in core.inventory.members("meters")]
    at = int(wire.now) + 1  # before the multicast window (a + grace) ends
    reload = core.start_command(
        CommandKind.RELOAD, group, image_ref().sha256, members, wire.now, load_time=at
    )
    assert wire.run(60, lambda: not reload.active)
    assert reload.counts()["accepted"] == 3
    assert wire.run(30, lambda: all(d.running_version == "6.9.1" for d in wire.devices))
    wire.run(30)
    assert sorted(image_loads) == sorted(d.identity.eui64 for d in wire.devices)
    assert {d.results["reload"] for d in core.inventory} == {"ok"}


def test_member_that_got_the_load_request_too_late_is_asked_to_load_now() -> None:
    """A multicast LoadRequest that reached a device after its load time is
    refused (code 6); the head-end asks that member again, to load now."""
    from emulator.csmp import csmp_pb2 as pb
    from emulator.csmp.tlv import pull_tlvs
    from emulator.headend.engine import CommandCampaign, UploadTuning

    tuning = UploadTuning(async_window=1, grace=0.5)
    sha = image_ref().sha256
    campaign = CommandCampaign(
        1, CommandKind.RELOAD, "meters", 7, sha, ["A", "B"], tuning,
        multicast=True, now=100.0, load_time=101,
    )  # fmt: skip
    campaign.start(100.0)
    assert len(campaign.poll(100.0)) == 1  # the multicast request
    campaign.on_command_response("A", 0, 100.5)
    campaign.on_command_response("B", 6, 101.2)  # got it late: refused
    assert campaign.active and campaign.members["B"].code is None
    (again,) = campaign.poll(101.6)  # after the window: B by unicast
    assert again.eui == "B"
    (tlv,) = [t for t in pull_tlvs(again.payload) if t.id.type == 68]
    request = pb.LoadRequest()
    request.ParseFromString(tlv.value)
    assert request.loadTime == 0
    campaign.on_command_response("B", 0, 101.7)
    assert not campaign.active
    assert campaign.counts()["accepted"] == 2


def test_resumed_reload_keeps_answers_and_counts_image_running_as_done() -> None:
    """A reload collection rebuilt after a restart: stored answers and
    give-ups stay, the rest are asked by unicast at once, and 9 (image
    running: the member loaded before its answer was stored) is accepted."""
    from emulator.headend.engine import CommandCampaign, CommandMember, UploadTuning

    tuning = UploadTuning(async_window=5, grace=0.5, max_attempts=2)
    campaign = CommandCampaign(
        1, CommandKind.RELOAD, "meters", 7, image_ref().sha256, (), tuning,
        multicast=True, now=100.0, load_time=101,
    )  # fmt: skip
    for member in (
        CommandMember("A", code=0),
        CommandMember("B", failed="no answer", attempts=2),
        CommandMember("C"),
        CommandMember("D"),
    ):
        campaign.members[member.eui] = member
    campaign.resume(130.0)
    assert campaign.active and campaign.counts()["pending"] == 2
    asked = campaign.poll(130.0)
    assert sorted(s.eui for s in asked) == ["C", "D"]  # no multicast window
    campaign.on_command_response("C", 9, 130.1)
    assert campaign.active
    campaign.on_command_response("D", 0, 130.2)
    assert not campaign.active
    counts = campaign.counts()
    assert (counts["accepted"], counts["noResponse"]) == (3, 1)


@pytest.mark.parametrize("kind", [CommandKind.BACKUP, CommandKind.RELOAD])
def test_group_command_goes_out_at_once_not_when_its_window_ends(
    kind: CommandKind,
) -> None:
    """The multicast SetBackupRequest/LoadRequest is due when the operation
    starts (it waited for the end of its answer window, a + grace, and the
    whole group was then asked again by unicast)."""
    wire, core = make_wire(3)
    upload(wire, core)
    group = core.groups.get("meters")
    assert group is not None
    members = [d.eui for d in core.inventory.members("meters")]
    core.datagrams_to_send()
    command = core.start_command(kind, group, image_ref().sha256, members, wire.now)
    timer = core.get_timer()
    assert timer is not None and timer <= wire.now
    core.handle_timer(wire.now)
    (datagram,) = core.datagrams_to_send()  # one multicast, no unicast
    assert datagram.remote == group.target(core.config.csmp.device_port)
    assert command.active
