"""State survives a SIGKILL (up to the last snapshot) and a SIGTERM (all of it)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import cbor2
from test_fleet_loopback import _transfer_and_block
from test_fleet_support import (
    free_port,
    free_port_range,
    start_client,
    start_nms,
    wait_for,
)

from emulator.coap.message import Code

ROOT = Path(__file__).resolve().parent.parent
DEVICES = 20


def _config(path: Path, nms_port: int, base: int, relay: int, interval: float) -> None:
    path.write_text(
        f"""
[fleet]
devices = {DEVICES}
addressing = "loopback-ports"
port_base = {base}
nms = "[::1]:{nms_port}"
boot_time = 0.0
power_on_jitter = 0.2
snapshot_interval = {interval}
[registration]
min = 1
max = 2
[multicast]
mode = "relay"
relay = "[::1]:{relay}"
"""
    )


def _start(config: Path, state: Path, log: Path) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        "-m",
        "emulator.cli.fleet",
        "run",
        str(config),
        "--state",
        str(state),
    ]
    return subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log.open("wb")
    )


def _groups(state: Path) -> list[list[int]]:
    raw = cbor2.loads((state / "devices.cbor").read_bytes())
    return [snap["groups"] for snap in raw["devices"].values()]


async def test_state_survives_sigkill_and_sigterm(tmp_path: Path) -> None:
    state, log = tmp_path / "state", tmp_path / "fleet.log"
    base, relay = free_port_range(DEVICES), free_port()
    nms, transport = await start_nms(group=7)
    port = transport.get_extra_info("sockname")[1]
    config = tmp_path / "fleet.toml"
    _config(config, port, base, relay, 0.3)
    proc = _start(config, state, log)
    try:
        assert await wait_for(lambda: len(nms.registered) == DEVICES, 20), (
            log.read_text()
        )
        registered_at = time.time()
        assert await wait_for(
            lambda: (
                (state / "devices.cbor").exists()
                and (state / "devices.cbor").stat().st_mtime > registered_at + 0.1
                and all(g == [0, 7] for g in _groups(state))
            ),
            10,
        )
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    transport.close()
    assert all(g == [0, 7] for g in _groups(state))  # up to the last snapshot

    # second life: long interval, so only the stop snapshot can hold the news
    nms, transport = await start_nms(group=9)
    _config(config, transport.get_extra_info("sockname")[1], base, relay, 1000)
    proc = _start(config, state, log)
    client, client_transport = await start_client()
    try:
        assert await wait_for(lambda: len(nms.registered) == DEVICES, 20), (
            log.read_text()
        )
        assert await wait_for(lambda: False, 0.3) is False  # let answers apply
        transfer, block = _transfer_and_block()
        transfer = transfer.replace(b"\x08\x02\x10\x07", b"\x08\x02\x10\x09")
        block = block.replace(b"\x08\x02\x10\x07", b"\x08\x02\x10\x09")
        await client.request(
            ("::1", relay),
            "c",
            ["a=1"],
            code=Code.POST,
            payload=transfer,
            confirmable=False,
        )
        await client.request(
            ("::1", relay), "c", code=Code.POST, payload=block, confirmable=False
        )
        await wait_for(lambda: False, 0.5)
    finally:
        client_transport.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        transport.close()
    assert proc.returncode == 0, log.read_text()
    raw = cbor2.loads((state / "devices.cbor").read_bytes())
    snaps = list(raw["devices"].values())
    assert all(s["groups"] == [0, 9] for s in snaps)
    assert all(s["upload"] and s["upload"]["bits"] == 1 for s in snaps)
    assert list((state / "blocks").glob("*.blocks"))


async def test_unreadable_state_is_reported_not_raised(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "devices.cbor").write_bytes(b"\xff not cbor")
    from emulator.fleet.config import parse_config
    from emulator.fleet.runtime import Fleet

    base = free_port_range(3)
    fleet = Fleet(
        parse_config(
            {
                "fleet": {
                    "devices": 3,
                    "addressing": "loopback-ports",
                    "port_base": base,
                },
                "multicast": {"mode": "off"},
            }
        ),
        state_dir=state,
    )
    await fleet.start()
    await fleet.stop()
    assert (state / "devices.cbor.bad").exists()
    assert len(cbor2.loads((state / "devices.cbor").read_bytes())["devices"]) == 3
