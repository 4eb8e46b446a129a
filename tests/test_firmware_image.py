"""Tests of emulator.firmware.image (TPD file format) and emulator.firmware.bitmap."""

from __future__ import annotations

import datetime
import hashlib
import struct
from typing import Any

import pytest
from conftest import VECTORS
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from emulator.firmware import bitmap
from emulator.firmware.image import (
    CRC_OFFSET,
    HEADER_LEN,
    SIG_TRAILER_LEN,
    ImageError,
    ImageHeader,
    Reason,
    build_image,
    check_header,
    crc32_msb,
    format_build_date,
    generate_signing_key,
    load_signing_key,
    load_verify_key,
    parse_image,
    parse_version,
)

VECTOR_FILES = {
    "6.8.99": VECTORS / "opencsmp-node-6.8-sample-image.bin",
    "6.9.99": VECTORS / "opencsmp-node-6.9-sample-image.bin",
}
needs_vectors = pytest.mark.skipif(
    not all(p.exists() for p in VECTOR_FILES.values()), reason="no vectors"
)


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return generate_signing_key()


def _reason(exc: pytest.ExceptionInfo[ImageError]) -> Reason:
    return exc.value.reason


def _refresh_crc(data: bytearray) -> bytearray:
    struct.pack_into("<I", data, CRC_OFFSET, crc32_msb(bytes(data[:CRC_OFFSET])))
    return data


# ------------------------------------------------------------- real vectors


@needs_vectors
@pytest.mark.parametrize("version", sorted(VECTOR_FILES))
def test_real_vectors_parse(version: str) -> None:
    data = VECTOR_FILES[version].read_bytes()
    img = parse_image(data)
    h = img.header
    assert h.hwid == "OPENCSMP"
    assert h.version == version
    assert (h.hdr_version, h.hdr_len, h.app_len) == (2, 256, 24114)
    assert img.file_size == 24114 and len(img.payload) == 24114 - 256
    assert h.app_name == "opencsmp-node"
    assert h.app_git_commit == "gitCommi"  # fills its 8 bytes, no NUL
    assert h.app_build_date == "Mar 15 2024"
    assert h.kernel_rev == version.rsplit(".", 1)[0]
    assert h.sub_hwid == ""
    assert img.signature is None and not img.signature_verified
    assert img.sha256 == hashlib.sha256(data).digest()
    assert h.crc == struct.unpack_from("<I", data, 252)[0]
    assert check_header(data) == h


@needs_vectors
@pytest.mark.parametrize("version", sorted(VECTOR_FILES))
def test_real_vector_header_repacks_byte_exact(version: str) -> None:
    data = VECTOR_FILES[version].read_bytes()
    assert parse_image(data).header.pack() == data[:HEADER_LEN]


def test_crc_known_values() -> None:
    assert crc32_msb(b"") == 0
    # CRC-32/MPEG-2 without its 0xFFFFFFFF init: the "123456789" check value
    # of this variant (init 0, no reflection, no xor) is 0x89A1897F.
    assert crc32_msb(b"123456789") == 0x89A1897F
    assert crc32_msb(b"6789", crc32_msb(b"12345")) == crc32_msb(b"123456789")


# ------------------------------------------------------------- build/parse


def test_build_parse_round_trip() -> None:
    payload = bytes(range(256)) * 10
    data = build_image(
        payload,
        hwid="IR510",
        version="6.10.2",
        name="fw",
        branch="main",
        commit="048841d",
        build_date=datetime.date(2025, 3, 5),
        sub_hwid="B",
        kernel_rev="WISUN1.0",
    )
    img = parse_image(data)
    h = img.header
    assert h.version == "6.10.2"
    assert (h.app_rev_major, h.app_rev_minor, h.app_build) == (6, 10, 2)
    assert (h.hwid, h.sub_hwid, h.kernel_rev) == ("IR510", "B", "WISUN1.0")
    assert (h.app_name, h.app_git_branch, h.app_git_commit) == ("fw", "main", "048841d")
    assert h.app_build_date == "Mar 05 2025"
    assert img.payload == payload
    assert len(data) == h.app_len == HEADER_LEN + len(payload)
    assert data[196:CRC_OFFSET] == bytes(CRC_OFFSET - 196)  # zero padding


def test_build_is_deterministic_without_date() -> None:
    a = build_image(b"x", hwid="H", version="1.2.3")
    assert a == build_image(b"x", hwid="H", version="1.2.3")
    assert parse_image(a).header.app_build_date == ""


