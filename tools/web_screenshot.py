#!/usr/bin/env python3
"""Save a PNG screenshot of meshfleet's live page (for the README).

Either of a page already served::

    python tools/web_screenshot.py http://127.0.0.1:8080/ --user monitor \\
        --password secret -o web.png

or of a demo it serves itself, from an in-memory fleet that has been running
its campaigns for ``--preroll`` seconds::

    python tools/web_screenshot.py --demo --devices 10000 -o web.png

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
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emulator.web.app import add_web_routes  # noqa: E402
from emulator.web.browser import Browser, find_programs  # noqa: E402
from emulator.web.demo_source import DemoSource, drive  # noqa: E402

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


async def shoot(args: argparse.Namespace) -> int:
    runner: web.AppRunner | None = None
    task: asyncio.Task[None] | None = None
    url = args.url
    if args.demo:
        runner, task, url = await start_demo(args.devices, args.preroll, args.port)
        log.info("demo fleet of %d devices at %s", args.devices, url)
    try:
        async with Browser.launch(width=args.width, height=args.height) as browser:
            await browser.get(with_credentials(url, args.user, args.password))
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
            png = await browser.screenshot()
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if runner is not None:
            await runner.cleanup()
    args.output.write_bytes(png)
    log.info("saved %s (%d bytes)", args.output, len(png))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", help="page URL (omit with --demo)")
    parser.add_argument("--demo", action="store_true", help="serve a demo fleet")
    parser.add_argument("--devices", type=int, default=10_000, help="demo size")
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
    if bool(args.url) == args.demo:
        parser.error("give a URL or --demo, not both")
    if find_programs() is None:
        parser.error("chromium and chromedriver are needed on PATH")
    return asyncio.run(shoot(args))


if __name__ == "__main__":
    sys.exit(main())
