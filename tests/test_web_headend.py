"""The live page against a real head-end and a real Fleet, in-process.

Layer ``headend`` (:mod:`emulator.headend.webview`) with ``web`` on top and
``fleet`` underneath, over real UDP on loopback (``loopback-ports``
addressing, multicast through the fleet's relay). Two devices refuse every
TransferRequest with CSMP code 8 (a ``refuse_transfer`` device fault). The
JSON API is read as a browser would, with HTTP Basic as a ``monitor`` user;
the browser test drives a real headless Chromium (skipped without chromium
and chromedriver). Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import base64
import random
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from test_fleet_support import free_port_range

from emulator.firmware.image import build_image
from emulator.headend.config import parse_config
from emulator.headend.images import StoredImage, check_image, write_image_file
from emulator.headend.service import HeadEnd, images_dir
from emulator.headend.store import Database, db_path
from emulator.nbapi.auth import hash_password
from emulator.web.browser import Browser, find_programs

runtime = pytest.importorskip("emulator.fleet.runtime")
fleet_config = pytest.importorskip("emulator.fleet.config")

pytestmark = pytest.mark.slow

HWID = "OPENCSMP"
IMAGE = "fw-6.9.1.bin"
DEVICES = 50
EUI_BASE = 0x00173BAB00000001
REFUSERS = [f"{EUI_BASE + i:016X}" for i in (3, 7)]
REFUSAL_CODE = 8  # "pending reboot"
USER, PASSWORD = "watcher", "look"


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET6, kind) as sock:
        sock.bind(("::1", 0))
        return int(sock.getsockname()[1])


def add_image(state: Path, size: int) -> None:
    data = build_image(random.Random(size).randbytes(size), hwid=HWID, version="6.9.1")
    parsed = check_image(data)
    write_image_file(images_dir(state), data)
    db = Database(db_path(state))
    db.add_image(StoredImage(IMAGE, parsed.sha256, "6.9.1", HWID, len(data)))
    db.close()


@dataclass
class Running:
    head: HeadEnd
    fleet: Any
    http: aiohttp.ClientSession
    base: str

    async def get(self, path: str, **params: str) -> Any:
        async with self.http.get(self.base + path, params=params) as reply:
            assert reply.status == 200, (path, reply.status, await reply.text())
            return await reply.json()

    async def group(self, name: str) -> dict[str, Any]:
        data = await self.get("/api/status")
        found: dict[str, Any] = next(g for g in data["groups"] if g["name"] == name)
        return found


async def eventually(
    probe: Callable[[], Awaitable[Any]], limit: float, what: str
) -> Any:
    """The first truthy value of ``probe()``, polled for ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while True:
        value = await probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    relay = free_port(socket.SOCK_DGRAM)
    config = parse_config(
        {
            "csmp": {"listen": "::1", "port": 0},
            "http": {"listen": "::1", "port": 0},
            "nms": {"report_interval": 30, "reg_interval_min": 5},
            "upload": {"pace": 40, "async_window": 2, "grace": 0.5},
            "groups": [
                {
                    "name": "meters",
                    "multicast": f"[::1]:{relay}",
                    "hardware_id": [HWID],
                }
            ],
            "nbapi": {
                "users": {
                    USER: {
                        "role": "monitor",
                        "password_hash": hash_password(PASSWORD, n=16),
                    }
                }
            },
        }
    )
    add_image(tmp_path, 48 * 1024)  # 96 blocks of 512 bytes: ~3 s at the pace
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
                    "boot_time": 0.3,
                    "power_on_jitter": 1.0,
                },
                "registration": {"min": 1, "max": 5},
                "multicast": {"mode": "relay", "relay": f"[::1]:{relay}"},
                "faults": {
                    "link": [{"loss": 0.02}],
                    "device": [
                        {
                            "kind": "refuse_transfer",
                            "code": REFUSAL_CODE,
                            "devices": REFUSERS,
                        }
                    ],
                },
            }
        )
    )
    await fleet.start()
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode("ascii")
    http = aiohttp.ClientSession(
        headers={"Authorization": f"Basic {token}"},
        timeout=aiohttp.ClientTimeout(total=10),
    )
    try:
        yield Running(head, fleet, http, f"http://[::1]:{head.http_port}")
    finally:
        await http.close()
        await fleet.stop()
        await head.stop()


