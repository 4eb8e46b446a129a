"""Static description of an emulated device: profile, identity, faults, images.

Device layer (``emulator.node``), CSMP.md "TLV ids used here" (HardwareDesc,
DeviceID) and "Firmware slots and response codes" (slot size, block limits).
A :class:`DeviceProfile` is shared by many devices; an :class:`Identity` is
per device and small; a :class:`SlotImage` describes one complete firmware
image and is interned so that every device running it shares one object.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey

from emulator.firmware.blockstore import ImageKey

logger = logging.getLogger(__name__)

#: Cisco's IANA private enterprise number, which the reference agent uses.
CISCO_PEN = 5771


class UploadState(Enum):
    """State of the UPLOAD slot (for metrics and tests)."""

    NONE = "none"
    DOWNLOADING = "downloading"
    COMPLETE = "complete"
    BAD = "bad"


@dataclass(frozen=True, slots=True)
class DeviceProfile:
    """Everything devices of one model have in common (shared, immutable)."""

    hardware_id: str = "OPENCSMP"
    """Hardware id matched against TransferRequest hwInfo.hwId and the image
    header's hwid (case-sensitive)."""
    vendor_hw_id: str = ""
    """Vendor hardware id reported in FirmwareImageInfo hwInfo (may be empty)."""
    model: str = "OPENCSMP"
    """HardwareDesc entPhysicalModelName."""
    manufacturer: str = "meshfleet"
    """HardwareDesc entPhysicalMfgName."""
    description: str = "meshfleet emulated CSMP endpoint"
    """HardwareDesc entPhysicalDescr."""
    function: int = 1
    """HardwareDesc entPhysicalFunction: 1 meter, 2 range extender, 3 gateway,
    4 CGE."""
    hardware_rev: str = "1.0"
    """HardwareDesc entPhysicalHardwareRev."""
    slot_size: int = 512 * 1024
    """Bytes a firmware slot holds; a larger TransferRequest gets code 4."""
    max_blocks: int = 1024
    """Blocks the UPLOAD bitmap holds; a block size needing more gets code 7."""
    max_block_size: int = 1024
    """Largest accepted block size (CSMP MTU); above it TransferRequest gets 7."""
    boot_time: float = 30.0
    """Seconds a device stays silent after power-on or a reboot."""
    reg_min: int = 30
    """Default registration retry interval minimum (s); CGMSSettings changes it."""
    reg_max: int = 600
    """Default registration retry interval maximum (s)."""
    report_interval: int = 0
    """Default periodic report interval (s); 0 = no reports until subscribed."""
    report_tlvs: tuple[str, ...] = ("22", "23", "25", "35")
    """Default TLV ids of periodic reports (text form)."""
    req_signed_post: bool = False
    """POSTs must carry a valid Signature TLV (77) (SignatureSettings field 1)."""
    req_valid_check_post: bool = False
    """Signed POSTs must carry SignatureValidity (76) covering ``now``."""
    req_signed_resp: bool = False
    """Registration answers with a body must be signed."""
    req_valid_check_resp: bool = False
    """Signed registration answers must carry SignatureValidity (76)."""
    nms_key: EllipticCurvePublicKey | None = None
    """The NMS (FND) P-256 key that verifies signatures."""
    check_image_header: bool = True
    """On download completion also check the TPD header CRC and hwid."""
    length_width: int = 2
    """Width the device pads TLV length varints to (the agent writes 2)."""
    vendor_pen: int = CISCO_PEN
    """IANA PEN of the device's vendor TLVs (the agent uses Cisco's)."""
    vendor_tlvs: tuple[tuple[int, bytes], ...] = ((1, b"meshfleet"),)
    """(subType, value) of the vendor TLVs sent in registration and GET."""
    async_default_delay: int = 20
    """Upper bound (s) of the async answer delay when a NON request has no
    ``a=`` (the agent's default)."""
    transfer_ok_response: bool = True
    """Answer an accepted TransferRequest with TransferResponse code 0 (as
    CSMP.md and the draft say); False mimics the agent, which stays silent."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Per-device identity (small: three fields)."""

    eui64: int
    """The device's EUI-64 as an integer."""
    address: str
    """The device's global IPv6 address (text)."""
    serial: str = ""
    """Serial number (HardwareDesc entPhysicalSerialNum); default: EUI-64 text."""

    @property
    def eui64_text(self) -> str:
        """16 upper-case hex digits, as CSMP DeviceID carries it."""
        return f"{self.eui64:016X}"

    @property
    def serial_text(self) -> str:
        """The serial number, falling back to the EUI-64 text."""
        return self.serial or self.eui64_text


@dataclass(slots=True)
class DeviceFaults:
    """Faults injected into one device (None / 0 / False = healthy)."""

    refuse_transfer_code: int | None = None
    """Answer every TransferRequest with this response code."""
    flash_write_error_rate: float = 0.0
    """Probability (0..1) that writing a received block fails (not marked)."""
    fail_boot: bool = False
    """A newly loaded image fails to boot: the device falls back to the
    previous RUN image and reports the failure in its next registration."""


@dataclass(frozen=True, slots=True)
class SlotImage:
    """A complete firmware image held in a slot (interned, shared)."""

    key: ImageKey
    """File hash and block size; blocks live in the shared BlockStore."""
    name: str = ""
    """File name (TransferRequest fileName)."""
    version: str = ""
    """Version text (TransferRequest version; HardwareDesc FirmwareRev)."""
    size: int = 0
    """File size in bytes."""
    hwid: str = ""
    """Hardware id the image was transferred for."""

    @property
    def file_hash(self) -> bytes:
        """SHA-256 of the file."""
        return self.key.file_hash

    @property
    def nblocks(self) -> int:
        """Number of blocks of the file."""
        return -(-self.size // self.key.block_size)


_INTERNED: dict[SlotImage, SlotImage] = {}


def intern_image(image: SlotImage) -> SlotImage:
    """The shared instance equal to ``image`` (one object per distinct image)."""
    if image is _LAST_INTERNED[0]:  # a fleet builds its devices from a few
        return image
    shared = _INTERNED.setdefault(image, image)
    _LAST_INTERNED[0] = shared
    return shared


_LAST_INTERNED: list[SlotImage | None] = [None]


_INTERNED_IDS: dict[tuple[str, ...], tuple[str, ...]] = {}


def intern_ids(ids: tuple[str, ...]) -> tuple[str, ...]:
    """The shared instance of a TLV id list (report subscriptions)."""
    if len(_INTERNED_IDS) > 4096:
        return ids
    return _INTERNED_IDS.setdefault(ids, ids)


NO_GROUPS = (0, 0)
_SHARED_GROUPS: dict[tuple[int, int], tuple[int, int]] = {NO_GROUPS: NO_GROUPS}


def shared_groups(ids: tuple[int, int]) -> tuple[int, int]:
    """The shared instance of a device's (config group, firmware group) ids:
    the devices of a group hold one tuple, not one each."""
    if len(_SHARED_GROUPS) > 4096:
        return ids
    return _SHARED_GROUPS.setdefault(ids, ids)
