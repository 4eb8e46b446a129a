"""End to end on loopback: the head-end and a real Fleet, in-process and killed.

Layer ``headend`` against ``fleet`` over real UDP sockets (CSMP.md "Group
flows"): multicast in the fleet's ``relay`` mode, 5 % loss per link. Every
wait is bounded.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_fleet_support import free_port_range

from emulator.firmware.image import build_image
from emulator.headend.config import parse_config
from emulator.headend.images import StoredImage, check_image, write_image_file
from emulator.headend.service import HeadEnd, images_dir
from emulator.headend.store import Database, db_path

runtime = pytest.importorskip("emulator.fleet.runtime")
fleet_config = pytest.importorskip("emulator.fleet.config")

pytestmark = pytest.mark.slow
HWID = "OPENCSMP"
PASSWORD = "e2e-secret"


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET6, kind) as sock:
        sock.bind(("::1", 0))
        return int(sock.getsockname()[1])


def add_image(state: Path, name: str, size: int) -> None:
    data = build_image(random.Random(size).randbytes(size), hwid=HWID, version="6.9.1")
    parsed = check_image(data)
    write_image_file(images_dir(state), data)
    db = Database(db_path(state))
    db.add_image(StoredImage(name, parsed.sha256, "6.9.1", HWID, len(data)))
    db.close()


def make_fleet(count: int, nms_port: int, relay: int, loss: float = 0.05) -> Any:
    config = fleet_config.parse_config(
        {
            "fleet": {
                "devices": count,
                "addressing": "loopback-ports",
                "port_base": free_port_range(count),
                "nms": f"[::1]:{nms_port}",
                "boot_time": 0.5,
                "power_on_jitter": 1.0,
            },
            "registration": {"min": 1, "max": 5},
            "multicast": {"mode": "relay", "relay": f"[::1]:{relay}"},
            "faults": {"link": [{"loss": loss}]},
        }
    )
    return runtime.Fleet(config)


async def wait_for(predicate: Callable[[], bool], limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


def pairs(result: Any) -> dict[str, int]:
    assert result.code == 0, result
    return {p.name: p.value for p in result.data}


def in_seconds(seconds: float) -> str:
    when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)
    return when.strftime("%Y-%m-%d %H:%M:%S")


# ------------------------------------------------------------- in-process


async def test_fleet_of_200_upload_backup_reload(tmp_path: Path) -> None:
    relay = free_port(socket.SOCK_DGRAM)
    pinned = [f"{0x00173BAB00000001 + i:016X}" for i in range(10)]
    config = parse_config(
        {
            "csmp": {"listen": "::1", "port": 0},
            "http": {"port": -1},
            "nms": {
                "report_interval": 30,
                "reg_interval_min": 5,
                "reg_interval_max": 30,
            },
            "upload": {"pace": 0, "async_window": 3, "grace": 1.0},
            "commands": {"async_window": 3, "wait": 60},
            "groups": [
                {
                    "name": "meters",
                    "multicast": f"[::1]:{relay}",
                    "hardware_id": [HWID],
                },
                {"name": "unicast-only", "eui": pinned},
            ],
        }
    )
    add_image(tmp_path, "fw-6.9.1.bin", 256 * 1024)
    head = HeadEnd(config, tmp_path)
    await head.start()
    fleet = make_fleet(200, head.csmp_port, relay)
    await fleet.start()
    api = head.api
    try:
        await wait_for(lambda: len(head.inventory) == 200, 60, "registrations")
        before = pairs(await api.get_upload_status(None, "meters"))
        assert (before["totalDevices"], before["notStarted"]) == (190, 190)
        for group in ("meters", "unicast-only"):
            assert (await api.start_upload(None, group, "fw-6.9.1.bin")).code == 0
        uploads = [head.core.uploads["meters"], head.core.uploads["unicast-only"]]
        await wait_for(lambda: uploads[0].next_block > 0, 30, "blocks")
        during = pairs(await api.get_upload_status(None, "meters"))
        states = ("pending", "accepted", "inProgress", "complete", "refused")
        assert sum(during[s] for s in states) == 190
        assert during["complete"] < 190
        await wait_for(lambda: not any(u.active for u in uploads), 240, "uploads")
        assert [u.phase.value for u in uploads] == ["done", "done"]
        for group, total in (("meters", 190), ("unicast-only", 10)):
            after = pairs(await api.get_upload_status(None, group))
            assert after["complete"] == total, after
        assert uploads[1].stats["multicast_blocks"] == 0
        info = await api.get_image_info_list(None, "meters")
        assert info.data is not None and info.data.action_status == "UPLOADED"
        counts = {i.version: (i.running, i.uploaded) for i in info.data.images}
        assert counts == {"6.8.1": (190, 0), "6.9.1": (0, 190)}

        backup = pairs(await api.set_backup_image(None, "meters", "FW-6.9.1.bin"))
        assert backup["accepted"] == 190, backup
        reload = pairs(
            await api.schedule_reload(None, "meters", "fw-6.9.1.bin", in_seconds(8))
        )
        assert reload["accepted"] == 190, reload

        def reloaded() -> bool:
            devices = fleet.devices.values()
            new = sum(d.running_version == "6.9.1" for d in devices)
            return bool(new == 190)

        await wait_for(reloaded, 90, "reloads")
        await wait_for(lambda: api.action_status("meters") == "RELOADED", 90, "status")
        final = await api.get_image_info_list(None, "meters")
        assert final.data is not None
        (new,) = [i for i in final.data.images if i.version == "6.9.1"]
        assert (new.running, new.backup) == (190, 190)
        assert head.core.stats["bad_input"] == 0
    finally:
        await fleet.stop()
        await head.stop()
        await head.stop()  # idempotent
    db = Database(db_path(tmp_path))
    assert db.integrity_check() == "ok"
    assert len(db.devices()) == 200
    db.close()


# ---------------------------------------------------------------- kill -9


def _config_file(tmp_path: Path, csmp: int, http: int, relay: int) -> Path:
    path = tmp_path / "headend.toml"
    path.write_text(
        f"""