async def registered(run: Running) -> None:
    """Every device registered and shown as a member of meters."""

    async def probe() -> bool:
        group = await run.group("meters")
        return bool(group["members"] == DEVICES)

    await eventually(probe, 20, "registrations in /api/status")


def grid_states(data: dict[str, Any]) -> list[str]:
    legend = data["legend"]
    return [legend[code] for code in base64.b64decode(data["states"])]


# ------------------------------------------------------------------ JSON API


async def test_json_api_follows_an_upload_with_refusals(running: Running) -> None:
    run, api = running, running.head.api
    await registered(run)

    # Authentication: the NB API's users, the monitor role suffices.
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.get(run.base + "/api/status") as reply:
            assert reply.status == 401
            assert reply.headers["WWW-Authenticate"].startswith("Basic")
    page = await run.http.get(run.base + "/")
    assert page.status == 200 and "text/html" in page.headers["Content-Type"]
    page.release()

    status = await run.get("/api/status")
    names = [g["name"] for g in status["groups"]]
    assert names == ["meters", "default-cgmesh"]
    meters = status["groups"][0]
    assert meters["action_status"] == "IDLE"
    assert meters["upload_states"]["notStarted"] == DEVICES
    assert meters["address"].startswith("[::1]:")

    grid = await run.get("/api/grid", group="meters")
    assert grid["count"] == DEVICES
    assert set(grid_states(grid)) == {"notStarted"}
    euis = [grid["eui64"][i : i + 16] for i in range(0, 16 * DEVICES, 16)]
    assert sorted(euis) == [f"{EUI_BASE + i:016X}" for i in range(DEVICES)]
    again = await run.get("/api/grid", group="meters", version=grid["version"])
    assert "eui64" not in again  # same device list: not sent again

    async def run_slot() -> dict[str, Any] | None:
        detail = await run.get(f"/api/devices/{euis[0].lower()}")
        slot: dict[str, Any] = detail["slots"][0]
        return detail if slot["version"] else None

    detail = await eventually(run_slot, 10, "the RUN slot of a device")
    assert [s["role"] for s in detail["slots"]] == ["RUN", "UPLOAD", "BACKUP"]
    assert detail["eui64"] == euis[0] and detail["group"] == "meters"
    assert detail["up"] is True and detail["upload_state"] == "notStarted"
    assert detail["address"] == "::1" and detail["last_heard"] > 0
    running_version = detail["slots"][0]["version"]

    # Start the upload: the view follows it poll by poll.
    assert (await api.start_upload(None, "meters", IMAGE)).code == 0
    seen: set[str] = set()

    async def finished() -> bool:
        group = await run.group("meters")
        seen.update(grid_states(await run.get("/api/grid", group="meters")))
        return bool(group["action_status"] == "UPLOADED")

    await eventually(finished, 30, "the upload to finish in /api/status")
    assert seen & {"pending", "accepted", "inProgress"}, seen
    meters = await run.group("meters")
    assert meters["image"] == IMAGE
    assert meters["complete"] == DEVICES - len(REFUSERS)
    nbapi = await api.get_upload_status(None, "meters")
    assert nbapi.data is not None
    expected = {p.name: p.value for p in nbapi.data}
    for state, count in meters["upload_states"].items():
        assert expected[state] == count, (state, meters["upload_states"], expected)
    final = grid_states(await run.get("/api/grid", group="meters"))
    assert final.count("refused") == len(REFUSERS)
    assert final.count("complete") == DEVICES - len(REFUSERS)
    fleet_grid = await run.get("/api/grid")
    assert fleet_grid["count"] == DEVICES  # default-cgmesh is empty

    # Events: the operation, each refusal with its CSMP code, the end.
    events = (await run.get("/api/events", since="0"))["events"]
    refusals = [e for e in events if e["kind"] == "refusal"]
    assert sorted(e["eui64"] for e in refusals) == REFUSERS
    assert {e["code"] for e in refusals} == {REFUSAL_CODE}
    operations = [e["text"] for e in events if e["kind"] == "operation"]
    assert any(t.startswith(f"startUpload {IMAGE}") for t in operations), operations
    assert any("done" in t and "2 refused" in t for t in operations), operations

    series = await run.get("/api/series")
    assert sum(series["multicast"]) >= 96
    done, total = series["completion"]["meters"][-1][1:]
    assert (done, total) == (DEVICES - len(REFUSERS), DEVICES)

    async def images() -> dict[str, Any] | None:
        # getFirmwareImageInfoList's data, from the inventory's slots as the
        # devices reported them (a late out-of-order report can still show a
        # partial UPLOAD slot for a member the upload counts complete).
        data: dict[str, Any] = await run.get("/api/images", group="meters")
        versions = {i["version"]: i for i in data["images"]}
        return data if versions.get("6.9.1", {}).get("uploaded") else None

    data = await eventually(images, 10, "the uploaded image in /api/images")
    assert data["action_status"] == "UPLOADED"
    versions = {i["version"]: i for i in data["images"]}
    assert versions[running_version]["running"] == DEVICES
    assert versions["6.9.1"]["uploaded"] <= DEVICES - len(REFUSERS)

    async with run.http.get(run.base + "/api/images", params={"group": "x"}) as r:
        assert r.status == 404
    async with run.http.get(run.base + "/api/devices/00173BAB99999999") as r:
        assert r.status == 404


