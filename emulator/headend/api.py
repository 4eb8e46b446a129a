"""The Firmware Upgrade API contract, as Python types (service layer).

The six operations of FND's ``meshDeviceOps`` NB API (see
``shared/reference/fnd-nbapi-firmware-upgrade.txt`` and ``NBAPI.md``) as one
async :class:`FirmwareApi` protocol. The head-end engine implements it; the SOAP
front, the CLI, the demo and the tests all call the same methods.

Every operation returns an :class:`OpResult`: the FND return code, a message
text, and the operation's data. API-level errors are return codes, never
exceptions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum
from typing import Generic, Protocol, TypeVar

T = TypeVar("T")


class ReturnCode(IntEnum):
    """Return codes of the Firmware Upgrade API (Table 1 of the source doc)."""

    SUCCESS = 0
    UNSUPPORTED_DEVICE_TYPE = -1
    GROUP_NOT_FOUND = -2
    IMAGE_NOT_FOUND = -3
    INVALID_DATE_FORMAT = -4
    INVALID_IMAGE = -5
    GROUP_ACTIVE = -6
    NO_DEVICE_UP = -7
    EMPTY_GROUP = -8
    GROUP_INACTIVE = -9
    INVALID_LOAD_DATE = -10
    TOO_MANY_OPERATIONS = -11
    IMAGE_ONLY_ON_NODES = -12
    SYSTEM_ERROR = -99


#: Default message text per return code; operations may say more.
DEFAULT_MESSAGES: dict[ReturnCode, str] = {
    ReturnCode.SUCCESS: "Success.",
    ReturnCode.UNSUPPORTED_DEVICE_TYPE: "Unsupported device type.",
    ReturnCode.GROUP_NOT_FOUND: "Firmware group not found.",
    ReturnCode.IMAGE_NOT_FOUND: "Firmware image not found.",
    ReturnCode.INVALID_DATE_FORMAT: "Invalid date and time format.",
    ReturnCode.INVALID_IMAGE: "Invalid firmware image.",
    ReturnCode.GROUP_ACTIVE: "Cannot perform operation; firmware group is active.",
    ReturnCode.NO_DEVICE_UP: (
        "Cannot find a device in the up state in the firmware group."
    ),
    ReturnCode.EMPTY_GROUP: "Cannot perform operation; empty firmware group.",
    ReturnCode.GROUP_INACTIVE: (
        "Cannot stop firmware update on inactive firmware group."
    ),
    ReturnCode.INVALID_LOAD_DATE: "Invalid load date specified.",
    ReturnCode.TOO_MANY_OPERATIONS: (
        "Simultaneous firmware group operations over maximum threshold."
    ),
    ReturnCode.IMAGE_ONLY_ON_NODES: (
        "Cannot perform operation; firmware group file image only present on the nodes."
    ),
    ReturnCode.SYSTEM_ERROR: "System error.",
}

#: The -99 text for a caller whose role lacks the permission.
INVALID_PERMISSIONS = "Invalid user permissions"
#: The -99 text for a group with another operation pending.
OPERATION_PENDING = "Another operation is pending for the group"


@dataclass(frozen=True, slots=True)
class ValuePair:
    """One name/value pair of a result list (FND returns such lists)."""

    name: str
    value: int


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """One image seen in a group, from the slots its members report."""

    name: str
    """Image file name (as in TransferRequest / FirmwareImageInfo)."""
    version: str
    running: int
    """Members running this image (RUN slot)."""
    uploaded: int
    """Members holding it complete in their UPLOAD slot."""
    backup: int
    """Members holding it in their BACKUP slot."""


@dataclass(frozen=True, slots=True)
class ImageInfoList:
    """Result data of getFirmwareImageInfoList."""

    images: list[ImageInfo] = field(default_factory=list)
    action_status: str = "IDLE"
    """The group's action status: IDLE, UPLOADING, STOPPED, UPLOADED,
    SETTING_BACKUP, RELOAD_SCHEDULED, RELOADING, ..."""
    scheduled_reload: datetime | None = None
    """UTC time of the scheduled reload, if any."""


@dataclass(frozen=True, slots=True)
class OpResult(Generic[T]):
    """What every operation returns: FND's code, a message text and data."""

    code: int
    message: str
    data: T | None = None

    @property
    def ok(self) -> bool:
        return self.code == ReturnCode.SUCCESS

    @classmethod
    def of(
        cls, code: ReturnCode, message: str | None = None, data: T | None = None
    ) -> OpResult[T]:
        """Build a result with the default text for ``code`` unless given."""
        return cls(int(code), message or DEFAULT_MESSAGES[code], data)


class FirmwareApi(Protocol):
    """The six operations. Inputs are the raw strings a client sent.

    ``dev_type`` None means the parameter was absent (read as ``cgmesh``);
    string matching is case-insensitive. ``reload_time`` is the raw
    ``reloadGmtTime``/``utcDateAndTime`` text; the implementation parses it
    (-4 when unparsable, -10 when in the past).
    """

    async def start_upload(
        self, dev_type: str | None, group: str, image: str
    ) -> OpResult[None]: ...

    async def stop_upload(self, dev_type: str | None, group: str) -> OpResult[None]: ...

    async def get_upload_status(
        self, dev_type: str | None, group: str
    ) -> OpResult[list[ValuePair]]: ...

    async def get_image_info_list(
        self, dev_type: str | None, group: str
    ) -> OpResult[ImageInfoList]: ...

    async def set_backup_image(
        self, dev_type: str | None, group: str, image: str
    ) -> OpResult[list[ValuePair]]: ...

    async def schedule_reload(
        self, dev_type: str | None, group: str, image: str, reload_time: str
    ) -> OpResult[list[ValuePair]]: ...
