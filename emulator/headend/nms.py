"""The NMS side of CSMP: what devices send us and what we answer (pure).

Layer ``headend``; CSMP.md "Transport" (registration POST ``/r``, reports and
async responses POST ``/c``) and "Seen on the wire between FND and the
reference agent". Functions here turn payloads into a :class:`DeviceReport`
and build the registration answer; the NMS core
(:mod:`emulator.headend.core`) does the bookkeeping.

A registration answer carries, in this order: ReportSubscribe (13; always,
the reference agent crashes without it), SessionID (7), CGMSSettings (42),
GroupAssign (55, type 2: the firmware group), then SignatureValidity (76) and
Signature (77) last, as FND signs it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import ec

from emulator.csmp import csmp_pb2 as pb
from emulator.csmp.registry import GROUP_FIRMWARE, T, decode_as, encode_tlv
from emulator.csmp.signing import sign_payload
from emulator.csmp.tlv import CodecError, Tlv, pull_tlvs
from emulator.headend.inventory import SlotInfo
from emulator.node.device import BOOT_FAILED_SUBTYPE
from emulator.node.firmware import HASH_LEN

logger = logging.getLogger(__name__)

_EUI = re.compile(r"[0-9A-Fa-f]{16}")

#: Firmware response TLVs: id -> short name (for counters and routing)
RESPONSE_TLVS = {
    T.TRANSFER_RESPONSE: "transfer",
    T.LOAD_RESPONSE: "load",
    T.CANCEL_LOAD_RESPONSE: "cancel",
    T.SET_BACKUP_RESPONSE: "backup",
}


@dataclass(slots=True)
class DeviceReport:
    """What one payload from a device told us."""

    eui: str = ""
    """DeviceID (2), when present."""
    firmware_rev: str = ""
    model: str = ""
    function: int = 0
    slots: list[SlotInfo] = field(default_factory=list)
    responses: list[tuple[int, bytes, int]] = field(default_factory=list)
    """(response TLV id, file hash, response code) of TLVs 71-74."""
    ignored: int = 0
    """TLVs we do not use (counted)."""
    boot_failed: bytes = b""
    """File hash of an image the device failed to boot (vendor TLV, subtype
    :data:`~emulator.node.device.BOOT_FAILED_SUBTYPE`), from its registration."""


def parse_report(payload: bytes) -> DeviceReport:
    """Read a device payload; CodecError on bad framing or a bad value."""
    report = DeviceReport()
    for tlv in pull_tlvs(payload):
        _absorb(report, tlv)
    return report


def _absorb(report: DeviceReport, tlv: Tlv) -> None:
    if tlv.id.vendor:
        _absorb_vendor(report, tlv)
        return
    tlv_type = tlv.id.type
    if tlv_type == T.DEVICE_ID:
        msg = decode_as(tlv, pb.DeviceID)
        if not _EUI.fullmatch(msg.id):
            raise CodecError(f"DeviceID {msg.id!r} is not an EUI-64")
        report.eui = msg.id.upper()
    elif tlv_type == T.HARDWARE_DESC:
        hw = decode_as(tlv, pb.HardwareDesc)
        report.firmware_rev = hw.entPhysicalFirmwareRev
        report.model = hw.entPhysicalModelName
        report.function = hw.entPhysicalFunction
    elif tlv_type == T.FIRMWARE_IMAGE_INFO:
        report.slots.append(SlotInfo.from_tlv(decode_as(tlv, pb.FirmwareImageInfo)))
    elif tlv_type in RESPONSE_TLVS:
        msg_r = decode_as(tlv, pb.FirmwareResponse)
        report.responses.append((tlv_type, msg_r.fileHash, msg_r.response))
    else:
        report.ignored += 1


def _absorb_vendor(report: DeviceReport, tlv: Tlv) -> None:
    """Vendor TLVs are opaque, except the boot failure our devices report."""
    try:
        msg = decode_as(tlv, pb.VendorTlv)
    except CodecError:
        report.ignored += 1
        return
    if msg.subType == BOOT_FAILED_SUBTYPE and len(msg.value) == HASH_LEN:
        report.boot_failed = msg.value
    else:
        report.ignored += 1


@dataclass(frozen=True, slots=True)
class AnswerSettings:
    """What every registration answer tells a device."""

    report_interval: int
    report_tlvs: tuple[str, ...]
    reg_min: int
    reg_max: int
    signature_validity: int


def registration_answer(
    settings: AnswerSettings,
    session: str,
    group_id: int,
    key: ec.EllipticCurvePrivateKey,
    now: float,
) -> bytes:
    """The signed 2.03 payload answering a registration."""
    sub = pb.ReportSubscribe(
        interval=settings.report_interval, tlvid=list(settings.report_tlvs)
    )
    payload = b"".join(
        (
            encode_tlv(T.REPORT_SUBSCRIBE, sub),
            encode_tlv(T.SESSION_ID, pb.SessionID(id=session)),
            encode_tlv(
                T.CGMS_SETTINGS,
                pb.CGMSSettings(
                    regIntervalMin=settings.reg_min, regIntervalMax=settings.reg_max
                ),
            ),
            group_assign(group_id),
        )
    )
    return sign_validity(payload, key, now, settings.signature_validity)


def group_assign(group_id: int) -> bytes:
    """GroupAssign (55): the device's firmware group."""
    return encode_tlv(T.GROUP_ASSIGN, pb.Group(type=GROUP_FIRMWARE, id=group_id))


def sign_validity(
    payload: bytes, key: ec.EllipticCurvePrivateKey, now: float, validity: int
) -> bytes:
    """Sign with a SignatureValidity window from a minute ago to ``validity``."""
    start = max(0, int(now) - 60)
    return sign_payload(payload, key, valid_from=start, valid_until=int(now) + validity)
