"""Head-end configuration (layer ``headend``, pure): TOML -> frozen dataclasses.

Every key is optional: no file at all gives a working head-end (CSMP on
``[::]:61628``, HTTP on ``[::]:8080``, the default group ``default-cgmesh``).
:func:`parse_config` checks the whole document and raises one
:class:`ConfigError` listing every problem, each prefixed with its key path.

Keys and defaults (``[section] key = default``)::

    [csmp]
    listen = "::"                # CSMP (UDP) listen address
    port = 61628                 # 0: any free port (tests)
    device_port = 61628          # port of multicast destinations
    multicast_interface = ""     # name or index for multicast sends; "" = default
    multicast_hops = 8
    ack_timeout = 2.0            # CoAP CON retransmission (RFC 7252 4.8)
    max_retransmit = 4

    [nms]
    report_interval = 300        # ReportSubscribe interval (s)
    report_tlvs = ["22", "75"]   # ReportSubscribe ids
    reg_interval_min = 30        # CGMSSettings
    reg_interval_max = 600
    down_after = 0               # silence before "down" (s); 0: 3 x interval
    signature_validity = 3600    # SignatureValidity window after now (s)
    key_file = ""                # NMS P-256 key PEM; "": <state>/nms-key.pem

    [http]
    listen = "::"
    port = 8080                  # 0: any free port; -1: no HTTP server
    live_view = true             # the live page at / and its JSON API at /api/

    [upload]
    block_size = 512             # preferred; doubled up to 1024 for big files
    pace = 50.0                  # blocks per second; 0 = unpaced
    batch = 64                   # sends per step at most
    async_window = 10            # "a=" of multicast requests (s)
    grace = 2.0                  # extra wait after a window (s)
    max_rounds = 8               # unicast fill-in rounds per device
    max_attempts = 3             # failed CON exchanges before "unreachable"
    max_duration = 3600          # an upload gives up after this (s)
    unicast_parallel = 32        # devices served by unicast at once
    max_operations = 4           # concurrent group operations (-11 beyond)

    [commands]                   # setBackupFirmwareImage, scheduleReload
    async_window = 10
    wait = 60                    # the operation returns after at most this (s)
    reload_timeout = 900         # RELOADING -> RELOADED after this (s)

    [images]
    verify_key = ""              # PEM: images must carry a valid signature

    [store]
    flush_interval = 0.2         # writer thread batching (s)
    poll_interval = 2.0          # pick up CLI changes to groups/images (s)

    [[groups]]                   # seeded into the state dir at start
    name = "meters"
    id = 2                       # CSMP firmware group id (0: next free)
    multicast = "ff05::6d66:0:0:2"   # or "[::1]:61629" (relay), "" = unicast
    hardware_id = ["OPENCSMP"]   # membership rules, see groups.py
    prefix = ["fd00:6d66::/64"]
    eui = ["00173BAB00000001"]

    [nbapi.users.NAME]           # see emulator.nbapi.auth
    role = "operator"
    password_hash = "scrypt$..."
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from emulator.headend.groups import GroupSpec, parse_group_spec

logger = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A head-end configuration with problems; ``problems`` lists them all."""

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s):\n{lines}")


@dataclass(frozen=True, slots=True)
class CsmpConfig:
    listen: str = "::"
    """Address the CSMP UDP socket binds to."""
    port: int = 61628
    """CSMP port of the head-end; 0 picks a free one."""
    device_port: int = 61628
    """Destination port of multicast (and relay) sends."""
    multicast_interface: str = ""
    """Interface name or index for multicast sends; "" leaves the default."""
    multicast_hops: int = 8
    ack_timeout: float = 2.0
    max_retransmit: int = 4


