"""Fleet snapshots: every device's durable state, saved and restored (layer ``fleet``).

DESIGN.md "snapshots: cbor2, atomic". ``--state DIR`` holds:

- ``devices.cbor``: ``{"v": 1, "time": t, "devices": {eui64: snapshot}}``,
  where each snapshot is ``Device.snapshot()`` (slots by image key, bitmap,
  groups, session, subscription; see :mod:`emulator.node.snapshot`);
- ``blocks/``: the shared :class:`~emulator.firmware.blockstore.BlockStore`
  (one content-addressed file per image key, written by its ``save``).

Writes are atomic (temp file, fsync, rename, fsync of the directory) and run
in a worker thread: the event loop only collects the snapshot dicts and
copies new blocks into a *mirror* BlockStore that only the worker writes
from, so the live store is never read by two threads. Snapshots are taken
every ``snapshot_interval`` seconds and once more at stop.

Restore validates: a device whose snapshot the device layer rejects starts
clean (warning, in the runtime); a ``devices.cbor`` that cannot be read or
decoded is reported in one log line, moved aside as ``devices.cbor.bad`` and
the fleet starts clean, never with a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cbor2

from emulator.firmware.blockstore import BlockStore
from emulator.fsutil import write_atomic

if TYPE_CHECKING:
    from emulator.fleet.runtime import Fleet

logger = logging.getLogger(__name__)

STATE_FILE = "devices.cbor"
BLOCKS_DIR = "blocks"
VERSION = 1


def load_state(directory: Path | None, store: BlockStore) -> dict[int, Any]:
    """Snapshots by EUI-64 from ``directory`` (blocks go into ``store``)."""
    if directory is None:
        return {}
    blocks = directory / BLOCKS_DIR
    if blocks.is_dir():
        store.load(blocks)
    path = directory / STATE_FILE
    if not path.exists():
        return {}
    try:
        raw = cbor2.loads(path.read_bytes())
        return _check_state(raw)
    except (OSError, ValueError, cbor2.CBORDecodeError, TypeError) as exc:
        aside = path.with_name(STATE_FILE + ".bad")
        logger.error(
            "state file %s is unreadable (%s); moved to %s, starting clean",
            path,
            exc,
            aside.name,
        )
        with contextlib.suppress(OSError):
            os.replace(path, aside)
        return {}


def _check_state(raw: object) -> dict[int, Any]:
    if not isinstance(raw, dict) or raw.get("v") != VERSION:
        raise ValueError("not a meshfleet state file of version 1")
    devices = raw.get("devices")
    if not isinstance(devices, dict):
        raise ValueError("no devices map")
    return {int(k): v for k, v in devices.items() if isinstance(k, int)}


def _mirror_blocks(live: BlockStore, mirror: BlockStore) -> None:
    """Copy into ``mirror`` every block of ``live`` it lacks (no data copied)."""
    for key in live.keys():
        count = live.block_count(key)
        if mirror.block_count(key) == count:
            continue
        found = num = 0
        while found < count:
            block = live.get(key, num)
            if block is not None:
                found += 1
                mirror.put(key, num, block)
            num += 1


class Snapshotter:
    """Periodic and final snapshots of one fleet, written off the loop."""

    def __init__(self, fleet: Fleet, directory: Path) -> None:
        self.fleet = fleet
        self.directory = directory
        self.mirror = BlockStore()
        self.saved = 0
        self._task: asyncio.Task[None] | None = None
        self._writing: asyncio.Future[None] | None = None
        directory.mkdir(parents=True, exist_ok=True)
        if (directory / BLOCKS_DIR).is_dir():
            self.mirror.load(directory / BLOCKS_DIR)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._task = loop.create_task(self._run(), name="fleet-snapshots")

    async def _run(self) -> None:
        interval = self.fleet.config.snapshot_interval
        while True:
            await asyncio.sleep(interval)
            await self.save()

    async def save(self) -> None:
        """Collect on the loop, write in a worker thread."""
        if self._writing is not None:
            await self._writing
        devices = self.fleet.snapshot_now()
        _mirror_blocks(self.fleet.store, self.mirror)
        state = {"v": VERSION, "time": time.time(), "devices": devices}
        loop = asyncio.get_running_loop()
        self._writing = loop.run_in_executor(None, self._write, state)
        try:
            await self._writing
        except (OSError, ValueError) as exc:
            logger.error("snapshot to %s failed: %s", self.directory, exc)
        finally:
            self._writing = None

    def _write(self, state: dict[str, Any]) -> None:
        self.mirror.save(self.directory / BLOCKS_DIR)
        write_atomic(self.directory / STATE_FILE, cbor2.dumps(state))
        self.saved += 1
        logger.info(
            "snapshot of %d device(s) to %s", len(state["devices"]), self.directory
        )

    async def stop(self) -> None:
        """Cancel the periodic task, then take the final snapshot."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.save()
