"""The head-end's SQLite state (layer ``headend``, persistence).

One database file, ``<state>/headend.sqlite3``, in WAL mode, shared by the
running head-end and the ``meshfleet headend image|group`` commands. Tables:
``meta`` (schema version, ``config_version`` bumped by every group or image
change so a running head-end reloads them), ``groups``, ``images``,
``devices`` (the inventory), ``operations`` (campaigns) and ``progress``
(per-device state of each campaign, bitmaps included), ``users``.

:class:`Database` is the synchronous access (CLI, start-up load, worker
threads). :class:`StoreWriter` is the head-end's only writer while it runs:
one thread off the event loop that drains a queue of writes, keeps the last
write per row key, and commits them in one transaction per batch. The event
loop only enqueues.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emulator.headend.groups import GroupSpec, parse_group_spec
from emulator.headend.images import StoredImage

logger = logging.getLogger(__name__)

DB_NAME = "headend.sqlite3"
SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS groups (
    key TEXT PRIMARY KEY, id INTEGER NOT NULL UNIQUE, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    key TEXT PRIMARY KEY, name TEXT NOT NULL, sha256 TEXT NOT NULL,
    version TEXT NOT NULL, hwid TEXT NOT NULL, size INTEGER NOT NULL,
    added REAL NOT NULL);
CREATE TABLE IF NOT EXISTS devices (
    eui TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS operations (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, group_key TEXT NOT NULL,
    data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS progress (
    op_id INTEGER NOT NULL, eui TEXT NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (op_id, eui));
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY, role TEXT NOT NULL, password_hash TEXT NOT NULL);
"""


class StoreError(ValueError):
    """A store operation that cannot be done (name taken, not found...)."""


def db_path(state_dir: Path) -> Path:
    return state_dir / DB_NAME