[csmp]
listen = "::1"
port = {csmp}
[http]
listen = "::1"
port = {http}
[nms]
report_interval = 20
reg_interval_min = 2
reg_interval_max = 10
[upload]
pace = 60
async_window = 2
grace = 1.0
[store]
flush_interval = 0.1
[[groups]]
name = "meters"
multicast = "[::1]:{relay}"
hardware_id = ["{HWID}"]
"""
    )
    return path


def _spawn(config: Path, state: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MESHFLEET_ADMIN_PASSWORD": PASSWORD}
    code = "from emulator.cli.main import main; main()"
    args = ["headend", "run", "--config", str(config), "--state", str(state)]
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _call(client: Any, name: str, *args: str | None) -> Any:
    deadline = time.monotonic() + 20
    while True:
        try:
            return await asyncio.to_thread(getattr(client, name), *args)
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)


async def test_kill_9_mid_upload_resumes(tmp_path: Path) -> None:
    from emulator.nbapi.client import NbapiClient

    csmp, http = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    relay = free_port(socket.SOCK_DGRAM)
    config = _config_file(tmp_path, csmp, http, relay)
    state = tmp_path / "state"
    add_image(state, "fw.bin", 96 * 1024)
    client = NbapiClient(
        f"http://[::1]:{http}/nbapi/meshDeviceOps", "admin", PASSWORD, timeout=10
    )
    process = _spawn(config, state)
    fleet = make_fleet(30, csmp, relay)
    await fleet.start()
    try:

        async def registered() -> int:
            return pairs(await _call(client, "get_upload_status", None, "meters"))[
                "totalDevices"
            ]

        deadline = time.monotonic() + 60
        while await registered() < 30:
            assert time.monotonic() < deadline, "registrations"
            await asyncio.sleep(0.5)
        assert (await _call(client, "start_upload", None, "meters", "fw.bin")).code == 0
        deadline = time.monotonic() + 60
        while (
            pairs(await _call(client, "get_upload_status", None, "meters"))[
                "partialUpload"
            ]
            < 10
        ):
            assert time.monotonic() < deadline, "progress"
            await asyncio.sleep(0.2)
        process.send_signal(signal.SIGKILL)
        process.wait(10)

        process = _spawn(config, state)
        deadline = time.monotonic() + 180
        while True:
            status = pairs(await _call(client, "get_upload_status", None, "meters"))
            if status["complete"] == 30:
                break
            assert time.monotonic() < deadline, status
            await asyncio.sleep(0.5)
        images = await _call(client, "get_image_info_list", None, "meters")
        assert images.data.action_status == "UPLOADED"
    finally:
        await fleet.stop()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    db = Database(db_path(state))
    assert db.integrity_check() == "ok"
    (op,) = db.operations()
    assert op.data["phase"] == "done"
    db.close()
