"""CSMP TLV framing (sans-IO): ``varint type, varint length, value``.

The framing layer of CSMP (CSMP Internet-Draft, "Message Format"; see
``shared/reference/CSMP.md``, "TLV framing"). Varints are protobuf base-128
varints. A vendor TLV is written ``127, PEN, subtype, length, value``; its text
id is ``e<PEN>.<subtype>``. Readers accept a length varint padded with
continuation bytes (``0x94 0x00`` for 20), which the reference agent writes.
Several TLVs are concatenated in one payload.

Everything that reads untrusted bytes raises :class:`CodecError` with a reason,
and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

VENDOR_TYPE = 127
#: Longest varint we accept: 32-bit values padded to at most 5 bytes.
_MAX_VARINT_BYTES = 5
_MAX_U32 = 0xFFFFFFFF


class CodecError(ValueError):
    """Bytes that are not a valid CSMP payload; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TlvId(NamedTuple):
    """A TLV type, with the vendor's IANA PEN for vendor TLVs (0 otherwise)."""

    type: int
    vendor: int = 0

    def __str__(self) -> str:
        if self.vendor:
            return f"e{self.vendor}.{self.type}"
        return str(self.type)

    @classmethod
    def parse(cls, text: str) -> TlvId:
        """Parse ``75`` or ``e5771.1``; raise :class:`CodecError` otherwise."""
        try:
            if text[:1] in ("e", "E"):
                pen, _, sub = text[1:].partition(".")
                tlv_id = cls(int(sub, 10), int(pen, 10))
                if tlv_id.vendor <= 0:
                    raise ValueError(text)
            else:
                tlv_id = cls(int(text, 10))
        except ValueError:
            raise CodecError(f"bad TLV id {text!r}") from None
        if not (0 < tlv_id.type <= _MAX_U32 and tlv_id.vendor <= _MAX_U32):
            raise CodecError(f"TLV id out of range: {text!r}")
        return tlv_id


class Tlv(NamedTuple):
    """One framed TLV: its id and its raw (protobuf-encoded) value."""

    id: TlvId
    value: bytes
    start: int = 0
    """Offset of the TLV's first byte in the payload it was read from (the
    signature covers every byte before TLV 77)."""


def pull_varint(data: bytes, pos: int) -> tuple[int, int]:
    """Read a varint at ``pos``; return (value, next position).

    Padded varints (redundant ``0x80`` continuation bytes) are accepted up to
    five bytes; values above 32 bits are refused.
    """
    value = 0
    shift = 0
    end = len(data)
    for i in range(pos, min(pos + _MAX_VARINT_BYTES, end)):
        byte = data[i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if value > _MAX_U32:
                raise CodecError(f"varint at offset {pos} exceeds 32 bits")
            return value, i + 1
        shift += 7
    if pos + _MAX_VARINT_BYTES <= end:
        raise CodecError(f"varint at offset {pos} longer than 5 bytes")
    raise CodecError(f"truncated varint at offset {pos}")


def push_varint(value: int, width: int = 0) -> bytes:
    """Encode a varint, padded with continuation bytes to ``width`` bytes."""
    if 0 <= value < 128 and width <= 2:
        return _SMALL_PADDED[value] if width == 2 else _SMALL[value]
    if not 0 <= value <= _MAX_U32:
        raise ValueError(f"varint value out of range: {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            break
    if len(out) < width:
        out[-1] |= 0x80
        out.extend(b"\x80" * (width - len(out) - 1))
        out.append(0)
    return bytes(out)


_SMALL = [bytes((i,)) for i in range(128)]
_SMALL_PADDED = [bytes((i | 0x80, 0)) for i in range(128)]


def pull_tlvs(payload: bytes) -> list[Tlv]:
    """Split a payload into its TLVs; raise :class:`CodecError` on bad framing."""
    return list(iter_tlvs(payload))


def iter_tlvs(payload: bytes) -> Iterator[Tlv]:
    """Iterate over a payload's TLVs (lazy form of :func:`pull_tlvs`).

    One-byte types and one- or two-byte lengths (the agent pads lengths to
    two bytes) are read inline; anything longer goes through
    :func:`pull_varint`.
    """
    pos = 0
    end = len(payload)
    while pos < end:
        start = pos
        tlv_id = _PLAIN_IDS[payload[pos]]
        if tlv_id is not None:
            pos += 1
        else:
            tlv_type, vendor, pos = _pull_type(payload, pos)
            tlv_id = TlvId(tlv_type, vendor)
        if pos < end and payload[pos] < 0x80:
            length = payload[pos]
            pos += 1
        elif pos + 1 < end and payload[pos + 1] < 0x80:
            length = (payload[pos] & 0x7F) | (payload[pos + 1] << 7)
            pos += 2
        else:
            length, pos = pull_varint(payload, pos)
        if pos + length > end:
            raise CodecError(
                f"TLV {tlv_id} at offset {start} claims {length} bytes, "
                f"{end - pos} left"
            )
        yield _new_tlv(Tlv, (tlv_id, payload[pos : pos + length], start))
        pos += length


#: TlvId of every one-byte type that is not the vendor escape (None: read it).
_PLAIN_IDS: list[TlvId | None] = [
    TlvId(b) if 0 < b < 0x80 and b != VENDOR_TYPE else None for b in range(256)
]
_new_tlv = tuple.__new__


def _pull_type(payload: bytes, pos: int) -> tuple[int, int, int]:
    """(type, vendor PEN or 0, next position) of the TLV at ``pos``."""
    start = pos
    tlv_type, pos = pull_varint(payload, pos)
    vendor = 0
    if tlv_type == VENDOR_TYPE:
        vendor, pos = pull_varint(payload, pos)
        tlv_type, pos = pull_varint(payload, pos)
        if vendor == 0:
            raise CodecError(f"vendor TLV at offset {start} has PEN 0")
    elif tlv_type == 0:
        raise CodecError(f"TLV type 0 at offset {start}")
    return tlv_type, vendor, pos


def push_tlv(tlv_id: TlvId | int, value: bytes, *, length_width: int = 0) -> bytes:
    """Frame one TLV; ``length_width`` pads the length varint (agent: 2)."""
    if isinstance(tlv_id, int):
        head = push_varint(tlv_id)
    elif tlv_id.vendor:
        head = (
            push_varint(VENDOR_TYPE)
            + push_varint(tlv_id.vendor)
            + push_varint(tlv_id.type)
        )
    else:
        head = push_varint(tlv_id.type)
    return head + push_varint(len(value), length_width) + value


def push_tlvs(
    tlvs: Iterable[tuple[TlvId | int, bytes]], length_width: int = 0
) -> bytes:
    """Frame and concatenate several TLVs."""
    return b"".join(push_tlv(i, v, length_width=length_width) for i, v in tlvs)
