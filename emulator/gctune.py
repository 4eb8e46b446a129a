"""Cyclic garbage collector settings of a long-running meshfleet process.

Process edge, used by ``meshfleet headend run`` and ``meshfleet fleet run``
once their state is loaded (never by the library layers, which leave the
interpreter's settings alone).

CPython's full (generation 2) collection walks every tracked object. A
head-end with 10,000 device records and a running upload, or a fleet of
100,000 devices, tracks millions of them: measured 77-195 ms per full
collection in the head-end of ``meshfleet bench upload`` (10,000 devices),
each a stall of the event loop and so of every CoAP answer and NB API call
waiting behind it (getFirmwareUploadStatus p99 155-230 ms).

:func:`tune_for_long_lived_heap` moves what survived a full collection into
the permanent generation (:func:`gc.freeze`), and does so again after every
later full collection, so each one walks only what was allocated since. The
young generations are collected as before (a larger first threshold was
tried: 20,000 made generation-1 passes of 44-60 ms).

Trade-off: a reference cycle among frozen objects that becomes garbage later
is not reclaimed (reference counting still frees every acyclic object). The
long-lived state of both processes (device records, campaign members,
emulated devices, exchange records) is acyclic; what forms cycles (exceptions
with tracebacks, asyncio internals) dies young and is collected.
"""

from __future__ import annotations

import gc
import logging
from typing import Any

logger = logging.getLogger(__name__)


def _freeze_after_full(phase: str, info: dict[str, Any]) -> None:
    if phase == "stop" and info.get("generation") == 2:
        gc.freeze()


def tune_for_long_lived_heap() -> int:
    """Freeze today's survivors and every full collection's; objects frozen now.

    Idempotent: the callback is installed once.
    """
    gc.collect()
    gc.freeze()
    if _freeze_after_full not in gc.callbacks:
        gc.callbacks.append(_freeze_after_full)
    frozen = gc.get_freeze_count()
    logger.debug("gc: %d objects frozen", frozen)
    return frozen


def untune() -> None:
    """Undo :func:`tune_for_long_lived_heap` (tests)."""
    if _freeze_after_full in gc.callbacks:
        gc.callbacks.remove(_freeze_after_full)
    gc.unfreeze()
