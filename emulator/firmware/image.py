"""FND third-party ("TPD") firmware image file format (layer ``firmware``, sans-IO).

Implements the file format of CSMP.md, sections "Firmware file format" and
"Firmware slots", checked against the two real sample images in
``shared/reference/vectors``. A file is::

    header (256 bytes) | vendor image | optional signature trailer
    \\_________ app_len bytes ______/

Header, little endian (offsets in bytes)::

    0   u32 hdr_version (2)        24  char app_name[32]
    4   u32 hdr_len (256)          56  char app_git_branch[32]
    8   u32 app_rev_major          88  char app_git_commit[8]
    12  u32 app_rev_minor          96  u32  app_git_flag
    16  u32 app_build              100 char app_build_date[16]
    20  u32 app_len                116 char hwid[32]
                                   148 char sub_hwid[32]
                                   180 char kernel_rev[16]
    196 zero padding up to 252;    252 u32  CRC-32 over bytes 0..251

Strings are NUL padded and may fill their whole field without a terminator
(the sample images' ``app_git_commit`` does). The CRC covers the padding too:
that is what the sample images do, whatever the format document says.

Signature trailer. Cisco's format leaves the signature to the vendor ("vendor
specific, may be padded"), and FND never reads it. meshfleet's choice is a
fixed 80-byte, self-describing trailer right after ``app_len`` bytes::

    0  4 bytes  magic b"MFSG"
    4  u8       trailer version (1)
    5  u8       algorithm (1 = ECDSA P-256 with SHA-256)
    6  u16 LE   length n of the DER signature (at most 72)
    8  n bytes  DER ECDSA-Sig-Value (r, s), then zero padding to 80 bytes

The signature covers the first ``app_len`` bytes of the file (header and
image), so a signed file still has a valid header and CRC for FND.

Everything here is pure: no file, socket or clock access. Every rejection
raises :class:`ImageError`, whose ``reason`` is a :class:`Reason`.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import re
import struct
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

logger = logging.getLogger(__name__)

HEADER_VERSION: Final = 2
HEADER_LEN: Final = 256
CRC_OFFSET: Final = 252
CRC_POLY: Final = 0x04C11DB7

SIG_MAGIC: Final = b"MFSG"
SIG_TRAILER_VERSION: Final = 1
SIG_ALG_ECDSA_P256_SHA256: Final = 1
SIG_TRAILER_LEN: Final = 80
SIG_MAX_DER: Final = SIG_TRAILER_LEN - 8

# hdr_version .. app_len, then the string fields and app_git_flag
_HEADER = struct.Struct("<6I32s32s8sI16s32s32s16s")
_TRAILER_HEAD = struct.Struct("<4sBBH")
_U32_MAX: Final = 0xFFFFFFFF
_VERSION_RE = re.compile(r"(\d{1,10})\.(\d{1,10})\.(\d{1,10})")
_MONTHS: Final = (
    "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()  # locale-free
)

#: field name -> width in bytes, for the fixed-width string fields
FIELD_WIDTHS: Final = {
    "app_name": 32,
    "app_git_branch": 32,
    "app_git_commit": 8,
    "app_build_date": 16,
    "hwid": 32,
    "sub_hwid": 32,
    "kernel_rev": 16,
}


class Reason(StrEnum):
    """Why an image was rejected (``ImageError.reason``)."""

    TRUNCATED = "truncated"
    HEADER_LENGTH = "bad_header_length"
    HEADER_VERSION = "bad_header_version"
    CRC_MISMATCH = "crc_mismatch"
    SIZE_MISMATCH = "size_mismatch"
    MISSING_SIGNATURE = "missing_signature"
    BAD_SIGNATURE = "bad_signature"
    MALFORMED_SIGNATURE = "malformed_signature"
    BAD_KEY = "bad_key"
    BAD_VERSION = "bad_version"
    FIELD_TOO_LONG = "field_too_long"
    BAD_FIELD = "bad_field"


class ImageError(ValueError):
    """A firmware image (or an argument to build one) is not acceptable."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


# --------------------------------------------------------------------- CRC


def _make_crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = (crc << 1) ^ CRC_POLY if crc & 0x80000000 else crc << 1
        table.append(crc & _U32_MAX)
    return tuple(table)


_CRC_TABLE: Final = _make_crc_table()


