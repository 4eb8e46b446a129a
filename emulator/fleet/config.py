"""Fleet configuration (layer ``fleet``, pure): TOML -> a tree of dataclasses.

A fleet file describes what ``meshfleet fleet run`` emulates: how many devices
(or a CSV inventory of them), their addresses (DESIGN.md "transport"), their
hardware mixes and initial firmware (CSMP.md "Firmware slots"), registration
and report timers (CSMP.md "Transport"), signing (CSMP.md "Signed POSTs"),
multicast (CSMP.md "Group flows") and faults. Every key is optional; an empty
file (or none) gives a working fleet of 100 devices registering to
``[::1]:61628``.

Validation reports every problem at once: :func:`parse_config` collects them
and raises one :class:`ConfigError` whose ``problems`` lists them all, each
prefixed with its key path (``hardware[1].weight: must be > 0``).

Versions stay strings. TOML would read ``version = 6.10`` as the float 6.1,
so a number where a version belongs is an error that asks for quotes, and a
CSV inventory is read as text only.

Keys and defaults (``[section] key = default``)::

    [fleet]
    devices = 100              # ignored when inventory is given
    inventory = ""             # CSV: eui64,address,hardware_id,model,versions
    prefix = "fd00:6d66::/64"  # device address = prefix + SLAAC IID(EUI-64)
    eui64_base = "00173bab00000001"
    port = 61628               # CSMP port of every device
    nms = "[::1]:61628"        # where devices register and report
    seed = 1                   # every random choice derives from it
    addressing = "auto"        # auto | prefix | loopback-ports
    interface = "lo"           # where the local route and joins go
    port_base = 30000          # loopback-ports: device i on [::1]:port_base+i
    boot_time = 2.0            # seconds a device stays silent after power-on
    power_on_jitter = 3.0      # power-ons spread uniformly over this (s)
    snapshot_interval = 10.0   # --state snapshots every N seconds
    metrics_host = "::1"       # control API / metrics listen address
    metrics_port = 0           # 0: no HTTP server

    [registration]
    min = 5.0                  # retry timer bounds (CGMSSettings reg min/max)
    max = 60.0
    ack_timeout = 2.0          # CoAP CON retransmission of registrations (s)

    [reports]
    interval = 0               # ReportSubscribe interval until the NMS says (s)
    tlvs = [22, 23, 75]

    [security]
    require_signed_post = false
    require_valid_check = false
    require_signed_response = false
    nms_certificate = ""       # PEM path: certificate or public key of the NMS

    [multicast]
    mode = "auto"              # auto | join | relay | off
    base = "ff05::6d66:0:0:0"  # group address = base + group id
    relay = "[::1]:61629"      # relay mode: the unicast stand-in
    interface = ""             # "" = fleet.interface
    groups = {}                # explicit "group id" = "address"

    [[hardware]]               # default: one mix "meter"
    name = "meter"
    weight = 1.0
    hardware_id = "OPENCSMP"
    model = "OPENCSMP-NODE"
    function = 1               # HardwareDesc Function: 1 meter, 2 extender...
    vendor_hw_id = ""
    fnd_device_type = "cgmesh"
    [[hardware.images]]        # default: run slot, version "6.8.1"
    slot = "run"               # run | upload | backup
    version = "6.8.1"
    size = 24000               # generated payload bytes (ignored with file)
    file = ""                  # a built image file instead of a generated one

    [[faults.link]]            # see emulator.fleet.faults
    [[faults.device]]
"""

from __future__ import annotations

import ipaddress
import logging
import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from emulator.firmware.image import ImageError, parse_version

logger = logging.getLogger(__name__)

ADDRESSING_MODES = ("auto", "prefix", "loopback-ports")
MULTICAST_MODES = ("auto", "join", "relay", "off")
SLOTS = ("run", "upload", "backup")
DEFAULT_PORT = 61628


class ConfigError(ValueError):
    """A fleet configuration with problems; ``problems`` lists every one."""

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = list(problems)
        self.source = source
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s):\n{lines}")


# ------------------------------------------------------------------ the tree


@dataclass(frozen=True, slots=True)
class ImageSpec:
    """The initial content of one firmware slot."""

    slot: str = "run"
    """``run``, ``upload`` or ``backup``."""
    version: str = "6.8.1"
    """major.minor.build, as a string."""
    size: int = 24000
    """Payload bytes of a generated image."""
    file: str = ""
    """Path of a built image file; empty: generate from hwid and version."""


