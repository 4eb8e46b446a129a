"""Property tests: arbitrary and mutated POSTs never break a device."""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator.coap.message import Code
from emulator.csmp import csmp_pb2 as pb
from emulator.csmp.registry import T, encode_tlv
from emulator.csmp.signing import SignatureStatus, check_signature, sign_payload
from emulator.csmp.tlv import CodecError, pull_tlvs
from emulator.firmware.blockstore import BlockStore, ImageKey
from emulator.node import Device, DeviceProfile, Identity, SlotImage
from emulator.node.builders import get, post

T0 = 1_700_000_000.0
KEY = ec.generate_private_key(ec.SECP256R1())
FILE_HASH = hashlib.sha256(b"image").digest()
ANSWER_CODES = {
    Code.CREATED,
    Code.BAD_REQUEST,
    Code.UNAUTHORIZED,
    Code.FORBIDDEN,
    Code.NOT_FOUND,
    Code.CONTENT,
}


def _valid_payload() -> bytes:
    req = pb.TransferRequest(fileHash=FILE_HASH, fileSize=5000, blockSize=512)
    req.hwInfo.hwId = "OPENCSMP"
    body = (
        encode_tlv(T.GROUP_ASSIGN, pb.Group(type=2, id=1))
        + encode_tlv(T.TRANSFER_REQUEST, req)
        + encode_tlv(T.IMAGE_BLOCK, pb.ImageBlock(fileHash=FILE_HASH, blockNum=1))
        + encode_tlv(T.LOAD_REQUEST, pb.LoadRequest(fileHash=FILE_HASH))
        + encode_tlv(T.SET_BACKUP_REQUEST, pb.HashRequest(fileHash=FILE_HASH))
    )
    return sign_payload(body, KEY, valid_from=int(T0) - 10, valid_until=int(T0) + 1000)


VALID = _valid_payload()


def _device(signed: bool) -> Device:
    profile = DeviceProfile(
        req_signed_post=signed,
        req_valid_check_post=signed,
        nms_key=KEY.public_key(),
        boot_time=0,
    )
    run = SlotImage(
        key=ImageKey(hashlib.sha256(b"run").digest(), 512),
        version="1.0.0",
        size=4000,
        hwid="OPENCSMP",
    )
    dev = Device(
        Identity(1, "2001:db8::1"), profile, BlockStore(), seed=1, run_image=run
    )
    dev.power_on(T0)
    return dev


def _mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    out = bytearray(data)
    for pos, value in edits:
        if out:
            out[pos % len(out)] = value
    return bytes(out[:cut] if cut is not None else out)


def _verifies(payload: bytes) -> bool:
    try:
        tlvs = pull_tlvs(payload)
    except CodecError:
        return False
    check = check_signature(
        payload, tlvs, KEY.public_key(), now=T0 + 1, require_validity=True
    )
    return check.status is SignatureStatus.OK


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    payload=st.binary(max_size=300),
    confirmable=st.booleans(),
    multicast=st.booleans(),
    signed=st.booleans(),
)
def test_random_payloads_never_raise(
    payload: bytes, confirmable: bool, multicast: bool, signed: bool
) -> None:
    dev = _device(signed)
    before = dev.snapshot()["run"], dev.snapshot()["backup"]
    resp = dev.handle(
        post(payload, confirmable=confirmable, multicast=multicast), T0 + 1
    )
    assert resp is None or resp.code in ANSWER_CODES
    assert (dev.snapshot()["run"], dev.snapshot()["backup"]) == before
    dev.on_timer(T0 + 1000)
    assert dev.handle(get("c/75"), T0 + 1000) is not None


@settings(max_examples=300, deadline=None)
@given(
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
    cut=st.none() | st.integers(0, len(VALID)),
    extra=st.binary(max_size=20),
)
def test_mutated_signed_posts_change_slots_only_when_valid(
    edits: list[tuple[int, int]], cut: int | None, extra: bytes
) -> None:
    dev = _device(True)
    before = _slots(dev)
    payload = _mutate(VALID, edits, cut) + extra
    resp = dev.handle(post(payload), T0 + 1)
    assert resp is not None and resp.code in ANSWER_CODES
    if _slots(dev) != before:
        assert _verifies(payload)
        assert resp.code == Code.CREATED


def test_unmutated_signed_post_is_applied() -> None:
    dev = _device(True)
    resp = dev.handle(post(VALID), T0 + 1)
    assert resp is not None and resp.code == Code.CREATED
    assert dev.groups == {2: 1} and dev.firmware.upload is not None


def _slots(dev: Device) -> tuple[object, ...]:
    snap = dev.snapshot()
    return snap["run"], snap["upload"], snap["backup"], snap["load"], snap["groups"]
