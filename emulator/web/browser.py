"""Headless Chromium driven over WebDriver (web layer, test and tool support).

A small client of the W3C WebDriver HTTP protocol as chromedriver serves it,
enough for the live page's browser test and ``tools/web_screenshot.py``:
open a URL, run a script, take a screenshot. It needs the ``chromium`` and
``chromedriver`` programs (Debian: ``apt-get install chromium
chromium-driver``) and nothing from PyPI beyond aiohttp.

Chromium runs headless in a fresh profile, without sandbox, GPU, QUIC or any
background traffic (updates, sync, first-run pages)::

    async with Browser.launch() as browser:
        await browser.get("http://127.0.0.1:8080/")
        title = await browser.execute("return document.title")
        png = await browser.screenshot()
"""

from __future__ import annotations

import asyncio
import base64
import logging
import shutil
import socket
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
CHROMEDRIVER_NAMES = ("chromedriver",)
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)


class WebDriverError(Exception):
    """chromedriver answered with an error (or not at all)."""


@dataclass(frozen=True, slots=True)
class Programs:
    """Paths of the browser and its driver."""

    chromium: str
    chromedriver: str


def find_programs() -> Programs | None:
    """Chromium and chromedriver on PATH, None when either is missing."""
    chromium = next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)
    driver = next(filter(None, map(shutil.which, CHROMEDRIVER_NAMES)), None)
    if chromium is None or driver is None:
        return None
    return Programs(chromium, driver)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Browser:
    """One chromedriver process and one headless Chromium session."""

    def __init__(self, programs: Programs, width: int, height: int) -> None:
        self.programs = programs
        self.width = width
        self.height = height
        self._driver: asyncio.subprocess.Process | None = None
        self._http: aiohttp.ClientSession | None = None
        self._base = ""
        self._session = ""
        self._profile = tempfile.TemporaryDirectory(prefix="meshfleet-chromium-")

    @classmethod
    def launch(
        cls, *, width: int = 1440, height: int = 1000, programs: Programs | None = None
    ) -> Browser:
        """A browser to use as ``async with``; RuntimeError without Chromium."""
        found = programs or find_programs()
        if found is None:
            raise RuntimeError("chromium and chromedriver are needed on PATH")
        return cls(found, width, height)

    async def __aenter__(self) -> Browser:
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.close()

    async def _start(self, timeout: float = 20.0) -> None:
        port = _free_port()
        self._driver = await asyncio.create_subprocess_exec(
            self.programs.chromedriver,
            f"--port={port}",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        self._base = f"http://127.0.0.1:{port}"
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                status = await self._call("GET", "/status")
                if isinstance(status, dict) and status.get("ready"):
                    break
            except (aiohttp.ClientError, WebDriverError):
                pass
            if loop.time() > deadline or self._driver.returncode is not None:
                raise WebDriverError("chromedriver did not become ready")
            await asyncio.sleep(0.1)
        args: Sequence[str] = (
            *CHROMIUM_ARGS,
            f"--user-data-dir={self._profile.name}",
            f"--window-size={self.width},{self.height}",
        )
        options = {"binary": self.programs.chromium, "args": list(args)}
        answer = await self._call(
            "POST",
            "/session",
            {
                "capabilities": {
                    "alwaysMatch": {
                        "browserName": "chrome",
                        "goog:chromeOptions": options,
                    }
                }
            },
        )
        self._session = str(answer["sessionId"])
        log.debug("WebDriver session %s on port %d", self._session, port)

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        assert self._http is not None, "browser not started"
        async with self._http.request(method, self._base + path, json=body) as reply:
            data = await reply.json(content_type=None)
        value = data.get("value") if isinstance(data, dict) else None
        if reply.status >= 400:
            detail = value.get("message") if isinstance(value, dict) else value
            raise WebDriverError(f"{method} {path}: {reply.status} {detail}")
        return value

    def _path(self, tail: str) -> str:
        return f"/session/{self._session}{tail}"

    async def get(self, url: str) -> None:
        """Navigate to ``url`` and wait for it to load."""
        await self._call("POST", self._path("/url"), {"url": url})

    async def execute(self, script: str, *args: Any) -> Any:
        """Run ``script`` (a function body; ``arguments`` holds ``args``)."""
        return await self._call(
            "POST", self._path("/execute/sync"), {"script": script, "args": list(args)}
        )

    async def wait_for(
        self, script: str, *args: Any, timeout: float = 10.0, interval: float = 0.2
    ) -> Any:
        """Run ``script`` until it returns something truthy; that value.

        TimeoutError (with the last value) when it does not within ``timeout``.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = await self.execute(script, *args)
            if value:
                return value
            if loop.time() > deadline:
                raise TimeoutError(f"still {value!r} after {timeout} s: {script}")
            await asyncio.sleep(interval)

    async def set_size(self, width: int, height: int) -> None:
        """Resize the window (the viewport follows in headless mode)."""
        await self._call(
            "POST", self._path("/window/rect"), {"width": width, "height": height}
        )

    async def screenshot(self) -> bytes:
        """A PNG of the viewport."""
        encoded = await self._call("GET", self._path("/screenshot"))
        return base64.b64decode(str(encoded))

    async def close(self) -> None:
        """End the session, chromedriver and the profile directory."""
        if self._session and self._http is not None:
            try:
                await self._call("DELETE", self._path(""))
            except (aiohttp.ClientError, WebDriverError) as exc:
                log.debug("closing the WebDriver session: %s", exc)
            self._session = ""
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._driver is not None and self._driver.returncode is None:
            self._driver.terminate()
            try:
                await asyncio.wait_for(self._driver.wait(), 5)
            except TimeoutError:
                self._driver.kill()
                await self._driver.wait()
        self._driver = None
        self._profile.cleanup()
