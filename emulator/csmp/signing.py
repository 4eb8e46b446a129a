"""Signed CSMP payloads: ECDSA P-256 over SHA-256 (TLV 76 and 77).

Payload-signing layer (CSMP Internet-Draft, "Security"; ``shared/reference/
CSMP.md``, "Signed POSTs"). The signature covers every payload byte before the
Signature TLV (77). Its value field holds, as FND sends it, a DER SEQUENCE of
the algorithm OID ecdsa-with-SHA256 and a BIT STRING whose content (after the
unused-bits byte) is the DER ECDSA signature (r, s). SignatureValidity (76)
optionally bounds the time the signature is valid.

Pure functions; time is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from emulator.csmp import csmp_pb2 as pb
from emulator.csmp.registry import T, decode_as, encode_tlv
from emulator.csmp.tlv import CodecError, Tlv

#: DER of OID 1.2.840.10045.4.3.2 (ecdsa-with-SHA256).
_ECDSA_SHA256_OID = bytes.fromhex("06082a8648ce3d040302")
_ECDSA = ec.ECDSA(hashes.SHA256())


class SignatureStatus(Enum):
    """Outcome of checking a payload's signature."""

    OK = "ok"
    MISSING = "missing"
    """No Signature TLV (the agent answers 4.03 to a non-exempt TLV)."""
    BAD = "bad"
    """Malformed or wrong signature, or bad validity (the agent answers 4.01)."""


@dataclass(frozen=True, slots=True)
class SignatureCheck:
    status: SignatureStatus
    reason: str = ""


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def wrap_signature(der_sig: bytes) -> bytes:
    """Wrap a DER ECDSA signature as FND does in TLV 77's value field."""
    bit_string = b"\x03" + _der_len(len(der_sig) + 1) + b"\x00" + der_sig
    body = _ECDSA_SHA256_OID + bit_string
    return b"\x30" + _der_len(len(body)) + body


def _pull_der(data: bytes, pos: int, tag: int) -> tuple[bytes, int]:
    if pos + 2 > len(data) or data[pos] != tag:
        raise CodecError(f"signature: expected DER tag {tag:#x} at {pos}")
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        nbytes = length & 0x7F
        if nbytes == 0 or nbytes > 2 or pos + nbytes > len(data):
            raise CodecError("signature: bad DER length")
        length = int.from_bytes(data[pos : pos + nbytes], "big")
        pos += nbytes
    if pos + length > len(data):
        raise CodecError("signature: truncated DER")
    return data[pos : pos + length], pos + length


def unwrap_signature(value: bytes) -> bytes:
    """Return the DER ECDSA signature inside TLV 77's value field."""
    body, _ = _pull_der(value, 0, 0x30)
    oid, pos = _pull_der(body, 0, 0x06)
    if b"\x06" + bytes([len(oid)]) + oid != _ECDSA_SHA256_OID:
        raise CodecError("signature: algorithm is not ecdsa-with-SHA256")
    bits, _ = _pull_der(body, pos, 0x03)
    if not bits or bits[0] != 0:
        raise CodecError("signature: bad BIT STRING")
    return bits[1:]


def sign_payload(
    payload: bytes,
    key: ec.EllipticCurvePrivateKey,
    *,
    valid_from: int | None = None,
    valid_until: int | None = None,
) -> bytes:
    """Append SignatureValidity (when a window is given) and Signature TLVs.

    Returns the whole signed payload. The validity TLV is covered by the
    signature, as FND does it.
    """
    if valid_from is not None or valid_until is not None:
        validity = pb.SignatureValidity()
        if valid_from is not None:
            validity.notBefore = valid_from
        if valid_until is not None:
            validity.notAfter = valid_until
        payload += encode_tlv(T.SIGNATURE_VALIDITY, validity)
    der = key.sign(payload, _ECDSA)
    return payload + encode_tlv(T.SIGNATURE, pb.Signature(value=wrap_signature(der)))


def check_signature(
    payload: bytes,
    tlvs: list[Tlv],
    key: ec.EllipticCurvePublicKey | None,
    *,
    now: float,
    require_validity: bool = False,
) -> SignatureCheck:
    """Check the signature of a payload already split into ``tlvs``."""
    sig_tlv = next((t for t in tlvs if t.id == (T.SIGNATURE, 0)), None)
    if sig_tlv is None:
        return SignatureCheck(SignatureStatus.MISSING, "no Signature TLV")
    if tlvs[-1].start > sig_tlv.start:
        # FND signs last; TLVs after the signature are covered by nothing.
        return SignatureCheck(SignatureStatus.BAD, "TLVs after the Signature TLV")
    if key is None:
        return SignatureCheck(SignatureStatus.BAD, "no NMS key to verify with")
    validity = next((t for t in tlvs if t.id == (T.SIGNATURE_VALIDITY, 0)), None)
    try:
        window = _validity_error(validity, now, require_validity)
        if window:
            return SignatureCheck(SignatureStatus.BAD, window)
        der = unwrap_signature(decode_as(sig_tlv, pb.Signature).value)
        _verify(key, der, payload[: sig_tlv.start])
    except CodecError as exc:
        return SignatureCheck(SignatureStatus.BAD, exc.reason)
    except InvalidSignature:
        return SignatureCheck(SignatureStatus.BAD, "signature does not verify")
    return SignatureCheck(SignatureStatus.OK)


#: (id(key), signed bytes, DER) -> key, for signatures that verified: a
#: multicast request is checked by every member of the group (10,000 ECDSA
#: verifies of the same bytes otherwise). Verification is deterministic, so
#: a hit is as good as a verify; the key is kept to pin its id.
_VERIFIED: dict[tuple[int, bytes, bytes], ec.EllipticCurvePublicKey] = {}
_VERIFIED_MAX = 256


def _verify(key: ec.EllipticCurvePublicKey, der: bytes, signed: bytes) -> None:
    """``key.verify`` with a memo of recent successes; InvalidSignature."""
    memo = (id(key), signed, der)
    if _VERIFIED.get(memo) is key:
        return
    key.verify(der, signed, _ECDSA)
    if len(_VERIFIED) >= _VERIFIED_MAX:
        _VERIFIED.clear()
    _VERIFIED[memo] = key


def _validity_error(validity: Tlv | None, now: float, required: bool) -> str:
    if validity is None:
        return "no SignatureValidity TLV" if required else ""
    window = decode_as(validity, pb.SignatureValidity)
    if window.HasField("notBefore") and now < window.notBefore:
        return "signature not yet valid"
    if window.HasField("notAfter") and now > window.notAfter:
        return "signature expired"
    return ""


def public_key_from_pem(data: bytes) -> ec.EllipticCurvePublicKey:
    """Load a P-256 public key from a PEM public key or X.509 certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    key: object
    if b"CERTIFICATE" in data:
        key = x509.load_pem_x509_certificate(data).public_key()
    else:
        key = load_pem_public_key(data)
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("NMS key is not an EC key")
    return key
