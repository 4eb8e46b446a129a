"""The head-end's firmware image store (layer ``headend``).

FND keeps the image files an operator added and uploads them by name. Files
are checked with :func:`emulator.firmware.image.parse_image` (header, CRC,
size, and the signature when a verify key is configured); a rejection is an
:class:`~emulator.firmware.image.ImageError` with its reason. Accepted files
live content-addressed under ``<state>/images/<sha256>.bin``; their names
(case-insensitive, unique) are rows of the SQLite store.

The in-memory :class:`ImageStore` index is what the event loop reads; file
reads and writes happen off the loop (the CLI, or a worker thread).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from emulator.firmware import bitmap
from emulator.firmware.image import FirmwareImage, ImageError, Reason, parse_image

logger = logging.getLogger(__name__)

MAX_BLOCK_SIZE = 1024
#: Largest file a device bitmap can describe (1024 blocks of 1024 bytes).
MAX_FILE_SIZE = bitmap.MAX_BLOCKS * MAX_BLOCK_SIZE


@dataclass(frozen=True, slots=True)
class StoredImage:
    """One image of the store (metadata; the bytes stay on disk)."""

    name: str
    sha256: bytes
    version: str
    hwid: str
    size: int
    added: float = 0.0

    @property
    def key(self) -> str:
        return self.name.lower()


def choose_block_size(file_size: int, preferred: int) -> int:
    """``preferred``, doubled until the file fits the 1024-block bitmap."""
    size = max(1, min(preferred, MAX_BLOCK_SIZE))
    while -(-file_size // size) > bitmap.MAX_BLOCKS and size < MAX_BLOCK_SIZE:
        size = min(size * 2, MAX_BLOCK_SIZE)
    return size


def check_image(
    data: bytes, verify_key: ec.EllipticCurvePublicKey | None = None
) -> FirmwareImage:
    """Parse and check an image file for the store; ImageError if rejected."""
    parsed = parse_image(data, verify_key=verify_key)
    if len(data) > MAX_FILE_SIZE:
        raise ImageError(
            Reason.SIZE_MISMATCH,
            f"{len(data)} bytes, more than {MAX_FILE_SIZE} "
            f"({bitmap.MAX_BLOCKS} blocks of {MAX_BLOCK_SIZE})",
        )
    return parsed


def image_path(directory: Path, sha256: bytes) -> Path:
    return directory / f"{sha256.hex()}.bin"


def write_image_file(directory: Path, data: bytes) -> Path:
    """Store ``data`` content-addressed, atomically and durably (blocking)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = image_path(directory, hashlib.sha256(data).digest())
    if path.exists() and path.stat().st_size == len(data):
        return path
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def read_image_file(directory: Path, sha256: bytes) -> bytes:
    """The stored bytes, checked against their hash (blocking).

    Raises ImageError (reason ``truncated``) when the file is missing or its
    content no longer matches.
    """
    path = image_path(directory, sha256)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(Reason.TRUNCATED, f"{path}: {exc.strerror}") from None
    if hashlib.sha256(data).digest() != sha256:
        raise ImageError(Reason.TRUNCATED, f"{path}: content does not match its hash")
    return data


class ImageStore:
    """The index of stored images (names case-insensitive) and their folder."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._by_key: dict[str, StoredImage] = {}

    def replace(self, images: Iterable[StoredImage]) -> None:
        """Install the current index (read from the SQLite store)."""
        self._by_key = {i.key: i for i in images}

    def get(self, name: str) -> StoredImage | None:
        return self._by_key.get(name.strip().lower())

    def by_hash(self, sha256: bytes) -> StoredImage | None:
        for image in self._by_key.values():
            if image.sha256 == sha256:
                return image
        return None

    def __iter__(self) -> Iterator[StoredImage]:
        return iter(sorted(self._by_key.values(), key=lambda i: i.key))

    def __len__(self) -> int:
        return len(self._by_key)
