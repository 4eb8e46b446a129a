"""Fault: ``meshfleet headend run`` killed with SIGKILL mid-upload and mid-reload.

A real head-end process (SQLite state, NB API over HTTP) and an in-process
fleet of 30 devices with 5 % loss per link. The head-end is killed while
blocks flow and restarted from its state: the upload completes, the counts
are right and no device downloads the image twice (the fleet counts each
completed download). It is killed while setBackupFirmwareImage collects
its answers: the restarted head-end asks the members whose answers it had
not stored, and every device ends with the image as backup. It is killed
again just after scheduleReload answered: every device reloads exactly once
(the fleet counts reloads) and the restarted head-end reports them running
the new image.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from test_headend_e2e import (
    _call,
    _config_file,
    _spawn,
    add_image,
    free_port,
    in_seconds,
    make_fleet,
    pairs,
)

from emulator.headend.store import Database, db_path

pytestmark = pytest.mark.slow
DEVICES = 30
PASSWORD = "e2e-secret"


async def _status(client: Any) -> dict[str, int]:
    return pairs(await _call(client, "get_upload_status", None, "meters"))


async def _until(check: Any, limit: float, what: str, fleet: Any = None) -> None:
    deadline = time.monotonic() + limit
    while not await check():
        assert time.monotonic() < deadline, (what, fleet and dict(fleet.stats))
        await asyncio.sleep(0.3)


def _kill(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(10)


async def _kill_while_backup_collects(
    process: subprocess.Popen[bytes], config: Path, state: Path, client: Any
) -> subprocess.Popen[bytes]:
    """Call setBackupFirmwareImage, SIGKILL the head-end once the operation
    is stored and still collecting (answers come over a 6 s window), restart."""
    call = asyncio.create_task(
        _call(client, "set_backup_image", None, "meters", "fw.bin")
    )
    deadline = time.monotonic() + 10
    while not (stored := _stored_operation(state, "backup")):
        assert time.monotonic() < deadline and not call.done(), "no backup row"
        await asyncio.sleep(0.05)
    _kill(process)
    call.cancel()
    await asyncio.gather(call, return_exceptions=True)
    row, answered = _stored_operation(state, "backup") or stored
    assert row.data["phase"] in ("transfer", "fill"), row.data
    assert answered < DEVICES
    return _spawn(config, state)


def _stored_operation(state: Path, kind: str) -> tuple[Any, int] | None:
    """The stored operation of ``kind`` and its members with an answer."""
    db = Database(db_path(state))
    try:
        rows = [r for r in db.operations() if r.kind == kind]
        if not rows:
            return None
        answered = sum(m["code"] is not None for m in db.progress(rows[-1].id))
        return rows[-1], answered
    finally:
        db.close()


async def test_kill_9_during_upload_and_reload(tmp_path: Path) -> None:
    from emulator.nbapi.client import NbapiClient

    csmp, http = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    relay = free_port(socket.SOCK_DGRAM)
    config = _config_file(tmp_path, csmp, http, relay)
    with config.open("a") as f:  # answers within the NB API client's timeout
        f.write("[commands]\nasync_window = 6\nwait = 20\n")
    state = tmp_path / "state"
    add_image(state, "fw.bin", 96 * 1024)
    client = NbapiClient(
        f"http://[::1]:{http}/nbapi/meshDeviceOps", "admin", PASSWORD, timeout=40
    )
    process = _spawn(config, state)
    fleet = make_fleet(DEVICES, csmp, relay)
    await fleet.start()
    try:

        async def registered() -> bool:
            return (await _status(client))["totalDevices"] == DEVICES

        await _until(registered, 60, "registrations")
        assert (await _call(client, "start_upload", None, "meters", "fw.bin")).code == 0

        async def partial() -> bool:
            return (await _status(client))["partialUpload"] >= 10

        await _until(partial, 60, "progress")
        _kill(process)
        blocks_at_kill = fleet.stats["blocks_received"]
        process = _spawn(config, state)

        async def complete() -> bool:
            return (await _status(client))["complete"] == DEVICES

        await _until(complete, 120, "upload after restart", fleet)
        status = await _status(client)
        for name in ("refused", "failed", "unreachable", "partialUpload"):
            assert status[name] == 0, status
        assert fleet.stats["uploads_completed"] == DEVICES, fleet.stats
        assert blocks_at_kill > 0
        images = await _call(client, "get_image_info_list", None, "meters")
        assert images.data.action_status == "UPLOADED"

        process = await _kill_while_backup_collects(process, config, state, client)

        async def backup_set() -> bool:
            info = await _call(client, "get_image_info_list", None, "meters")
            return bool(info.data.action_status == "BACKUP_SET")

        await _until(backup_set, 60, "backup collection after restart", fleet)
        backups = [d.backup_version for d in fleet.devices.values()]
        assert backups == ["6.9.1"] * DEVICES, backups

        # killed again, right after the reload was scheduled
        reload = await _call(
            client, "schedule_reload", None, "meters", "fw.bin", in_seconds(30)
        )
        assert pairs(reload)["accepted"] == DEVICES, reload
        _kill(process)
        process = _spawn(config, state)

        async def reloaded() -> bool:
            return all(
                d.running_version == "6.9.1" and d.registered
                for d in fleet.devices.values()
            )

        await _until(reloaded, 90, "reloads", fleet)
        await asyncio.sleep(1.0)
        assert fleet.stats["reloads"] == DEVICES, fleet.stats

        async def reported() -> bool:
            info = await _call(client, "get_image_info_list", None, "meters")
            running = {i.version: i.running for i in info.data.images if i.running}
            return bool(running == {"6.9.1": DEVICES})

        await _until(reported, 60, "running counts after restart", fleet)
        assert fleet.stats["reloads"] == DEVICES, fleet.stats
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
    assert len(db.devices()) == DEVICES
    db.close()