@dataclass(frozen=True, slots=True)
class HardwareMix:
    """One kind of device and its share of the fleet."""

    name: str = "meter"
    weight: float = 1.0
    """Relative share; mixes are drawn per device from the seed."""
    hardware_id: str = "OPENCSMP"
    """CSMP hwId (TransferRequest hwInfo, image header hwid)."""
    model: str = "OPENCSMP-NODE"
    """HardwareDesc entPhysicalModelName."""
    function: int = 1
    """HardwareDesc Function: 1 meter, 2 range extender, 3 gateway, 4 cge."""
    vendor_hw_id: str = ""
    fnd_device_type: str = "cgmesh"
    """deviceType column of the FND import CSV."""
    images: tuple[ImageSpec, ...] = (ImageSpec(),)


@dataclass(frozen=True, slots=True)
class RegistrationConfig:
    min: float = 5.0
    """Shortest registration retry interval (seconds)."""
    max: float = 60.0
    """Longest registration retry interval (seconds)."""
    ack_timeout: float = 2.0
    """CoAP ACK timeout of the devices' CON requests (RFC 7252 4.8)."""


@dataclass(frozen=True, slots=True)
class ReportConfig:
    interval: int = 0
    """Periodic report interval until the NMS subscribes (0: none)."""
    tlvs: tuple[int, ...] = (22, 23, 75)


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    require_signed_post: bool = False
    require_valid_check: bool = False
    require_signed_response: bool = False
    nms_certificate: str = ""
    """PEM file with the NMS certificate or public key (ECDSA P-256)."""


@dataclass(frozen=True, slots=True)
class MulticastConfig:
    mode: str = "auto"
    """``join`` a real group, ``relay`` on a unicast port, ``off``; ``auto``:
    join with prefix addressing, relay with loopback ports."""
    base: str = "ff05::6d66:0:0:0"
    """Group address of firmware group id g: ``base + g``."""
    relay: str = "[::1]:61629"
    interface: str = ""
    groups: tuple[tuple[int, str], ...] = ()
    """Explicit (group id, address) pairs, taking precedence over ``base``."""


@dataclass(frozen=True, slots=True)
class InventoryEntry:
    """One device of a CSV inventory."""

    eui64: int
    address: str = ""
    hardware_id: str = ""
    model: str = ""
    versions: tuple[str, ...] = ()
    """Slot versions: run, then upload, then backup ("" leaves a slot out)."""


@dataclass(frozen=True, slots=True)
class LinkRule:
    """Link faults for a set of devices (see :mod:`emulator.fleet.faults`)."""

    devices: tuple[int, ...] = ()
    """EUI-64s this rule is for (none: use ``hardware`` / ``fraction``)."""
    hardware: str = ""
    """Name of a hardware mix ("" any)."""
    fraction: float = 1.0
    """Share of the matching devices, drawn from the seed."""
    loss: float = 0.0
    delay: float = 0.0
    jitter: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    outages: tuple[tuple[float, float], ...] = ()
    """(start, end) seconds after fleet start during which the link is down."""


@dataclass(frozen=True, slots=True)
class DeviceFaultRule:
    """A scheduled device fault (see :mod:`emulator.fleet.faults`)."""

    kind: str = "power_cycle"
    devices: tuple[int, ...] = ()
    hardware: str = ""
    fraction: float = 1.0
    at: float = 0.0
    """Seconds after fleet start."""
    period: float = 0.0
    """reboot_loop: power cycle every ``period`` seconds."""
    until: float = math.inf
    code: int = 6
    """refuse_transfer: TransferResponse code to answer with."""
    rate: float = 1.0
    """flash_error: probability that writing a block fails."""


@dataclass(frozen=True, slots=True)
class FaultsConfig:
    link: tuple[LinkRule, ...] = ()
    device: tuple[DeviceFaultRule, ...] = ()


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """The whole configuration; build with :func:`parse_config`."""

    devices: int = 100
    inventory: tuple[InventoryEntry, ...] = ()
    prefix: str = "fd00:6d66::/64"
    eui64_base: int = 0x00173BAB00000001
    port: int = DEFAULT_PORT
    nms: tuple[str, int] = ("::1", DEFAULT_PORT)
    seed: int = 1
    addressing: str = "auto"
    interface: str = "lo"
    port_base: int = 30000
    boot_time: float = 2.0
    power_on_jitter: float = 3.0
    snapshot_interval: float = 10.0
    metrics_host: str = "::1"
    metrics_port: int = 0
    registration: RegistrationConfig = RegistrationConfig()
    reports: ReportConfig = ReportConfig()
    security: SecurityConfig = SecurityConfig()
    multicast: MulticastConfig = MulticastConfig()
    hardware: tuple[HardwareMix, ...] = (HardwareMix(),)
    faults: FaultsConfig = FaultsConfig()
    shard: tuple[int, int] = (0, 1)
    """(i, n): this process emulates the devices of slice i of n."""
    state_dir: str = ""

    @property
    def device_count(self) -> int:
        """Devices of the whole fleet (all shards)."""
        return len(self.inventory) if self.inventory else self.devices