def test_version_strings_survive() -> None:
    for text in ("6.10.2", "6.1.20", "0.0.0", "4294967295.1.10"):
        data = build_image(b"", hwid="H", version=text)
        assert parse_image(data).header.version == text


def test_signed_round_trip(key: ec.EllipticCurvePrivateKey) -> None:
    unsigned = build_image(b"payload", hwid="H", version="1.0.1")
    data = build_image(b"payload", hwid="H", version="1.0.1", sign_key=key)
    assert data[: len(unsigned)] == unsigned  # the trailer is appended only
    assert len(data) == len(unsigned) + SIG_TRAILER_LEN
    assert data[len(unsigned) : len(unsigned) + 4] == b"MFSG"
    img = parse_image(data, verify_key=key.public_key())
    assert img.signature_verified and img.signature is not None
    assert img.header.app_len == len(unsigned)
    assert img.payload == b"payload"
    unverified = parse_image(data)
    assert unverified.signature == img.signature
    assert not unverified.signature_verified
    assert check_header(data).app_len == len(unsigned)


def test_key_pem_loading(key: ec.EllipticCurvePrivateKey) -> None:
    from cryptography.hazmat.primitives import serialization

    priv = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    data = build_image(b"p", hwid="H", version="1.0.0", sign_key=load_signing_key(priv))
    assert parse_image(data, verify_key=load_verify_key(pub)).signature_verified
    with pytest.raises(ImageError) as exc:
        load_signing_key(b"not a key")
    assert _reason(exc) is Reason.BAD_KEY
    with pytest.raises(ImageError) as exc:
        load_verify_key(b"not a key")
    assert _reason(exc) is Reason.BAD_KEY


def test_other_curve_key_rejected() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(ImageError) as exc:
        build_image(b"", hwid="H", version="1.0.0", sign_key=p384)
    assert _reason(exc) is Reason.BAD_KEY


# ------------------------------------------------------------- rejections


def _good() -> bytearray:
    return bytearray(build_image(b"z" * 100, hwid="H", version="1.2.3"))


def test_flipped_header_byte_is_crc_mismatch() -> None:
    data = _good()
    data[130] ^= 0x01  # inside hwid
    with pytest.raises(ImageError) as exc:
        parse_image(bytes(data))
    assert _reason(exc) is Reason.CRC_MISMATCH
    assert "expected 0x" in str(exc.value) and "actual 0x" in str(exc.value)


def test_flipped_padding_byte_is_crc_mismatch() -> None:
    data = _good()
    data[200] = 0xFF  # padding is covered by the CRC
    with pytest.raises(ImageError) as exc:
        check_header(bytes(data))
    assert _reason(exc) is Reason.CRC_MISMATCH


def test_flipped_crc_byte_is_crc_mismatch() -> None:
    data = _good()
    data[255] ^= 0x80
    with pytest.raises(ImageError) as exc:
        check_header(bytes(data))
    assert _reason(exc) is Reason.CRC_MISMATCH


@pytest.mark.parametrize("size", [0, 1, 255])
def test_short_file_is_truncated(size: int) -> None:
    with pytest.raises(ImageError) as exc:
        parse_image(bytes(_good()[:size]))
    assert _reason(exc) is Reason.TRUNCATED


def test_truncated_payload_is_size_mismatch() -> None:
    with pytest.raises(ImageError) as exc:
        parse_image(bytes(_good()[:-1]))
    assert _reason(exc) is Reason.SIZE_MISMATCH
    assert "exceeds the file size" in str(exc.value)


def test_app_len_below_header_is_size_mismatch() -> None:
    data = _good()
    struct.pack_into("<I", data, 20, 100)
    with pytest.raises(ImageError) as exc:
        check_header(bytes(_refresh_crc(data)))
    assert _reason(exc) is Reason.SIZE_MISMATCH


def test_check_header_with_file_size() -> None:
    data = bytes(_good())
    assert check_header(data[:HEADER_LEN], file_size=len(data)).app_len == len(data)
    with pytest.raises(ImageError) as exc:
        check_header(data[:HEADER_LEN], file_size=len(data) - 1)
    assert _reason(exc) is Reason.SIZE_MISMATCH


def test_bad_header_version() -> None:
    data = _good()
    struct.pack_into("<I", data, 0, 3)
    with pytest.raises(ImageError) as exc:
        check_header(bytes(_refresh_crc(data)))
    assert _reason(exc) is Reason.HEADER_VERSION


