"""Link models and scheduled device faults (layer ``fleet``, sans-IO).

DESIGN.md "link models: loss / delay / dup / reorder per device, seeded".
Between the fleet's socket and each device sits a link. A :class:`LinkRule`
(config ``[[faults.link]]`` or the control API) applies to a set of devices,
chosen by EUI-64 list, by hardware mix name and/or by a fraction of them;
when several rules match a device, the last one wins. Per datagram and
direction the link decides: drop (loss, or an outage window), deliver after a
delay (``delay`` plus uniform ``jitter``), deliver twice (``duplicate``), or
hold back a little more so that later datagrams overtake it (``reorder``).

Reproducibility: which devices a rule takes is a pure function of (seed,
rule index, EUI-64); the per-datagram draws come from one ``random.Random``
per (rule, direction) stream seeded from the fleet seed, so the same traffic
in the same order meets the same fate, and devices carry no RNG state.

A :class:`DeviceFaultRule` (``[[faults.device]]``) schedules device faults at
a time after fleet start: ``power_cycle`` (once), ``reboot_loop`` (every
``period`` until ``until``), and the static ``refuse_transfer`` (code),
``flash_error`` (rate) and ``boot_fail`` that set the device's
:class:`~emulator.node.profile.DeviceFaults` from ``at`` to ``until``.
:class:`FaultSchedule` turns the rules into due actions; the runtime applies
them. Times here are seconds since fleet start.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from emulator.fleet.config import DeviceFaultRule, LinkRule
from emulator.fleet.sharding import mix64

logger = logging.getLogger(__name__)

UP = 0
"""Direction: device -> network."""
DOWN = 1
"""Direction: network -> device."""
REORDER_HOLD = (0.05, 0.25)
"""Extra delay range (s) of a datagram picked for reordering."""
DUPLICATE_GAP = 0.001
"""Seconds between a datagram and its duplicate."""


@dataclass(frozen=True, slots=True)
class DeviceKey:
    """What rules select devices by."""

    eui64: int
    hardware: str
    """Name of the device's hardware mix."""


def _takes(
    rule: LinkRule | DeviceFaultRule, index: int, seed: int, dev: DeviceKey
) -> bool:
    if rule.devices and dev.eui64 not in rule.devices:
        return False
    if rule.hardware and rule.hardware != dev.hardware:
        return False
    if rule.fraction >= 1.0:
        return True
    draw = mix64(mix64(seed * 1_000_003 + index) ^ dev.eui64) / 2.0**64
    return draw < rule.fraction


def select_devices(
    rule: LinkRule | DeviceFaultRule,
    index: int,
    seed: int,
    devices: Sequence[DeviceKey],
) -> list[int]:
    """Positions in ``devices`` that rule number ``index`` applies to."""
    return [i for i, dev in enumerate(devices) if _takes(rule, index, seed, dev)]


