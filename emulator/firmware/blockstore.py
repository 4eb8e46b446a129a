"""Shared firmware block store (layer ``firmware``, sans-IO but for save/load).

CSMP.md, section "Firmware slots and response codes": a device receives an
image as numbered ImageBlocks of a fixed block size into its UPLOAD slot and,
once every block is there, checks the SHA-256 of the whole file.

Ten thousand emulated devices downloading the same 512 KiB image must not
hold ten thousand copies. A :class:`BlockStore` keeps each block of an image
once, keyed by :class:`ImageKey` (file hash, block size), and every device
shares it: a device keeps only its bitmap, plus a private copy ("override")
of any block whose data differed from the stored one. The first block stored
for a number becomes the canonical one.

:meth:`BlockStore.put` runs per received block per device, so it does one
list index and, for a block seen before, one comparison; the dict lookup is
skipped when the key is the very object of the previous call, so devices
should keep the key :meth:`BlockStore.intern` returns. Blocks are never
copied unless offered as a non-``bytes`` buffer.
Only :meth:`BlockStore.save` and :meth:`BlockStore.load` touch the file
system: blocks are written content-addressed, one file per key, atomically.
Not thread-safe: use it from one thread (the fleet's event loop).
"""

from __future__ import annotations

import hashlib
import logging
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from emulator.fsutil import fsync_dir, write_atomic

logger = logging.getLogger(__name__)

#: upper bound on block numbers, to keep a bad caller from allocating wildly
MAX_STORE_BLOCKS: Final = 1 << 20

FILE_SUFFIX: Final = ".blocks"
_FILE_MAGIC: Final = b"MFBS"
_FILE_VERSION: Final = 1
_FILE_HEAD = struct.Struct("<4sHHIB")  # magic, version, reserved, bsize, hlen
_RECORD = struct.Struct("<II")  # block number, length
_COUNT = struct.Struct("<I")
_DIGEST_LEN: Final = 32


@dataclass(frozen=True, slots=True)
class ImageKey:
    """Identifies one image's blocks: the file's SHA-256 and the block size."""

    file_hash: bytes
    """SHA-256 of the whole file, as in CSMP TransferRequest."""
    block_size: int
    """Bytes per block (the last block may be shorter)."""
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # put() looks keys up per block per device: hash once, not per lookup
        object.__setattr__(self, "_hash", hash((self.file_hash, self.block_size)))

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple[type[ImageKey], tuple[bytes, int]]:
        # str/bytes hashes differ between processes: never pickle _hash
        return (ImageKey, (self.file_hash, self.block_size))

    def file_name(self) -> str:
        """Content-addressed name of this key's file in a saved store."""
        return f"{self.file_hash.hex()}-{self.block_size}{FILE_SUFFIX}"


class MissingBlockError(LookupError):
    """A block needed to assemble an image is absent or has the wrong length."""

    def __init__(self, key: ImageKey, num: int, detail: str = "missing") -> None:
        super().__init__(f"block {num} of {key.file_hash.hex()[:16]}: {detail}")
        self.key = key
        self.num = num


class CorruptStoreFile(ValueError):
    """A saved block file failed its checks on load."""


class _Entry:
    """The blocks of one key; ``gen`` counts changes, for incremental save."""

    __slots__ = ("blocks", "gen", "key")

    def __init__(self, key: ImageKey) -> None:
        self.key = key
        self.blocks: list[bytes | None] = []
        self.gen = 0


