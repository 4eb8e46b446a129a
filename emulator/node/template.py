"""Byte templates with holes: encode once with sentinel values, splice per use.

Device layer hot path (CSMP.md "Transport", the registration TLV set). A
registration POST is about 600 bytes of TLVs, nearly all of them the same for
every device of a profile: only the EUI-64 (as text in DeviceID and the serial
number, as bytes in InterfaceDesc), the link-local interface id, the global
address, the time and a few small state-dependent TLVs differ, and those have
a fixed length. Encoding the whole set with protobuf per device cost about
200 us; a :class:`Template` is built once (per profile and running version) by
the generic encoder with a *sentinel* identity, and then rendered per device
by joining its constant chunks with the device's values.

Building is checked: every sentinel must occur exactly as often as expected
and occurrences must not overlap, otherwise :func:`build_template` returns None and
the caller keeps using the generic encoder. Equivalence with the generic
encoder is what ``tests/test_fastpath_registration.py`` proves.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

logger = logging.getLogger(__name__)


class Template:
    """Constant chunks with a hole (a value kind) between each two."""

    __slots__ = ("chunks", "kinds")

    def __init__(self, chunks: list[bytes], kinds: list[int]) -> None:
        assert len(chunks) == len(kinds) + 1
        self.chunks = chunks
        self.kinds = kinds

    def render(self, values: Sequence[bytes]) -> bytes:
        """The bytes with hole ``k`` filled with ``values[kind of k]``."""
        chunks = self.chunks
        parts = [chunks[0]]
        append = parts.append
        for kind, chunk in zip(self.kinds, chunks[1:], strict=True):
            append(values[kind])
            append(chunk)
        return b"".join(parts)


def build_template(
    segments: Sequence[bytes | int],
    sentinels: Sequence[tuple[int, bytes, int]],
) -> Template | None:
    """A template from ``segments`` (constant bytes or a hole kind).

    ``sentinels`` are ``(kind, sentinel bytes, expected count)``: each
    occurrence of the sentinel in a constant segment becomes a hole of that
    kind. None when a count differs or occurrences overlap (a sentinel that
    collides with other content).
    """
    chunks: list[bytes] = [b""]
    kinds: list[int] = []
    counts = dict.fromkeys(range(len(sentinels)), 0)
    for segment in segments:
        if isinstance(segment, int):
            kinds.append(segment)
            chunks.append(b"")
            continue
        cuts = _occurrences(segment, sentinels)
        if cuts is None:
            return None
        pos = 0
        for start, index in cuts:
            kind, value, _ = sentinels[index]
            counts[index] += 1
            chunks[-1] += segment[pos:start]
            kinds.append(kind)
            chunks.append(b"")
            pos = start + len(value)
        chunks[-1] += segment[pos:]
    for index, (kind, _value, expected) in enumerate(sentinels):
        if counts[index] != expected:
            logger.debug("template: sentinel %d found %d times", kind, counts[index])
            return None
    return Template(chunks, kinds)


def _occurrences(
    segment: bytes, sentinels: Sequence[tuple[int, bytes, int]]
) -> list[tuple[int, int]] | None:
    """(offset, sentinel index) of every occurrence, sorted; None on overlap."""
    found: list[tuple[int, int]] = []
    for index, (_kind, value, _expected) in enumerate(sentinels):
        start = segment.find(value)
        while start >= 0:
            found.append((start, index))
            start = segment.find(value, start + 1)
    found.sort()
    end = 0
    for start, index in found:
        if start < end:
            return None
        end = start + len(sentinels[index][1])
    return found
