"""Firmware groups and their membership rules (layer ``headend``, pure).

CSMP.md "Group flows": a device is in at most one firmware group (GroupAssign
type 2); the head-end assigns it and tells the device in its registration
answer or by a unicast POST, never by multicast.

A group has a case-insensitive name, a numeric CSMP group id, and where its
multicast traffic goes: a multicast address, a unicast "relay" address that
stands in for it (``[::1]:61629``), or nothing (unicast mode: everything is
sent to each member).

Membership, evaluated in this fixed order:

1. a group that lists the device's EUI-64 explicitly (lowest id first);
2. a group with attribute rules (``hardware_id``, ``prefix``) all of which
   match (lowest id first); a rule list matches when any entry does;
3. otherwise the default group ``default-cgmesh`` (id 1), which cannot be
   removed and whose own rules are ignored.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeAlias

logger = logging.getLogger(__name__)

Addr: TypeAlias = tuple[str, int]

DEFAULT_GROUP = "default-cgmesh"
DEFAULT_GROUP_ID = 1
MAX_GROUP_ID = 0xFFFFFFFF
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_EUI = re.compile(r"[0-9A-Fa-f]{16}")


@dataclass(frozen=True, slots=True)
class GroupSpec:
    """One firmware group: identity, multicast target and membership rules."""

    name: str
    """Display name; matched case-insensitively."""
    id: int = 0
    """CSMP firmware group id (GroupAssign/GroupMatch); 0 until assigned."""
    multicast: str = ""
    """Group address, ``[addr]:port`` relay stand-in, or "" for unicast mode."""
    hardware_ids: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    euis: tuple[str, ...] = ()
    """Explicit members, 16 upper-case hex digits each."""
    _networks: tuple[ipaddress.IPv6Network, ...] = field(
        default=(), compare=False, repr=False
    )

    @property
    def key(self) -> str:
        """The case-folded name (the lookup key)."""
        return self.name.lower()

    @property
    def has_rules(self) -> bool:
        return bool(self.hardware_ids or self.prefixes)

    def target(self, device_port: int) -> Addr | None:
        """Where group sends go, or None in unicast mode."""
        if not self.multicast:
            return None
        return parse_target(self.multicast, device_port)

    def matches_rules(self, address: str, hardware_id: str) -> bool:
        """Whether the attribute rules (all given kinds) accept a device."""
        if not self.has_rules:
            return False
        if self.hardware_ids and hardware_id not in self.hardware_ids:
            return False
        if self.prefixes:
            try:
                ip = ipaddress.IPv6Address(address.split("%", 1)[0])
            except ValueError:
                return False
            return any(ip in net for net in self._networks)
        return True

    def to_row(self) -> dict[str, Any]:
        """A plain mapping (for the store and the CLI)."""
        return {
            "name": self.name,
            "id": self.id,
            "multicast": self.multicast,
            "hardware_id": list(self.hardware_ids),
            "prefix": list(self.prefixes),
            "eui": list(self.euis),
        }


def parse_target(text: str, default_port: int) -> Addr:
    """``ff05::1`` or ``[::1]:61629`` as (address, port); ValueError if bad."""
    text = text.strip()
    port = default_port
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"bad address {text!r}")
        if rest:
            port = int(rest[1:])
            if not 0 < port <= 65535:
                raise ValueError(f"bad port in {text!r}")
        text = host
    ipaddress.IPv6Address(text.split("%", 1)[0])
    return text, port


def _strings(raw: Any, what: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
        raise ValueError(f"{what}: expected a list of strings")
    return tuple(v.strip() for v in raw if v.strip())


def make_group(
    name: str,
    *,
    id: int = 0,
    multicast: str = "",
    hardware_ids: Iterable[str] = (),
    prefixes: Iterable[str] = (),
    euis: Iterable[str] = (),
    device_port: int = 61628,
) -> GroupSpec:
    """A checked :class:`GroupSpec`; ValueError naming the bad field."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"name: {name!r} is not 1-64 of [A-Za-z0-9._-]")
    if not isinstance(id, int) or not 0 <= id <= MAX_GROUP_ID:
        raise ValueError(f"id: {id!r} is not 0..{MAX_GROUP_ID}")
    if multicast:
        try:
            parse_target(multicast, device_port)
        except ValueError as exc:
            raise ValueError(f"multicast: {exc}") from None
    nets = []
    for prefix in prefixes:
        try:
            nets.append(ipaddress.IPv6Network(prefix, strict=False))
        except ValueError as exc:
            raise ValueError(f"prefix: {exc}") from None
    eui_list = []
    for eui in euis:
        if not _EUI.fullmatch(eui):
            raise ValueError(f"eui: {eui!r} is not 16 hex digits")
        eui_list.append(eui.upper())
    return GroupSpec(
        name=name,
        id=id,
        multicast=multicast.strip(),
        hardware_ids=tuple(hardware_ids),
        prefixes=tuple(str(n) for n in nets),
        euis=tuple(eui_list),
        _networks=tuple(nets),
    )