# ------------------------------------------------------------------ parsing


class TableReader:
    """Reads typed values out of a TOML table, collecting problems."""

    def __init__(self, table: Mapping[str, Any], where: str, problems: list[str]):
        self.table = table
        self.where = where
        self.problems = problems
        self.known: set[str] = set()

    def path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def problem(self, key: str, text: str) -> None:
        self.problems.append(f"{self.path(key)}: {text}")

    def get(self, key: str, default: Any, check: Callable[[Any], str | None]) -> Any:
        self.known.add(key)
        if key not in self.table:
            return default
        value = self.table[key]
        error = check(value)
        if error:
            self.problem(key, error)
            return default
        return value

    def num(self, key: str, default: float, low: float = 0.0) -> float:
        value: float = self.get(key, default, _is_number)
        if value < low:
            self.problem(key, f"must be >= {low:g}")
            return default
        return float(value)

    def int_(self, key: str, default: int, low: int = 0, high: int = 2**63) -> int:
        value: int = self.get(key, default, _is_int)
        if not low <= value <= high:
            self.problem(key, f"must be in {low}..{high}")
            return default
        return value

    def str_(self, key: str, default: str, choices: tuple[str, ...] = ()) -> str:
        value: str = self.get(key, default, _is_str)
        if choices and value not in choices:
            self.problem(key, f"{value!r} is not one of {', '.join(choices)}")
            return default
        return value

    def bool_(self, key: str, default: bool) -> bool:
        return bool(self.get(key, default, _is_bool))

    def sub(self, key: str) -> TableReader:
        table = self.get(key, {}, _is_table)
        return TableReader(table, self.path(key), self.problems)

    def tables(self, key: str) -> list[TableReader]:
        items = self.get(key, [], _is_table_list)
        return [
            TableReader(t, f"{self.path(key)}[{i}]", self.problems)
            for i, t in enumerate(items)
        ]

    def finish(self) -> None:
        for key in sorted(set(self.table) - self.known):
            self.problem(key, "unknown key")


def _is_number(v: Any) -> str | None:
    ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    return None if ok else f"expected a number, got {v!r}"


def _is_int(v: Any) -> str | None:
    ok = isinstance(v, int) and not isinstance(v, bool)
    return None if ok else f"expected an integer, got {v!r}"


def _is_str(v: Any) -> str | None:
    if isinstance(v, float):
        return f"expected a string, got the number {v!r}: quote it"
    return None if isinstance(v, str) else f"expected a string, got {v!r}"


def _is_bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else f"expected true or false, got {v!r}"


def _is_table(v: Any) -> str | None:
    return None if isinstance(v, dict) else "expected a table"


def _is_table_list(v: Any) -> str | None:
    ok = isinstance(v, list) and all(isinstance(t, dict) for t in v)
    return None if ok else "expected an array of tables"


def _is_version(v: Any) -> str | None:
    if isinstance(v, int | float) and not isinstance(v, bool):
        return f'version {v!r} is a number: write it as a string, e.g. "{v}"'
    return _is_str(v)


def parse_address(text: str, *, allow_zero: bool = False) -> tuple[str, int]:
    """``[addr]:port``, ``addr`` (port 61628) -> (normalized addr, port).

    ``allow_zero`` accepts port 0 (any free port, for tests).
    """
    host, port = text, DEFAULT_PORT
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValueError(f"missing ']' in {text!r}")
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                raise ValueError(f"bad port in {text!r}")
            port = int(rest[1:])
    if not (0 if allow_zero else 1) <= port < 65536:
        raise ValueError(f"port {port} out of range")
    return str(ipaddress.IPv6Address(host)), port


def parse_eui64(text: str) -> int:
    """16 hex digits (separators ``-`` and ``:`` allowed) -> int."""
    digits = text.replace("-", "").replace(":", "")
    if len(digits) != 16:
        raise ValueError(f"EUI-64 {text!r} is not 16 hex digits")
    return int(digits, 16)