def expected_blocks(file_size: int, block_size: int) -> int:
    """Number of blocks of ``block_size`` bytes a ``file_size`` file needs."""
    return -(-file_size // block_size)


class BlockStore:
    """Image blocks stored once per :class:`ImageKey`, shared by all devices."""

    def __init__(self) -> None:
        self._entries: dict[ImageKey, _Entry] = {}
        self._verified: dict[tuple[ImageKey, int, int], bool] = {}
        self._saved: dict[ImageKey, tuple[Path, int]] = {}
        self._nbytes = 0
        # put()'s one-entry cache, matched by identity; starts on a sentinel
        self._last_key: ImageKey = ImageKey(b"", 0)
        self._last_entry = _Entry(self._last_key)

    # ------------------------------------------------------------ queries

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def intern(self, key: ImageKey) -> ImageKey:
        """The store's own object equal to ``key`` (``key`` itself if new).

        A device that keeps the interned key makes every later lookup an
        identity match, the cheapest dict hit.
        """
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry(key)
        return entry.key

    def keys(self) -> list[ImageKey]:
        """The keys that have at least an entry in the store."""
        return list(self._entries)

    @property
    def nbytes(self) -> int:
        """Total bytes of block data held."""
        return self._nbytes

    def block_count(self, key: ImageKey) -> int:
        """Number of blocks stored for ``key``."""
        entry = self._entries.get(key)
        if entry is None:
            return 0
        return sum(block is not None for block in entry.blocks)

    def get(self, key: ImageKey, num: int) -> bytes | None:
        """The canonical block ``num`` of ``key``, or None."""
        entry = self._entries.get(key)
        if entry is None or not 0 <= num < len(entry.blocks):
            return None
        return entry.blocks[num]

    # ------------------------------------------------------------ updates

    def put(self, key: ImageKey, num: int, data: bytes) -> bool:
        """Offer block ``num``; True when the stored block equals ``data``.

        The first data offered for a number is stored. On True the caller
        needs to keep only a bitmap bit; on False (the stored block differs)
        it keeps ``data`` as a private override.
        """
        if key is self._last_key:  # blocks come in runs of one image
            entry = self._last_entry
        else:
            entry = self._entry(key)
        if len(data) > key.block_size:
            raise ValueError(f"block of {len(data)} bytes > {key.block_size}")
        blocks = entry.blocks
        if num >= len(blocks):
            self._grow(blocks, num)
        elif num < 0:
            raise ValueError(f"negative block number {num}")
        stored = blocks[num]
        if stored is None:
            blocks[num] = bytes(data)
            entry.gen += 1
            self._nbytes += len(data)
            return True
        return stored == data

    def _entry(self, key: ImageKey) -> _Entry:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry(key)
        self._last_key = key
        self._last_entry = entry
        return entry

    @staticmethod
    def _grow(blocks: list[bytes | None], num: int) -> None:
        if num >= MAX_STORE_BLOCKS:
            raise ValueError(f"block number {num} >= {MAX_STORE_BLOCKS}")
        blocks.extend([None] * (num + 1 - len(blocks)))

    def add_image(self, file_bytes: bytes, block_size: int) -> ImageKey:
        """Preload a whole file (e.g. a RUN image); returns its key.

        The file is authoritative for its own hash: a stored block that
        differs from it is replaced, with a warning.
        """
        if not file_bytes or block_size <= 0:
            raise ValueError("add_image needs a non-empty file and block size > 0")
        key = ImageKey(hashlib.sha256(file_bytes).digest(), block_size)
        entry = self._entries.setdefault(key, _Entry(key))
        nblocks = expected_blocks(len(file_bytes), block_size)
        if nblocks > len(entry.blocks):
            self._grow(entry.blocks, nblocks - 1)
        for num in range(nblocks):
            start = num * block_size
            self._set_canonical(key, entry, num, file_bytes[start : start + block_size])
        self._verified[(key, nblocks, len(file_bytes))] = True
        return key

    def _set_canonical(
        self, key: ImageKey, entry: _Entry, num: int, block: bytes
    ) -> None:
        stored = entry.blocks[num]
        if stored == block:
            return
        if stored is not None:
            logger.warning(
                "block %d of %s replaced by the preloaded image",
                num,
                key.file_hash.hex()[:16],
            )
            self._nbytes -= len(stored)
            self._forget_verified(key)
        entry.blocks[num] = block
        entry.gen += 1
        self._nbytes += len(block)

    def _forget_verified(self, key: ImageKey) -> None:
        for cache_key in [k for k in self._verified if k[0] == key]:
            del self._verified[cache_key]

    def discard(self, key: ImageKey) -> None:
        """Drop every block of ``key`` (when no device refers to it any more)."""
        entry = self._entries.pop(key, None)
        if entry is self._last_entry:
            self._last_key = ImageKey(b"", 0)
        if entry is not None:
            self._nbytes -= sum(len(b) for b in entry.blocks if b is not None)
            self._forget_verified(key)
            self._saved.pop(key, None)

    # --------------------------------------------------------- assembling

    def assemble(
        self,
        key: ImageKey,
        nblocks: int,
        file_size: int,
        overrides: Mapping[int, bytes] | None = None,
    ) -> bytes:
        """The whole file from blocks 0..nblocks-1, overrides taking precedence.

        Raises MissingBlockError when a block is absent or, other than the
        last one, not exactly ``block_size`` bytes long; ValueError when
        ``nblocks`` does not fit ``file_size``.
        """
        bsize = key.block_size
        if file_size <= 0 or nblocks != expected_blocks(file_size, bsize):
            raise ValueError(f"{nblocks} blocks of {bsize} do not hold {file_size}")
        entry = self._entries.get(key)
        blocks = entry.blocks if entry is not None else []
        have = len(blocks)
        parts: list[bytes] = []
        for num in range(nblocks):
            block = overrides.get(num) if overrides else None
            if block is None:
                block = blocks[num] if num < have else None
                if block is None:
                    raise MissingBlockError(key, num)
            parts.append(block)
            if len(block) != bsize and num != nblocks - 1:
                raise MissingBlockError(key, num, f"short block, {len(block)} bytes")
        data = b"".join(parts)
        if len(data) < file_size:
            raise MissingBlockError(key, nblocks - 1, "last block too short")
        return data if len(data) == file_size else data[:file_size]

    def verify(
        self,
        key: ImageKey,
        nblocks: int,
        file_size: int,
        overrides: Mapping[int, bytes] | None = None,
    ) -> bool:
        """Whether the assembled file's SHA-256 equals ``key.file_hash``.

        False when a block is missing. Without overrides the result for a
        complete image is cached, so many devices finishing the same image
        cost one hash.
        """
        cache_key = (key, nblocks, file_size)
        if not overrides:
            cached = self._verified.get(cache_key)
            if cached is not None:
                return cached
        try:
            data = self.assemble(key, nblocks, file_size, overrides)
        except MissingBlockError as exc:
            logger.debug("verify: %s", exc)
            return False
        ok = hashlib.sha256(data).digest() == key.file_hash
        if not overrides:
            self._verified[cache_key] = ok
        return ok

    # -------------------------------------------------------- persistence

    def save(self, directory: Path) -> int:
        """Write every changed key's blocks to ``directory``; returns files written.

        One file per key, named by :meth:`ImageKey.file_name`, written
        atomically (temp file, fsync, rename). Files of other keys are kept.
        """
        directory.mkdir(parents=True, exist_ok=True)
        where = directory.resolve()
        written = 0
        for key, entry in self._entries.items():
            path = where / key.file_name()
            if self._saved.get(key) == (where, entry.gen) and path.exists():
                continue
            write_atomic(path, _encode(key, entry.blocks), sync_dir=False)
            self._saved[key] = (where, entry.gen)
            written += 1
        if written:
            fsync_dir(where)
        logger.info("saved %d block file(s) to %s", written, where)
        return written

    def load(self, directory: Path) -> int:
        """Read the block files in ``directory``; returns files loaded.

        A file that fails its checks is skipped with a warning. Loaded blocks
        fill gaps; a stored block that differs is kept (and warned about).
        """
        where = directory.resolve()
        loaded = 0
        for path in sorted(where.glob(f"*{FILE_SUFFIX}")):
            try:
                key, blocks = _decode(path.read_bytes())
                if path.name != key.file_name():
                    raise CorruptStoreFile(f"name does not match key {key.file_name()}")
            except (OSError, CorruptStoreFile) as exc:
                logger.warning("skipping block file %s: %s", path, exc)
                continue
            self._merge(key, blocks)
            self._saved[key] = (where, self._entries[key].gen)
            loaded += 1
        logger.info("loaded %d block file(s) from %s", loaded, where)
        return loaded

    def _merge(self, key: ImageKey, blocks: dict[int, bytes]) -> None:
        for num, data in blocks.items():
            if not self.put(key, num, data):
                logger.warning(
                    "block %d of %s on disk differs from memory; kept memory",
                    num,
                    key.file_hash.hex()[:16],
                )
        self._entries.setdefault(key, _Entry(key))


# ------------------------------------------------------------ file format
#
# head: magic "MFBS", u16 version, u16 reserved, u32 block size,
#       u8 hash length, hash; u32 record count;
# records: u32 block number, u32 length, data;
# tail: SHA-256 of everything before it.


def _encode(key: ImageKey, blocks: list[bytes | None]) -> bytes:
    present = [(num, b) for num, b in enumerate(blocks) if b is not None]
    parts = [
        _FILE_HEAD.pack(
            _FILE_MAGIC, _FILE_VERSION, 0, key.block_size, len(key.file_hash)
        ),
        key.file_hash,
        _COUNT.pack(len(present)),
    ]
    for num, block in present:
        parts.append(_RECORD.pack(num, len(block)))
        parts.append(block)
    body = b"".join(parts)
    return body + hashlib.sha256(body).digest()


def _decode(raw: bytes) -> tuple[ImageKey, dict[int, bytes]]:
    if len(raw) < _FILE_HEAD.size + _DIGEST_LEN:
        raise CorruptStoreFile(f"only {len(raw)} bytes")
    body, digest = raw[:-_DIGEST_LEN], raw[-_DIGEST_LEN:]
    if hashlib.sha256(body).digest() != digest:
        raise CorruptStoreFile("checksum mismatch")
    magic, version, _, bsize, hlen = _FILE_HEAD.unpack_from(body)
    if magic != _FILE_MAGIC or version != _FILE_VERSION or bsize == 0:
        raise CorruptStoreFile(f"bad head {magic!r} v{version} block size {bsize}")
    offset = _FILE_HEAD.size
    key = ImageKey(body[offset : offset + hlen], bsize)
    offset += hlen
    return key, _decode_records(body, offset, bsize)


def _decode_records(body: bytes, offset: int, bsize: int) -> dict[int, bytes]:
    try:
        (count,) = _COUNT.unpack_from(body, offset)
        offset += _COUNT.size
        blocks: dict[int, bytes] = {}
        for _ in range(count):
            num, length = _RECORD.unpack_from(body, offset)
            offset += _RECORD.size
            if length > bsize or num >= MAX_STORE_BLOCKS or num in blocks:
                raise CorruptStoreFile(f"bad record: block {num}, {length} bytes")
            if offset + length > len(body):
                raise CorruptStoreFile(f"truncated in block {num}")
            blocks[num] = body[offset : offset + length]
            offset += length
    except struct.error as exc:
        raise CorruptStoreFile(f"truncated: {exc}") from None
    if offset != len(body):
        raise CorruptStoreFile(f"{len(body) - offset} stray bytes")
    return blocks