@dataclass(frozen=True, slots=True)
class NmsConfig:
    report_interval: int = 300
    """ReportSubscribe interval sent in every registration answer (s)."""
    report_tlvs: tuple[str, ...] = ("22", "75")
    reg_interval_min: int = 30
    reg_interval_max: int = 600
    down_after: float = 0.0
    """Silence after which a device is down; 0: 3 x report_interval."""
    signature_validity: int = 3600
    key_file: str = ""

    @property
    def silence_limit(self) -> float:
        """Seconds of silence after which a device counts as down."""
        if self.down_after > 0:
            return self.down_after
        return 3.0 * max(self.report_interval, self.reg_interval_max, 1)


@dataclass(frozen=True, slots=True)
class HttpConfig:
    listen: str = "::"
    port: int = 8080
    """0 picks a free port, -1 disables HTTP."""
    live_view: bool = True
    """Serve the live page (``/``, ``/api/...``; emulator.web) next to the NB API."""


@dataclass(frozen=True, slots=True)
class UploadConfig:
    block_size: int = 512
    pace: float = 50.0
    """Blocks per second (multicast and unicast together); 0 = unpaced."""
    batch: int = 64
    async_window: int = 10
    grace: float = 2.0
    max_rounds: int = 8
    max_attempts: int = 3
    max_duration: float = 3600.0
    unicast_parallel: int = 32
    max_operations: int = 4


@dataclass(frozen=True, slots=True)
class CommandConfig:
    async_window: int = 10
    wait: float = 60.0
    reload_timeout: float = 900.0


@dataclass(frozen=True, slots=True)
class ImagesConfig:
    verify_key: str = ""


@dataclass(frozen=True, slots=True)
class StoreConfig:
    flush_interval: float = 0.2
    poll_interval: float = 2.0