def _read_images(mix: TableReader, problems: list[str]) -> tuple[ImageSpec, ...]:
    if "images" not in mix.table:
        mix.known.add("images")
        return (ImageSpec(),)
    specs = []
    for r in mix.tables("images"):
        spec = ImageSpec(
            slot=r.str_("slot", "run", SLOTS),
            version=r.get("version", "6.8.1", _is_version),
            size=r.int_("size", 24000, 1, 512 * 1024),
            file=r.str_("file", ""),
        )
        if not spec.file:
            try:
                parse_version(spec.version)
            except ImageError:
                r.problem("version", f"{spec.version!r} is not major.minor.build")
        r.finish()
        specs.append(spec)
    slots = [s.slot for s in specs]
    for slot in sorted({s for s in slots if slots.count(s) > 1}):
        mix.problem("images", f"slot {slot!r} given more than once")
    if "run" not in slots and specs:
        mix.problem("images", "no image for the run slot")
    return tuple(specs)


def _read_hardware(root: TableReader) -> tuple[HardwareMix, ...]:
    if "hardware" not in root.table:
        root.known.add("hardware")
        return (HardwareMix(),)
    mixes: list[HardwareMix] = []
    for r in root.tables("hardware"):
        mix = HardwareMix(
            name=r.str_("name", f"mix{len(mixes)}"),
            weight=r.num("weight", 1.0),
            hardware_id=r.str_("hardware_id", "OPENCSMP"),
            model=r.str_("model", "OPENCSMP-NODE"),
            function=r.int_("function", 1, 0, 255),
            vendor_hw_id=r.str_("vendor_hw_id", ""),
            fnd_device_type=r.str_("fnd_device_type", "cgmesh"),
            images=_read_images(r, root.problems),
        )
        if mix.weight <= 0:
            r.problem("weight", "must be > 0")
        if not mix.hardware_id or len(mix.hardware_id) > 32:
            r.problem("hardware_id", "must be 1..32 characters")
        r.finish()
        mixes.append(mix)
    names = [m.name for m in mixes]
    for name in sorted({n for n in names if names.count(n) > 1}):
        root.problem("hardware", f"mix name {name!r} used more than once")
    if not mixes:
        root.problem("hardware", "needs at least one mix")
    return tuple(mixes) or (HardwareMix(),)


def _read_selection(r: TableReader) -> dict[str, Any]:
    euis = []
    for text in r.get("devices", [], _is_str_list):
        try:
            euis.append(parse_eui64(text))
        except ValueError as exc:
            r.problem("devices", str(exc))
    fraction = r.num("fraction", 1.0)
    if fraction > 1.0:
        r.problem("fraction", "must be <= 1")
    return {
        "devices": tuple(euis),
        "hardware": r.str_("hardware", ""),
        "fraction": min(fraction, 1.0),
    }


def _is_str_list(v: Any) -> str | None:
    ok = isinstance(v, list) and all(isinstance(x, str) for x in v)
    return None if ok else "expected a list of strings"


def _is_window_list(v: Any) -> str | None:
    ok = isinstance(v, list) and all(
        isinstance(w, list) and len(w) == 2 and not any(_is_number(x) for x in w)
        for w in v
    )
    return None if ok else "expected a list of [start, end] pairs"


def read_link_rule(r: TableReader) -> LinkRule:
    """One ``[[faults.link]]`` table (also used by the control API)."""
    selection = _read_selection(r)
    probs = {k: r.num(k, 0.0) for k in ("loss", "duplicate", "reorder")}
    for key, value in probs.items():
        if value > 1.0:
            r.problem(key, "is a probability: must be <= 1")
            probs[key] = 0.0
    devices: tuple[int, ...] = selection["devices"]
    windows = r.get("outages", [], _is_window_list)
    for start, end in windows:
        if end <= start:
            r.problem("outages", f"window [{start}, {end}] ends before it starts")
    rule = LinkRule(
        delay=r.num("delay", 0.0),
        jitter=r.num("jitter", 0.0),
        outages=tuple((float(a), float(b)) for a, b in windows),
        loss=probs["loss"],
        duplicate=probs["duplicate"],
        reorder=probs["reorder"],
        devices=devices,
        hardware=selection["hardware"],
        fraction=selection["fraction"],
    )
    r.finish()
    return rule


DEVICE_FAULT_KINDS = (
    "power_cycle",
    "reboot_loop",
    "refuse_transfer",
    "flash_error",
    "boot_fail",
)


