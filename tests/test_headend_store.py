"""Groups, configuration, image store, SQLite store and restart recovery."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import ec

from emulator.cli.headend import headend
from emulator.firmware.image import ImageError, Reason, build_image
from emulator.headend.config import ConfigError, parse_config
from emulator.headend.core import Campaign, HeadEndCore
from emulator.headend.engine import (
    CommandKind,
    ImageRef,
    Outcome,
    Phase,
    UploadCampaign,
)
from emulator.headend.groups import DEFAULT_GROUP, GroupTable, assign_ids, make_group
from emulator.headend.images import MAX_FILE_SIZE, check_image, choose_block_size
from emulator.headend.inventory import DeviceRecord
from emulator.headend.persist import Saved, change_writes, latest_operations, restore
from emulator.headend.store import Database, StoreError, StoreWriter, Write, db_path
from emulator.headend.testing import GROUP_ADDR, MemoryWire, build_core, signing_profile

HWID = "OPENCSMP"
IMAGE = build_image(random.Random(5).randbytes(9000), hwid=HWID, version="6.9.1")
RUN = build_image(random.Random(6).randbytes(1000), hwid=HWID, version="6.8.1")


# ------------------------------------------------------------------ groups


def test_group_rules_in_order() -> None:
    table = GroupTable(
        [
            make_group("Meters", id=5, hardware_ids=["OPENCSMP"]),
            make_group(
                "lab", id=9, prefixes=["fd00:1::/64"], hardware_ids=["OPENCSMP"]
            ),
            make_group("pinned", id=12, euis=["00173bab00000042"]),
        ]
    )
    assert table.group_for("00173BAB00000042", "fd00:1::1", "OPENCSMP").name == "pinned"
    assert table.group_for("00173BAB00000001", "fd00:1::1", "OPENCSMP").name == "Meters"
    assert (
        table.group_for("00173BAB00000001", "fd00:1::1", "OTHER").key == DEFAULT_GROUP
    )
    assert table.get("METERS") is table.get("meters")
    assert len(table) == 4


def test_group_validation_and_ids() -> None:
    with pytest.raises(ValueError, match="multicast"):
        make_group("x", multicast="not-an-address")
    with pytest.raises(ValueError, match="eui"):
        make_group("x", euis=["123"])
    relay = make_group("r", multicast="[::1]:61629")
    assert relay.target(61628) == ("::1", 61629)
    assert make_group("u").target(61628) is None
    specs = assign_ids([make_group("a"), make_group("b", id=2)], taken={3})
    assert [s.id for s in specs] == [4, 2]


def test_config_reports_every_problem_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                "csmp": {"port": 70000, "bogus": 1},
                "upload": {"pace": "fast", "block_size": 4096},
                "groups": [{"name": "a", "multicast": "x"}, {"name": "A"}],
                "extra": {},
            }
        )
    problems = "\n".join(info.value.problems)
    for needle in (
        "csmp.port",
        "csmp.bogus",
        "upload.pace",
        "upload.block_size",
        "groups[0]",
        "extra",
    ):
        assert needle in problems
    assert parse_config({}).csmp.port == 61628


# ------------------------------------------------------------------ images


def test_image_store_rejections() -> None:
    parsed = check_image(IMAGE)
    assert parsed.header.hwid == HWID
    with pytest.raises(ImageError) as bad_crc:
        check_image(IMAGE[:40] + b"\xff" + IMAGE[41:])
    assert bad_crc.value.reason is Reason.CRC_MISMATCH
    with pytest.raises(ImageError) as short:
        check_image(IMAGE[:100])
    assert short.value.reason is Reason.TRUNCATED
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ImageError) as unsigned:
        check_image(IMAGE, key.public_key())
    assert unsigned.value.reason is Reason.MISSING_SIGNATURE
    big = build_image(bytes(MAX_FILE_SIZE), hwid=HWID, version="1.0.0")
    with pytest.raises(ImageError) as too_big:
        check_image(big)
    assert too_big.value.reason is Reason.SIZE_MISMATCH
    assert choose_block_size(256 * 1024 + 256, 256) == 512


def test_cli_images_and_groups(tmp_path: Path) -> None:
    state = tmp_path / "state"
    fw = tmp_path / "fw.bin"
    fw.write_bytes(IMAGE)
    bad = tmp_path / "bad.bin"
    bad.write_bytes(IMAGE[:300])
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(headend, [*args, "--state", str(state)])
        assert result.exit_code == 0, result.output
        return result.output

    assert "added fw.bin" in run("image", "add", str(fw))
    assert "already present" in run("image", "add", str(fw))
    rejected = runner.invoke(headend, ["image", "add", str(bad), "--state", str(state)])
    assert rejected.exit_code == 1 and "rejected: size_mismatch" in rejected.output
    assert "fw.bin\tOPENCSMP\t6.9.1" in run("image", "list")
    assert "group meters id 2" in run("group", "add", "meters", "--hardware-id", HWID)
    assert "meters" in run("group", "list")
    run("group", "remove", "METERS")
    run("image", "remove", "FW.BIN")
    assert run("image", "list") == ""
    assert not list((state / "images").glob("*.bin"))
    assert "certificate" in run("keygen")


def test_database_rows(tmp_path: Path) -> None:
    db = Database(db_path(tmp_path))
    version = db.config_version()
    db.put_groups([make_group("a", id=2)])
    with pytest.raises(StoreError, match="taken"):
        db.put_groups([make_group("b", id=2)])
    with pytest.raises(StoreError):
        db.remove_group("nope")
    assert db.config_version() > version
    assert db.integrity_check() == "ok"
    db.close()


# ---------------------------------------------------------------- recovery


def test_upload_resumes_from_the_store(tmp_path: Path) -> None:
    """Write the state mid-upload, rebuild a new core from it, finish."""
    key = ec.generate_private_key(ec.SECP256R1())
    group = make_group("meters", id=3, multicast=GROUP_ADDR, hardware_ids=[HWID])
    core = build_core([group], key, pace=40.0)
    wire = MemoryWire(core)
    wire.add_devices(4, RUN, profile=signing_profile(key))
    assert wire.run(60, lambda: len(core.inventory) == 4)
    ref = ImageRef("fw.bin", "6.9.1", hashlib.sha256(IMAGE).digest(), HWID, IMAGE, 256)
    members = [d.eui for d in core.inventory]
    campaign = core.start_upload(group, ref, members, wire.now)
    assert wire.run(60, lambda: campaign.next_block > 10)
    writer = StoreWriter(db_path(tmp_path), flush_interval=0.01)
    writer.start()
    writer.put_all(change_writes(*core.take_changes()))
    writer.close()

    db = Database(db_path(tmp_path))
    rows = latest_operations(db.operations())
    assert [(r.kind, r.data["phase"]) for r in rows] == [("upload", "blocks")]
    saved = Saved(rows, {r.id: db.progress(r.id) for r in rows}, {ref.sha256: IMAGE}, 2)
    devices = db.devices()
    assert db.integrity_check() == "ok"
    db.close()

    fresh = build_core([group], key, pace=40.0)
    for row in devices:
        fresh.inventory.add(DeviceRecord.from_row(row))
    wire.core = fresh
    (resumed,) = restore(fresh, saved, wire.now)
    assert isinstance(resumed.phase, Phase) and resumed.active
    assert fresh.next_op_id == 2
    assert wire.run(300, lambda: not resumed.active)
    assert resumed.phase is Phase.DONE
    assert isinstance(resumed, UploadCampaign)
    assert {m.outcome for m in resumed.members.values()} == {Outcome.COMPLETE}


def _restart(
    core: HeadEndCore, wire: MemoryWire, writes: list[Write], path: Path
) -> tuple[HeadEndCore, list[Campaign]]:
    """Store ``writes`` as a killed head-end left them; a new core from them."""
    writer = StoreWriter(db_path(path), flush_interval=0.01)
    writer.start()
    writer.put_all(writes)
    writer.close()
    db = Database(db_path(path))
    rows = latest_operations(db.operations())
    saved = Saved(rows, {r.id: db.progress(r.id) for r in rows}, {}, 10)
    devices = db.devices()
    db.close()
    fresh = build_core(list(core.groups), core.key, seed=4)
    for row in devices:
        fresh.inventory.add(DeviceRecord.from_row(row))
    wire.core = fresh
    return fresh, restore(fresh, saved, wire.now)


@pytest.mark.parametrize("kind", [CommandKind.BACKUP, CommandKind.RELOAD])
def test_command_collection_resumes_after_a_restart(
    tmp_path: Path, kind: CommandKind, image_loads: list[int]
) -> None:
    """A setBackup/scheduleReload collection running when the head-end died
    goes on after the restart: two members never heard the multicast, two
    applied it while their answers were not stored. The restarted head-end
    asks by unicast every member without a stored answer, except (reload)
    those whose stored record shows them running the image since: every
    member ends accepted, the command carried out, each device loading once."""
    key = ec.generate_private_key(ec.SECP256R1())
    group = make_group("meters", id=3, multicast=GROUP_ADDR, hardware_ids=[HWID])
    core = build_core([group], key)
    wire = MemoryWire(core)
    wire.add_devices(4, RUN, profile=signing_profile(key))
    assert wire.run(60, lambda: all(d.registered for d in wire.devices))
    ref = ImageRef("fw.bin", "6.9.1", hashlib.sha256(IMAGE).digest(), HWID, IMAGE, 256)
    members = [d.eui for d in core.inventory]
    upload = core.start_upload(group, ref, members, wire.now)
    assert wire.run(300, lambda: not upload.active)
    wire.deaf = {2, 3}
    load_time = int(wire.now) if kind is CommandKind.RELOAD else 0
    command = core.start_command(
        kind, group, ref.sha256, members, wire.now, load_time=load_time
    )
    writes = change_writes(*core.take_changes())  # all four still pending
    heard = [core.inventory.get(wire.eui(d)) for d in wire.devices[:2]]
    if kind is CommandKind.RELOAD:  # registered again, running the image
        assert wire.run(10, lambda: all(r and r.runs(ref.sha256) for r in heard))
        devices, _ = core.take_changes()
        writes += change_writes(devices, [])  # their rows, not the command's
    else:
        assert wire.run(10, lambda: command.counts()["accepted"] == 2)
    wire.deaf = set()

    fresh, restored = _restart(core, wire, writes, tmp_path)
    resumed = fresh.commands["meters"]
    assert resumed in restored and resumed.active
    pending = 2 if kind is CommandKind.RELOAD else 4
    assert resumed.counts()["pending"] == pending
    assert wire.run(60, lambda: not resumed.active)
    assert resumed.counts() == {
        "members": 4, "accepted": 4, "refused": 0, "noResponse": 0, "pending": 0
    }  # fmt: skip
    if kind is CommandKind.RELOAD:
        done = lambda: all(d.running_version == "6.9.1" for d in wire.devices)  # noqa: E731
    else:
        done = lambda: all(d.backup_version == "6.9.1" for d in wire.devices)  # noqa: E731
    assert wire.run(30, done)
    wire.run(30)
    expected = [d.identity.eui64 for d in wire.devices]
    assert sorted(image_loads) == (expected if kind is CommandKind.RELOAD else [])


async def test_running_headend_picks_up_cli_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from emulator.headend.service import HeadEnd

    monkeypatch.delenv("MESHFLEET_ADMIN_PASSWORD", raising=False)
    config = parse_config({"csmp": {"listen": "::1", "port": 0}, "http": {"port": -1}})
    head = HeadEnd(config, tmp_path)
    await head.start()
    try:
        assert head.generated_password
        assert head.core.groups.get(DEFAULT_GROUP) is not None
        assert not await head.reload_config()
        fw = tmp_path / "fw.bin"
        fw.write_bytes(IMAGE)
        runner = CliRunner()
        for args in (
            ["group", "add", "lab", "--prefix", "fd00::/64"],
            ["image", "add", str(fw)],
        ):
            result = runner.invoke(headend, [*args, "--state", str(tmp_path)])
            assert result.exit_code == 0, result.output
        assert await head.reload_config()
        assert head.core.groups.get("LAB") is not None
        assert head.images.get("FW.bin") is not None
        status = await head.api.get_upload_status(None, "lab")
        assert status.code == 0
    finally:
        await head.stop()
    again = HeadEnd(config, tmp_path)
    await again.start()
    try:
        assert again.generated_password is None  # stored hashed the first time
    finally:
        await again.stop()


def test_writer_stores_command_progress_and_survives_a_bad_row(
    tmp_path: Path,
) -> None:
    from emulator.headend.engine import CommandMember
    from emulator.headend.persist import _member_lazy
    from emulator.headend.store import Lazy, progress_write

    def broken(state: tuple[object, ...]) -> dict[str, object]:
        raise ValueError("not a row")

    writer = StoreWriter(db_path(tmp_path), flush_interval=0.01)
    writer.start()
    member = CommandMember("00173BAB00000001", code=0)
    writer.put_all(
        [
            progress_write(1, "00173BAB00000002", Lazy(broken, ())),
            progress_write(1, member.eui, _member_lazy(member)),
        ]
    )
    writer.close()
    assert writer.errors == 1
    db = Database(db_path(tmp_path))
    assert db.progress(1) == [
        {"eui": member.eui, "code": 0, "failed": "", "attempts": 0}
    ]
    db.close()


def test_member_json_is_the_row_as_json() -> None:
    import json

    from emulator.headend.engine import Member
    from emulator.headend.persist import _member_json

    for member in (
        Member("00173BAB00000001"),
        Member("00173BAB00000002", Outcome.REFUSED, code=4, reason='say "no"\n'),
        Member("00173BAB00000003", Outcome.ACCEPTED, bits=(1 << 300) - 7, rounds=2),
    ):
        assert json.loads(_member_json(member.snapshot())) == member.to_row()


def test_device_json_is_the_row_and_restores_the_record() -> None:
    import json

    from emulator.headend.inventory import DeviceRecord, SlotInfo
    from emulator.headend.persist import device_json

    run = SlotInfo(1, b"r" * 32, "r\u00e9seau.bin", "6.10", 4096, 512, None, 0, "HW")
    loading = SlotInfo(2, b"u" * 32, "new.bin", "6.11", 4096, 512, b"\x0f", 0, "")
    records = [
        DeviceRecord("00173BAB00000001", "fd00::1", 61628),
        DeviceRecord(
            "00173BAB00000002",
            "fd00::2",
            61629,
            "HW",
            "6.10",
            2,
            "meters",
            {1: run, 2: loading},
            1.5,
            2.25,
            3,
            'quote"d',
            {"reload": "refused 6"},
        ),  # fmt: skip
    ]
    for record in records:
        for _ in range(2):  # the second time from the slot cache
            text = device_json(record.snapshot())
            assert json.loads(text) == record.to_row()
            assert DeviceRecord.from_row(json.loads(text)) == record
