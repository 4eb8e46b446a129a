"""Fault: ``meshfleet fleet run --state DIR`` killed with SIGKILL mid-download.

An in-process head-end uploads (paced) to a fleet running as its own process
with snapshots every 0.3 s. The fleet is killed while blocks flow and
restarted from its state directory (in-process, to look at the devices): each
device holds at least the blocks of the last snapshot, and the upload
finishes for every device, each completing the image once.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import cbor2
import pytest
from faults_support import (
    fleet_raw,
    free_port,
    pairs,
    start_headend,
    wait_for,
)
from test_fleet_support import free_port_range

from emulator.fleet.config import load_config
from emulator.fleet.runtime import Fleet

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
DEVICES = 20


def _toml(raw: dict[str, Any]) -> str:
    lines = []
    for section, values in raw.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            text = f'"{value}"' if isinstance(value, str) else repr(value)
            lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"


def _spawn(config: Path, state: Path, log: Path) -> subprocess.Popen[bytes]:
    code = "from emulator.cli.main import main; main()"
    args = ["fleet", "run", str(config), "--state", str(state)]
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )


def _snapshot_bits(state: Path) -> dict[int, tuple[bytes, int]]:
    raw = cbor2.loads((state / "devices.cbor").read_bytes())
    out: dict[int, tuple[bytes, int]] = {}
    for eui, snap in raw["devices"].items():
        up = snap.get("upload")
        if up:
            out[int(eui)] = (bytes(up["image"]["hash"]), int(up["bits"]))
    return out


async def test_fleet_sigkill_mid_download_resumes(tmp_path: Path) -> None:
    relay = free_port()
    head = await start_headend(
        tmp_path / "head", relay, image_size=64 * 1024, upload={"pace": 25}
    )
    raw = fleet_raw(DEVICES, head.csmp_port, relay, port_base=free_port_range(DEVICES))
    raw["fleet"]["snapshot_interval"] = 0.3
    config, state, log = tmp_path / "fleet.toml", tmp_path / "state", tmp_path / "log"
    config.write_text(_toml(raw))
    process = _spawn(config, state, log)
    fleet: Fleet | None = None
    try:
        await wait_for(lambda: len(head.inventory) == DEVICES, 60, "registrations")
        assert (await head.api.start_upload(None, "meters", "fw.bin")).code == 0
        upload = head.core.uploads["meters"]
        total = upload.image.nblocks

        def partial() -> bool:
            if not (state / "devices.cbor").exists():
                return False
            snap = _snapshot_bits(state)
            return len(snap) == DEVICES and all(
                0 < bits.bit_count() < total for _, bits in snap.values()
            )

        await wait_for(partial, 30, "partial downloads in a snapshot")
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        kept = _snapshot_bits(state)

        fleet = Fleet(load_config(config), state_dir=state)
        await fleet.start()
        for eui, (file_hash, bits) in kept.items():
            up = fleet.devices[eui].firmware.upload
            assert up is not None and up.image.key.file_hash == file_hash
            assert up.bits & bits == bits, f"{eui:016x} lost blocks"
        assert fleet.stats["restore_failed"] == 0

        await wait_for(lambda: not upload.active, 120, "upload")
        status = pairs(await head.api.get_upload_status(None, "meters"))
        assert status["complete"] == DEVICES, status
        assert fleet.stats["uploads_completed"] == DEVICES, fleet.stats
        assert all(
            d.firmware.upload is not None
            and d.firmware.upload.bits.bit_count() == total
            for d in fleet.devices.values()
        )
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
        if fleet is not None:
            await fleet.stop()
        await head.stop()
