"""CSMP request query options: ``q=``, ``a=`` and ``r=`` (sans-IO parsing).

Device layer, CSMP.md "Transport" and "Group flows" (query options, after the
CSMP Internet-Draft's device interface): ``q=<id>+<id>...`` lists TLVs to GET
(also space or comma separated, as the reference agent splits on spaces),
``a=<s>`` asks for an asynchronous answer after a random delay of up to ``s``
seconds, ``r=<url>`` redirects that answer.
"""

from __future__ import annotations

import logging
import re
from typing import NamedTuple
from urllib.parse import unquote

from emulator.csmp.tlv import CodecError, TlvId

logger = logging.getLogger(__name__)

CSMP_PORT = 61628
_SPLIT = re.compile(r"[+ ,]+")
_URL = re.compile(r"coaps?://\[([0-9A-Fa-f:.%]+)\](?::(\d{1,5}))?(/[^?#]*)?")


class Query(NamedTuple):
    """The options of one request."""

    ids: tuple[TlvId, ...] | None = None
    """TLV ids of ``q=`` (None when absent); unparseable ids are dropped."""
    delay: int | None = None
    """``a=`` seconds (None when absent or not a number)."""
    target: tuple[str, int] | None = None
    """``r=`` destination address and port (None: the NMS)."""
    path: str = "c"
    """``r=`` Uri-Path of the async answer (default ``c``)."""


def parse_ids(text: str) -> tuple[TlvId, ...]:
    """TLV ids from ``11+75``, ``11 75`` or ``11,75``; bad ones are skipped."""
    ids: list[TlvId] = []
    for item in _SPLIT.split(unquote(text).strip()):
        try:
            ids.append(TlvId.parse(item))
        except CodecError:
            logger.debug("query: skipping TLV id %r", item)
    return tuple(ids)


def parse_url(text: str) -> tuple[tuple[str, int], str] | None:
    """``coap://[addr]:port/path`` as ((addr, port), path); None if not one."""
    match = _URL.fullmatch(unquote(text).strip())
    if match is None:
        return None
    port = int(match.group(2)) if match.group(2) else CSMP_PORT
    if not 0 < port < 65536:
        return None
    path = (match.group(3) or "/c").strip("/") or "c"
    return (match.group(1), port), path


def parse_query(options: tuple[str, ...]) -> Query:
    """Parse a request's Uri-Query options (the first of each key wins)."""
    ids: tuple[TlvId, ...] | None = None
    delay: int | None = None
    redirect: tuple[tuple[str, int], str] | None = None
    for option in options:
        key, sep, value = option.partition("=")
        if not sep:
            continue
        if key == "q" and ids is None:
            ids = parse_ids(value)
        elif key == "a" and delay is None:
            delay = int(value) if value.isdigit() and len(value) < 10 else None
        elif key == "r" and redirect is None:
            redirect = parse_url(value)
    if redirect is None:
        return Query(ids, delay)
    return Query(ids, delay, redirect[0], redirect[1])
