"""An in-memory FirmwareApi for tests and demos of the NB API (test double layer).

:class:`FakeFirmwareApi` follows the Firmware Upgrade API's rules closely
enough to give realistic results (``shared/reference/NBAPI.md``: devType,
group and image checks, active/inactive groups, reload time parsing) and
records every call, so tests of the SOAP front, the client and the CLI can
run without the real head-end engine. :func:`serve_in_thread` runs an aiohttp
application on 127.0.0.1 in a thread of its own, for blocking clients (zeep,
suds, urllib, the CLI).
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from emulator.headend.api import (
    ImageInfo,
    ImageInfoList,
    OpResult,
    ReturnCode,
    ValuePair,
)

log = logging.getLogger(__name__)

_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2})[T *](\d{2}:\d{2}:\d{2})$")


@dataclass
class FakeGroup:
    """A firmware group: member count, what they run, what happens."""

    members: int = 3
    running: str = "cg-mesh-6.5.1.bin"
    status: str = "IDLE"
    uploaded: str | None = None
    backup: str | None = None
    reload_at: datetime | None = None


@dataclass
class FakeFirmwareApi:
    """Realistic canned answers for the six operations; records calls."""

    images: dict[str, str] = field(
        default_factory=lambda: {
            "cg-mesh-6.5.1.bin": "6.5.1",
            "cg-mesh-6.6.0.bin": "6.6.0",
        }
    )
    groups: dict[str, FakeGroup] = field(
        default_factory=lambda: {"default-cgmesh": FakeGroup(), "empty": FakeGroup(0)}
    )
    now: datetime = field(default_factory=lambda: datetime(2025, 6, 1, tzinfo=UTC))
    calls: list[tuple[str, tuple[str | None, ...]]] = field(default_factory=list)

    def _check(self, dev_type: str | None, group: str) -> FakeGroup | OpResult[Any]:
        """The group, or the error result of the devType and group checks."""
        if dev_type is not None and dev_type.lower() != "cgmesh":
            return OpResult.of(ReturnCode.UNSUPPORTED_DEVICE_TYPE)
        found = self.groups.get(group.lower())
        return found if found is not None else OpResult.of(ReturnCode.GROUP_NOT_FOUND)

    def _image(self, image: str) -> str | None:
        for name in self.images:
            if name.lower() == image.lower():
                return name
        return None

    async def start_upload(
        self, dev_type: str | None, group: str, image: str
    ) -> OpResult[None]:
        self.calls.append(("start_upload", (dev_type, group, image)))
        found = self._check(dev_type, group)
        if isinstance(found, OpResult):
            return found
        name = self._image(image)
        if name is None:
            return OpResult.of(ReturnCode.IMAGE_NOT_FOUND)
        if found.members == 0:
            return OpResult.of(ReturnCode.EMPTY_GROUP)
        if found.status == "UPLOADING":
            return OpResult.of(ReturnCode.GROUP_ACTIVE)
        found.status, found.uploaded = "UPLOADING", name
        return OpResult.of(ReturnCode.SUCCESS)

    async def stop_upload(self, dev_type: str | None, group: str) -> OpResult[None]:
        self.calls.append(("stop_upload", (dev_type, group)))
        found = self._check(dev_type, group)
        if isinstance(found, OpResult):
            return found
        if found.status != "UPLOADING":
            return OpResult.of(ReturnCode.GROUP_INACTIVE)
        found.status = "STOPPED"
        return OpResult.of(ReturnCode.SUCCESS)

    async def get_upload_status(
        self, dev_type: str | None, group: str
    ) -> OpResult[list[ValuePair]]:
        self.calls.append(("get_upload_status", (dev_type, group)))
        found = self._check(dev_type, group)
        if isinstance(found, OpResult):
            return found
        partial = found.members if found.status in ("UPLOADING", "STOPPED") else 0
        pairs = [
            ValuePair("totalDevices", found.members),
            ValuePair("partialUpload", partial),
            ValuePair("completeUpload", 0),
            ValuePair("failedUpload", 0),
        ]
        return OpResult.of(ReturnCode.SUCCESS, data=pairs)

    async def get_image_info_list(
        self, dev_type: str | None, group: str
    ) -> OpResult[ImageInfoList]:
        self.calls.append(("get_image_info_list", (dev_type, group)))
        found = self._check(dev_type, group)
        if isinstance(found, OpResult):
            return found
        infos = [self._info(found, name) for name in sorted(self.images)]
        data = ImageInfoList(
            images=[i for i in infos if i.running or i.uploaded or i.backup],
            action_status=found.status,
            scheduled_reload=found.reload_at,
        )
        return OpResult.of(ReturnCode.SUCCESS, data=data)

    def _info(self, found: FakeGroup, name: str) -> ImageInfo:
        def count(hit: bool) -> int:
            return found.members if hit else 0

        return ImageInfo(
            name=name,
            version=self.images[name],
            running=count(found.running == name),
            uploaded=count(found.uploaded == name and found.status == "UPLOADED"),
            backup=count(found.backup == name),
        )

    async def set_backup_image(
        self, dev_type: str | None, group: str, image: str
    ) -> OpResult[list[ValuePair]]:
        self.calls.append(("set_backup_image", (dev_type, group, image)))
        found = self._check(dev_type, group)
        if isinstance(found, OpResult):
            return found
        name = self._image(image)
        if name is None:
            return OpResult.of(ReturnCode.IMAGE_NOT_FOUND)
        found.backup = name
        pairs = [ValuePair("success", found.members), ValuePair("failed", 0)]
        return OpResult.of(ReturnCode.SUCCESS, data=pairs)

    async def schedule_reload(
        self, dev_type: str | None, group: str, image: str, reload_time: str
    ) -> OpResult[list[ValuePair]]:
        self.calls.append(("schedule_reload", (dev_type, group, image, reload_time)))
        found = self._check(dev_type, group)
        if isinstance(found, OpResult):
            return found
        if self._image(image) is None:
            return OpResult.of(ReturnCode.IMAGE_NOT_FOUND)
        match = _TIME.match(reload_time.strip())
        if match is None:
            return OpResult.of(ReturnCode.INVALID_DATE_FORMAT)
        at = datetime.fromisoformat(f"{match[1]}T{match[2]}").replace(tzinfo=UTC)
        if at <= self.now:
            return OpResult.of(ReturnCode.INVALID_LOAD_DATE)
        found.reload_at, found.status = at, "RELOAD_SCHEDULED"
        pairs = [ValuePair("scheduled", found.members), ValuePair("failed", 0)]
        return OpResult.of(ReturnCode.SUCCESS, data=pairs)


@contextmanager
def serve_in_thread(
    app: web.Application,
    host: str = "127.0.0.1",
    *,
    ssl_context: ssl.SSLContext | None = None,
) -> Iterator[str]:
    """Serve ``app`` on an ephemeral port in a thread; yield its base URL."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    ready = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, host, 0, ssl_context=ssl_context)
            loop.run_until_complete(site.start())
        except BaseException as exc:  # reported to the caller below
            failure.append(exc)
            return
        finally:
            ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="nbapi-test-server", daemon=True)
    thread.start()
    ready.wait(30)
    if failure:
        raise RuntimeError("test server did not start") from failure[0]
    port = runner.addresses[0][1]
    try:
        yield f"{'https' if ssl_context else 'http'}://{host}:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()