class LinkModel:
    """Per-device link decisions for the whole fleet.

    :meth:`decide` returns None for "deliver now, once" (the fast path for
    devices without a rule), ``()`` for "drop", or the delays (seconds) of
    each copy to deliver.
    """

    def __init__(self, seed: int, devices: Sequence[DeviceKey]) -> None:
        self.seed = seed
        self._devices = devices
        self.rules: tuple[LinkRule, ...] = ()
        self._rule_of: dict[int, int] = {}
        self._streams: list[tuple[random.Random, random.Random]] = []
        self.counts: Counter[str] = Counter()
        """Faults injected, by kind: loss, outage, delay, duplicate, reorder."""

    @property
    def active(self) -> bool:
        return bool(self._rule_of)

    def set_rules(self, rules: Iterable[LinkRule]) -> None:
        """Replace every rule (streams restart from the seed)."""
        self.rules = tuple(rules)
        self._rule_of = {}
        self._streams = []
        for k, rule in enumerate(self.rules):
            for i in select_devices(rule, k, self.seed, self._devices):
                self._rule_of[i] = k
            self._streams.append(
                (
                    random.Random(f"link:{self.seed}:{k}:up"),
                    random.Random(f"link:{self.seed}:{k}:down"),
                )
            )
        logger.info(
            "%d link rule(s) cover %d device(s)", len(self.rules), len(self._rule_of)
        )

    def rule_for(self, device: int) -> LinkRule | None:
        k = self._rule_of.get(device)
        return None if k is None else self.rules[k]

    def decide(
        self, device: int, direction: int, elapsed: float
    ) -> tuple[float, ...] | None:
        """Fate of one datagram of ``device`` at ``elapsed`` s after start."""
        k = self._rule_of.get(device)
        if k is None:
            return None
        rule = self.rules[k]
        if any(start <= elapsed < end for start, end in rule.outages):
            self.counts["outage"] += 1
            return ()
        rng = self._streams[k][direction]
        if rule.loss and rng.random() < rule.loss:
            self.counts["loss"] += 1
            return ()
        delay = rule.delay + (rng.uniform(0.0, rule.jitter) if rule.jitter else 0.0)
        if rule.reorder and rng.random() < rule.reorder:
            self.counts["reorder"] += 1
            delay += rng.uniform(*REORDER_HOLD)
        if delay:
            self.counts["delay"] += 1
        if rule.duplicate and rng.random() < rule.duplicate:
            self.counts["duplicate"] += 1
            return (delay, delay + DUPLICATE_GAP)
        return (delay,)

    def split(
        self, devices: Sequence[int], direction: int, elapsed: float
    ) -> tuple[list[int], list[tuple[int, tuple[float, ...]]]]:
        """:meth:`decide` for many datagrams, one per device, in order.

        Returns the devices that get theirs now (once, no delay) and the
        others with their fate (drop or delays). The draws, the counts and
        so the fates are those of calling :meth:`decide` device by device:
        a loss-only rule draws one number per datagram, inline here.
        """
        rule_of = self._rule_of
        now: list[int] = []
        held: list[tuple[int, tuple[float, ...]]] = []
        lossy = self._loss_only(direction, elapsed)
        lost = 0
        for i in devices:
            k = rule_of.get(i)
            if k is None:
                now.append(i)
                continue
            loss = lossy.get(k)
            if loss is None:
                fate = self.decide(i, direction, elapsed)
                if fate is None or fate == (0.0,):
                    now.append(i)
                else:
                    held.append((i, fate))
            elif loss[0] and loss[1]() < loss[0]:
                lost += 1
                held.append((i, ()))
            else:
                now.append(i)
        if lost:
            self.counts["loss"] += lost
        return now, held

    def _loss_only(
        self, direction: int, elapsed: float
    ) -> dict[int, tuple[float, Callable[[], float]]]:
        """Rules that can only drop at ``elapsed``: rule -> (loss, its draw)."""
        out = {}
        for k, rule in enumerate(self.rules):
            if rule.delay or rule.jitter or rule.reorder or rule.duplicate:
                continue
            if any(start <= elapsed < end for start, end in rule.outages):
                continue
            out[k] = (rule.loss, self._streams[k][direction].random)
        return out


@dataclass(frozen=True, slots=True)
class FaultAction:
    """Apply (or, with ``clear``, undo) rule ``rule`` to its devices."""

    rule: int
    kind: str
    clear: bool = False


class FaultSchedule:
    """When each device fault rule acts, as due actions (sans-IO)."""

    def __init__(self, rules: Sequence[DeviceFaultRule]) -> None:
        self.rules = tuple(rules)
        # (time, sequence, action), earliest last for cheap pops
        self._events: list[tuple[float, int, FaultAction]] = []
        for k, rule in enumerate(self.rules):
            self._events.append((rule.at, 2 * k, FaultAction(k, rule.kind)))
            static = rule.kind not in ("power_cycle", "reboot_loop")
            if static and math.isfinite(rule.until):
                clear = FaultAction(k, rule.kind, clear=True)
                self._events.append((rule.until, 2 * k + 1, clear))
        self._events.sort(reverse=True)

    def next_time(self) -> float | None:
        return self._events[-1][0] if self._events else None

    def due(self, elapsed: float) -> list[FaultAction]:
        """Actions due by ``elapsed``; reboot loops re-arm themselves."""
        out = []
        while self._events and self._events[-1][0] <= elapsed:
            when, seq, action = self._events.pop()
            out.append(action)
            rule = self.rules[action.rule]
            if action.kind == "reboot_loop" and not action.clear:
                following = when + rule.period
                if following < rule.until:
                    self._events.append((following, seq, action))
                    self._events.sort(reverse=True)
        return out
