"""Identity memos for the multicast fan-out (device layer, hot path).

The fleet hands the *same* request object to every member of a firmware group
when a multicast datagram arrives (10,000 devices per ImageBlock). Parsing its
path, query and TLVs once instead of once per device is what keeps the fan-out
near the cost of the bitmap update itself. These memos remember the result for
the last few argument *objects* (by identity, holding a reference so that an id
cannot be reused while cached); results must be treated as read-only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from google.protobuf.message import Message

from emulator.csmp.registry import decode_as
from emulator.csmp.tlv import CodecError, Tlv

A = TypeVar("A")
R = TypeVar("R")
M = TypeVar("M", bound=Message)

_LIMIT = 16


class IdentityMemo(Generic[A, R]):
    """``fn(x)`` remembered for the last few ``x`` objects, errors included."""

    __slots__ = ("_fn", "_entries")

    def __init__(self, fn: Callable[[A], R]) -> None:
        self._fn = fn
        self._entries: dict[int, tuple[A, R | None, CodecError | None]] = {}

    def __call__(self, arg: A) -> R:
        entry = self._entries.get(id(arg))
        if entry is None or entry[0] is not arg:
            entry = self._compute(arg)
        if entry[2] is not None:
            raise entry[2]
        return entry[1]  # type: ignore[return-value]

    def _compute(self, arg: A) -> tuple[A, R | None, CodecError | None]:
        try:
            entry: tuple[A, R | None, CodecError | None] = (arg, self._fn(arg), None)
        except CodecError as exc:
            entry = (arg, None, exc)
        if len(self._entries) >= _LIMIT:
            self._entries.clear()
        self._entries[id(arg)] = entry
        return entry


_decoded: dict[int, tuple[Tlv, type[Message], Message]] = {}


def decode_shared(tlv: Tlv, cls: type[M]) -> M:
    """:func:`decode_as`, once per TLV object; the message is read-only."""
    entry = _decoded.get(id(tlv))
    if entry is not None and entry[0] is tlv and entry[1] is cls:
        return entry[2]  # type: ignore[return-value]
    msg = decode_as(tlv, cls)
    if len(_decoded) >= _LIMIT:
        _decoded.clear()
    _decoded[id(tlv)] = (tlv, cls, msg)
    return msg