def test_bad_header_length() -> None:
    data = _good()
    struct.pack_into("<I", data, 4, 252)
    with pytest.raises(ImageError) as exc:
        check_header(bytes(_refresh_crc(data)))
    assert _reason(exc) is Reason.HEADER_LENGTH


def test_wrong_signature_key(key: ec.EllipticCurvePrivateKey) -> None:
    data = build_image(b"p", hwid="H", version="1.0.0", sign_key=key)
    other = generate_signing_key().public_key()
    with pytest.raises(ImageError) as exc:
        parse_image(data, verify_key=other)
    assert _reason(exc) is Reason.BAD_SIGNATURE


def test_tampered_payload_fails_signature(key: ec.EllipticCurvePrivateKey) -> None:
    data = bytearray(build_image(b"payload", hwid="H", version="1.0.0", sign_key=key))
    data[HEADER_LEN] ^= 0xFF  # the payload is not covered by the header CRC
    with pytest.raises(ImageError) as exc:
        parse_image(bytes(data), verify_key=key.public_key())
    assert _reason(exc) is Reason.BAD_SIGNATURE


def test_missing_signature(key: ec.EllipticCurvePrivateKey) -> None:
    data = build_image(b"p", hwid="H", version="1.0.0")
    with pytest.raises(ImageError) as exc:
        parse_image(data, verify_key=key.public_key())
    assert _reason(exc) is Reason.MISSING_SIGNATURE


@pytest.mark.parametrize(
    ("offset", "value"),
    [(0, 0x41), (4, 2), (5, 9), (6, 200), (79, 1)],  # magic, ver, alg, len, pad
)
def test_malformed_trailer(
    key: ec.EllipticCurvePrivateKey, offset: int, value: int
) -> None:
    # ECDSA signatures vary in length (70-72 bytes): the last trailer byte is
    # padding only when the signature is shorter than 72. Sign until it is.
    for _ in range(64):
        data = bytearray(build_image(b"p", hwid="H", version="1.0.0", sign_key=key))
        app_len = len(data) - SIG_TRAILER_LEN
        if data[app_len + 6] < 72:
            break
    data[app_len + offset] = value
    with pytest.raises(ImageError) as exc:
        parse_image(bytes(data))
    assert _reason(exc) is Reason.MALFORMED_SIGNATURE


def test_junk_after_app_len_is_malformed_signature() -> None:
    with pytest.raises(ImageError) as exc:
        parse_image(bytes(_good()) + b"\0\0\0")
    assert _reason(exc) is Reason.MALFORMED_SIGNATURE


@pytest.mark.parametrize(
    "version", ["6.10", "6.10.2.1", "6.x.2", "", " 6.1.2", "-1.0.0", "4294967296.0.0"]
)
def test_malformed_version(version: str) -> None:
    with pytest.raises(ImageError) as exc:
        build_image(b"", hwid="H", version=version)
    assert _reason(exc) is Reason.BAD_VERSION


def test_float_version_rejected() -> None:
    with pytest.raises(ImageError) as exc:
        parse_version(6.1)  # type: ignore[arg-type]
    assert _reason(exc) is Reason.BAD_VERSION


@pytest.mark.parametrize(
    ("field", "width"),
    [
        ("hwid", 32),
        ("name", 32),
        ("branch", 32),
        ("commit", 8),
        ("sub_hwid", 32),
        ("kernel_rev", 16),
        ("build_date", 16),
    ],
)
def test_field_too_long(field: str, width: int) -> None:
    fits: dict[str, Any] = {"hwid": "H", field: "a" * width}
    build_image(b"", version="1.0.0", **fits)
    too_long: dict[str, Any] = {"hwid": "H", field: "a" * (width + 1)}
    with pytest.raises(ImageError) as exc:
        build_image(b"", version="1.0.0", **too_long)
    assert _reason(exc) is Reason.FIELD_TOO_LONG


def test_bad_fields() -> None:
    bad: list[dict[str, Any]] = [{"hwid": ""}, {"hwid": "A\0B"}]
    for kwargs in bad:
        with pytest.raises(ImageError) as exc:
            build_image(b"", version="1.0.0", **kwargs)
        assert _reason(exc) is Reason.BAD_FIELD
    with pytest.raises(ImageError) as exc:
        build_image(b"", hwid="H", version="1.0.0", git_flag=-1)
    assert _reason(exc) is Reason.BAD_FIELD


