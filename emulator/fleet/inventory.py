"""Fleet inventory: which devices exist, in and out as text (layer ``fleet``, pure).

Input: a CSV inventory for ``[fleet] inventory``, read as text only (so a
version like ``6.10`` stays ``"6.10"``). A header row names the columns::

    eui64,address,hardware_id,model,versions
    00173bab00000001,,OPENCSMP,OPENCSMP-NODE,6.8.1;6.9.0

Only ``eui64`` is required; an empty address means prefix + SLAAC interface
id; ``versions`` lists the run, upload and backup slot versions separated by
``;``.

Output (``meshfleet fleet inventory --format``):

- ``table``: aligned columns for people;
- ``csv``: ``eui64,address,hardware_id,model,mix``;
- ``fnd``: the CSV that FND's "Add Devices" bulk import takes for mesh
  endpoints: ``eid,deviceType,lat,lng``. ``eid`` is the EUI-64 as 16 hex
  digits (FND's element id of a mesh endpoint), ``deviceType`` the mix's
  ``fnd_device_type`` (``cgmesh`` for CG-mesh endpoints), ``lat``/``lng`` a
  position drawn from the seed inside a small box (FND puts devices on its
  map by them; real deployments fill in the surveyed position).
"""

from __future__ import annotations

import csv
import io
import ipaddress
import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass

from emulator.fleet.addressing import device_address, eui64_text
from emulator.fleet.config import FleetConfig, HardwareMix, InventoryEntry, parse_eui64

logger = logging.getLogger(__name__)

INVENTORY_COLUMNS = ("eui64", "address", "hardware_id", "model", "versions")
FND_COLUMNS = ("eid", "deviceType", "lat", "lng")
#: Centre and half-size (degrees) of the box FND map positions are drawn from.
MAP_CENTRE = (37.4184, -121.9195)
MAP_HALF_SIZE = 0.05


class InventoryError(ValueError):
    """A CSV inventory with problems; ``problems`` lists every one."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def read_inventory_csv(text: str) -> tuple[InventoryEntry, ...]:
    """Parse a CSV inventory; raise :class:`InventoryError` listing problems."""
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    problems: list[str] = []
    if "eui64" not in header:
        raise InventoryError(["header row must name an eui64 column"])
    unknown = [c for c in header if c not in INVENTORY_COLUMNS]
    if unknown:
        problems.append(f"unknown column(s): {', '.join(unknown)}")
    entries: list[InventoryEntry] = []
    seen: set[int] = set()
    for line, row in enumerate(reader, start=2):
        entry = _read_row(row, line, problems)
        if entry is None:
            continue
        if entry.eui64 in seen:
            problems.append(f"line {line}: duplicate EUI-64 {eui64_text(entry.eui64)}")
        seen.add(entry.eui64)
        entries.append(entry)
    if problems:
        raise InventoryError(problems)
    return tuple(entries)


def _read_row(
    row: dict[str, str], line: int, problems: list[str]
) -> InventoryEntry | None:
    try:
        eui = parse_eui64((row.get("eui64") or "").strip())
    except ValueError as exc:
        problems.append(f"line {line}: {exc}")
        return None
    address = (row.get("address") or "").strip()
    if address:
        try:
            address = str(ipaddress.IPv6Address(address))
        except ValueError as exc:
            problems.append(f"line {line}: {exc}")
    versions = tuple(v.strip() for v in (row.get("versions") or "").split(";"))
    return InventoryEntry(
        eui64=eui,
        address=address,
        hardware_id=(row.get("hardware_id") or "").strip(),
        model=(row.get("model") or "").strip(),
        versions=versions if any(versions) else (),
    )


@dataclass(frozen=True, slots=True)
class Planned:
    """One device of the fleet as the configuration plans it."""

    index: int
    """Position in the whole fleet (all shards)."""
    eui64: int
    address: str
    mix: HardwareMix
    versions: tuple[str, ...]
    """Versions per slot (run, upload, backup) from the inventory, or ()."""
    hardware_id: str
    model: str


def pick_mix(mixes: tuple[HardwareMix, ...], rng: random.Random) -> HardwareMix:
    """A mix drawn by weight."""
    if len(mixes) == 1:
        return mixes[0]
    return rng.choices(mixes, weights=[m.weight for m in mixes])[0]


def plan_fleet(config: FleetConfig) -> list[Planned]:
    """Every device of the whole fleet, in a stable order, reproducible by seed."""
    prefix = ipaddress.IPv6Network(config.prefix)
    rng = random.Random(f"mix:{config.seed}")
    mixes = config.hardware
    by_hwid = {m.hardware_id: m for m in mixes}
    out = []
    if config.inventory:
        for i, entry in enumerate(config.inventory):
            mix = by_hwid.get(entry.hardware_id) or pick_mix(mixes, rng)
            out.append(
                Planned(
                    i,
                    entry.eui64,
                    entry.address or device_address(prefix, entry.eui64),
                    mix,
                    entry.versions,
                    entry.hardware_id or mix.hardware_id,
                    entry.model or mix.model,
                )
            )
        return out
    for i in range(config.devices):
        eui = config.eui64_base + i
        mix = pick_mix(mixes, rng)
        address = device_address(prefix, eui)
        out.append(Planned(i, eui, address, mix, (), mix.hardware_id, mix.model))
    return out


def map_position(seed: int, eui64: int) -> tuple[float, float]:
    """A stable pseudo-random (lat, lng) for the FND map."""
    rng = random.Random(f"map:{seed}:{eui64}")
    lat = MAP_CENTRE[0] + rng.uniform(-MAP_HALF_SIZE, MAP_HALF_SIZE)
    lng = MAP_CENTRE[1] + rng.uniform(-MAP_HALF_SIZE, MAP_HALF_SIZE)
    return round(lat, 6), round(lng, 6)


def format_inventory(devices: Iterable[Planned], fmt: str, seed: int = 1) -> str:
    """The inventory as ``table``, ``csv`` or ``fnd`` text."""
    out = io.StringIO()
    if fmt == "table":
        out.write(f"{'EUI-64':<16}  {'address':<39}  {'hardware id':<16}  model\n")
        for d in devices:
            out.write(
                f"{eui64_text(d.eui64):<16}  {d.address:<39}  "
                f"{d.hardware_id:<16}  {d.model}\n"
            )
        return out.getvalue()
    writer = csv.writer(out, lineterminator="\n")
    if fmt == "csv":
        writer.writerow(("eui64", "address", "hardware_id", "model", "mix"))
        for d in devices:
            writer.writerow(
                (eui64_text(d.eui64), d.address, d.hardware_id, d.model, d.mix.name)
            )
    elif fmt == "fnd":
        writer.writerow(FND_COLUMNS)
        for d in devices:
            lat, lng = map_position(seed, d.eui64)
            writer.writerow((eui64_text(d.eui64), d.mix.fnd_device_type, lat, lng))
    else:
        raise ValueError(f"unknown inventory format {fmt!r}")
    return out.getvalue()
