"""The head-end process as one object, :class:`HeadEnd` (``headend``, asyncio edge).

Ties the sans-IO :class:`~emulator.headend.core.HeadEndCore` to the network
(one :class:`~emulator.net.udp.UdpEndpoint` on the CSMP port, one
:class:`~emulator.net.udp.OneTimer`), to its state directory (SQLite through
one writer thread, image files, the NMS key) and, when HTTP is enabled, to
the NB API SOAP application of :mod:`emulator.nbapi.app` with ``/metrics``
and the live page (``/``, ``/api/...``) over :mod:`emulator.headend.webview`.

Use in-process (tests, demo)::

    headend = HeadEnd(config, state_dir)
    await headend.start()
    result = await headend.api.start_upload(None, "default-cgmesh", "fw.bin")
    ...
    await headend.stop()

Start-up reads the state off the loop, seeds the configured groups, restores
the inventory and resumes an upload that was running when the previous
process died. While running, changes to groups or images made by the CLI in
the same state directory are picked up every ``store.poll_interval``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from itertools import islice
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client import CollectorRegistry

from emulator.firmware.image import ImageError, load_signing_key
from emulator.headend.config import HeadEndConfig
from emulator.headend.core import HeadEndCore
from emulator.headend.groups import (
    DEFAULT_GROUP,
    GroupSpec,
    GroupTable,
    assign_ids,
    default_group,
)
from emulator.headend.images import ImageStore, StoredImage, read_image_file
from emulator.headend.inventory import DeviceRecord, Inventory
from emulator.headend.metrics import HeadEndCollector
from emulator.headend.operations import HeadEndApi
from emulator.headend.persist import (
    Saved,
    change_writes,
    iter_change_writes,
    latest_operations,
    restore,
)
from emulator.headend.store import Database, StoreWriter, Write, db_path
from emulator.headend.webview import LiveView
from emulator.net.udp import OneTimer, UdpEndpoint, open_socket

logger = logging.getLogger(__name__)

KEY_NAME = "nms-key.pem"
ADMIN = "admin"
PASSWORD_ENV = "MESHFLEET_ADMIN_PASSWORD"
#: Datagrams waiting in the socket backlog above which campaigns pause.
MAX_BACKLOG = 2000
UDP_BATCH = 16
"""Datagrams handled per socket wake-up: a batch is one event-loop callback,
so an NB API call waits for at most one (a registration costs ~250 us: 64 of
them held the loop for 10-25 ms, 256 for 40-110 ms)."""
SEND_BUDGET = 0.003
"""Seconds of sending per loop turn (see :class:`UdpEndpoint`)."""


def images_dir(state_dir: Path) -> Path:
    return state_dir / "images"


def load_or_create_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The NMS signing key at ``path``, generated (mode 0600) when absent."""
    if path.exists():
        return load_signing_key(path.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    logger.info("generated NMS key %s", path)
    return key


def _ifindex(name: str) -> int:
    return int(name) if name.isdigit() else socket.if_nametoindex(name)


class HeadEnd:
    """The whole head-end (see the module doc)."""

    def __init__(
        self,
        config: HeadEndConfig,
        state_dir: Path,
        *,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.config = config
        self.state_dir = Path(state_dir)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.generated_password: str | None = None
        """The admin password made up at first start (print it once)."""
        self.users: dict[str, Any] = {}
        self.http_port: int | None = None
        self._core: HeadEndCore | None = None
        self._api: HeadEndApi | None = None
        self.images = ImageStore(images_dir(self.state_dir))
        self._endpoint: UdpEndpoint | None = None
        self._timer: OneTimer | None = None
        self._writer: StoreWriter | None = None
        self._reader: Database | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: Any = None
        self.live: LiveView | None = None
        """The live page's view of the head-end (with HTTP and ``live_view``)."""
        self._config_version = -1
        self._started = False

    # ------------------------------------------------------------ access

    @property
    def core(self) -> HeadEndCore:
        if self._core is None:
            raise RuntimeError("the head-end is not started")
        return self._core

    @property
    def api(self) -> HeadEndApi:
        """The FirmwareApi (valid after :meth:`start`)."""
        if self._api is None:
            raise RuntimeError("the head-end is not started")
        return self._api

    @property
    def inventory(self) -> Inventory:
        return self.core.inventory

    @property
    def csmp_port(self) -> int:
        if self._endpoint is None:
            raise RuntimeError("the head-end is not started")
        return self._endpoint.local[1]

    # --------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Load the state, open the CSMP socket (and HTTP), resume work."""
        if self._started:
            return
        self._started = True
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        key = await asyncio.to_thread(load_or_create_key, self._key_path())
        self._reader = Database(db_path(self.state_dir), any_thread=True)
        groups, images, devices, saved = await asyncio.to_thread(self._load)
        now = time.time()
        inventory = Inventory(self.config.nms.silence_limit)
        for row in devices:
            inventory.add(DeviceRecord.from_row(row))
        self.images.replace(images)
        self._open_socket()
        assert self._endpoint is not None
        self._core = HeadEndCore(
            self.config, key, GroupTable(groups), inventory, local=self._endpoint.local
        )
        self._api = HeadEndApi(
            self._core, self.images, read_image=self._read_image, kick=self.kick
        )
        restore(self._core, saved, now)
        if self.config.http.port >= 0 and self.config.http.live_view:
            self.live = LiveView(self._core, self._api)
        self._writer = StoreWriter(
            db_path(self.state_dir), self.config.store.flush_interval
        )
        self._writer.start()
        self._timer = OneTimer(self._on_timer)
        self.registry.register(HeadEndCollector(self._core, self.images))
        await self._start_http()
        self._tasks = [
            asyncio.create_task(self._persist_loop(), name="headend-persist"),
            asyncio.create_task(self._poll_loop(), name="headend-poll"),
        ]
        if self.live is not None:
            self._tasks.append(
                asyncio.create_task(self.live.run(), name="headend-live")
            )
        self._api.running = True
        self.kick()
        logger.info(
            "head-end up: CSMP on [%s]:%d, %d devices, %d groups, %d images",
            self._endpoint.local[0],
            self.csmp_port,
            len(inventory),
            len(self._core.groups),
            len(self.images),
        )

    async def stop(self) -> None:
        """Stop everything; idempotent; flushes the state to disk."""
        if self._api is not None:
            self._api.running = False
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._tasks = []
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._endpoint is not None:
            self._endpoint.close()
            self._endpoint = None
        if self._writer is not None:
            if self._core is not None:
                self._writer.put_all(change_writes(*self._core.take_changes()))
            await asyncio.to_thread(self._writer.close)
            self._writer = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self._started = False

    # ------------------------------------------------------------- state

    def _key_path(self) -> Path:
        configured = self.config.nms.key_file
        return Path(configured) if configured else self.state_dir / KEY_NAME

    def _load(
        self,
    ) -> tuple[list[GroupSpec], list[StoredImage], list[dict[str, Any]], Saved]:
        """Everything start-up needs (runs in a worker thread)."""
        db = self._reader
        assert db is not None
        self._seed_groups(db)
        self._setup_users(db)
        self._config_version = db.config_version()
        rows = db.operations()
        latest = latest_operations(rows)
        progress = {row.id: db.progress(row.id) for row in latest}
        images: dict[bytes, bytes | None] = {}
        for row in latest:
            if row.kind == "upload" and row.data.get("phase") not in _FINISHED:
                sha = bytes.fromhex(row.data["image"]["sha256"])
                images[sha] = self._read_file(sha)
        next_id = max((r.id for r in rows), default=0) + 1
        saved = Saved(latest, progress, images, next_id)
        return db.groups(), db.images(), db.devices(), saved

    def _read_file(self, sha: bytes) -> bytes | None:
        try:
            return read_image_file(self.images.directory, sha)
        except ImageError as exc:
            logger.warning("image of a running upload unusable: %s", exc)
            return None

    def _seed_groups(self, db: Database) -> None:
        stored = {g.key: g for g in db.groups()}
        configured = list(self.config.groups)
        if DEFAULT_GROUP not in stored:
            configured.insert(0, default_group())
        if not configured:
            return
        fixed = []
        for spec in configured:
            old = stored.get(spec.key)
            if old is not None and spec.id == 0:
                spec = replace(spec, id=old.id)
            fixed.append(spec)
        taken = {g.id for k, g in stored.items() if k not in {s.key for s in fixed}}
        db.put_groups(assign_ids(fixed, taken))

    def _setup_users(self, db: Database) -> None:
        from emulator.nbapi.auth import Role, User, hash_password, users_from_config

        env = os.environ.get(PASSWORD_ENV)
        stored = db.user(ADMIN)
        if env:
            password_hash = hash_password(env)
            db.put_user(ADMIN, Role.OPERATOR.value, password_hash)
        elif stored is not None:
            password_hash = stored[1]
        else:
            self.generated_password = secrets.token_urlsafe(12)
            password_hash = hash_password(self.generated_password)
            db.put_user(ADMIN, Role.OPERATOR.value, password_hash)
        users: dict[str, Any] = {ADMIN: User(ADMIN, Role.OPERATOR, password_hash)}
        users.update(users_from_config(self.config.users))
        self.users = users

    async def _read_image(self, image: StoredImage) -> bytes:
        return await asyncio.to_thread(
            read_image_file, self.images.directory, image.sha256
        )

    # ----------------------------------------------------------- network

    def _open_socket(self) -> None:
        c = self.config.csmp
        sock = open_socket((c.listen, c.port))
        self._endpoint = UdpEndpoint(
            sock, self._on_datagrams, batch=UDP_BATCH, send_budget=SEND_BUDGET
        )
        if c.multicast_interface:
            try:
                index = _ifindex(c.multicast_interface)
                self._endpoint.set_multicast_out(index, c.multicast_hops)
            except OSError as exc:
                logger.warning("multicast interface %s: %s", c.multicast_interface, exc)

    def _on_datagrams(self, batch: list[Any], now: float) -> None:
        core = self._core
        if core is None:
            return
        for data, local, remote in batch:
            core.receive_datagram(data, local, remote, now)
        self._drive(now)

    def _on_timer(self) -> None:
        self._drive(time.time())

    def kick(self) -> None:
        """Let the core send what is due now and re-arm the timer."""
        self._drive(time.time())

    def _drive(self, now: float) -> None:
        core, endpoint, timer = self._core, self._endpoint, self._timer
        if core is None or endpoint is None or timer is None:
            return
        if endpoint.backlog > MAX_BACKLOG:
            timer.arm(now + 0.01)  # let the socket drain first
            return
        core.handle_timer(now)
        endpoint.send(core.datagrams_to_send())
        timer.arm(core.get_timer())

    async def _start_http(self) -> None:
        http = self.config.http
        if http.port < 0:
            return
        try:
            from aiohttp import web

            from emulator.nbapi.app import make_app
        except ImportError as exc:  # the NB API is optional
            logger.warning("no NB API: %s", exc)
            return
        assert self._api is not None
        app = make_app(self._api, self.users, registry=self.registry)
        if self.live is not None:
            from emulator.web.app import add_web_routes, basic_authorizer

            add_web_routes(app, self.live, basic_authorizer(self.users))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self._runner = runner
        site = web.TCPSite(runner, http.listen, http.port)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.http_port = sockets[0].getsockname()[1] if sockets else http.port
        logger.info("NB API on [%s]:%s", http.listen, self.http_port)

    # ------------------------------------------------------- background

    async def _persist_loop(self) -> None:
        interval = self.config.store.flush_interval
        every = max(1, round(VOLATILE_FLUSH / interval))
        beat = 0
        while True:
            await asyncio.sleep(interval)
            beat += 1
            if self._core is not None and self._writer is not None:
                changes = self._core.take_changes(volatile=beat % every == 0)
                await self._queue_writes(iter_change_writes(*changes))

    async def _queue_writes(self, writes: Iterator[Write]) -> None:
        """Hand ``writes`` to the store writer, :data:`WRITES_PER_TURN` per
        event-loop turn (10,000 member snapshots at once held the loop for
        ~55 ms, a stall of every CoAP answer and NB API call behind it)."""
        assert self._writer is not None
        try:
            while chunk := list(islice(writes, WRITES_PER_TURN)):
                self._writer.put_all(chunk)
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            self._writer.put_all(writes)  # stopping: the rest at once, not lost
            raise

    async def _poll_loop(self) -> None:
        """Pick up group and image changes made by the CLI."""
        while True:
            await asyncio.sleep(self.config.store.poll_interval)
            try:
                await self.reload_config()
            except Exception:  # the head-end keeps running on a bad read
                logger.exception("reading group and image changes failed")

    async def reload_config(self) -> bool:
        """Reload groups and images if the CLI changed them; True if so."""
        reader = self._reader
        if reader is None or self._core is None:
            return False
        version = await asyncio.to_thread(reader.config_version)
        if version == self._config_version:
            return False
        groups, images = await asyncio.to_thread(
            lambda: (reader.groups(), reader.images())
        )
        self._config_version = version
        self.images.replace(images)
        moved = self._core.apply_groups(groups, time.time())
        logger.info(
            "reloaded %d groups (%d devices moved), %d images",
            len(groups),
            moved,
            len(images),
        )
        self.kick()
        return True


_FINISHED = {"done", "failed", "stopped"}
#: Seconds between writes of volatile device changes (last heard, download
#: bitmaps); durable changes go at every ``[store] flush_interval``.
VOLATILE_FLUSH = 5.0
#: Store writes built per event-loop turn by the persist loop.
WRITES_PER_TURN = 500