# ------------------------------------------------------------------- browser

# Colour of the first grid cell (the first member of meters).
FIRST_CELL = (
    "const c = document.getElementById('grid');"
    "if (!c.width) return null;"
    "return Array.from(c.getContext('2d').getImageData(1, 1, 1, 1).data.slice(0, 3));"
)
NOT_STARTED_RGB = [213, 217, 223]  # STATE_COLOURS.NOTSTARTED in static/app.js
METERS_PCT = (
    "const row = document.querySelector('#groups tr[data-group=\"meters\"]');"
    "return row === null ? null : row.dataset.pct;"
)


@pytest.mark.skipif(
    find_programs() is None, reason="needs chromium and chromedriver on PATH"
)
async def test_browser_shows_the_upload_as_it_runs(running: Running) -> None:
    run = running
    await registered(run)
    url = f"http://{USER}:{PASSWORD}@[::1]:{run.head.http_port}/"
    async with Browser.launch(width=1280, height=900) as browser:
        await browser.get(url)
        names = await browser.wait_for(
            "const rows = document.querySelectorAll('#groups tbody tr');"
            "return rows.length ? Array.from(rows, r => r.dataset.group) : null;"
        )
        assert names == ["meters", "default-cgmesh"]
        assert await browser.wait_for(FIRST_CELL) == NOT_STARTED_RGB
        assert await browser.execute(METERS_PCT) == "0.0"

        assert (await run.head.api.start_upload(None, "meters", IMAGE)).code == 0
        await browser.wait_for(
            "const row = document.querySelector('#groups tr[data-group=\"meters\"]');"
            "return row !== null && row.querySelector('.pill').textContent"
            " === 'UPLOADING';",
            timeout=10,
        )
        colours: list[list[int]] = []

        async def cell_changed() -> bool:
            colours.append(await browser.execute(FIRST_CELL))
            return colours[-1] != NOT_STARTED_RGB

        await eventually(cell_changed, 15, "the first cell to change colour")
        final = f"{100 * (DEVICES - len(REFUSERS)) / DEVICES:.1f}"
        await browser.wait_for(
            f"const pct = (() => {{ {METERS_PCT} }})(); return pct === '{final}';",
            timeout=30,
        )
        refusal = await browser.wait_for(
            "const li = document.querySelector('#events li .kind-refusal');"
            "return li ? li.closest('li').textContent : null;",
            timeout=10,
        )
        assert "TransferRequest refused" in refusal and "pending reboot" in refusal
        assert (
            await browser.execute(
                "return document.getElementById('conn').dataset.state;"
            )
            == "live"
        )
