"""Helpers for the fault scenarios (``test_faults_*``): a head-end and a fleet.

No tests here. Everything runs on loopback: the head-end's CSMP socket on
``[::1]``, the fleet in ``loopback-ports`` addressing with the ``relay``
multicast stand-in. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from test_fleet_support import free_port_range

from emulator.firmware.image import build_image
from emulator.fleet.config import parse_config as fleet_config
from emulator.fleet.runtime import Fleet
from emulator.headend.config import parse_config
from emulator.headend.images import StoredImage, check_image, write_image_file
from emulator.headend.service import HeadEnd, images_dir
from emulator.headend.store import Database, db_path

HWID = "OPENCSMP"
VERSION = "6.9.1"


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET6, kind) as sock:
        sock.bind(("::1", 0))
        return int(sock.getsockname()[1])


def add_image(state: Path, name: str, size: int, version: str = VERSION) -> bytes:
    """Store a built image in the head-end's state directory; its bytes."""
    payload = random.Random(size).randbytes(size)
    data = build_image(payload, hwid=HWID, version=version)
    parsed = check_image(data)
    write_image_file(images_dir(state), data)
    db = Database(db_path(state))
    db.add_image(StoredImage(name, parsed.sha256, version, HWID, len(data)))
    db.close()
    return data


def headend_config(relay: int, **sections: Any) -> Any:
    raw: dict[str, Any] = {
        "csmp": {"listen": "::1", "port": 0},
        "http": {"port": -1},
        "nms": {"report_interval": 30, "reg_interval_min": 2, "reg_interval_max": 10},
        "upload": {"pace": 0, "async_window": 2, "grace": 1.0},
        "commands": {"async_window": 2, "wait": 30},
        "groups": [
            {"name": "meters", "multicast": f"[::1]:{relay}", "hardware_id": [HWID]}
        ],
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return parse_config(raw)


def fleet_raw(
    count: int, nms_port: int, relay: int, *, port_base: int | None = None
) -> dict[str, Any]:
    """The fleet configuration as a dict (add ``faults`` and the like)."""
    return {
        "fleet": {
            "devices": count,
            "addressing": "loopback-ports",
            "port_base": port_base or free_port_range(count),
            "nms": f"[::1]:{nms_port}",
            "boot_time": 0.5,
            "power_on_jitter": 1.0,
        },
        "registration": {"min": 1, "max": 5},
        "multicast": {"mode": "relay", "relay": f"[::1]:{relay}"},
    }


def make_fleet(raw: dict[str, Any], state: Path | None = None) -> Fleet:
    return Fleet(fleet_config(raw), state_dir=state)


async def start_headend(
    tmp: Path, relay: int, image_size: int = 32 * 1024, **sections: Any
) -> HeadEnd:
    add_image(tmp, "fw.bin", image_size)
    head = HeadEnd(headend_config(relay, **sections), tmp)
    await head.start()
    return head


async def wait_for(predicate: Callable[[], bool], limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def pairs(result: Any) -> dict[str, int]:
    assert result.code == 0, result
    return {p.name: p.value for p in result.data}
