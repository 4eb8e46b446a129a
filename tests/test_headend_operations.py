"""The six operations (emulator.headend.operations): every NBAPI.md return code.

Each code is reached through real state: a core with emulated devices on a
:class:`MemoryWire` whose virtual clock a background task advances, an image
store with real files, no mocks.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from emulator.firmware.image import ImageError, build_image, parse_image
from emulator.headend.api import OPERATION_PENDING, ReturnCode
from emulator.headend.config import HeadEndConfig
from emulator.headend.engine import Phase
from emulator.headend.groups import make_group
from emulator.headend.images import (
    ImageStore,
    StoredImage,
    read_image_file,
    write_image_file,
)
from emulator.headend.operations import (
    SYSTEM_BUSY,
    HeadEndApi,
    ParseError,
    parse_reload_time,
)
from emulator.headend.testing import GROUP_ADDR, MemoryWire, build_core, signing_profile

HWID = "OPENCSMP"


def firmware(version: str, size: int, hwid: str = HWID) -> bytes:
    payload = random.Random(version).randbytes(size)
    return build_image(payload, hwid=hwid, version=version)


RUN = firmware("6.8.1", 2000)
NEW = firmware("6.9.1", 12_000)
ALIEN = firmware("7.0.0", 2000, hwid="OTHERHW")


@dataclass
class Env:
    api: HeadEndApi
    wire: MemoryWire
    images: ImageStore


def _stored(name: str, data: bytes, hwid: str = HWID) -> StoredImage:
    version = parse_image(data).header.version if len(data) > 256 else "0.0.0"
    return StoredImage(name, hashlib.sha256(data).digest(), version, hwid, len(data))


async def _pump(wire: MemoryWire) -> None:
    """Virtual time at ten times the real pace."""
    while True:
        await asyncio.sleep(0.005)
        wire.run(0.05)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    key = ec.generate_private_key(ec.SECP256R1())
    groups = [
        make_group("Meters", id=7, multicast=GROUP_ADDR, hardware_ids=[HWID]),
        make_group("Empty", id=8, euis=["0000000000000001"]),
        make_group("Other", id=9, euis=["00173BAB00000003"]),
    ]
    core = build_core(groups, key, report_interval=5, max_operations=2)
    core.config = _with_wait(core.config, 30.0)
    wire = MemoryWire(core)
    wire.add_devices(3, RUN, profile=signing_profile(key))
    assert wire.run(60, lambda: len(core.inventory) == 3)
    images = ImageStore(tmp_path)
    for data in (NEW, ALIEN):
        write_image_file(tmp_path, data)
    images.replace(
        [
            _stored("mesh-6.9.1.bin", NEW),
            _stored("alien.bin", ALIEN, "OTHERHW"),
            _stored("lost.bin", b"gone"),
        ]
    )

    async def read(image: StoredImage) -> bytes:
        return read_image_file(tmp_path, image.sha256)

    api = HeadEndApi(core, images, read_image=read, clock=lambda: wire.now)
    api.running = True
    task = asyncio.create_task(_pump(wire))
    yield Env(api, wire, images)
    task.cancel()


def _with_wait(config: HeadEndConfig, wait: float) -> HeadEndConfig:
    return replace(config, commands=replace(config.commands, wait=wait))


def _future(env: Env, seconds: float = 60) -> str:
    when = datetime.fromtimestamp(env.wire.now + seconds, UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S")


async def _until(predicate: object, limit: float = 10.0) -> None:
    assert callable(predicate)
    deadline = asyncio.get_running_loop().time() + limit
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


# ------------------------------------------------------------------ codes


async def test_success_then_group_active(env: Env) -> None:
    api = env.api
    assert (await api.start_upload(None, "METERS", "Mesh-6.9.1.BIN")).code == 0
    assert (await api.start_upload("cgmesh", "meters", "mesh-6.9.1.bin")).code == -6
    backup = await api.set_backup_image(None, "meters", "mesh-6.9.1.bin")
    assert backup.code == ReturnCode.GROUP_ACTIVE
    campaign = api.core.uploads["meters"]
    await _until(lambda: not campaign.active, 30)
    assert campaign.phase is Phase.DONE


async def test_unsupported_device_type(env: Env) -> None:
    result = await env.api.get_upload_status("ipv4", "meters")
    assert result.code == ReturnCode.UNSUPPORTED_DEVICE_TYPE


async def test_group_not_found(env: Env) -> None:
    assert (await env.api.stop_upload(None, "nope")).code == -2
    assert (await env.api.get_image_info_list("CGMESH", "nope")).code == -2


async def test_image_not_found(env: Env) -> None:
    assert (await env.api.start_upload(None, "meters", "nope.bin")).code == -3


async def test_invalid_date_format(env: Env) -> None:
    result = await env.api.schedule_reload(
        None, "meters", "mesh-6.9.1.bin", "2031/01/01 10:00:00"
    )
    assert result.code == ReturnCode.INVALID_DATE_FORMAT


async def test_invalid_image_wrong_hardware_or_lost_file(env: Env) -> None:
    alien = await env.api.start_upload(None, "meters", "alien.bin")
    assert alien.code == ReturnCode.INVALID_IMAGE
    assert "OTHERHW" in alien.message
    lost = await env.api.start_upload(None, "meters", "lost.bin")
    assert lost.code == ReturnCode.INVALID_IMAGE


async def test_no_device_up(env: Env) -> None:
    env.wire.silent.update({0, 1, 2})
    silence = env.api.core.inventory.silence
    env.wire.now += silence + 1
    result = await env.api.start_upload(None, "meters", "mesh-6.9.1.bin")
    assert result.code == ReturnCode.NO_DEVICE_UP


async def test_empty_group(env: Env) -> None:
    result = await env.api.start_upload(None, "empty", "mesh-6.9.1.bin")
    assert result.code == ReturnCode.EMPTY_GROUP


async def test_stop_on_inactive_group(env: Env) -> None:
    assert (await env.api.stop_upload(None, "meters")).code == -9


async def test_stop_upload(env: Env) -> None:
    api = env.api
    assert (await api.start_upload(None, "meters", "mesh-6.9.1.bin")).code == 0
    assert (
        await api.stop_upload(
            None,
            "meters",
        )
    ).code == 0
    assert api.core.uploads["meters"].phase is Phase.STOPPED
    info = await api.get_image_info_list(None, "meters")
    assert info.data is not None and info.data.action_status == "STOPPED"


async def test_invalid_load_date_in_the_past(env: Env) -> None:
    result = await env.api.schedule_reload(
        None, "meters", "mesh-6.9.1.bin", "2001-01-01 00:00:00"
    )
    assert result.code == ReturnCode.INVALID_LOAD_DATE


async def test_too_many_simultaneous_operations(env: Env) -> None:
    api = env.api
    assert (await api.start_upload(None, "meters", "mesh-6.9.1.bin")).code == 0
    assert (await api.start_upload(None, "other", "mesh-6.9.1.bin")).code == 0
    result = await api.start_upload(None, "default-cgmesh", "mesh-6.9.1.bin")
    assert result.code == ReturnCode.TOO_MANY_OPERATIONS


async def test_image_only_on_nodes(env: Env) -> None:
    # Devices run "run.bin" (see MemoryWire.add_devices); the store lacks it.
    result = await env.api.set_backup_image(None, "meters", "RUN.bin")
    assert result.code == ReturnCode.IMAGE_ONLY_ON_NODES
    reload = await env.api.schedule_reload(None, "meters", "run.bin", _future(env))
    assert reload.code == ReturnCode.IMAGE_ONLY_ON_NODES


async def test_system_busy_and_operation_pending(env: Env) -> None:
    api = env.api
    api.running = False
    busy = await api.get_upload_status(None, "meters")
    assert (busy.code, busy.message) == (-99, SYSTEM_BUSY)
    api.running = True
    backup = asyncio.create_task(api.set_backup_image(None, "meters", "mesh-6.9.1.bin"))
    await _until(lambda: "meters" in api.core.commands)
    pending = await api.start_upload(None, "meters", "mesh-6.9.1.bin")
    assert (pending.code, pending.message) == (-99, OPERATION_PENDING)
    assert (await api.stop_upload(None, "meters")).code == -99
    result = await backup
    assert result.data is not None  # the members do not hold the image
    assert {p.name: p.value for p in result.data}["refusedCode3"] == 2


# ------------------------------------------------------------ full flows


async def test_upload_backup_reload_and_status(env: Env) -> None:
    api = env.api
    before = await api.get_upload_status(None, "meters")
    assert before.data is not None
    pairs = {p.name: p.value for p in before.data}
    assert pairs["totalDevices"] == 2 and pairs["notStarted"] == 2
    assert (await api.start_upload(None, "meters", "mesh-6.9.1.bin")).code == 0
    campaign = api.core.uploads["meters"]
    await _until(lambda: not campaign.active, 30)
    after = await api.get_upload_status(None, "meters")
    assert after.data is not None
    assert {p.name: p.value for p in after.data}["complete"] == 2
    backup = await api.set_backup_image(None, "meters", "mesh-6.9.1.bin")
    assert backup.code == 0 and backup.data is not None
    assert {p.name: p.value for p in backup.data}["accepted"] == 2
    reload = await api.schedule_reload(
        None, "meters", "mesh-6.9.1.bin", _future(env, 20)
    )
    assert reload.code == 0 and reload.data is not None
    assert {p.name: p.value for p in reload.data}["accepted"] == 2, reload.data
    info = await api.get_image_info_list(None, "meters")
    assert info.data is not None
    assert info.data.action_status == "RELOAD_SCHEDULED"
    assert info.data.scheduled_reload is not None
    await _until(lambda: api.action_status("meters") == "RELOADED", 30)
    final = await api.get_image_info_list(None, "meters")
    assert final.data is not None
    assert [i.version for i in final.data.images] == ["6.9.1"], final.data
    new = final.data.images[0]
    assert (new.name, new.running, new.backup) == ("mesh-6.9.1.bin", 2, 2), final.data


# ------------------------------------------------------------- reload time


@pytest.mark.parametrize(
    "text", ["2031-02-03T04:05:06", "2031-02-03 04:05:06", "2031-02-03*04:05:06"]
)
def test_reload_time_separators(text: str) -> None:
    assert parse_reload_time(text) == datetime(2031, 2, 3, 4, 5, 6, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2031-02-03",
        "2031-02-03T04:05",
        "2031-13-03T04:05:06",
        "03/02/2031 04:05:06",
        "2031-02-03T04:05:06Z",
        "2031-02-30T04:05:06",
    ],
)
def test_reload_time_rejects(text: str) -> None:
    with pytest.raises(ParseError):
        parse_reload_time(text)


def test_read_image_file_detects_corruption(tmp_path: Path) -> None:
    path = write_image_file(tmp_path, NEW)
    sha = hashlib.sha256(NEW).digest()
    assert read_image_file(tmp_path, sha) == NEW
    path.write_bytes(NEW[:-1] + b"\0")
    with pytest.raises(ImageError):
        read_image_file(tmp_path, sha)