def crc32_msb(data: bytes, crc: int = 0) -> int:
    """CRC-32, polynomial 0x04C11DB7, MSB first, no reflection, no final xor."""
    table = _CRC_TABLE
    for byte in data:
        crc = ((crc << 8) & _U32_MAX) ^ table[(crc >> 24) ^ byte]
    return crc


# ------------------------------------------------------------------ header


@dataclass(frozen=True, slots=True)
class ImageHeader:
    """The 256-byte TPD header, decoded."""

    app_rev_major: int
    """Version major number (u32), e.g. 6."""
    app_rev_minor: int
    """Version minor number (u32), e.g. 10."""
    app_build: int
    """Version build number (u32), e.g. 2."""
    app_len: int
    """Bytes of header plus vendor image; excludes any signature."""
    hwid: str
    """Hardware id the image is for; matched case-sensitively by devices."""
    app_name: str = ""
    """Readable application name."""
    app_git_branch: str = ""
    """Source control branch name."""
    app_git_commit: str = ""
    """Source control commit id (8 bytes, no terminator needed)."""
    app_git_flag: int = 1
    """Source control flag; Cisco's tool sets 1."""
    app_build_date: str = ""
    """Build date, "MMM DD YYYY", e.g. "Mar 15 2025"."""
    sub_hwid: str = ""
    """Sub-platform variant, empty when none."""
    kernel_rev: str = ""
    """Firmware kernel version, free text."""
    hdr_version: int = HEADER_VERSION
    """Header format version; 2."""
    hdr_len: int = HEADER_LEN
    """Header length in bytes; 256."""
    crc: int = 0
    """CRC-32 of bytes 0..251 as stored (0 until packed)."""

    @property
    def version(self) -> str:
        """The version as "major.minor.build", e.g. "6.10.2"."""
        return f"{self.app_rev_major}.{self.app_rev_minor}.{self.app_build}"

    def pack(self) -> bytes:
        """The 256 header bytes, with a freshly computed CRC."""
        body = _pack_body(self)
        return body + struct.pack("<I", crc32_msb(body))


def _encode_field(name: str, value: str) -> bytes:
    raw = value.encode("utf-8")
    if b"\0" in raw:
        raise ImageError(Reason.BAD_FIELD, f"{name} contains a NUL byte")
    width = FIELD_WIDTHS[name]
    if len(raw) > width:
        raise ImageError(
            Reason.FIELD_TOO_LONG, f"{name} is {len(raw)} bytes, at most {width}"
        )
    return raw


def _check_u32(name: str, value: int) -> int:
    if not 0 <= value <= _U32_MAX:
        raise ImageError(Reason.BAD_FIELD, f"{name}={value} does not fit a u32")
    return value


def _pack_body(h: ImageHeader) -> bytes:
    ints = [
        _check_u32(n, getattr(h, n))
        for n in (
            "hdr_version",
            "hdr_len",
            "app_rev_major",
            "app_rev_minor",
            "app_build",
            "app_len",
            "app_git_flag",
        )
    ]
    strs = {n: _encode_field(n, getattr(h, n)) for n in FIELD_WIDTHS}
    body = _HEADER.pack(
        *ints[:6],
        strs["app_name"],
        strs["app_git_branch"],
        strs["app_git_commit"],
        ints[6],
        strs["app_build_date"],
        strs["hwid"],
        strs["sub_hwid"],
        strs["kernel_rev"],
    )
    return body.ljust(CRC_OFFSET, b"\0")


