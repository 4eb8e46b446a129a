"""Prefix addressing with IPV6_PKTINFO on loopback (needs root: skipped otherwise).

The fleet installs ``ip -6 route add local <prefix> dev lo`` itself, serves
every device from one ``[::]`` socket, and each device registers from and
answers from its own address. The route is gone after stop.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from test_fleet_support import start_client, start_nms, tlv_types, wait_for

from emulator.fleet.config import parse_config
from emulator.fleet.runtime import Fleet

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and ip"
)

DEVICES = 50


def _prefix() -> str:
    return f"fd00:6d66:{os.getpid() % 0xFFFF:x}::/64"


def _route_present(prefix: str) -> bool:
    out = subprocess.run(
        ["ip", "-6", "route", "show", "table", "local", prefix],
        capture_output=True,
        text=True,
        check=False,
    )
    return bool(out.stdout.strip())


async def test_prefix_mode_registers_and_answers_from_own_addresses() -> None:
    nms, nms_transport = await start_nms()
    nms_port = nms_transport.get_extra_info("sockname")[1]
    prefix = _prefix()
    config = parse_config(
        {
            "fleet": {
                "devices": DEVICES,
                "prefix": prefix,
                "addressing": "prefix",
                "port": 0,
                "nms": f"[::1]:{nms_port}",
                "boot_time": 0.0,
                "power_on_jitter": 0.3,
            },
            "registration": {"min": 1, "max": 2},
            "multicast": {"mode": "off"},
        }
    )
    fleet = Fleet(config)
    client, transport = await start_client()
    try:
        await fleet.start()
        assert fleet.mode == "prefix" and _route_present(prefix)
        assert await wait_for(lambda: len(nms.registered) == DEVICES, 15)
        for eui, source in nms.registered.items():
            assert source == (fleet.devices[int(eui, 16)].identity.address, fleet.port)
        for eui, device in list(fleet.devices.items())[:DEVICES]:
            remote = (device.identity.address, fleet.port)
            answer = await client.request(remote, "c", ["q=11+75"])
            assert answer is not None, f"{eui:016x} did not answer"
            message, source = answer
            assert source == remote
            assert tlv_types(message.payload)[0] == 11
    finally:
        transport.close()
        await fleet.stop()
        nms_transport.close()
    assert not _route_present(prefix)
