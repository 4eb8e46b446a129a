"""What goes into and out of an emulated device (sans-IO boundary types).

The device layer (:mod:`emulator.node.device`) sees CoAP only through these
small frozen records; the fleet runtime translates between them and the
exchange layer (:mod:`emulator.coap.exchange`). Nothing here touches a socket
or reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


class Request(NamedTuple):
    """An incoming CoAP request, as a device sees it."""

    method: int
    """CoAP method code (``Code.GET``, ``Code.POST``, ...)."""
    path: tuple[str, ...]
    """Uri-Path segments, e.g. ``("c", "75", "2")``."""
    query: tuple[str, ...]
    """Uri-Query options, e.g. ``("q=11+75",)`` or ``("a=30",)``."""
    payload: bytes
    confirmable: bool
    multicast: bool
    """Received on a group address (fanned out by the fleet)."""


class Response(NamedTuple):
    """The device's answer to a request (piggybacked or NON response)."""

    code: int
    payload: bytes = b""


class Send(NamedTuple):
    """A device-initiated request to the NMS (or to a redirect target)."""

    path: str
    """``"r"`` for registration, ``"c"`` for reports and async responses."""
    payload: bytes
    confirmable: bool
    kind: str
    """``"register"``, ``"report"`` or ``"async"`` (for metrics and logs)."""
    target: tuple[str, int] | None = None
    """Destination; None means the device's NMS."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """Result of one device step: an answer, sends, and whether to stay silent."""

    response: Response | None = None
    sends: tuple[Send, ...] = ()
