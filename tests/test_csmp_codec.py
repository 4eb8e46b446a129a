"""TLV framing, typed values and signing (emulator.csmp)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from emulator.csmp import csmp_pb2 as pb
from emulator.csmp.registry import T, decode_value, encode_tlv, encode_tlvs
from emulator.csmp.signing import (
    SignatureStatus,
    check_signature,
    sign_payload,
    unwrap_signature,
    wrap_signature,
)
from emulator.csmp.tlv import (
    CodecError,
    Tlv,
    TlvId,
    pull_tlvs,
    pull_varint,
    push_tlv,
    push_varint,
)


def test_varint_plain_and_padded() -> None:
    assert push_varint(20) == b"\x14"
    assert push_varint(20, 2) == b"\x94\x00"
    assert push_varint(300) == b"\xac\x02"
    assert push_varint(300, 3) == b"\xac\x82\x00"
    assert pull_varint(b"\x94\x00", 0) == (20, 2)
    assert pull_varint(b"\x94\x80\x80\x00", 0) == (20, 4)


def test_varint_rejects_overlong_and_truncated() -> None:
    with pytest.raises(CodecError, match="longer than 5"):
        pull_varint(b"\x80" * 6, 0)
    with pytest.raises(CodecError, match="truncated"):
        pull_varint(b"\x80\x80", 0)
    with pytest.raises(CodecError, match="32 bits"):
        pull_varint(b"\xff\xff\xff\xff\x7f", 0)


def test_agent_style_padded_tlv_reads() -> None:
    # SessionID "abc" as the reference agent frames it: 2-byte length varint.
    value = pb.SessionID(id="abc").SerializeToString()
    wire = b"\x07\x85\x00" + value
    (tlv,) = pull_tlvs(wire)
    assert tlv.id == TlvId(7)
    assert decode_value(tlv) == pb.SessionID(id="abc")
    assert encode_tlv(T.SESSION_ID, pb.SessionID(id="abc"), length_width=2) == wire


def test_vendor_tlv_framing_and_text_id() -> None:
    value = pb.VendorTlv(subType=3, value=b"\x01\x02").SerializeToString()
    wire = push_tlv(TlvId(1, 5771), value)
    # 127, PEN 5771 as a varint, subtype 1, length, value
    assert wire[:5] == b"\x7f\x8b\x2d\x01" + bytes([len(value)])
    (tlv,) = pull_tlvs(wire)
    assert tlv.id == TlvId(1, 5771)
    assert str(tlv.id) == "e5771.1"
    assert TlvId.parse("e5771.1") == TlvId(1, 5771)
    assert TlvId.parse("75") == TlvId(75)
    assert decode_value(tlv) == pb.VendorTlv(subType=3, value=b"\x01\x02")


@pytest.mark.parametrize("text", ["", "x", "e", "e.1", "e0.1", "-3", "0", "75.1"])
def test_bad_text_ids(text: str) -> None:
    with pytest.raises(CodecError):
        TlvId.parse(text)


def test_concatenated_tlvs_round_trip_canonical() -> None:
    items = [
        (T.DEVICE_ID, pb.DeviceID(type=1, id="00173BAB00000001")),
        (T.CURRENT_TIME, pb.CurrentTime(posix=1_700_000_000)),
        (T.REPORT_SUBSCRIBE, pb.ReportSubscribe(interval=300, tlvid=["23", "75"])),
        (T.FIRMWARE_IMAGE_INFO, pb.FirmwareImageInfo(index=2, bitmap=b"\xf0")),
    ]
    wire = encode_tlvs(items)
    tlvs = pull_tlvs(wire)
    assert [t.id.type for t in tlvs] == [2, 18, 13, 75]
    again = b"".join(push_tlv(t.id, t.value) for t in tlvs)
    assert again == wire
    assert [decode_value(t) for t in tlvs] == [m for _, m in items]


def test_explicit_zero_is_encoded() -> None:
    # presence matters on the wire: fileSize 0 must be sent, not dropped
    assert pb.TransferRequest(fileSize=0).SerializeToString() == b"\x28\x00"


def test_framing_errors_have_reasons() -> None:
    with pytest.raises(CodecError, match="claims 5 bytes"):
        pull_tlvs(b"\x07\x05ab")
    with pytest.raises(CodecError, match="type 0"):
        pull_tlvs(b"\x00\x00")
    with pytest.raises(CodecError, match="PEN 0"):
        pull_tlvs(b"\x7f\x00\x01\x00")
    with pytest.raises(CodecError, match="unknown TLV 9999"):
        decode_value(Tlv(TlvId(9999), b""))
    with pytest.raises(CodecError, match="malformed value of TLV 75"):
        decode_value(Tlv(TlvId(75), b"\x0a\x05ab"))


@given(st.binary(max_size=300))
def test_untrusted_bytes_raise_only_codec_error(data: bytes) -> None:
    try:
        tlvs = pull_tlvs(data)
    except CodecError:
        return
    for tlv in tlvs:
        try:
            decode_value(tlv)
        except CodecError:
            pass


@given(st.data())
def test_mutated_payloads_raise_only_codec_error(data: st.DataObject) -> None:
    wire = bytearray(
        encode_tlvs(
            [
                (
                    T.TRANSFER_REQUEST,
                    pb.TransferRequest(fileHash=b"h" * 32, fileSize=9),
                ),
                (T.IMAGE_BLOCK, pb.ImageBlock(blockNum=3, blockData=b"x" * 40)),
            ],
            length_width=2,
        )
    )
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(wire) - 1))
        wire[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(wire)))
    try:
        for tlv in pull_tlvs(bytes(wire[:cut])):
            decode_value(tlv)
    except CodecError:
        pass


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def test_signature_wrapping_matches_fnd_layout() -> None:
    fake = b"\x30\x06\x02\x01\x01\x02\x01\x02"
    wrapped = wrap_signature(fake)
    assert wrapped[0] == 0x30
    assert wrapped[2:12] == bytes.fromhex("06082a8648ce3d040302")
    assert wrapped[12] == 0x03 and wrapped[14] == 0x00
    assert unwrap_signature(wrapped) == fake


def test_sign_and_check(key: ec.EllipticCurvePrivateKey) -> None:
    body = encode_tlv(T.SESSION_ID, pb.SessionID(id="s1"))
    signed = sign_payload(body, key, valid_from=100, valid_until=200)
    tlvs = pull_tlvs(signed)
    assert [t.id.type for t in tlvs] == [7, 76, 77]
    pub = key.public_key()
    ok = check_signature(signed, tlvs, pub, now=150)
    assert ok.status is SignatureStatus.OK
    assert check_signature(signed, tlvs, pub, now=99).reason == (
        "signature not yet valid"
    )
    assert check_signature(signed, tlvs, pub, now=201).reason == "signature expired"
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    assert check_signature(signed, tlvs, other, now=150).status is SignatureStatus.BAD
    unsigned = pull_tlvs(body)
    assert check_signature(body, unsigned, pub, now=150).status is (
        SignatureStatus.MISSING
    )


def test_tampered_payload_fails(key: ec.EllipticCurvePrivateKey) -> None:
    body = encode_tlv(T.SESSION_ID, pb.SessionID(id="s1"))
    signed = bytearray(sign_payload(body, key))
    signed[3] ^= 0x01
    tlvs = pull_tlvs(bytes(signed))
    check = check_signature(bytes(signed), tlvs, key.public_key(), now=0)
    assert check.status is SignatureStatus.BAD


def test_require_validity(key: ec.EllipticCurvePrivateKey) -> None:
    signed = sign_payload(b"", key)
    tlvs = pull_tlvs(signed)
    check = check_signature(
        signed, tlvs, key.public_key(), now=0, require_validity=True
    )
    assert check.reason == "no SignatureValidity TLV"


def test_tlvs_after_the_signature_are_refused(key: ec.EllipticCurvePrivateKey) -> None:
    body = encode_tlv(T.SESSION_ID, pb.SessionID(id="s1"))
    signed = sign_payload(body, key) + encode_tlv(T.SESSION_ID, pb.SessionID(id="x"))
    check = check_signature(signed, pull_tlvs(signed), key.public_key(), now=150)
    assert check.status is SignatureStatus.BAD
    assert check.reason == "TLVs after the Signature TLV"


def test_remembered_verification_does_not_cover_other_bytes(
    key: ec.EllipticCurvePrivateKey,
) -> None:
    """A multicast request is verified once per group; the memo of that
    success must not let a changed payload or another key through."""
    body = encode_tlv(T.SESSION_ID, pb.SessionID(id="s1"))
    signed = sign_payload(body, key)
    pub = key.public_key()
    for _ in range(2):
        assert check_signature(signed, pull_tlvs(signed), pub, now=1).status is (
            SignatureStatus.OK
        )
    forged = signed.replace(b"s1", b"s2")
    assert check_signature(forged, pull_tlvs(forged), pub, now=1).status is (
        SignatureStatus.BAD
    )
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    assert check_signature(signed, pull_tlvs(signed), other, now=1).status is (
        SignatureStatus.BAD
    )
