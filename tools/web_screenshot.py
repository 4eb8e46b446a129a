#!/usr/bin/env python3
"""Save a PNG screenshot of meshfleet's live page (for the README).

Either of a page already served::

    python tools/web_screenshot.py http://127.0.0.1:8080/ --user monitor \\
        --password secret -o web.png

or of a demo it serves itself, from an in-memory fleet that has been running
its campaigns for ``--preroll`` seconds::

    python tools/web_screenshot.py --demo --devices 10000 -o web.png

or of a real head-end and a real fleet of N devices it runs in-process on
loopback (``loopback-ports``, multicast through the fleet's relay, 2 % link
loss, 1 % of the devices refusing transfers with code 8): groups north, south
and harbour; south is uploaded first, then the shot is taken while north's
upload is under way::

    python tools/web_screenshot.py --live 1500 -o tools/web-screenshot.png

Needs ``chromium`` and ``chromedriver`` on PATH (Debian: ``apt-get install
chromium chromium-driver``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit, urlunsplit

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emulator.web.app import add_web_routes  # noqa: E402
from emulator.web.browser import Browser, find_programs  # noqa: E402
from emulator.web.demo_source import DemoSource, drive  # noqa: E402

if TYPE_CHECKING:
    from emulator.headend.service import HeadEnd

log = logging.getLogger("web_screenshot")


def demo_groups(devices: int) -> dict[str, int]:
    """Split ``devices`` over three groups, 47 %, 35 % and the rest."""
    north = devices * 47 // 100
    south = devices * 35 // 100
    return {"north": north, "south": south, "harbour": devices - north - south}


def with_credentials(url: str, user: str | None, password: str | None) -> str:
    """``url`` with ``user:password@`` in it (Chromium then answers the 401)."""
    if not user:
        return url
    parts = urlsplit(url)
    netloc = f"{quote(user, safe='')}:{quote(password or '', safe='')}@{parts.netloc}"
    return urlunsplit(parts._replace(netloc=netloc))


async def start_demo(
    devices: int, preroll: float, port: int
) -> tuple[web.AppRunner, asyncio.Task[None], str]:
    """Serve a pre-rolled demo fleet on 127.0.0.1; (runner, driver task, URL)."""
    now = time.time()
    source = DemoSource(demo_groups(devices), now=now - preroll)
    t = now - preroll
    while t < time.time() - 0.5:  # catch up with the clock, however long it takes
        t += 0.5
        source.step(t, 0.5)
    app = web.Application()
    add_web_routes(app, source, None)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = runner.addresses[0][1]
    return runner, asyncio.create_task(drive(source)), f"http://127.0.0.1:{bound}/"


LIVE_USER, LIVE_PASSWORD = "monitor", "screenshot"
LIVE_HWID = "OPENCSMP"
LIVE_IMAGE = "opencsmp-node-6.9.1.bin"


def _live_image(state: Path, size: int) -> None:
    import random

    from emulator.firmware.image import build_image
    from emulator.headend.images import StoredImage, check_image, write_image_file
    from emulator.headend.service import images_dir
    from emulator.headend.store import Database, db_path

    payload = random.Random(size).randbytes(size)
    data = build_image(payload, hwid=LIVE_HWID, version="6.9.1")
    parsed = check_image(data)
    write_image_file(images_dir(state), data)
    db = Database(db_path(state))
    db.add_image(StoredImage(LIVE_IMAGE, parsed.sha256, "6.9.1", LIVE_HWID, len(data)))
    db.close()


async def _until(check: Any, limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.25)


@contextlib.asynccontextmanager
async def start_live(devices: int, port: int) -> AsyncIterator[tuple[HeadEnd, str]]:
    """A head-end and a fleet of ``devices``, south uploaded, north uploading.

    Yields (head-end, page URL with credentials) and stops both afterwards.
    """
    import socket
    import tempfile

    from emulator.fleet.config import parse_config as fleet_config
    from emulator.fleet.runtime import Fleet
    from emulator.headend.config import parse_config
    from emulator.headend.service import HeadEnd
    from emulator.nbapi.auth import hash_password

    base = 0x00173BAB00000001
    sizes = demo_groups(devices)
    euis = [f"{base + i:016X}" for i in range(devices)]
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
        probe.bind(("::1", 0))
        relay = probe.getsockname()[1]
    groups, start = [], 0
    for name, size in sizes.items():
        members = euis[start : start + size]
        start += size
        groups.append({"name": name, "multicast": f"[::1]:{relay}", "eui": members})
    config = parse_config(
        {
            "csmp": {"listen": "::1", "port": 0},
            "http": {"listen": "127.0.0.1", "port": port},
            "nms": {"report_interval": 60, "reg_interval_min": 5},
            "upload": {"pace": 50, "async_window": 3, "grace": 1.0},
            "groups": groups,
            "nbapi": {
                "users": {
                    LIVE_USER: {
                        "role": "monitor",
                        "password_hash": hash_password(LIVE_PASSWORD, n=16),
                    }
                }
            },
        }
    )
    refusers = euis[3::100]
    with tempfile.TemporaryDirectory(prefix="meshfleet-shot-") as state:
        _live_image(Path(state), 96 * 1024)
        head = HeadEnd(config, Path(state))
        await head.start()
        fleet = Fleet(
            fleet_config(
                {
                    "fleet": {
                        "devices": devices,
                        "addressing": "loopback-ports",
                        "port_base": 40000,
                        "nms": f"[::1]:{head.csmp_port}",
                        "boot_time": 0.5,
                        "power_on_jitter": 3.0,
                    },
                    "registration": {"min": 1, "max": 5},
                    "multicast": {"mode": "relay", "relay": f"[::1]:{relay}"},
                    "faults": {
                        "link": [{"loss": 0.02}],
                        "device": [
                            {"kind": "refuse_transfer", "code": 8, "devices": refusers}
                        ],
                    },
                }
            )
        )
        await fleet.start()
        try:
            await _until(lambda: len(head.inventory) >= devices, 120, "registrations")
            log.info("%d devices registered; uploading to south", devices)
            assert (await head.api.start_upload(None, "south", LIVE_IMAGE)).code == 0
            south = head.core.uploads["south"]
            await _until(lambda: not south.active, 180, "the upload to south")
            assert (await head.api.start_upload(None, "north", LIVE_IMAGE)).code == 0
            north = head.core.uploads["north"]
            half = north.image.nblocks * 2 // 3
            await _until(lambda: north.next_block >= half, 120, "north's blocks")
            log.info("north's upload under way (block %d)", north.next_block)
            url = f"http://{LIVE_USER}:{LIVE_PASSWORD}@127.0.0.1:{head.http_port}/"
            yield head, url
        finally:
            await fleet.stop()
            await head.stop()


async def shoot(args: argparse.Namespace) -> int:
    if args.live:
        async with start_live(args.live, args.port) as (_, url):
            png = await capture(args, url)
    else:
        png = await shoot_page(args)
    args.output.write_bytes(png)
    log.info("saved %s (%d bytes)", args.output, len(png))
    return 0


async def shoot_page(args: argparse.Namespace) -> bytes:
    runner: web.AppRunner | None = None
    task: asyncio.Task[None] | None = None
    url = with_credentials(args.url or "", args.user, args.password)
    if args.demo:
        runner, task, url = await start_demo(args.devices, args.preroll, args.port)
        log.info("demo fleet of %d devices at %s", args.devices, url)
    try:
        return await capture(args, url)
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if runner is not None:
            await runner.cleanup()


async def capture(args: argparse.Namespace, url: str) -> bytes:
    """Load ``url``, let it poll ``args.wait`` seconds, take the PNG."""
    async with Browser.launch(width=args.width, height=args.height) as browser:
        await browser.get(url)
        await browser.wait_for(
            "return document.querySelector('#groups tbody tr') !== null"
            " && document.getElementById('grid').width > 0",
            timeout=20,
        )
        await asyncio.sleep(args.wait)
        if args.full:
            height = await browser.execute(
                "return document.documentElement.scrollHeight"
            )
            await browser.set_size(args.width, int(height) + 100)
            await asyncio.sleep(1.0)
        return await browser.screenshot()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", help="page URL (omit with --demo)")
    parser.add_argument("--demo", action="store_true", help="serve a demo fleet")
    parser.add_argument("--devices", type=int, default=10_000, help="demo size")
    parser.add_argument(
        "--live",
        type=int,
        metavar="N",
        help="run a real head-end and a fleet of N devices in-process",
    )
    parser.add_argument(
        "--preroll", type=float, default=75.0, help="demo seconds played beforehand"
    )
    parser.add_argument("--port", type=int, default=0, help="demo port (0: any)")
    parser.add_argument("--user", help="HTTP Basic user")
    parser.add_argument("--password", help="HTTP Basic password")
    parser.add_argument("--width", type=int, default=1440)
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument(
        "--full", action="store_true", help="grow the window to the whole page"
    )
    parser.add_argument(
        "--wait", type=float, default=4.0, help="seconds to let the page poll"
    )
    parser.add_argument("-o", "--output", type=Path, default=Path("web-screenshot.png"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if sum((bool(args.url), args.demo, bool(args.live))) != 1:
        parser.error("give one of a URL, --demo or --live N")
    if find_programs() is None:
        parser.error("chromium and chromedriver are needed on PATH")
    return asyncio.run(shoot(args))


if __name__ == "__main__":
    sys.exit(main())
