"""Firmware on one emulated device: transfer, blocks, load, backup, faults."""

from __future__ import annotations

import hashlib

import cbor2
import pytest
from conftest import VECTORS

from emulator.coap.message import Code
from emulator.csmp import csmp_pb2 as pb
from emulator.csmp.registry import T, decode_as, encode_tlv
from emulator.csmp.tlv import TlvId, pull_tlvs
from emulator.firmware import bitmap
from emulator.firmware.blockstore import BlockStore
from emulator.firmware.image import build_image
from emulator.node import (
    BOOT_FAILED_SUBTYPE,
    Device,
    DeviceFaults,
    DeviceProfile,
    Identity,
    Rc,
    Send,
    SlotImage,
    UploadState,
    image_from_file,
)
from emulator.node.builders import get, post

T0 = 1_700_000_000.0
BS = 512
IDENTITY = Identity(0x00173B0B00000001, "2001:db8::1")
NEW = build_image(bytes(range(256)) * 80, hwid="OPENCSMP", version="7.1.2")
NEW_HASH = hashlib.sha256(NEW).digest()
NBLOCKS = -(-len(NEW) // BS)


def run_file() -> bytes:
    path = VECTORS / "opencsmp-node-6.8-sample-image.bin"
    if path.exists():
        return path.read_bytes()
    return build_image(b"\x01" * 23858, hwid="OPENCSMP", version="6.8.99")


RUN_FILE = run_file()
RUN_HASH = hashlib.sha256(RUN_FILE).digest()


class Bench:
    """One booted device with a RUN image and helpers to talk to it."""

    def __init__(
        self,
        profile: DeviceProfile | None = None,
        faults: DeviceFaults | None = None,
    ) -> None:
        self.store = BlockStore()
        run = image_from_file(self.store, RUN_FILE, BS, "node-6.8.bin")
        self.dev = Device(
            IDENTITY,
            profile or DeviceProfile(),
            self.store,
            seed=1,
            run_image=run,
            faults=faults,
        )
        self.dev.power_on(T0)
        self.now = T0 + self.dev.profile.boot_time
        self.dev.on_timer(self.now)

    def post(
        self,
        tlv_type: int,
        msg: pb.TransferRequest | pb.ImageBlock | pb.LoadRequest | pb.HashRequest,
    ) -> list[pb.FirmwareResponse]:
        resp = self.dev.handle(post(encode_tlv(tlv_type, msg)), self.now)
        assert resp is not None and resp.code == Code.CREATED
        return [
            decode_as(t, pb.FirmwareResponse)
            for t in pull_tlvs(resp.payload)
            if t.id.type in (71, 72, 73, 74)
        ]

    def code(
        self, tlv_type: int, msg: pb.TransferRequest | pb.LoadRequest | pb.HashRequest
    ) -> int:
        (answer,) = self.post(tlv_type, msg)
        return answer.response

    def transfer(self, data: bytes = NEW, **kw: object) -> int:
        req = pb.TransferRequest(
            fileHash=hashlib.sha256(data).digest(),
            fileName="new.bin",
            version="7.1.2",
            fileSize=len(data),
            blockSize=BS,
        )
        req.hwInfo.hwId = "OPENCSMP"
        for name, value in kw.items():
            if name == "hwId":
                req.hwInfo.hwId = str(value)
            else:
                setattr(req, name, value)
        return self.code(T.TRANSFER_REQUEST, req)

    def block(
        self, num: int, data: bytes = NEW, file_hash: bytes | None = None
    ) -> None:
        chunk = data[num * BS : (num + 1) * BS]
        msg = pb.ImageBlock(
            fileHash=file_hash or hashlib.sha256(data).digest(),
            blockNum=num,
            blockData=chunk,
        )
        assert self.post(T.IMAGE_BLOCK, msg) == []

    def info(self, index: int) -> pb.FirmwareImageInfo:
        resp = self.dev.handle(get(f"c/75/{index}"), self.now)
        assert resp is not None and resp.code == Code.CONTENT
        (tlv,) = pull_tlvs(resp.payload)
        return decode_as(tlv, pb.FirmwareImageInfo)

    def load(
        self, file_hash: bytes, load_time: int | None = None
    ) -> pb.FirmwareResponse:
        req = pb.LoadRequest(fileHash=file_hash)
        if load_time is not None:
            req.loadTime = load_time
        (answer,) = self.post(T.LOAD_REQUEST, req)
        return answer

    def complete_upload(self, data: bytes = NEW) -> None:
        assert self.transfer(data) == Rc.OK
        for num in range(-(-len(data) // BS)):
            self.block(num, data)

    def advance(self, to: float) -> list[Send]:
        self.now = to
        return self.dev.on_timer(to)


def expected_bitmap(blocks: set[int], nblocks: int) -> bytes:
    out = bytearray((nblocks + 7) // 8)
    for n in blocks:
        out[n // 8] |= 0x80 >> (n % 8)
    return bytes(out)


# ------------------------------------------------------------------ flow


def test_full_upgrade_flow() -> None:
    b = Bench()
    dev = b.dev
    assert dev.running_version == "6.8.99"
    (ok,) = b.post(T.TRANSFER_REQUEST, _transfer_req())
    assert (ok.response, ok.fileHash) == (0, NEW_HASH)
    assert dev.upload_state is UploadState.DOWNLOADING
    # out of order, duplicated, some lost
    sent = [5, 0, 3, 3, 9, 0, NBLOCKS - 1, 7]
    for num in sent:
        b.block(num)
    info = b.info(2)
    assert info.bitmap == expected_bitmap(set(sent), NBLOCKS)
    assert info.fileHash == NEW_HASH and info.version == "7.1.2"
    assert not info.isRunning and not info.isDefault
    # the bitmap is also in the transfer state
    assert b.dev.handle(get("c/65"), b.now) is not None
    # fill in the missing ones
    for num in bitmap.missing(bitmap.from_bytes(info.bitmap, NBLOCKS), NBLOCKS):
        b.block(num)
    assert b.dev.upload_state.value == "complete"
    assert not b.info(2).HasField("bitmap")
    # load in the future
    when = int(b.now) + 100
    answer = b.load(NEW_HASH, when)
    assert (answer.response, answer.loadTime, answer.fileHash) == (0, when, NEW_HASH)
    assert b.info(2).loadTime == when
    b.advance(when - 1)  # (registration attempts meanwhile)
    assert dev.running_version == "6.8.99" and dev.online(when - 1)
    assert b.advance(when) == []  # reboots now
    assert dev.running_version == "7.1.2"
    assert not dev.online(when + 1) and dev.handle(get("c/2"), when + 1) is None
    b.advance(when + dev.profile.boot_time)
    due = dev.next_deadline()
    assert due is not None
    (reg,) = b.advance(due)
    payload = reg.payload
    hw = decode_as(
        next(t for t in pull_tlvs(payload) if t.id == (11, 0)), pb.HardwareDesc
    )
    assert hw.entPhysicalFirmwareRev == "7.1.2"
    run = b.info(1)
    assert run.isRunning and run.fileHash == NEW_HASH
    # set backup from the RUN image
    assert b.code(T.SET_BACKUP_REQUEST, pb.HashRequest(fileHash=NEW_HASH)) == Rc.OK
    backup = b.info(3)
    assert backup.isDefault and backup.fileHash == NEW_HASH


def _transfer_req(**kw: object) -> pb.TransferRequest:
    req = pb.TransferRequest(
        fileHash=NEW_HASH,
        fileName="new.bin",
        version="7.1.2",
        fileSize=len(NEW),
        blockSize=BS,
    )
    req.hwInfo.hwId = "OPENCSMP"
    return req


def test_load_now_variants() -> None:
    for load_time in (None, 0, 1):
        b = Bench()
        b.complete_upload()
        answer = b.load(NEW_HASH, load_time)
        assert answer.response == Rc.OK
        assert b.dev.firmware.load_due == b.now + 1
        b.advance(b.now + 1)
        assert b.dev.running_version == "7.1.2"


def test_new_load_replaces_pending_and_cancel() -> None:
    b = Bench()
    b.complete_upload()
    b.load(NEW_HASH, int(b.now) + 500)
    b.load(NEW_HASH, int(b.now) + 50)
    assert b.dev.firmware.load_due == b.now + 50
    other = hashlib.sha256(b"x").digest()
    assert b.code(T.CANCEL_LOAD_REQUEST, pb.HashRequest(fileHash=other)) == Rc.OK
    assert b.dev.firmware.load_slot == 2  # a different hash cancels nothing
    assert b.code(T.CANCEL_LOAD_REQUEST, pb.HashRequest(fileHash=NEW_HASH)) == Rc.OK
    assert b.dev.firmware.load_slot == 0
    assert b.code(T.CANCEL_LOAD_REQUEST, pb.HashRequest(fileHash=NEW_HASH)) == Rc.OK
    assert (
        b.code(T.CANCEL_LOAD_REQUEST, pb.HashRequest(fileHash=b"short"))
        == Rc.INVALID_REQUEST
    )


# -------------------------------------------------------- response codes


def test_transfer_codes() -> None:
    b = Bench()
    assert b.transfer(hwId="OTHER") == Rc.INCOMPATIBLE_HW
    req = _transfer_req()
    req.ClearField("hwInfo")
    assert b.code(T.TRANSFER_REQUEST, req) == Rc.INCOMPATIBLE_HW
    assert b.transfer(fileHash=NEW_HASH[:31]) == Rc.INVALID_REQUEST
    assert b.transfer(fileSize=0) == Rc.FILE_TOO_BIG
    assert b.transfer(fileSize=512 * 1024 + 1) == Rc.FILE_TOO_BIG
    assert b.transfer(blockSize=0) == Rc.INVALID_BLOCK_SIZE
    assert b.transfer(blockSize=1025) == Rc.INVALID_BLOCK_SIZE
    assert b.transfer(fileSize=200 * 1024, blockSize=199) == Rc.INVALID_BLOCK_SIZE
    assert b.transfer(fileHash=RUN_HASH) == Rc.MATCHES_RUN
    assert b.transfer() == Rc.OK
    assert b.transfer() == Rc.DUPLICATE_TRANSFER
    assert b.dev.upload_state is UploadState.DOWNLOADING


def test_codes_2_3_5_8_9_13_and_no_volume() -> None:
    b = Bench()
    assert b.transfer() == Rc.OK
    assert b.load(NEW_HASH).response == Rc.INCOMPLETE
    assert b.load(hashlib.sha256(b"?").digest()).response == Rc.UNKNOWN_HASH
    assert b.load(RUN_HASH).response == Rc.IMAGE_RUNNING
    assert b.load(b"abc").response == Rc.INVALID_REQUEST
    assert (
        b.code(T.SET_BACKUP_REQUEST, pb.HashRequest(fileHash=NEW_HASH)) == Rc.INCOMPLETE
    )
    assert (
        b.code(T.SET_BACKUP_REQUEST, pb.HashRequest(fileHash=b"\1" * 32))
        == Rc.UNKNOWN_HASH
    )
    for num in range(NBLOCKS):
        b.block(num)
    assert b.load(NEW_HASH, int(b.now) + 100).response == Rc.OK
    assert b.transfer(NEW[:-1] + b"!") == Rc.PENDING_REBOOT
    assert b.load(NEW_HASH, int(b.now) - 100).response == Rc.INVALID_REQUEST
    assert b.dev.firmware.load_slot == 0  # a refused load drops the pending one
    assert b.code(T.SET_BACKUP_REQUEST, pb.HashRequest(fileHash=RUN_HASH)) == Rc.OK
    assert b.transfer(RUN_FILE) == Rc.MATCHES_RUN
    assert b.code(T.SET_BACKUP_REQUEST, pb.HashRequest(fileHash=NEW_HASH)) == Rc.OK
    assert b.transfer() == Rc.DUPLICATE_TRANSFER
    # BACKUP now holds NEW; start another transfer so UPLOAD differs
    third = build_image(b"3" * 3000, hwid="OPENCSMP", version="7.2.0")
    assert b.transfer(third) == Rc.OK
    assert b.transfer() == Rc.MATCHES_BACKUP
    assert b.load(NEW_HASH, int(b.now) + 10).response == Rc.OK  # load backup
    assert (
        b.code(T.SET_BACKUP_REQUEST, pb.HashRequest(fileHash=RUN_HASH))
        == Rc.PENDING_REBOOT
    )
    b.advance(b.now + 10)
    assert b.dev.running_version == "7.1.2"
    novol = Bench(DeviceProfile(slot_size=0))
    assert novol.transfer() == Rc.NO_VOLUME


def test_corrupted_block_makes_slot_bad() -> None:
    b = Bench()
    assert b.transfer() == Rc.OK
    for num in range(NBLOCKS):
        data = NEW
        if num == 4:
            data = NEW[: 4 * BS] + bytes([NEW[4 * BS] ^ 0xFF]) + NEW[4 * BS + 1 :]
        b.block(num, data, file_hash=NEW_HASH)
    assert b.dev.upload_state is UploadState.BAD
    assert b.load(NEW_HASH).response == Rc.IMAGE_CHECK_FAILED


def test_override_only_for_differing_blocks() -> None:
    b = Bench()
    other = Bench()
    other.store = b.store  # share one store, like the fleet
    other.dev.store = b.store
    assert b.transfer() == Rc.OK and other.transfer() == Rc.OK
    bad = NEW[:BS] + b"\0" * BS + NEW[2 * BS :]
    b.block(1, bad, file_hash=NEW_HASH)  # first copy becomes canonical
    for num in range(NBLOCKS):
        other.block(num)
    up = other.dev.firmware.upload
    assert up is not None and up.overrides is not None and set(up.overrides) == {1}
    assert other.dev.upload_state is UploadState.COMPLETE


def test_header_check_rejects_foreign_hwid() -> None:
    foreign = build_image(b"z" * 5000, hwid="SOMEONE", version="7.0.0")
    b = Bench()
    b.complete_upload(foreign)
    assert b.dev.upload_state is UploadState.BAD
    lax = Bench(DeviceProfile(check_image_header=False))
    lax.complete_upload(foreign)
    assert lax.dev.upload_state is UploadState.COMPLETE


def test_blocks_for_other_hash_or_too_big_ignored() -> None:
    b = Bench()
    assert b.transfer() == Rc.OK
    b.block(0, file_hash=b"\0" * 32)
    b.block(0, file_hash=NEW_HASH[:3])
    msg = pb.ImageBlock(fileHash=NEW_HASH, blockNum=NBLOCKS, blockData=b"x")
    b.post(T.IMAGE_BLOCK, msg)
    msg = pb.ImageBlock(fileHash=NEW_HASH, blockNum=0, blockData=b"x" * (BS + 1))
    b.post(T.IMAGE_BLOCK, msg)
    assert b.info(2).bitmap == bytes((NBLOCKS + 7) // 8)
    b.block(0, file_hash=NEW_HASH[:4])  # the agent accepts a 4-byte prefix
    assert b.info(2).bitmap[0] == 0x80


def test_multicast_blocks_with_group_match() -> None:
    b = Bench()
    b.dev.handle(post(encode_tlv(T.GROUP_ASSIGN, pb.Group(type=2, id=77))), b.now)
    assert b.transfer() == Rc.OK
    match = encode_tlv(T.GROUP_MATCH, pb.Group(type=2, id=77))
    for num in range(NBLOCKS):
        block = pb.ImageBlock(
            fileHash=NEW_HASH, blockNum=num, blockData=NEW[num * BS : (num + 1) * BS]
        )
        req = post(
            match + encode_tlv(T.IMAGE_BLOCK, block), confirmable=False, multicast=True
        )
        assert b.dev.handle(req, b.now) is None
    assert b.dev.upload_state is UploadState.COMPLETE


# ---------------------------------------------------------------- faults


def test_fault_refuse_transfer_code() -> None:
    b = Bench(faults=DeviceFaults(refuse_transfer_code=10))
    assert b.transfer() == Rc.NO_VOLUME


def test_fault_flash_write_errors() -> None:
    b = Bench(faults=DeviceFaults(flash_write_error_rate=1.0))
    assert b.transfer() == Rc.OK
    for num in range(NBLOCKS):
        b.block(num)
    assert b.info(2).bitmap == bytes((NBLOCKS + 7) // 8)
    half = Bench(faults=DeviceFaults(flash_write_error_rate=0.5))
    half.transfer()
    for num in range(NBLOCKS):
        half.block(num)
    assert 0 < bitmap.count(bitmap.from_bytes(half.info(2).bitmap, NBLOCKS)) < NBLOCKS


def test_fault_fail_boot_falls_back_and_says_so() -> None:
    b = Bench(faults=DeviceFaults(fail_boot=True))
    b.complete_upload()
    b.load(NEW_HASH)
    b.advance(b.now + 1)
    b.advance(b.now + 30)
    assert b.dev.running_version == "6.8.99"
    due = b.dev.next_deadline()
    assert due is not None
    (reg,) = b.advance(due)
    vendor = [t for t in pull_tlvs(reg.payload) if t.id == TlvId(127, 5771)]
    values = [decode_as(t, pb.VendorTlv) for t in vendor]
    assert (BOOT_FAILED_SUBTYPE, NEW_HASH) in [(v.subType, v.value) for v in values]


def test_power_cycle_keeps_partial_upload_drops_pending_load() -> None:
    b = Bench()
    assert b.transfer() == Rc.OK
    for num in (0, 1, 2):
        b.block(num)
    b.dev.power_cycle(b.now)
    b.advance(b.now + 30)
    assert b.info(2).bitmap[0] == 0xE0
    for num in range(3, NBLOCKS):
        b.block(num)
    b.load(NEW_HASH, int(b.now) + 100)
    b.dev.power_cycle(b.now)
    b.advance(b.now + 30)
    assert b.dev.firmware.load_slot == 0 and b.dev.upload_state is UploadState.COMPLETE


# ----------------------------------------------------------- persistence


def test_snapshot_roundtrip_through_cbor() -> None:
    b = Bench()
    b.dev.handle(post(encode_tlv(T.GROUP_ASSIGN, pb.Group(type=1, id=3))), b.now)
    b.dev.handle(post(encode_tlv(T.SESSION_ID, pb.SessionID(id="sess"))), b.now)
    assert b.transfer() == Rc.OK
    b.block(2, NEW[: BS * 2] + b"\1" * BS + NEW[BS * 3 :], file_hash=NEW_HASH)
    b.block(0)
    other = Bench()
    other.complete_upload()
    other.load(NEW_HASH, int(other.now) + 1000)
    for bench in (b, other):
        snap = cbor2.loads(cbor2.dumps(bench.dev.snapshot()))
        dev = Device.restore(
            IDENTITY, bench.dev.profile, bench.store, snap, seed=1, now=bench.now
        )
        assert dev.snapshot() == bench.dev.snapshot()
        assert not dev.online(bench.now) and dev.online(bench.now + 30)
    restored = Device.restore(
        IDENTITY,
        other.dev.profile,
        other.store,
        other.dev.snapshot(),
        seed=1,
        now=other.now,
    )
    assert restored.firmware.load_slot == 2 and restored.groups == {}


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("v",), 2),
        (("groups",), [1]),
        (("run", "hash"), b"short"),
        (("upload", "bits"), 1 << 200),
        (("upload", "state"), "weird"),
        (("upload", "overrides"), {999: b"x"}),
        (("load",), [1, 0.0, 0]),
        (("load",), [2, "soon", 0]),
        (("reg",), [10, 5]),
        (("report",), [10, [1]]),
        (("session",), 5),
    ],
)
def test_restore_rejects_bad_snapshots(path: tuple[str, ...], value: object) -> None:
    b = Bench()
    b.complete_upload()
    b.load(NEW_HASH, int(b.now) + 100)
    snap = b.dev.snapshot()
    target = snap
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ValueError, match="bad device snapshot"):
        Device.restore(IDENTITY, b.dev.profile, b.store, snap, seed=1, now=b.now)


def test_slot_images_are_shared() -> None:
    store = BlockStore()
    first = image_from_file(store, RUN_FILE, BS)
    second = image_from_file(store, RUN_FILE, BS)
    assert first is second
    assert isinstance(first, SlotImage) and first.nblocks == -(-len(RUN_FILE) // BS)
