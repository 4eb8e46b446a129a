"""Emulated CG-mesh (CSMP) endpoint, sans-IO: :class:`Device` and its inputs.

Device layer of meshfleet (CSMP.md, "Transport", "Firmware slots and response
codes", "Signed POSTs", "Group flows").
"""

from emulator.node.device import BOOT_FAILED_SUBTYPE, REGISTRATION_TLVS, Device
from emulator.node.firmware import BACKUP, RUN, UPLOAD, Rc, image_from_file
from emulator.node.io import Request, Response, Send
from emulator.node.profile import (
    DeviceFaults,
    DeviceProfile,
    Identity,
    SlotImage,
    UploadState,
)

__all__ = [
    "BACKUP",
    "BOOT_FAILED_SUBTYPE",
    "REGISTRATION_TLVS",
    "RUN",
    "UPLOAD",
    "Device",
    "DeviceFaults",
    "DeviceProfile",
    "Identity",
    "Rc",
    "Request",
    "Response",
    "Send",
    "SlotImage",
    "UploadState",
    "image_from_file",
]
