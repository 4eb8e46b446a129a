"""The six Firmware Upgrade operations over the head-end core (service layer).

Implements :class:`emulator.headend.api.FirmwareApi` (NBAPI.md, "The six
operations"; fnd-nbapi-firmware-upgrade.txt). Inputs are validated in this
fixed order, and the first failing check gives the return code:

1. the head-end is running, else -99 "System busy";
2. ``devType``: absent or ``cgmesh`` (any case), else -1;
3. the group (case-insensitive), else -2;
4. the image (startUpload, setBackupFirmwareImage, scheduleReload): in the
   image store (case-insensitive), else -12 when a member reports a slot
   with that file name (backup and reload only), else -3;
5. the image is usable, else -5: its file is present and intact, and when
   the group has members at least one has the image's hardware id;
6. scheduleReload's time: ``yyyy-MM-dd`` then ``T``, a space or ``*``, then
   ``HH:mm:ss``, read as UTC, else -4; not after now (or past 2106), -10;
7. the group's state: a backup/reload collection pending, -99 "Another
   operation is pending for the group"; an upload running, -6 (stopUpload:
   no upload running, -9);
8. concurrency: ``upload.max_operations`` group operations running, -11;
9. members: none, -8; none up, -7.

setBackupFirmwareImage and scheduleReload wait for the members' answers up
to ``commands.wait`` seconds and return counts as value pairs (see
:meth:`CommandCampaign.counts`); per-device outcomes go to the inventory.

getFirmwareUploadStatus value pairs, in this order: ``totalDevices``, ``up``,
``down``, one per :class:`~emulator.headend.engine.UploadStatus` (notStarted,
pending, accepted, inProgress, partial, complete, refused, failed,
unreachable; each member counted once) and ``partialUpload`` (members holding
some but not all blocks of the group's upload image, whatever the state).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from emulator.firmware.image import ImageError
from emulator.headend.api import (
    OPERATION_PENDING,
    ImageInfo,
    ImageInfoList,
    OpResult,
    ReturnCode,
    ValuePair,
)
from emulator.headend.core import BOOT_FAILED, Campaign, HeadEndCore
from emulator.headend.engine import (
    CommandCampaign,
    CommandKind,
    ImageRef,
    Phase,
    UploadStatus,
)
from emulator.headend.groups import GroupSpec
from emulator.headend.images import ImageStore, StoredImage, choose_block_size
from emulator.headend.inventory import DeviceRecord

logger = logging.getLogger(__name__)

DEV_TYPE = "cgmesh"
SYSTEM_BUSY = "System busy: the head-end is not running"
_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})[T *](\d{2}):(\d{2}):(\d{2})")
_MAX_LOAD_TIME = 0xFFFFFFFF

#: Action status of a group whose command is running, by kind.
_COMMAND_RUNNING = {
    CommandKind.BACKUP: "SETTING_BACKUP",
    CommandKind.RELOAD: "SCHEDULING_RELOAD",
    CommandKind.CANCEL: "CANCELLING_RELOAD",
}
#: Action status after an upload, by final phase.
_UPLOAD_FINISHED = {
    Phase.STOPPED: "STOPPED",
    Phase.DONE: "UPLOADED",
    Phase.FAILED: "UPLOAD_FAILED",
}

ReadImage = Callable[[StoredImage], Awaitable[bytes]]


class ParseError(ValueError):
    """A reload time that is not ``yyyy-MM-dd[T *]HH:mm:ss``."""


def parse_reload_time(text: str) -> datetime:
    """The UTC time of a ``reloadGmtTime``/``utcDateAndTime`` value."""
    match = _TIME.fullmatch(text.strip())
    if match is None:
        raise ParseError(f"{text!r} is not yyyy-MM-ddTHH:mm:ss")
    try:
        y, mo, d, h, mi, sec = (int(g) for g in match.groups())
        return datetime(y, mo, d, h, mi, sec, tzinfo=UTC)
    except ValueError as exc:
        raise ParseError(f"{text!r}: {exc}") from None


@dataclass(frozen=True, slots=True)
class _Checked:
    """What the common checks found."""

    group: GroupSpec
    members: list[DeviceRecord]
    image: StoredImage | None = None
    data: bytes = b""


class _Refused(Exception):
    def __init__(self, result: OpResult[Any]) -> None:
        self.result = result


def _refuse(code: ReturnCode, message: str | None = None) -> _Refused:
    return _Refused(OpResult.of(code, message))


class HeadEndApi:
    """The FirmwareApi of a head-end core (see the module doc)."""

    def __init__(
        self,
        core: HeadEndCore,
        images: ImageStore,
        *,
        read_image: ReadImage,
        clock: Callable[[], float] = time.time,
        kick: Callable[[], None] = lambda: None,
    ) -> None:
        self.core = core
        self.images = images
        self.clock = clock
        self.kick = kick
        """Called after the core changed, so the edge sends and re-arms."""
        self.running = False
        self._read_image = read_image
        self._done: dict[int, asyncio.Event] = {}
        core.on_finished.append(self._finished)

    # --------------------------------------------------------- the six

    async def start_upload(
        self, dev_type: str | None, group: str, image: str
    ) -> OpResult[None]:
        try:
            checked = await self._check(dev_type, group, image, backup_or_reload=False)
            self._check_state(checked.group)
            self._check_members(checked)
        except _Refused as refused:
            return refused.result
        assert checked.image is not None
        stored = checked.image
        ref = ImageRef(
            stored.name,
            stored.version,
            stored.sha256,
            stored.hwid,
            checked.data,
            choose_block_size(len(checked.data), self.core.config.upload.block_size),
        )
        members = [d.eui for d in checked.members]
        campaign = self.core.start_upload(checked.group, ref, members, self.clock())
        self.kick()
        logger.info(
            "startUpload %s to %s (%d members): operation %d",
            stored.name,
            checked.group.name,
            len(members),
            campaign.op_id,
        )
        return OpResult.of(ReturnCode.SUCCESS)

    async def stop_upload(self, dev_type: str | None, group: str) -> OpResult[None]:
        try:
            spec = self._check_group(dev_type, group)
            self._check_pending(spec)
        except _Refused as refused:
            return refused.result
        if not self.core.stop_upload(spec.key, self.clock()):
            return OpResult.of(ReturnCode.GROUP_INACTIVE)
        self.kick()
        logger.info("stopUpload %s", spec.name)
        return OpResult.of(ReturnCode.SUCCESS)

    async def get_upload_status(
        self, dev_type: str | None, group: str
    ) -> OpResult[list[ValuePair]]:
        try:
            spec = self._check_group(dev_type, group)
        except _Refused as refused:
            return refused.result
        return OpResult.of(ReturnCode.SUCCESS, data=self.upload_status(spec.key))

    async def get_image_info_list(
        self, dev_type: str | None, group: str
    ) -> OpResult[ImageInfoList]:
        try:
            spec = self._check_group(dev_type, group)
        except _Refused as refused:
            return refused.result
        return OpResult.of(ReturnCode.SUCCESS, data=self.image_info(spec.key))

    async def set_backup_image(
        self, dev_type: str | None, group: str, image: str
    ) -> OpResult[list[ValuePair]]:
        return await self._command(CommandKind.BACKUP, dev_type, group, image, None)

    async def schedule_reload(
        self, dev_type: str | None, group: str, image: str, reload_time: str
    ) -> OpResult[list[ValuePair]]:
        return await self._command(
            CommandKind.RELOAD, dev_type, group, image, reload_time
        )

    # ---------------------------------------------------------- checks

    def _check_group(self, dev_type: str | None, group: str) -> GroupSpec:
        if not self.running:
            raise _refuse(ReturnCode.SYSTEM_ERROR, SYSTEM_BUSY)
        if dev_type is not None and dev_type.strip().lower() != DEV_TYPE:
            raise _refuse(ReturnCode.UNSUPPORTED_DEVICE_TYPE)
        spec = self.core.groups.get(group or "")
        if spec is None:
            raise _refuse(ReturnCode.GROUP_NOT_FOUND)
        return spec

    async def _check(
        self,
        dev_type: str | None,
        group: str,
        image: str,
        *,
        backup_or_reload: bool,
    ) -> _Checked:
        spec = self._check_group(dev_type, group)
        members = self.core.inventory.members(spec.key)
        stored = self.images.get(image or "")
        if stored is None:
            if backup_or_reload and _on_nodes(members, image or ""):
                raise _refuse(ReturnCode.IMAGE_ONLY_ON_NODES)
            raise _refuse(ReturnCode.IMAGE_NOT_FOUND)
        if members and not any(d.hardware_id == stored.hwid for d in members):
            raise _refuse(
                ReturnCode.INVALID_IMAGE,
                f"Invalid firmware image: {stored.name} is for hardware "
                f"{stored.hwid!r}, which no member of {spec.name} has.",
            )
        try:
            data = await self._read_image(stored)
        except (ImageError, OSError) as exc:
            logger.warning("image %s unusable: %s", stored.name, exc)
            raise _refuse(
                ReturnCode.INVALID_IMAGE, f"Invalid firmware image: {exc}"
            ) from None
        return _Checked(spec, members, stored, data)

    def _check_pending(self, spec: GroupSpec) -> None:
        command = self.core.commands.get(spec.key)
        if command is not None and command.active:
            raise _refuse(ReturnCode.SYSTEM_ERROR, OPERATION_PENDING)

    def _check_state(self, spec: GroupSpec) -> None:
        self._check_pending(spec)
        upload = self.core.uploads.get(spec.key)
        if upload is not None and upload.active:
            raise _refuse(ReturnCode.GROUP_ACTIVE)
        limit = self.core.config.upload.max_operations
        if len(self.core.active_campaigns) >= limit:
            raise _refuse(ReturnCode.TOO_MANY_OPERATIONS)

    def _check_members(self, checked: _Checked) -> None:
        if not checked.members:
            raise _refuse(ReturnCode.EMPTY_GROUP)
        now = self.clock()
        if not any(self.core.inventory.is_up(d, now) for d in checked.members):
            raise _refuse(ReturnCode.NO_DEVICE_UP)

    def _check_time(self, text: str) -> int:
        try:
            when = parse_reload_time(text)
        except ParseError as exc:
            raise _refuse(
                ReturnCode.INVALID_DATE_FORMAT, f"Invalid date and time format: {exc}"
            ) from None
        epoch = int(when.timestamp())
        if epoch <= self.clock() or epoch > _MAX_LOAD_TIME:
            raise _refuse(ReturnCode.INVALID_LOAD_DATE)
        return epoch

    # -------------------------------------------------------- commands

    async def _command(
        self,
        kind: CommandKind,
        dev_type: str | None,
        group: str,
        image: str,
        reload_time: str | None,
    ) -> OpResult[list[ValuePair]]:
        try:
            checked = await self._check(dev_type, group, image, backup_or_reload=True)
            load_time = 0 if reload_time is None else self._check_time(reload_time)
            self._check_state(checked.group)
            self._check_members(checked)
        except _Refused as refused:
            return refused.result
        assert checked.image is not None
        members = [d.eui for d in checked.members]
        campaign = self.core.start_command(
            kind,
            checked.group,
            checked.image.sha256,
            members,
            self.clock(),
            load_time=load_time,
        )
        logger.info(
            "%s %s on %s (%d members): operation %d",
            kind.value,
            checked.image.name,
            checked.group.name,
            len(members),
            campaign.op_id,
        )
        await self._wait(campaign)
        pairs = [ValuePair(k, v) for k, v in campaign.counts().items()]
        return OpResult.of(ReturnCode.SUCCESS, data=pairs)

    async def _wait(self, campaign: CommandCampaign) -> None:
        event = asyncio.Event()
        self._done[campaign.op_id] = event
        self.kick()
        try:
            if campaign.active:
                await asyncio.wait_for(event.wait(), self.core.config.commands.wait)
        except TimeoutError:
            logger.info("operation %d still collecting answers", campaign.op_id)
        finally:
            self._done.pop(campaign.op_id, None)

    def _finished(self, campaign: Campaign) -> None:
        event = self._done.get(campaign.op_id)
        if event is not None:
            event.set()

    # ---------------------------------------------------------- status

    def upload_status(self, group_key: str) -> list[ValuePair]:
        """The value pairs of getFirmwareUploadStatus (see the module doc)."""
        core = self.core
        now = self.clock()
        in_group = core.inventory.member_euis(group_key)
        total = len(in_group)
        campaign = core.uploads.get(group_key)
        up = core.inventory.count_up(group_key, now)
        # The campaign keeps a running tally of its members (O(changes));
        # devices that joined or left the group since it started are
        # corrected for here (set operations, no per-member status).
        if campaign is None:
            counts = dict.fromkeys(UploadStatus, 0)
            counts[UploadStatus.NOT_STARTED] = total
            partial = 0
        else:
            counts, partial = campaign.tally_for(in_group)
        pairs = [
            ValuePair("totalDevices", total),
            ValuePair("up", up),
            ValuePair("down", total - up),
        ]
        pairs.extend(ValuePair(s.value, n) for s, n in counts.items())
        pairs.append(ValuePair("partialUpload", partial))
        return pairs

    def image_info(self, group_key: str) -> ImageInfoList:
        """The data of getFirmwareImageInfoList (from the inventory's running
        image tally: O(images), not O(members))."""
        images = [
            ImageInfo(self._image_name(h, slot.name), slot.version, run, up, backup)
            for h, (slot, run, up, backup) in self.core.inventory.image_tally(
                group_key
            ).items()
            if run or up or backup
        ]
        images.sort(key=lambda i: (i.version, i.name))
        reload = self.core.reloads.get(group_key)
        scheduled = None
        if reload is not None and reload.at > 0:
            scheduled = datetime.fromtimestamp(reload.at, UTC)
        return ImageInfoList(images, self.action_status(group_key), scheduled)

    def _image_name(self, file_hash: bytes, reported: str) -> str:
        stored = self.images.by_hash(file_hash)
        return stored.name if stored is not None else reported

    def action_status(self, group_key: str) -> str:
        """IDLE, UPLOADING, STOPPED, UPLOADED, UPLOAD_FAILED, SETTING_BACKUP,
        BACKUP_SET, BACKUP_FAILED, SCHEDULING_RELOAD, RELOAD_SCHEDULED,
        RELOADING, RELOADED, RELOAD_FAILED, CANCELLING_RELOAD,
        RELOAD_CANCELLED."""
        upload = self.core.uploads.get(group_key)
        command = self.core.commands.get(group_key)
        if command is not None and command.active:
            return _COMMAND_RUNNING[command.kind]
        if upload is not None and upload.active:
            return "UPLOADING"
        if command is not None and (
            upload is None or command.started >= upload.started
        ):
            return self._command_status(command)
        if upload is not None:
            return _UPLOAD_FINISHED.get(upload.phase, "IDLE")
        return "IDLE"

    def _command_status(self, command: CommandCampaign) -> str:
        accepted = any(m.code == 0 for m in command.members.values())  # stops early
        if command.kind is CommandKind.BACKUP:
            return "BACKUP_SET" if accepted else "BACKUP_FAILED"
        if command.kind is CommandKind.CANCEL:
            return "RELOAD_CANCELLED"
        if not accepted:
            return "RELOAD_FAILED"
        now = self.clock()
        if now < command.load_time:
            return "RELOAD_SCHEDULED"
        timeout = self.core.config.commands.reload_timeout
        finished = self._reload_finished(command)
        if finished is None:  # a member still on its way
            return "RELOADED" if now > command.load_time + timeout else "RELOADING"
        waiting, failed = finished
        if waiting and failed == waiting:
            return "RELOAD_FAILED"
        return "RELOADED"

    def _reload_finished(self, command: CommandCampaign) -> tuple[int, int] | None:
        """(members that accepted, of which boot failed) once every member
        that accepted runs the image or failed to boot it; None as soon as
        one is found that does neither (polled during a reload: the scan
        stops at the first member still on its way)."""
        inventory = self.core.inventory
        waiting = failed = 0
        for eui, member in command.members.items():
            if member.code != 0:
                continue
            device = inventory.get(eui)
            if device is None:
                continue
            waiting += 1
            if device.runs(command.file_hash):
                continue
            if not _boot_failed(device):
                return None
            failed += 1
        return waiting, failed


def _on_nodes(members: list[DeviceRecord], name: str) -> bool:
    key = name.strip().lower()
    return bool(key) and any(
        s.name.lower() == key for d in members for s in d.slots.values() if s.file_hash
    )


def _boot_failed(device: DeviceRecord) -> bool:
    """The device reported that it fell back from the reloaded image."""
    return device.results.get(CommandKind.RELOAD.value, "").startswith(BOOT_FAILED)