def connect(path: Path, *, any_thread: bool = False) -> sqlite3.Connection:
    """A connection in WAL mode with a busy timeout, schema in place.

    ``any_thread`` allows use from several threads, one at a time (the
    head-end's reader, used from worker threads in turn).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        path, timeout=10.0, isolation_level=None, check_same_thread=not any_thread
    )
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=10000")
    conn.executescript(_SCHEMA)
    conn.execute(
        "INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
    )
    return conn


@dataclass(frozen=True, slots=True)
class OperationRow:
    id: int
    kind: str
    group_key: str
    data: dict[str, Any]


class Database:
    """Synchronous access to the state database (not for the event loop)."""

    def __init__(self, path: Path, *, any_thread: bool = False) -> None:
        self.path = path
        self.conn = connect(path, any_thread=any_thread)

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # ------------------------------------------------------------ meta

    def config_version(self) -> int:
        row = self.conn.execute(
            "SELECT value FROM meta WHERE key = 'config_version'"
        ).fetchone()
        return int(row[0]) if row else 0

    @staticmethod
    def _bump(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO meta VALUES ('config_version', '1') ON CONFLICT(key) "
            "DO UPDATE SET value = CAST(value AS INTEGER) + 1"
        )

    def integrity_check(self) -> str:
        return str(self.conn.execute("PRAGMA integrity_check").fetchone()[0])

    # ---------------------------------------------------------- groups

    def groups(self) -> list[GroupSpec]:
        rows = self.conn.execute("SELECT data FROM groups ORDER BY id").fetchall()
        specs = []
        for (data,) in rows:
            try:
                specs.append(parse_group_spec(json.loads(data)))
            except ValueError as exc:
                logger.warning("skipping a bad stored group: %s", exc)
        return specs

    def put_groups(self, specs: Iterable[GroupSpec], *, replace: bool = True) -> None:
        """Insert (or, with ``replace``, update) groups; ids must be set."""
        with self.transaction() as conn:
            for spec in specs:
                taken = conn.execute(
                    "SELECT key FROM groups WHERE id = ? AND key != ?",
                    (spec.id, spec.key),
                ).fetchone()
                if taken:
                    raise StoreError(f"group id {spec.id} is taken by {taken[0]!r}")
                exists = conn.execute(
                    "SELECT 1 FROM groups WHERE key = ?", (spec.key,)
                ).fetchone()
                if exists and not replace:
                    raise StoreError(f"group {spec.name!r} exists")
                conn.execute(
                    "INSERT OR REPLACE INTO groups VALUES (?, ?, ?)",
                    (spec.key, spec.id, json.dumps(spec.to_row())),
                )
            self._bump(conn)

    def group_ids(self) -> set[int]:
        return {r[0] for r in self.conn.execute("SELECT id FROM groups")}

    def remove_group(self, name: str) -> None:
        with self.transaction() as conn:
            cur = conn.execute("DELETE FROM groups WHERE key = ?", (name.lower(),))
            if cur.rowcount == 0:
                raise StoreError(f"no group {name!r}")
            self._bump(conn)

    # ---------------------------------------------------------- images

    def images(self) -> list[StoredImage]:
        rows = self.conn.execute(
            "SELECT name, sha256, version, hwid, size, added FROM images ORDER BY key"
        ).fetchall()
        return [
            StoredImage(name, bytes.fromhex(sha), version, hwid, size, added)
            for name, sha, version, hwid, size, added in rows
        ]

    def add_image(self, image: StoredImage) -> bool:
        """Add an image row; False when the same name and file exist already."""
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT sha256 FROM images WHERE key = ?", (image.key,)
            ).fetchone()
            if row is not None:
                if row[0] == image.sha256.hex():
                    return False
                raise StoreError(f"an image named {image.name!r} exists")
            conn.execute(
                "INSERT INTO images VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    image.key,
                    image.name,
                    image.sha256.hex(),
                    image.version,
                    image.hwid,
                    image.size,
                    image.added,
                ),
            )
            self._bump(conn)
        return True

    def remove_image(self, name: str) -> tuple[StoredImage, bool]:
        """Remove a name; the image and whether its file is still referenced."""
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT name, sha256, version, hwid, size, added FROM images "
                "WHERE key = ?",
                (name.strip().lower(),),
            ).fetchone()
            if row is None:
                raise StoreError(f"no image {name!r}")
            conn.execute("DELETE FROM images WHERE key = ?", (name.strip().lower(),))
            shared = conn.execute(
                "SELECT 1 FROM images WHERE sha256 = ?", (row[1],)
            ).fetchone()
            self._bump(conn)
        image = StoredImage(
            row[0], bytes.fromhex(row[1]), row[2], row[3], row[4], row[5]
        )
        return image, shared is not None

    # ----------------------------------------------------- runtime state

    def devices(self) -> list[dict[str, Any]]:
        return [json.loads(d) for (d,) in self.conn.execute("SELECT data FROM devices")]

    def operations(self) -> list[OperationRow]:
        rows = self.conn.execute(
            "SELECT id, kind, group_key, data FROM operations ORDER BY id"
        ).fetchall()
        return [OperationRow(i, k, g, json.loads(d)) for i, k, g, d in rows]

    def progress(self, op_id: int) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT data FROM progress WHERE op_id = ?", (op_id,)
        ).fetchall()
        return [json.loads(d) for (d,) in rows]

    # ------------------------------------------------------------ users

    def user(self, name: str) -> tuple[str, str] | None:
        row = self.conn.execute(
            "SELECT role, password_hash FROM users WHERE name = ?", (name,)
        ).fetchone()
        return None if row is None else (row[0], row[1])

    def put_user(self, name: str, role: str, password_hash: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO users VALUES (?, ?, ?)",
                (name, role, password_hash),
            )


# ------------------------------------------------------------------ writer

#: (row key, SQL, parameters): the last write per key wins within a batch.
#: A dict parameter is stored as JSON, encoded in the writer thread (the
#: event loop hands over fresh dicts and never touches them again); a
#: :class:`Lazy` parameter is built into its dict there too.
Write = tuple[tuple[Any, ...], str, tuple[Any, ...]]
_STOP = object()


class Lazy:
    """A row value built in the writer thread: ``build(state)``.

    The event loop hands over an immutable snapshot (a tuple of plain
    values and frozen objects); building the dict and its JSON, the costly
    part with 10,000 changed rows per flush, happens off the loop.
    """

    __slots__ = ("build", "state")

    def __init__(self, build: Any, state: tuple[Any, ...]) -> None:
        self.build = build
        self.state = state

    def value(self) -> Any:
        return self.build(self.state)


def device_write(row: dict[str, Any] | Lazy, eui: str | None = None) -> Write:
    key = eui if eui is not None else row["eui"]  # type: ignore[index]
    return (
        ("device", key),
        "INSERT OR REPLACE INTO devices VALUES (?, ?)",
        (key, row),
    )


def operation_write(
    op_id: int, kind: str, group_key: str, data: dict[str, Any]
) -> Write:
    return (
        ("op", op_id),
        "INSERT OR REPLACE INTO operations VALUES (?, ?, ?, ?)",
        (op_id, kind, group_key, data),
    )


def progress_write(op_id: int, eui: str, data: dict[str, Any] | Lazy) -> Write:
    return (
        ("progress", op_id, eui),
        "INSERT OR REPLACE INTO progress VALUES (?, ?, ?)",
        (op_id, eui, data),
    )


class StoreWriter:
    """The single writer thread (see the module doc)."""

    def __init__(self, path: Path, flush_interval: float = 0.2) -> None:
        self.path = path
        self.flush_interval = flush_interval
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.batches = 0
        self.writes = 0
        self.errors = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="headend-store", daemon=True
            )
            self._thread.start()

    def put(self, write: Write) -> None:
        """Queue a write (never blocks)."""
        self._queue.put(write)

    def put_all(self, writes: Iterable[Write]) -> None:
        for write in writes:
            self._queue.put(write)

    def close(self) -> None:
        """Flush everything queued and stop the thread (blocking)."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        conn = connect(self.path)
        try:
            stop = False
            while not stop:
                batch, stop = self._collect()
                if batch:
                    self._commit(conn, batch)
        finally:
            conn.close()

    def _collect(self) -> tuple[dict[tuple[Any, ...], Write], bool]:
        """Block for the first write, then gather for up to the interval."""
        batch: dict[tuple[Any, ...], Write] = {}
        item = self._queue.get()
        deadline = time.monotonic() + self.flush_interval
        while True:
            if item is _STOP:
                return batch, True
            assert isinstance(item, tuple)
            batch[item[0]] = item
            left = deadline - time.monotonic()
            if left <= 0 or len(batch) >= 5000:
                return batch, False
            try:
                item = self._queue.get(timeout=left)
            except queue.Empty:
                return batch, False

    def _commit(self, conn: sqlite3.Connection, batch: dict[Any, Write]) -> None:
        """One transaction for the batch. Each row is encoded just before its
        execute, which releases the GIL: encoding 10,000 rows first held it
        for tens of milliseconds, and the event loop waited a switch interval
        (5 ms) for it after every socket call."""
        written = 0
        try:
            conn.execute("BEGIN IMMEDIATE")
            for sql, params in self._encode(batch):
                conn.execute(sql, params)
                written += 1
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self.errors += 1
            logger.error("store write of %d rows failed: %s", len(batch), exc)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            return
        self.batches += 1
        self.writes += written

    def _encode(self, batch: dict[Any, Write]) -> Iterator[tuple[str, list[Any]]]:
        """SQL and encoded parameters, row by row; a row that cannot be encoded
        is logged and skipped (a bug, but the writer thread and the other rows
        go on)."""
        for key, sql, params in batch.values():
            try:
                row = [_column(p) for p in params]
            except (TypeError, ValueError) as exc:
                self.errors += 1
                logger.error("store row %s not written: %r", key, exc)
                continue
            yield sql, row


def _column(value: Any) -> Any:
    if isinstance(value, Lazy):
        value = value.value()
    return json.dumps(value) if isinstance(value, dict) else value