@dataclass(frozen=True, slots=True)
class HeadEndConfig:
    """The whole head-end configuration."""

    csmp: CsmpConfig = field(default_factory=CsmpConfig)
    nms: NmsConfig = field(default_factory=NmsConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    upload: UploadConfig = field(default_factory=UploadConfig)
    commands: CommandConfig = field(default_factory=CommandConfig)
    images: ImagesConfig = field(default_factory=ImagesConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    groups: tuple[GroupSpec, ...] = ()
    users: Mapping[str, Any] = field(default_factory=dict)
    """The raw ``[nbapi.users]`` table (checked by emulator.nbapi.auth)."""


# ------------------------------------------------------------------ checks

#: (predicate, message) applied to numeric keys, by "section.key"
_Check = tuple[Callable[[Any], bool], str]
_POSITIVE: _Check = (lambda v: v > 0, "must be > 0")
_NON_NEGATIVE: _Check = (lambda v: v >= 0, "must be >= 0")
_PORT: _Check = (lambda v: 0 <= v <= 65535, "must be 0..65535")
_CHECKS: dict[str, _Check] = {
    "csmp.port": _PORT,
    "csmp.device_port": (lambda v: 0 < v <= 65535, "must be 1..65535"),
    "csmp.multicast_hops": (lambda v: 0 < v <= 255, "must be 1..255"),
    "csmp.ack_timeout": _POSITIVE,
    "csmp.max_retransmit": _NON_NEGATIVE,
    "nms.report_interval": _NON_NEGATIVE,
    "nms.reg_interval_min": _POSITIVE,
    "nms.reg_interval_max": _POSITIVE,
    "nms.down_after": _NON_NEGATIVE,
    "nms.signature_validity": _POSITIVE,
    "http.port": (lambda v: -1 <= v <= 65535, "must be -1..65535"),
    "upload.block_size": (lambda v: 16 <= v <= 1024, "must be 16..1024"),
    "upload.pace": _NON_NEGATIVE,
    "upload.batch": _POSITIVE,
    "upload.async_window": _NON_NEGATIVE,
    "upload.grace": _NON_NEGATIVE,
    "upload.max_rounds": _POSITIVE,
    "upload.max_attempts": _POSITIVE,
    "upload.max_duration": _POSITIVE,
    "upload.unicast_parallel": _POSITIVE,
    "upload.max_operations": _POSITIVE,
    "commands.async_window": _NON_NEGATIVE,
    "commands.wait": _POSITIVE,
    "commands.reload_timeout": _POSITIVE,
    "store.flush_interval": _POSITIVE,
    "store.poll_interval": _POSITIVE,
}

_SECTIONS: dict[str, type[Any]] = {
    "csmp": CsmpConfig,
    "nms": NmsConfig,
    "http": HttpConfig,
    "upload": UploadConfig,
    "commands": CommandConfig,
    "images": ImagesConfig,
    "store": StoreConfig,
}


def _coerce(value: Any, default: Any, path: str, problems: list[str]) -> Any:
    """``value`` converted to the type of ``default``; None after a problem."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
    elif isinstance(default, tuple):
        if isinstance(value, list) and all(isinstance(v, str | int) for v in value):
            return tuple(str(v) for v in value)
    kind = type(default).__name__ if not isinstance(default, tuple) else "list"
    problems.append(f"{path}: expected {kind}, got {type(value).__name__}")
    return None


def _section(name: str, table: Any, problems: list[str]) -> Any:
    cls = _SECTIONS[name]
    default = cls()
    if not isinstance(table, Mapping):
        problems.append(f"{name}: expected a table")
        return default
    known = {f.name for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in table.items():
        path = f"{name}.{key}"
        if key not in known:
            problems.append(f"{path}: unknown key")
            continue
        got = _coerce(value, getattr(default, key), path, problems)
        if got is None:
            continue
        check = _CHECKS.get(path)
        if check is not None and not check[0](got):
            problems.append(f"{path}: {check[1]} (got {got!r})")
            continue
        values[key] = got
    return cls(**values)


def _groups(raw: Any, problems: list[str]) -> tuple[GroupSpec, ...]:
    if not isinstance(raw, list):
        problems.append("groups: expected an array of tables ([[groups]])")
        return ()
    specs: list[GroupSpec] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw):
        try:
            spec = parse_group_spec(entry)
        except ValueError as exc:
            problems.append(f"groups[{i}]: {exc}")
            continue
        if spec.key in seen:
            problems.append(f"groups[{i}].name: duplicate group {spec.name!r}")
        seen.add(spec.key)
        specs.append(spec)
    return tuple(specs)


def parse_config(doc: Mapping[str, Any], source: str = "config") -> HeadEndConfig:
    """A checked configuration from a parsed TOML document."""
    problems: list[str] = []
    sections: dict[str, Any] = {}
    groups: tuple[GroupSpec, ...] = ()
    users: Mapping[str, Any] = {}
    for key, value in doc.items():
        if key in _SECTIONS:
            sections[key] = _section(key, value, problems)
        elif key == "groups":
            groups = _groups(value, problems)
        elif key == "nbapi":
            users = _users(value, problems)
        else:
            problems.append(f"{key}: unknown section")
    nms = sections.get("nms", NmsConfig())
    if nms.reg_interval_min > nms.reg_interval_max:
        problems.append("nms.reg_interval_min: must be <= nms.reg_interval_max")
    if problems:
        raise ConfigError(problems, source)
    return HeadEndConfig(**sections, groups=groups, users=users)


def _users(raw: Any, problems: list[str]) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        problems.append("nbapi: expected a table")
        return {}
    for key in raw:
        if key != "users":
            problems.append(f"nbapi.{key}: unknown key")
    users = raw.get("users", {})
    if not isinstance(users, Mapping):
        problems.append("nbapi.users: expected a table")
        return {}
    from emulator.nbapi.auth import users_from_config

    try:
        users_from_config(users)
    except ValueError as exc:
        problems.append(f"nbapi.users: {exc}")
    return dict(users)


def load_config(path: Path | None) -> HeadEndConfig:
    """Read and check a TOML file; None gives the defaults."""
    if path is None:
        return HeadEndConfig()
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"cannot read: {exc.strerror}"], str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"not valid TOML: {exc}"], str(path)) from None
    return parse_config(doc, str(path))
