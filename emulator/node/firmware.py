"""Firmware slots of one emulated device: transfer, blocks, load, backup.

Device layer, CSMP.md "Firmware slots and response codes": three slots (1 RUN,
2 UPLOAD, 3 BACKUP), TransferRequest (65), ImageBlock (67), LoadRequest (68),
CancelLoadRequest (69), SetBackupRequest (70) and FirmwareImageInfo (75). The
order of the checks follows the reference agent's Linux sample
(``sample/tlvs/linux_tlvs.c``); where it and CSMP.md differ the choice is noted
at the check.

Memory: RUN and BACKUP hold a shared :class:`SlotImage`; the UPLOAD slot keeps
a bitmap int and, only for blocks whose bytes differ from the shared canonical
copy in the :class:`BlockStore`, a private override dict.
"""

from __future__ import annotations

import logging
from enum import IntEnum

from emulator.csmp import csmp_pb2 as pb
from emulator.firmware import bitmap
from emulator.firmware.blockstore import BlockStore, ImageKey
from emulator.firmware.image import HEADER_LEN, ImageError, check_header, parse_image
from emulator.node.profile import (
    DeviceFaults,
    DeviceProfile,
    SlotImage,
    UploadState,
    intern_image,
)

logger = logging.getLogger(__name__)

RUN, UPLOAD, BACKUP = 1, 2, 3
HASH_LEN = 32
#: The agent accepts an ImageBlock whose fileHash is a prefix this long.
MIN_HASH_PREFIX = 4
#: Seconds from an immediate LoadRequest (loadTime absent, 0 or 1) to the load.
IMMEDIATE_LOAD_DELAY = 1.0


class Rc(IntEnum):
    """Firmware response codes (field ``response`` of TLVs 71-74)."""

    OK = 0
    INCOMPATIBLE_HW = 1
    INCOMPLETE = 2
    UNKNOWN_HASH = 3
    FILE_TOO_BIG = 4
    IMAGE_CHECK_FAILED = 5
    INVALID_REQUEST = 6
    INVALID_BLOCK_SIZE = 7
    PENDING_REBOOT = 8
    IMAGE_RUNNING = 9
    NO_VOLUME = 10
    DUPLICATE_TRANSFER = 11
    MATCHES_RUN = 12
    MATCHES_BACKUP = 13


def image_from_file(
    store: BlockStore, data: bytes, block_size: int, name: str = ""
) -> SlotImage:
    """Preload a TPD file into ``store``; the interned image for a slot."""
    parsed = parse_image(data)
    key = store.add_image(data, block_size)
    image = SlotImage(key, name, parsed.header.version, len(data), parsed.header.hwid)
    return intern_image(image)


class Upload:
    """The UPLOAD slot: the image being received and what has arrived."""

    __slots__ = ("image", "bits", "state", "overrides")

    def __init__(
        self,
        image: SlotImage,
        bits: int = 0,
        state: UploadState = UploadState.DOWNLOADING,
        overrides: dict[int, bytes] | None = None,
    ) -> None:
        self.image = image
        """Metadata from the TransferRequest (interned)."""
        self.bits = bits
        """Received blocks, block n at ``1 << n``."""
        self.state = state
        """DOWNLOADING, COMPLETE or BAD."""
        self.overrides = overrides
        """Blocks whose bytes differ from the store's canonical copy."""


