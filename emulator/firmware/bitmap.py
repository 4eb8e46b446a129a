"""CSMP image block bitmap (layer ``firmware``, sans-IO).

CSMP.md, section "Firmware slots and response codes": in TLV 75 a set bit
means "block received"; block n is bit (7 - n % 8) of byte n // 8, most
significant bit first; the bitmap is ceil(blocks / 8) bytes long and holds at
most :data:`MAX_BLOCKS` blocks.

In memory a bitmap is a plain ``int`` with block n at bit ``1 << n``, which is
cheap to update per received block; :func:`to_bytes` and :func:`from_bytes`
convert to and from the wire order with one bit-reversing byte translation.
"""

from __future__ import annotations

import logging
from typing import Final

logger = logging.getLogger(__name__)

MAX_BLOCKS: Final = 1024

#: byte -> the same byte with its bit order reversed
_REVERSE: Final = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))


def nbytes(nblocks: int) -> int:
    """Length in bytes of the wire bitmap for ``nblocks`` blocks."""
    _check_nblocks(nblocks)
    return (nblocks + 7) // 8


def _check_nblocks(nblocks: int) -> None:
    if not 0 <= nblocks <= MAX_BLOCKS:
        raise ValueError(f"nblocks {nblocks} outside 0..{MAX_BLOCKS}")


def full(nblocks: int) -> int:
    """The bitmap with every one of ``nblocks`` blocks present."""
    _check_nblocks(nblocks)
    return (1 << nblocks) - 1


def set_block(bits: int, num: int) -> int:
    """``bits`` with block ``num`` marked present."""
    return bits | (1 << num)


def has_block(bits: int, num: int) -> bool:
    """Whether block ``num`` is present in ``bits``."""
    return bool(bits >> num & 1)


def count(bits: int) -> int:
    """Number of blocks present."""
    return bits.bit_count()


def is_complete(bits: int, nblocks: int) -> bool:
    """Whether all ``nblocks`` blocks are present."""
    return bits == full(nblocks)


def missing(bits: int, nblocks: int) -> list[int]:
    """Numbers of the blocks not yet present, ascending."""
    holes = full(nblocks) & ~bits
    result: list[int] = []
    while holes:
        low = holes & -holes
        result.append(low.bit_length() - 1)
        holes ^= low
    return result


def to_bytes(bits: int, nblocks: int) -> bytes:
    """The wire bitmap (MSB first, ceil(nblocks / 8) bytes)."""
    length = nbytes(nblocks)
    if bits < 0 or bits >> nblocks:
        raise ValueError(f"bitmap has bits beyond block {nblocks - 1}")
    return bits.to_bytes(length, "little").translate(_REVERSE)


def from_bytes(data: bytes, nblocks: int) -> int:
    """The bitmap int from wire bytes; bits beyond ``nblocks`` are ignored."""
    length = nbytes(nblocks)
    if len(data) < length:
        raise ValueError(f"bitmap of {len(data)} bytes, {nblocks} blocks need {length}")
    value = int.from_bytes(bytes(data[:length]).translate(_REVERSE), "little")
    return value & full(nblocks)
