"""Convenience constructors of device-side :class:`Request` records.

Device layer helper (CSMP.md "Transport": GET and POST on ``/c``). Used by
tests, tools and the fleet runtime's control API to poke a device without
building CoAP messages.
"""

from __future__ import annotations

import logging

from emulator.coap.message import Code
from emulator.node.io import Request

logger = logging.getLogger(__name__)


def _path(path: str) -> tuple[str, ...]:
    return tuple(p for p in path.split("/") if p)


def get(
    path: str = "c", *query: str, confirmable: bool = True, multicast: bool = False
) -> Request:
    """A GET of ``path`` (e.g. ``"c/75/2"``) with Uri-Query options."""
    return Request(Code.GET, _path(path), tuple(query), b"", confirmable, multicast)


def post(
    payload: bytes,
    *query: str,
    path: str = "c",
    confirmable: bool = True,
    multicast: bool = False,
) -> Request:
    """A POST of TLVs to ``path`` (default ``/c``)."""
    return Request(
        Code.POST, _path(path), tuple(query), payload, confirmable, multicast
    )


def request(method: int, path: str = "c", payload: bytes = b"") -> Request:
    """Any method (e.g. DELETE), confirmable and unicast."""
    return Request(method, _path(path), (), payload, True, False)