class Firmware:
    """The three slots and the pending load of one device."""

    __slots__ = ("run", "upload", "backup", "load_slot", "load_due", "load_time")

    def __init__(
        self, run: SlotImage | None = None, backup: SlotImage | None = None
    ) -> None:
        self.run = run
        self.upload: Upload | None = None
        self.backup = backup
        self.load_slot = 0
        """Slot a load is pending for (UPLOAD or BACKUP), 0 when none."""
        self.load_due = 0.0
        """When the pending load happens (device clock, POSIX seconds)."""
        self.load_time = 0
        """loadTime as requested (0 for "now"), reported in TLV 75."""

    # ------------------------------------------------------------- queries

    def upload_state(self) -> UploadState:
        """State of the UPLOAD slot."""
        return UploadState.NONE if self.upload is None else self.upload.state

    def slot_image(self, index: int) -> SlotImage | None:
        """Image of slot ``index`` (UPLOAD: whatever is being received)."""
        if index == RUN:
            return self.run
        if index == BACKUP:
            return self.backup
        return self.upload.image if self.upload is not None else None

    def _holds(self, index: int, file_hash: bytes) -> bool:
        image = self.slot_image(index)
        return image is not None and image.key.file_hash == file_hash

    def image_info(self, index: int, profile: DeviceProfile) -> pb.FirmwareImageInfo:
        """FirmwareImageInfo (75) of one slot."""
        info = pb.FirmwareImageInfo(index=index)
        image = self.slot_image(index)
        if image is not None:
            info.fileHash = image.key.file_hash
            info.fileName = image.name
            info.version = image.version
            info.fileSize = image.size
            info.blockSize = image.key.block_size
            info.hwInfo.hwId = image.hwid
            if profile.vendor_hw_id:
                info.hwInfo.vendorHwId = profile.vendor_hw_id
        up = self.upload
        if index == UPLOAD and up is not None and up.state is UploadState.DOWNLOADING:
            info.bitmap = bitmap.to_bytes(up.bits, image.nblocks if image else 0)
        if index == BACKUP:
            info.isDefault = True
        if index == RUN:
            info.isRunning = True
        if self.load_slot == index and self.load_time:
            info.loadTime = self.load_time
        return info

    # ------------------------------------------------------ TransferRequest

    def transfer(
        self,
        req: pb.TransferRequest,
        profile: DeviceProfile,
        faults: DeviceFaults | None,
    ) -> int:
        """Apply a TransferRequest (65); returns the response code."""
        if faults is not None and faults.refuse_transfer_code is not None:
            return faults.refuse_transfer_code
        code = self._transfer_code(req, profile)
        if code == Rc.OK:
            image = SlotImage(
                ImageKey(req.fileHash, req.blockSize),
                req.fileName,
                req.version,
                req.fileSize,
                req.hwInfo.hwId,
            )
            self.upload = Upload(intern_image(image))
        return code

    def _transfer_code(self, req: pb.TransferRequest, profile: DeviceProfile) -> int:
        # The agent only checks that a hwId is present; CSMP.md also requires
        # it to match the device, which FND relies on for mixed fleets.
        if not req.hwInfo.HasField("hwId") or req.hwInfo.hwId != profile.hardware_id:
            return Rc.INCOMPATIBLE_HW
        if len(req.fileHash) != HASH_LEN:
            return Rc.INVALID_REQUEST
        if profile.slot_size <= 0:
            return Rc.NO_VOLUME
        if req.fileSize == 0 or req.fileSize > profile.slot_size:
            return Rc.FILE_TOO_BIG
        if not self._block_size_ok(req.blockSize, req.fileSize, profile):
            return Rc.INVALID_BLOCK_SIZE
        if self.load_slot == UPLOAD:
            return Rc.PENDING_REBOOT
        for index, code in _DUPLICATE_CODES:
            if self._holds(index, req.fileHash):
                return code
        return Rc.OK

    @staticmethod
    def _block_size_ok(block_size: int, file_size: int, profile: DeviceProfile) -> bool:
        # The agent compares blockSize with fileSize // 1024 (integer
        # division), which lets 1025 blocks through; we require the blocks to
        # fit the bitmap exactly.
        if block_size == 0 or block_size > profile.max_block_size:
            return False
        return -(-file_size // block_size) <= profile.max_blocks

    # ---------------------------------------------------------- ImageBlock

    def block(
        self,
        msg: pb.ImageBlock,
        store: BlockStore,
        profile: DeviceProfile,
        write_fails: bool = False,
    ) -> bool:
        """Apply an ImageBlock (67); True when the bitmap changed."""
        up = self.upload
        if up is None or up.state is not UploadState.DOWNLOADING:
            return False
        image = up.image
        num = msg.blockNum
        if not self._block_fits(msg, image) or up.bits >> num & 1:
            return False
        if write_fails:
            logger.debug("flash write of block %d failed", num)
            return False
        data = msg.blockData
        if not store.put(image.key, num, data):
            if up.overrides is None:
                up.overrides = {}
            up.overrides[num] = bytes(data)
        up.bits |= 1 << num
        if up.bits == bitmap.full(image.nblocks):
            self._complete(up, store, profile)
        return True

    @staticmethod
    def _block_fits(msg: pb.ImageBlock, image: SlotImage) -> bool:
        # The agent accepts a fileHash prefix of at least 4 bytes.
        prefix = msg.fileHash
        if len(prefix) < MIN_HASH_PREFIX or not image.key.file_hash.startswith(prefix):
            return False
        if not msg.HasField("blockNum") or msg.blockNum >= image.nblocks:
            return False
        # Like the agent, any length up to the block size is written; a short
        # block then fails the completion check.
        return len(msg.blockData) <= image.key.block_size

    def _complete(self, up: Upload, store: BlockStore, profile: DeviceProfile) -> None:
        image = up.image
        ok = store.verify(image.key, image.nblocks, image.size, up.overrides)
        if ok and profile.check_image_header:
            ok = self._header_ok(up, store, profile)
        up.state = UploadState.COMPLETE if ok else UploadState.BAD
        logger.debug("upload of %s complete: %s", image.version, up.state.value)

    @staticmethod
    def _header_ok(up: Upload, store: BlockStore, profile: DeviceProfile) -> bool:
        image = up.image
        bsize = image.key.block_size
        parts: list[bytes] = []
        for num in range(min(image.nblocks, -(-HEADER_LEN // bsize))):
            block = (up.overrides or {}).get(num) or store.get(image.key, num)
            if block is None:
                return False
            parts.append(block)
        try:
            header = check_header(b"".join(parts), file_size=image.size)
        except ImageError as exc:
            logger.debug("image header check failed: %s", exc)
            return False
        return header.hwid == profile.hardware_id

    # --------------------------------------------------------- LoadRequest

    def load(self, req: pb.LoadRequest, now: float) -> int:
        """Apply a LoadRequest (68); returns the response code."""
        if len(req.fileHash) != HASH_LEN:
            return Rc.INVALID_REQUEST
        slot, code = self._load_source(req.fileHash)
        if code != Rc.OK:
            return code
        load_time = req.loadTime
        if self.load_slot == slot and self.load_time == load_time:
            return Rc.OK  # redundant: keep the pending load as it is
        if load_time in (0, 1):
            # CSMP.md: absent, 0 or 1 means now (the agent: 0, the draft: 1).
            due = now + IMMEDIATE_LOAD_DELAY
        elif load_time > now:
            due = float(load_time)
        else:
            self.cancel_pending()
            return Rc.INVALID_REQUEST
        self.load_slot, self.load_due, self.load_time = slot, due, load_time
        return Rc.OK

    def _load_source(self, file_hash: bytes) -> tuple[int, int]:
        up = self.upload
        if up is not None and up.image.key.file_hash == file_hash:
            return UPLOAD, _LOAD_CODES[up.state]
        if self._holds(RUN, file_hash):
            return RUN, Rc.IMAGE_RUNNING
        if self._holds(BACKUP, file_hash):
            return BACKUP, Rc.OK
        return 0, Rc.UNKNOWN_HASH

    def cancel_pending(self) -> None:
        """Forget the pending load."""
        self.load_slot, self.load_due, self.load_time = 0, 0.0, 0

    def cancel(self, req: pb.HashRequest) -> int:
        """Apply a CancelLoadRequest (69); returns the response code.

        As in the agent, a hash other than the pending load's is answered 0
        and changes nothing; no pending load is answered 0 too.
        """
        if len(req.fileHash) != HASH_LEN:
            return Rc.INVALID_REQUEST
        if self.load_slot and self._holds(self.load_slot, req.fileHash):
            self.cancel_pending()
        return Rc.OK

    def take_load(self) -> SlotImage | None:
        """The image the pending load installs (and clear the pending load)."""
        image = self.slot_image(self.load_slot) if self.load_slot else None
        self.cancel_pending()
        return image

    # ---------------------------------------------------- SetBackupRequest

    def set_backup(self, req: pb.HashRequest) -> int:
        """Apply a SetBackupRequest (70); returns the response code."""
        if len(req.fileHash) != HASH_LEN:
            return Rc.INVALID_REQUEST
        source, code = self._backup_source(req.fileHash)
        if code != Rc.OK:
            return code
        # The agent's test is an assignment (always true when any load is
        # pending); we answer 8 only for a pending load of the backup slot.
        if self.load_slot == BACKUP:
            return Rc.PENDING_REBOOT
        self.backup = source
        return Rc.OK

    def _backup_source(self, file_hash: bytes) -> tuple[SlotImage | None, int]:
        up = self.upload
        if up is not None and up.image.key.file_hash == file_hash:
            # CSMP.md says 3 for an image not held complete; the agent answers
            # 2 (incomplete) for the UPLOAD slot's hash: the agent wins.
            if up.state is not UploadState.COMPLETE:
                return None, Rc.INCOMPLETE
            return up.image, Rc.OK
        if self._holds(RUN, file_hash):
            return self.run, Rc.OK
        if self._holds(BACKUP, file_hash):
            # The agent answers 3 here (it only looks at UPLOAD and RUN); the
            # image is held complete, so CSMP.md's rule gives 0 (no-op).
            return self.backup, Rc.OK
        return None, Rc.UNKNOWN_HASH


_DUPLICATE_CODES = (
    (UPLOAD, Rc.DUPLICATE_TRANSFER),
    (RUN, Rc.MATCHES_RUN),
    (BACKUP, Rc.MATCHES_BACKUP),
)

_LOAD_CODES = {
    UploadState.COMPLETE: Rc.OK,
    UploadState.BAD: Rc.IMAGE_CHECK_FAILED,
    UploadState.DOWNLOADING: Rc.INCOMPLETE,
    UploadState.NONE: Rc.INCOMPLETE,
}
