"""The live page in a real headless Chromium, against the in-memory source.

Skipped when ``chromium`` or ``chromedriver`` is not installed (Debian:
``apt-get install chromium chromium-driver``). The page is served behind HTTP
Basic, as with the NB API; Chromium gets the credentials in the URL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from emulator.nbapi.auth import Role, User, hash_password
from emulator.web.app import add_web_routes, basic_authorizer
from emulator.web.browser import Browser, find_programs
from emulator.web.demo_source import DemoSource
from emulator.web.feed import EventKind

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        find_programs() is None, reason="needs chromium and chromedriver on PATH"
    ),
]

T0 = 1_700_000_000.0
UPLOADED_RGB = [79, 174, 127]  # STATE_COLOURS.UPLOADED in static/app.js
IDLE_RGB = [213, 217, 223]  # STATE_COLOURS.IDLE

NORTH_PCT_IS = (
    "const row = document.querySelector('#groups tr[data-group=\"north\"]');"
    "return row !== null && row.dataset.pct === arguments[0];"
)
# Colour of the first grid cell (device 0, a member of north).
FIRST_CELL = (
    "const c = document.getElementById('grid');"
    "if (!c.width) return null;"
    "return Array.from(c.getContext('2d').getImageData(1, 1, 1, 1).data.slice(0, 3));"
)


@pytest.fixture
async def served() -> AsyncIterator[tuple[DemoSource, str]]:
    source = DemoSource({"north": 60, "south": 40}, now=T0, seed=3)
    source.set_states("north", "IDLE")
    users = {"watcher": User("watcher", Role.MONITOR, hash_password("look", n=16))}
    app = web.Application()
    add_web_routes(app, source, basic_authorizer(users))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield source, f"http://watcher:look@127.0.0.1:{port}/"
    await runner.cleanup()


async def test_page_shows_groups_and_follows_the_source(
    served: tuple[DemoSource, str],
) -> None:
    source, url = served
    async with Browser.launch(width=1280, height=900) as browser:
        await browser.get(url)
        names = await browser.wait_for(
            "const rows = document.querySelectorAll('#groups tbody tr');"
            "return rows.length ? Array.from(rows, r => r.dataset.group) : null;"
        )
        assert names == ["north", "south"]
        await browser.wait_for(NORTH_PCT_IS, "0.0")
        assert await browser.wait_for(FIRST_CELL) == IDLE_RGB
        legend = await browser.execute(
            "return Array.from(document.querySelectorAll('#legend li'),"
            " li => li.dataset.state);"
        )
        assert "UPLOADED" in legend and "IDLE" in legend

        # The head-end's state moves on: the page follows within a poll or two.
        source.set_states("north", "UPLOADED")
        source.set_action("north", "UPLOADING")
        source.feed.event(
            T0, EventKind.REFUSAL, "TransferRequest refused", group="south", code=8
        )
        source.feed.count_blocks(T0, multicast=5)
        await browser.wait_for(NORTH_PCT_IS, "100.0")
        await browser.wait_for(
            "const c = document.getElementById('grid');"
            "const px = c.getContext('2d').getImageData(1, 1, 1, 1).data;"
            f"return px[0] === {UPLOADED_RGB[0]} && px[1] === {UPLOADED_RGB[1]};"
        )
        action = await browser.execute(
            "return document.querySelector("
            "'#groups tr[data-group=\"north\"] .pill').textContent;"
        )
        assert action == "UPLOADING"
        event = await browser.wait_for(
            "const li = document.querySelector('#events li');"
            "return li ? li.textContent : null;"
        )
        assert "TransferRequest refused" in event and "pending reboot" in event

        # Clicking a cell shows that device's slots (from /api/devices/...).
        await browser.execute(
            "const c = document.getElementById('grid');"
            "const r = c.getBoundingClientRect();"
            "c.dispatchEvent(new MouseEvent('click',"
            " {clientX: r.left + 1, clientY: r.top + 1, bubbles: true}));"
        )
        title = await browser.wait_for(
            "const h = document.querySelector('#device h3');"
            "return h ? h.textContent : null;"
        )
        assert title == "00173B0000000001"
        slots = await browser.execute(
            "return document.querySelectorAll('#device tbody tr').length;"
        )
        assert slots == 3
        connection = await browser.execute(
            "return document.getElementById('conn').dataset.state;"
        )
        assert connection == "live"