def test_every_reason_is_reachable_here() -> None:
    # keeps the tests above in step with the Reason enum
    tested = {
        Reason.TRUNCATED,
        Reason.HEADER_LENGTH,
        Reason.HEADER_VERSION,
        Reason.CRC_MISMATCH,
        Reason.SIZE_MISMATCH,
        Reason.MISSING_SIGNATURE,
        Reason.BAD_SIGNATURE,
        Reason.MALFORMED_SIGNATURE,
        Reason.BAD_KEY,
        Reason.BAD_VERSION,
        Reason.FIELD_TOO_LONG,
        Reason.BAD_FIELD,
    }
    assert tested == set(Reason)


def test_image_error_is_value_error() -> None:
    err = ImageError(Reason.CRC_MISMATCH, "x")
    assert isinstance(err, ValueError)
    assert str(err) == "crc_mismatch: x"


def test_header_dataclass_is_frozen() -> None:
    h = ImageHeader(
        app_rev_major=1, app_rev_minor=2, app_build=3, app_len=256, hwid="H"
    )
    assert h.version == "1.2.3"
    with pytest.raises(AttributeError):
        h.hwid = "X"  # type: ignore[misc]


def test_format_build_date() -> None:
    assert format_build_date(datetime.date(2025, 3, 15)) == "Mar 15 2025"
    assert format_build_date(datetime.date(2024, 12, 1)) == "Dec 01 2024"


# ------------------------------------------------------------------ bitmap


def test_bitmap_msb_first_vectors() -> None:
    assert bitmap.to_bytes(bitmap.set_block(0, 0), 1) == b"\x80"
    assert bitmap.to_bytes(bitmap.set_block(0, 7), 8) == b"\x01"
    assert bitmap.to_bytes(bitmap.set_block(0, 8), 9) == b"\x00\x80"
    bits = 0
    for n in (0, 1, 9, 15, 16):
        bits = bitmap.set_block(bits, n)
    assert bitmap.to_bytes(bits, 17) == bytes([0b11000000, 0b01000001, 0b10000000])
    assert bitmap.from_bytes(bytes([0b11000000, 0b01000001, 0b10000000]), 17) == bits
    assert bitmap.to_bytes(bitmap.full(10), 10) == b"\xff\xc0"
    assert bitmap.to_bytes(0, 0) == b""


def test_bitmap_helpers() -> None:
    bits = bitmap.from_bytes(b"\xa0", 4)  # blocks 0 and 2
    assert bitmap.missing(bits, 4) == [1, 3]
    assert bitmap.count(bits) == 2
    assert bitmap.has_block(bits, 2) and not bitmap.has_block(bits, 1)
    assert not bitmap.is_complete(bits, 4)
    assert bitmap.is_complete(bitmap.full(4), 4)
    assert bitmap.missing(0, 3) == [0, 1, 2]
    assert bitmap.nbytes(bitmap.MAX_BLOCKS) == 128


def test_bitmap_from_bytes_ignores_padding_bits_and_extra_bytes() -> None:
    assert bitmap.from_bytes(b"\xff\xff\xff", 9) == bitmap.full(9)


def test_bitmap_errors() -> None:
    with pytest.raises(ValueError):
        bitmap.to_bytes(1 << 8, 8)  # bit beyond the last block
    with pytest.raises(ValueError):
        bitmap.from_bytes(b"\x00", 9)  # too short
    with pytest.raises(ValueError):
        bitmap.nbytes(bitmap.MAX_BLOCKS + 1)


@given(st.integers(min_value=0, max_value=bitmap.MAX_BLOCKS), st.data())
def test_bitmap_round_trip(nblocks: int, data: st.DataObject) -> None:
    present = (
        data.draw(st.sets(st.integers(0, max(nblocks - 1, 0)))) if nblocks else set()
    )
    bits = 0
    for n in present:
        bits = bitmap.set_block(bits, n)
    wire = bitmap.to_bytes(bits, nblocks)
    assert len(wire) == (nblocks + 7) // 8
    assert bitmap.from_bytes(wire, nblocks) == bits
    assert bitmap.count(bits) == len(present)
    assert bitmap.missing(bits, nblocks) == sorted(set(range(nblocks)) - present)
    for n in present:
        assert wire[n // 8] >> (7 - n % 8) & 1
