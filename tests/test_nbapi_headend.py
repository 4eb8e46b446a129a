"""zeep against a running head-end with a fleet: the six operations, typed.

Acceptance of the SOAP issue: a client built from the WSDL the head-end serves
calls all six operations against a real :class:`HeadEnd` with a real Fleet on
loopback (relay multicast), gets typed results, and every response body it
receives validates against the WSDL's schema (zeep alone is too lenient to
prove the format).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from test_fleet_support import free_port_range
from test_web_headend import HWID, IMAGE, add_image, free_port

from emulator.headend.config import parse_config
from emulator.headend.service import HeadEnd
from emulator.nbapi.auth import hash_password
from emulator.nbapi.schema_check import validate_response

zeep = pytest.importorskip("zeep")
runtime = pytest.importorskip("emulator.fleet.runtime")
fleet_config = pytest.importorskip("emulator.fleet.config")
pytestmark = pytest.mark.slow

DEVICES = 20
USER, PASSWORD = "ops", "upgrade-now"


@pytest.fixture
async def head(tmp_path: Path) -> AsyncIterator[HeadEnd]:
    relay = free_port(socket.SOCK_DGRAM)
    config = parse_config(
        {
            "csmp": {"listen": "::1", "port": 0},
            "http": {"listen": "::1", "port": 0, "live_view": False},
            "nms": {"report_interval": 30, "reg_interval_min": 5},
            "upload": {"pace": 0, "async_window": 1, "grace": 0.5},
            "commands": {"async_window": 1, "wait": 20},
            "groups": [
                {"name": "Meters", "multicast": f"[::1]:{relay}", "hardware_id": [HWID]}
            ],
            "nbapi": {
                "users": {
                    USER: {"role": "operator", "password_hash": hash_password(
                        PASSWORD, n=16)}
                }
            },
        }
    )  # fmt: skip
    add_image(tmp_path, 16 * 1024)
    head = HeadEnd(config, tmp_path)
    await head.start()
    fleet = runtime.Fleet(
        fleet_config.parse_config(
            {
                "fleet": {
                    "devices": DEVICES,
                    "addressing": "loopback-ports",
                    "port_base": free_port_range(DEVICES),
                    "nms": f"[::1]:{head.csmp_port}",
                    "boot_time": 0.2,
                    "power_on_jitter": 0.5,
                },
                "registration": {"min": 1, "max": 3},
                "multicast": {"mode": "relay", "relay": f"[::1]:{relay}"},
            }
        )
    )
    await fleet.start()
    try:
        yield head
    finally:
        await fleet.stop()
        await head.stop()


class _Calls:
    """A zeep client whose every received envelope is schema-checked."""

    def __init__(self, url: str) -> None:
        from requests import Session
        from zeep.plugins import HistoryPlugin
        from zeep.transports import Transport

        session = Session()
        session.auth = (USER, PASSWORD)
        self.history = HistoryPlugin()
        self.client = zeep.Client(
            url + "?wsdl",
            transport=Transport(session=session, timeout=60),
            plugins=[self.history],
        )
        self.client.service._binding_options["address"] = url

    def __call__(self, operation: str, **params: str) -> Any:
        result = getattr(self.client.service, operation)(**params)
        received = self.history.last_received["envelope"]
        validate_response(etree.tostring(received))
        return result


async def _until(check: Callable[[], Any], limit: float, what: str) -> Any:
    deadline = time.monotonic() + limit
    while True:
        value = await asyncio.to_thread(check)
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.3)


def _pairs(result: Any) -> dict[str, int]:
    return {p.name: p.value for p in result.valuePair}


async def test_zeep_drives_all_six_operations(head: HeadEnd) -> None:
    url = f"http://[::1]:{head.http_port}/nbapi/meshDeviceOps"
    call = await asyncio.to_thread(_Calls, url)

    def status() -> dict[str, int]:
        return _pairs(call("getFirmwareUploadStatus", firmwareGroup="meters"))

    await _until(lambda: status().get("up") == DEVICES, 20, "registrations")
    started = await asyncio.to_thread(
        call, "startUpload", firmwareGroup="METERS", firmwareImageName=IMAGE
    )
    assert (started.code, started.message) == (0, "Success.")
    busy = await asyncio.to_thread(
        call, "startUpload", firmwareGroup="meters", firmwareImageName=IMAGE
    )
    assert busy.code in (-6, 0)  # -6 while the upload still runs
    await _until(lambda: status().get("complete") == DEVICES, 60, "the upload")

    def image_info() -> Any:
        result = call("getFirmwareImageInfoList", firmwareGroup="meters")
        return result if result.actionStatus == "UPLOADED" else None

    info = await _until(image_info, 20, "UPLOADED")
    assert info.code == 0
    uploaded = {i.name: i.uploadedCount for i in info.firmwareImageInfo}
    assert uploaded[IMAGE] == DEVICES
    stopped = await asyncio.to_thread(call, "stopUpload", firmwareGroup="meters")
    assert stopped.code == -9  # nothing running any more
    backup = await asyncio.to_thread(
        call, "setBackupFirmwareImage", firmwareGroup="meters", firmwareImageName=IMAGE
    )
    assert backup.code == 0 and _pairs(backup)["accepted"] == DEVICES
    when = (datetime.now(UTC) + timedelta(seconds=8)).strftime("%Y-%m-%dT%H:%M:%S")
    reload = await asyncio.to_thread(
        call, "scheduleReload", firmwareGroup="meters", firmwareImageName=IMAGE,
        reloadGmtTime=when,
    )  # fmt: skip
    assert reload.code == 0 and _pairs(reload)["accepted"] == DEVICES
    assert reload.code == 0

    def running_new() -> bool:
        result = call("getFirmwareImageInfoList", firmwareGroup="meters")
        return any(
            i.version == "6.9.1" and i.runningCount == DEVICES
            for i in result.firmwareImageInfo
        )

    await _until(running_new, 40, "the reload")
    past = await asyncio.to_thread(
        call, "scheduleReload", firmwareGroup="meters", firmwareImageName=IMAGE,
        utcDateAndTime="2001-01-01 00:00:00",
    )  # fmt: skip
    assert past.code == -10