def read_device_rule(r: TableReader) -> DeviceFaultRule:
    """One ``[[faults.device]]`` table."""
    selection = _read_selection(r)
    rule = DeviceFaultRule(
        kind=r.str_("kind", "power_cycle", DEVICE_FAULT_KINDS),
        at=r.num("at", 0.0),
        period=r.num("period", 0.0),
        until=r.num("until", math.inf),
        code=r.int_("code", 6, 0, 255),
        rate=r.num("rate", 1.0),
        **selection,
    )
    if rule.rate > 1.0:
        r.problem("rate", "is a probability: must be <= 1")
    if rule.kind == "reboot_loop" and rule.period <= 0:
        r.problem("period", "reboot_loop needs period > 0")
    r.finish()
    return rule


def _read_faults(root: TableReader) -> FaultsConfig:
    r = root.sub("faults")
    link = tuple(read_link_rule(t) for t in r.tables("link"))
    device = tuple(read_device_rule(t) for t in r.tables("device"))
    r.finish()
    return FaultsConfig(link=link, device=device)


def _read_multicast(root: TableReader) -> MulticastConfig:
    r = root.sub("multicast")
    groups = []
    for key, value in r.get("groups", {}, _is_table).items():
        try:
            address = ipaddress.IPv6Address(value)
            if not address.is_multicast or not key.isdigit():
                raise ValueError(f"{value!r} is not a multicast address")
            groups.append((int(key), str(address)))
        except (ValueError, TypeError) as exc:
            r.problem("groups", f"{key!r}: {exc}")
    mc = MulticastConfig(
        mode=r.str_("mode", "auto", MULTICAST_MODES),
        base=r.str_("base", "ff05::6d66:0:0:0"),
        relay=r.str_("relay", "[::1]:61629"),
        interface=r.str_("interface", ""),
        groups=tuple(groups),
    )
    try:
        if not ipaddress.IPv6Address(mc.base).is_multicast:
            r.problem("base", f"{mc.base!r} is not a multicast address")
    except ValueError as exc:
        r.problem("base", str(exc))
    try:
        parse_address(mc.relay, allow_zero=True)
    except ValueError as exc:
        r.problem("relay", str(exc))
    r.finish()
    return mc


def _read_small_sections(
    root: TableReader,
) -> tuple[RegistrationConfig, ReportConfig, SecurityConfig]:
    r = root.sub("registration")
    reg = RegistrationConfig(
        min=r.num("min", 5.0),
        max=r.num("max", 60.0),
        ack_timeout=r.num("ack_timeout", 2.0),
    )
    if reg.max < reg.min:
        r.problem("max", f"must be >= min ({reg.min:g})")
    if not reg.ack_timeout > 0:
        r.problem("ack_timeout", "must be > 0")
    r.finish()
    r = root.sub("reports")
    tlvs = r.get("tlvs", [22, 23, 75], _is_int_list)
    rep = ReportConfig(interval=r.int_("interval", 0), tlvs=tuple(tlvs))
    r.finish()
    r = root.sub("security")
    sec = SecurityConfig(
        require_signed_post=r.bool_("require_signed_post", False),
        require_valid_check=r.bool_("require_valid_check", False),
        require_signed_response=r.bool_("require_signed_response", False),
        nms_certificate=r.str_("nms_certificate", ""),
    )
    if sec.nms_certificate and not Path(sec.nms_certificate).is_file():
        r.problem("nms_certificate", f"no such file {sec.nms_certificate!r}")
    needs_key = sec.require_signed_post or sec.require_signed_response
    if needs_key and not sec.nms_certificate:
        r.problem("nms_certificate", "required when signatures are required")
    r.finish()
    return reg, rep, sec


def _is_int_list(v: Any) -> str | None:
    ok = isinstance(v, list) and all(isinstance(x, int) for x in v)
    return None if ok else "expected a list of integers"


