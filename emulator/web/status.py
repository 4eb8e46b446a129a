"""What the live page reads from the head-end (web layer, interface).

:class:`StatusSource` is the whole contract between the head-end and the web
app: the head-end implements it with a thin adapter over its inventory and
campaigns, :mod:`emulator.web.demo_source` implements it in memory for tests
and screenshots. Every method is called on the event loop, once per page poll
(every 1-2 s per open page), so each should cost little more than reading the
head-end's current state: no database round trips per device.

Conventions:

- times are POSIX seconds (``time.time()``), datetimes are UTC;
- a device is named by its EUI-64 as 16 hex digits (CSMP DeviceID form), the
  same spelling in :class:`DeviceGrid` and in :meth:`StatusSource.device`;
- group names are the NB API's firmware group names; ``None`` for a group
  that does not exist makes the app answer 404.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, TypedDict

from emulator.headend.api import ImageInfoList
from emulator.web.feed import LiveFeed

#: Upload-state names the page has colours for (others get one by keyword,
#: then a fallback colour). The head-end may use any names; the page matches
#: them ignoring case and underscores, and also knows the engine's
#: ``notStarted``, ``accepted``, ``inProgress``, ``partial``, ``complete`` and
#: ``unreachable``. These are the demo's vocabulary.
KNOWN_STATES: tuple[str, ...] = (
    "IDLE",  # member of no campaign, or nothing to do
    "DOWN",  # not heard from within its report interval
    "PENDING",  # TransferRequest sent, no answer yet
    "UPLOADING",  # receiving blocks (partial UPLOAD slot)
    "UPLOADED",  # UPLOAD slot complete and checked
    "REFUSED",  # answered TransferRequest with a non-zero code
    "FAILED",  # image check failed or the head-end gave up
    "STOPPED",  # campaign stopped: partial slot kept
    "BACKUP_SET",  # image copied into the BACKUP slot
    "RELOAD_SCHEDULED",  # LoadRequest accepted, waiting for the load time
    "RELOADING",  # rebooting into the image
    "RUNNING",  # back up, running the new image
)


@dataclass(frozen=True, slots=True)
class GroupStatus:
    """One firmware group as the page's group list shows it."""

    name: str
    """Firmware group name (as the NB API takes it)."""
    group_id: int
    """CSMP firmware group id (GroupAssign type 2)."""
    address: str
    """The group's multicast address (IPv6 text)."""
    members: int
    """Number of member devices."""
    action_status: str
    """As getFirmwareImageInfoList reports it: IDLE, UPLOADING, STOPPED, ..."""
    upload_states: Mapping[str, int] = field(default_factory=dict)
    """Members per upload state (the getFirmwareUploadStatus counts)."""
    scheduled_reload: datetime | None = None
    """UTC time of the scheduled reload, if any."""
    complete: int = 0
    """Members done with the current step (the progress bar's numerator)."""
    image: str | None = None
    """Image of the current or last campaign, if any."""


@dataclass(frozen=True, slots=True)
class DeviceGrid:
    """Every device of a group (or of the fleet) with its upload state.

    Parallel arrays, in a stable order (the grid keeps a device in the same
    cell from one poll to the next): ``eui64[i]`` is in state
    ``legend[states[i]]``. ``states`` is one byte per device, which keeps a
    100,000-device grid at 100 kB before encoding.
    """

    eui64: Sequence[str]
    """Device EUI-64s, 16 hex digits each."""
    states: bytes
    """One state code per device: an index into ``legend``."""
    legend: Sequence[str]
    """State names by code (at most 256)."""


class SlotInfo(TypedDict):
    """One firmware slot of a device (TLV 75 FirmwareImageInfo)."""

    index: int
    """1 RUN, 2 UPLOAD, 3 BACKUP."""
    role: str
    """``RUN``, ``UPLOAD`` or ``BACKUP``."""
    name: str | None
    """Image file name, None for an empty slot."""
    version: str | None
    """Image version, None for an empty slot."""
    blocks: int
    """Blocks held."""
    total_blocks: int
    """Blocks of the image (0 for an empty slot)."""


class DeviceDetail(TypedDict):
    """What the page shows for one device (a JSON object as it stands)."""

    eui64: str
    address: str
    """The device's IPv6 address."""
    hardware_id: str
    """Hardware id the images must match (HardwareDesc / TPD hwid)."""
    running_version: str | None
    """Version the device runs (HardwareDesc FirmwareRev)."""
    group: str | None
    """Its firmware group, if any."""
    slots: list[SlotInfo]
    """The three slots, RUN, UPLOAD, BACKUP."""
    last_heard: float | None
    """When the head-end last heard from it, POSIX seconds."""
    up: bool
    """Whether the head-end counts it as up."""
    upload_state: str
    """Its upload state, one of the grid's legend names."""


class StatusSource(Protocol):
    """The head-end as the live page sees it.

    A head-end adapter implements these five members; nothing else is
    called. All are read-only.
    """

    @property
    def feed(self) -> LiveFeed:
        """The live feed the head-end writes events and counts into."""
        ...

    def groups(self) -> list[GroupStatus]:
        """Every firmware group, in the order the page should list them."""
        ...

    def grid(self, group: str | None) -> DeviceGrid | None:
        """The devices of ``group``, or of the whole fleet when None.

        None when the group does not exist.
        """
        ...

    def device(self, eui64: str) -> DeviceDetail | None:
        """One device's details; None when unknown.

        ``eui64`` is spelled as in :attr:`DeviceGrid.eui64` (any case: match
        it case-insensitively).
        """
        ...

    async def image_info(self, group: str) -> ImageInfoList | None:
        """getFirmwareImageInfoList's data for ``group``; None when unknown."""
        ...