_GROUP_KEYS = {"name", "id", "multicast", "hardware_id", "prefix", "eui"}


def parse_group_spec(entry: Any) -> GroupSpec:
    """A group from a config table or a stored row; ValueError if bad."""
    if not isinstance(entry, Mapping):
        raise ValueError("expected a table")
    unknown = sorted(set(entry) - _GROUP_KEYS)
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)}")
    group_id = entry.get("id", 0)
    if isinstance(group_id, bool) or not isinstance(group_id, int):
        raise ValueError("id: expected an integer")
    multicast = entry.get("multicast", "")
    if not isinstance(multicast, str):
        raise ValueError("multicast: expected a string")
    return make_group(
        entry.get("name", ""),
        id=group_id,
        multicast=multicast,
        hardware_ids=_strings(entry.get("hardware_id"), "hardware_id"),
        prefixes=_strings(entry.get("prefix"), "prefix"),
        euis=_strings(entry.get("eui"), "eui"),
    )


def default_group() -> GroupSpec:
    return make_group(DEFAULT_GROUP, id=DEFAULT_GROUP_ID)


class GroupTable:
    """The current groups, with membership resolution and lookups."""

    def __init__(self, specs: Iterable[GroupSpec] = ()) -> None:
        self._by_key: dict[str, GroupSpec] = {}
        self._by_id: dict[int, GroupSpec] = {}
        self.replace(specs)

    def replace(self, specs: Iterable[GroupSpec]) -> None:
        """Install a new set of groups (ids must be assigned and distinct)."""
        by_key = {DEFAULT_GROUP: default_group()}
        for spec in specs:
            by_key[spec.key] = spec
        self._by_key = by_key
        self._by_id = {g.id: g for g in by_key.values()}
        ordered = sorted(by_key.values(), key=lambda g: g.id)
        self._explicit = {
            eui: g
            for g in reversed(ordered)
            if g.key != DEFAULT_GROUP
            for eui in g.euis
        }
        self._ruled = [g for g in ordered if g.has_rules and g.key != DEFAULT_GROUP]

    def get(self, name: str) -> GroupSpec | None:
        """The group called ``name`` (any case), or None."""
        return self._by_key.get(name.strip().lower())

    def by_id(self, group_id: int) -> GroupSpec | None:
        return self._by_id.get(group_id)

    def __iter__(self) -> Iterator[GroupSpec]:
        return iter(sorted(self._by_key.values(), key=lambda g: g.id))

    def __len__(self) -> int:
        return len(self._by_key)

    def group_for(self, eui: str, address: str, hardware_id: str) -> GroupSpec:
        """The group a device belongs to, by the rules in the module doc."""
        explicit = self._explicit.get(eui)
        if explicit is not None:
            return explicit
        for group in self._ruled:
            if group.matches_rules(address, hardware_id):
                return group
        return self._by_key[DEFAULT_GROUP]


def assign_ids(
    specs: Iterable[GroupSpec], taken: Iterable[int] = ()
) -> list[GroupSpec]:
    """Give groups with id 0 the next free ids (the default keeps 1)."""
    result: list[GroupSpec] = []
    used = {DEFAULT_GROUP_ID, *taken}
    used.update(s.id for s in specs if s.id)
    next_id = 2
    for spec in specs:
        if spec.id or spec.key == DEFAULT_GROUP:
            result.append(spec)
            continue
        while next_id in used:
            next_id += 1
        used.add(next_id)
        result.append(replace(spec, id=next_id))
    return result