def _read_fleet(r: TableReader, base: Path | None) -> dict[str, Any]:
    values: dict[str, Any] = {
        "devices": r.int_("devices", 100, 0, 10_000_000),
        "prefix": r.str_("prefix", "fd00:6d66::/64"),
        "port": r.int_("port", DEFAULT_PORT, 0, 65535),
        "seed": r.int_("seed", 1),
        "addressing": r.str_("addressing", "auto", ADDRESSING_MODES),
        "interface": r.str_("interface", "lo"),
        "port_base": r.int_("port_base", 30000, 1, 65535),
        "boot_time": r.num("boot_time", 2.0),
        "power_on_jitter": r.num("power_on_jitter", 3.0),
        "snapshot_interval": r.num("snapshot_interval", 10.0, 0.1),
        "metrics_host": r.str_("metrics_host", "::1"),
        "metrics_port": r.int_("metrics_port", 0, 0, 65535),
    }
    try:
        values["eui64_base"] = parse_eui64(r.str_("eui64_base", "00173bab00000001"))
    except ValueError as exc:
        r.problem("eui64_base", str(exc))
    try:
        values["nms"] = parse_address(r.str_("nms", "[::1]:61628"))
    except ValueError as exc:
        r.problem("nms", str(exc))
    inventory = r.str_("inventory", "")
    if inventory:
        path = Path(inventory)
        if base is not None and not path.is_absolute():
            path = base / path
        values["inventory"] = _read_inventory_file(path, r)
    r.finish()
    return values


def _read_inventory_file(path: Path, r: TableReader) -> tuple[InventoryEntry, ...]:
    from emulator.fleet.inventory import InventoryError, read_inventory_csv

    try:
        return read_inventory_csv(path.read_text(encoding="utf-8"))
    except OSError as exc:
        r.problem("inventory", f"cannot read {path}: {exc.strerror}")
    except InventoryError as exc:
        r.problems.extend(f"inventory {path}: {p}" for p in exc.problems)
    return ()


def check_prefix(prefix: str) -> str | None:
    """Why ``prefix`` cannot hold SLAAC addresses, or None."""
    try:
        net = ipaddress.IPv6Network(prefix, strict=True)
    except ValueError as exc:
        return str(exc)
    if net.prefixlen > 64:
        return f"/{net.prefixlen} leaves no room for a 64-bit interface id"
    return None


def parse_config(
    data: Mapping[str, Any], *, base: Path | None = None, source: str = "config"
) -> FleetConfig:
    """Build and validate a :class:`FleetConfig` from a TOML document's dict."""
    problems: list[str] = []
    root = TableReader(data, "", problems)
    values = _read_fleet(root.sub("fleet"), base)
    reg, rep, sec = _read_small_sections(root)
    config = FleetConfig(
        registration=reg,
        reports=rep,
        security=sec,
        multicast=_read_multicast(root),
        hardware=_read_hardware(root),
        faults=_read_faults(root),
        **values,
    )
    root.finish()
    problems.extend(check_config(config))
    if problems:
        raise ConfigError(problems, source)
    return config


def check_config(config: FleetConfig) -> list[str]:
    """Cross-field problems (also re-run after command-line overrides)."""
    problems = []
    error = check_prefix(config.prefix)
    if error:
        problems.append(f"fleet.prefix: {error}")
    i, n = config.shard
    if not (n >= 1 and 0 <= i < n):
        problems.append(f"shard: {i}/{n} is not i/n with 0 <= i < n")
    if config.eui64_base + config.device_count > 2**64:
        problems.append("fleet.eui64_base: base + devices exceeds 64 bits")
    if config.addressing == "loopback-ports":
        if config.port_base + config.device_count > 65536:
            problems.append("fleet.port_base: base + devices exceeds port 65535")
    names = {m.name for m in config.hardware}
    rules: list[tuple[str, int, str]] = [
        ("link", k, r.hardware) for k, r in enumerate(config.faults.link)
    ]
    rules += [("device", k, r.hardware) for k, r in enumerate(config.faults.device)]
    for kind, k, hardware in rules:
        if hardware and hardware not in names:
            problems.append(f"faults.{kind}[{k}].hardware: no mix named {hardware!r}")
    return problems


def load_config(path: Path | None) -> FleetConfig:
    """Read a TOML file (None: the defaults); raise :class:`ConfigError`."""
    if path is None:
        return parse_config({})
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError([f"cannot read: {exc.strerror}"], str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"not valid TOML: {exc}"], str(path)) from None
    return parse_config(data, base=path.parent, source=str(path))


def with_overrides(config: FleetConfig, **overrides: Any) -> FleetConfig:
    """``config`` with top-level fields replaced (None values are skipped).

    Raises :class:`ConfigError` listing every problem of the result.
    """
    known = {f.name for f in fields(FleetConfig)}
    changes = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ValueError(f"unknown override(s): {', '.join(unknown)}")
    updated = replace(config, **changes)
    problems = check_config(updated)
    if problems:
        raise ConfigError(problems, "command line")
    return updated