def _decode_field(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")


def _unpack_header(data: bytes) -> ImageHeader:
    f = _HEADER.unpack_from(data)
    (crc,) = struct.unpack_from("<I", data, CRC_OFFSET)
    return ImageHeader(
        hdr_version=f[0],
        hdr_len=f[1],
        app_rev_major=f[2],
        app_rev_minor=f[3],
        app_build=f[4],
        app_len=f[5],
        app_name=_decode_field(f[6]),
        app_git_branch=_decode_field(f[7]),
        app_git_commit=_decode_field(f[8]),
        app_git_flag=f[9],
        app_build_date=_decode_field(f[10]),
        hwid=_decode_field(f[11]),
        sub_hwid=_decode_field(f[12]),
        kernel_rev=_decode_field(f[13]),
        crc=crc,
    )


def check_header(data: bytes, *, file_size: int | None = None) -> ImageHeader:
    """Decode and check the header at the start of ``data``.

    This is what a device runs on a completed download: header version and
    length, CRC, and ``app_len`` against the file size. ``file_size`` defaults
    to ``len(data)``; pass it when ``data`` holds only the first bytes of the
    file. Bytes beyond ``app_len`` (a signature) are allowed and not checked.
    """
    if len(data) < HEADER_LEN:
        raise ImageError(
            Reason.TRUNCATED, f"{len(data)} bytes, a header needs {HEADER_LEN}"
        )
    header = _unpack_header(data)
    if header.hdr_version != HEADER_VERSION:
        raise ImageError(
            Reason.HEADER_VERSION,
            f"hdr_version {header.hdr_version}, expected {HEADER_VERSION}",
        )
    if header.hdr_len != HEADER_LEN:
        raise ImageError(
            Reason.HEADER_LENGTH, f"hdr_len {header.hdr_len}, expected {HEADER_LEN}"
        )
    _check_crc(data, header.crc)
    _check_app_len(header.app_len, len(data) if file_size is None else file_size)
    return header


def _check_crc(data: bytes, stored: int) -> None:
    actual = crc32_msb(data[:CRC_OFFSET])
    if actual != stored:
        raise ImageError(
            Reason.CRC_MISMATCH,
            f"header CRC expected 0x{stored:08x} (stored), actual 0x{actual:08x}",
        )


def _check_app_len(app_len: int, file_size: int) -> None:
    if app_len < HEADER_LEN:
        raise ImageError(
            Reason.SIZE_MISMATCH, f"app_len {app_len} is shorter than the header"
        )
    if app_len > file_size:
        raise ImageError(
            Reason.SIZE_MISMATCH,
            f"app_len {app_len} exceeds the file size {file_size}",
        )


# --------------------------------------------------------------- signature


def _check_key_curve(key: ec.EllipticCurvePublicKey) -> None:
    if not isinstance(key.curve, ec.SECP256R1):
        raise ImageError(Reason.BAD_KEY, f"key curve {key.curve.name}, need P-256")


def sign_trailer(signed: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
    """The 80-byte signature trailer over ``signed`` (header + image)."""
    _check_key_curve(key.public_key())
    der = key.sign(signed, ec.ECDSA(hashes.SHA256()))
    head = _TRAILER_HEAD.pack(
        SIG_MAGIC, SIG_TRAILER_VERSION, SIG_ALG_ECDSA_P256_SHA256, len(der)
    )
    return (head + der).ljust(SIG_TRAILER_LEN, b"\0")


def parse_trailer(trailer: bytes) -> bytes:
    """The DER signature held in a trailer; ImageError if malformed."""
    if len(trailer) != SIG_TRAILER_LEN:
        raise ImageError(
            Reason.MALFORMED_SIGNATURE,
            f"{len(trailer)} bytes after app_len, a trailer is {SIG_TRAILER_LEN}",
        )
    magic, version, alg, der_len = _TRAILER_HEAD.unpack_from(trailer)
    if magic != SIG_MAGIC or version != SIG_TRAILER_VERSION:
        raise ImageError(
            Reason.MALFORMED_SIGNATURE, f"trailer magic {magic!r} version {version}"
        )
    if alg != SIG_ALG_ECDSA_P256_SHA256:
        raise ImageError(Reason.MALFORMED_SIGNATURE, f"unknown algorithm {alg}")
    if not 8 <= der_len <= SIG_MAX_DER:
        raise ImageError(Reason.MALFORMED_SIGNATURE, f"signature length {der_len}")
    end = _TRAILER_HEAD.size + der_len
    if any(trailer[end:]):
        raise ImageError(Reason.MALFORMED_SIGNATURE, "non-zero trailer padding")
    return trailer[_TRAILER_HEAD.size : end]


def verify_signature(signed: bytes, der: bytes, key: ec.EllipticCurvePublicKey) -> None:
    """Check an ECDSA P-256/SHA-256 signature; ImageError if it fails."""
    _check_key_curve(key)
    try:
        key.verify(der, signed, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise ImageError(
            Reason.BAD_SIGNATURE, "signature does not verify with this key"
        ) from None


def generate_signing_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def load_signing_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    """An unencrypted PEM private key, which must be ECDSA P-256."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ImageError(Reason.BAD_KEY, f"cannot load private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ImageError(Reason.BAD_KEY, "private key is not an EC key")
    _check_key_curve(key.public_key())
    return key


def load_verify_key(pem: bytes) -> ec.EllipticCurvePublicKey:
    """A PEM public key or certificate, which must be ECDSA P-256."""
    key: object
    try:
        if b"BEGIN CERTIFICATE" in pem:
            key = x509.load_pem_x509_certificate(pem).public_key()
        else:
            key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise ImageError(Reason.BAD_KEY, f"cannot load public key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ImageError(Reason.BAD_KEY, "public key is not an EC key")
    _check_key_curve(key)
    return key


# ------------------------------------------------------------ parse, build


@dataclass(frozen=True, slots=True)
class FirmwareImage:
    """A parsed firmware file."""

    header: ImageHeader
    """The checked header."""
    payload: bytes
    """The vendor image: bytes 256 .. app_len."""
    signature: bytes | None
    """DER ECDSA signature from the trailer, None when the file has none."""
    signature_verified: bool
    """True when a verify key was given and the signature checked out."""
    sha256: bytes
    """SHA-256 of the whole file (the CSMP file hash)."""
    file_size: int
    """Length of the whole file in bytes."""


def parse_image(
    data: bytes, *, verify_key: ec.EllipticCurvePublicKey | None = None
) -> FirmwareImage:
    """Decode and check a whole firmware file.

    With ``verify_key`` a valid signature is required; without it a trailer
    must still be well formed but is not verified.
    """
    header = check_header(data)
    app_len = header.app_len
    trailer = data[app_len:]
    signature = parse_trailer(trailer) if trailer else None
    if verify_key is not None:
        if signature is None:
            raise ImageError(Reason.MISSING_SIGNATURE, "the file has no signature")
        verify_signature(data[:app_len], signature, verify_key)
    return FirmwareImage(
        header=header,
        payload=data[HEADER_LEN:app_len],
        signature=signature,
        signature_verified=verify_key is not None,
        sha256=hashlib.sha256(data).digest(),
        file_size=len(data),
    )


def parse_version(version: str) -> tuple[int, int, int]:
    """ "major.minor.build" as three u32 integers; ImageError if malformed."""
    match = _VERSION_RE.fullmatch(version) if isinstance(version, str) else None
    if match is None:
        raise ImageError(
            Reason.BAD_VERSION, f"version {version!r} is not major.minor.build"
        )
    parts = tuple(int(p) for p in match.groups())
    if any(p > _U32_MAX for p in parts):
        raise ImageError(Reason.BAD_VERSION, f"version {version!r} exceeds u32")
    return parts[0], parts[1], parts[2]


def format_build_date(date: datetime.date) -> str:
    """A date as the header writes it: "Mar 05 2025" (English, locale-free)."""
    return f"{_MONTHS[date.month - 1]} {date.day:02d} {date.year:04d}"


def build_image(
    payload: bytes,
    *,
    hwid: str,
    version: str,
    name: str = "meshfleet",
    branch: str = "",
    commit: str = "",
    git_flag: int = 1,
    build_date: str | datetime.date | None = None,
    sub_hwid: str = "",
    kernel_rev: str = "",
    sign_key: ec.EllipticCurvePrivateKey | None = None,
) -> bytes:
    """A complete firmware file: header, ``payload``, optional signature.

    ``build_date`` None leaves the field empty, so a build is reproducible
    (this layer reads no clock); the CLI passes today's date.
    """
    if not hwid:
        raise ImageError(Reason.BAD_FIELD, "hwid must not be empty")
    major, minor, build = parse_version(version)
    if isinstance(build_date, datetime.date):
        build_date = format_build_date(build_date)
    header = ImageHeader(
        app_rev_major=major,
        app_rev_minor=minor,
        app_build=build,
        app_len=HEADER_LEN + len(payload),
        hwid=hwid,
        app_name=name,
        app_git_branch=branch,
        app_git_commit=commit,
        app_git_flag=git_flag,
        app_build_date=build_date or "",
        sub_hwid=sub_hwid,
        kernel_rev=kernel_rev,
    )
    signed = header.pack() + payload
    if sign_key is None:
        return signed
    return signed + sign_trailer(signed, sign_key)
