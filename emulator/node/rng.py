"""Counter-based pseudo-random numbers for device jitter (splitmix64).

Device layer helper (CSMP.md "Transport": registration trickle timer, async
answer delays). A device keeps only its seed and a draw counter: draw ``n`` of
seed ``s`` is ``splitmix64(s + n * golden)``, so each device's jitter sequence
is reproducible whatever the order in which the fleet runs devices, and no
per-device ``random.Random`` (2.5 KB each) is needed.
"""

from __future__ import annotations

import logging
from typing import Final

logger = logging.getLogger(__name__)

_MASK: Final = (1 << 64) - 1
_GOLDEN: Final = 0x9E3779B97F4A7C15


def splitmix64(x: int) -> int:
    """The splitmix64 output function of state ``x`` (already advanced)."""
    z = x & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def uniform(seed: int, counter: int) -> float:
    """Draw number ``counter`` of ``seed`` as a float in [0, 1)."""
    return (splitmix64(seed + (counter + 1) * _GOLDEN) >> 11) * (1.0 / (1 << 53))
