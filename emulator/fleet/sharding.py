"""Splitting one fleet over several processes (layer ``fleet``, pure).

``meshfleet fleet run --shard i/n`` emulates only the devices whose EUI-64
falls in slice ``i`` of ``n``; ``n`` processes with ``i = 0 .. n-1`` together
emulate the whole fleet, every device exactly once. The slice of a device is
``mix64(eui64) % n``: a fixed 64-bit mixing function, so slices are even for
any inventory (consecutive, sparse or all-even EUI-64s alike) and never
depend on the process, the seed or the order of the inventory.

Kubernetes: run the fleet as a StatefulSet of ``n`` replicas and give each pod
its ordinal as ``i``. A StatefulSet pod's hostname ends with ``-<ordinal>``
(``meshfleet-3``), and ``--shard`` accepts ``$(POD_INDEX)/n`` or ``auto/n``,
which reads the ordinal from the ``POD_INDEX`` variable (set it from the
``apps.kubernetes.io/pod-index`` label through the downward API) or else from
the hostname's suffix. Each pod keeps its ``--state`` on its own persistent
volume claim (``volumeClaimTemplates``), so a rescheduled pod restores the
same devices. With prefix addressing every pod needs the same local route in
its network namespace and a route to the pod on the head-end side; with
``loopback-ports`` the ports stay distinct across shards (port base + global
device index).
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Callable, Iterable
from typing import TypeVar

logger = logging.getLogger(__name__)

_MASK = (1 << 64) - 1
T = TypeVar("T")


def mix64(value: int) -> int:
    """A 64-bit finalizer (splitmix64's): spreads consecutive values evenly."""
    z = (value + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def shard_of(eui64: int, n: int) -> int:
    """The slice (0 .. n-1) that owns ``eui64``."""
    return mix64(eui64) % n


def in_shard(eui64: int, shard: tuple[int, int]) -> bool:
    index, count = shard
    return count == 1 or shard_of(eui64, count) == index


def take(
    items: Iterable[T], key: Callable[[T], int], shard: tuple[int, int]
) -> list[T]:
    """The items whose EUI-64 (``key(item)``) falls in ``shard``."""
    return [item for item in items if in_shard(key(item), shard)]


def parse_shard(text: str, env: dict[str, str] | None = None) -> tuple[int, int]:
    """``"i/n"`` -> (i, n); ``"auto/n"`` takes i from POD_INDEX or the hostname."""
    env = dict(os.environ) if env is None else env
    match = re.fullmatch(r"\s*(\w+)\s*/\s*(\d+)\s*", text)
    if match is None:
        raise ValueError(f"shard {text!r} is not i/n")
    first, count = match.group(1), int(match.group(2))
    if first == "auto":
        first = env.get("POD_INDEX") or _hostname_ordinal()
    if not first.isdigit():
        raise ValueError(f"shard index {first!r} is not a number")
    index = int(first)
    if not (count >= 1 and 0 <= index < count):
        raise ValueError(f"shard {index}/{count}: need 0 <= i < n")
    return index, count


def _hostname_ordinal() -> str:
    match = re.search(r"-(\d+)$", socket.gethostname())
    return match.group(1) if match else ""
