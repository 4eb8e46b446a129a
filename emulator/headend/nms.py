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
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

from cryptography.hazmat.primitives.asymmetric import ec

from emulator.csmp import csmp_pb2 as pb
from emulator.csmp.registry import GROUP_FIRMWARE, T, decode_as, encode_tlv
from emulator.csmp.signing import sign_payload
from emulator.csmp.tlv import CodecError, Tlv, TlvId, iter_tlvs
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
    handlers = _HANDLERS
    for tlv in iter_tlvs(payload):
        handler = handlers.get(tlv[0])
        if handler is not None:
            handler(report, tlv)
        elif tlv[0][1]:
            _absorb_vendor(report, tlv)
        else:
            report.ignored += 1
    return report


def _device_id(report: DeviceReport, tlv: Tlv) -> None:
    msg = decode_as(tlv, pb.DeviceID)
    if not _EUI.fullmatch(msg.id):
        raise CodecError(f"DeviceID {msg.id!r} is not an EUI-64")
    report.eui = msg.id.upper()


def _hardware_desc(report: DeviceReport, tlv: Tlv) -> None:
    hw = decode_as(tlv, pb.HardwareDesc)
    report.firmware_rev = hw.entPhysicalFirmwareRev
    report.model = hw.entPhysicalModelName
    report.function = hw.entPhysicalFunction


def _image_info(report: DeviceReport, tlv: Tlv) -> None:
    """A FirmwareImageInfo slot; the same value bytes give the same (frozen)
    SlotInfo: 10,000 devices report the same complete slots, so each is
    decoded once and the inventory holds one object for all of them."""
    slot = _SLOTS.get(tlv.value)
    if slot is None:
        slot = SlotInfo.from_tlv(decode_as(tlv, pb.FirmwareImageInfo))
        if len(_SLOTS) >= _SLOTS_MAX:
            _SLOTS.clear()
        _SLOTS[tlv.value] = slot
    report.slots.append(slot)


#: TLV 75 value bytes -> SlotInfo (see :func:`_image_info`); downloading slots
#: differ by bitmap, hence the bound (cleared when full).
_SLOTS: dict[bytes, SlotInfo] = {}
_SLOTS_MAX = 4096


def _response(report: DeviceReport, tlv: Tlv) -> None:
    msg = decode_as(tlv, pb.FirmwareResponse)
    report.responses.append((tlv.id.type, msg.fileHash, msg.response))


#: What we read of a device payload, by TLV id (the rest is counted).
_HANDLERS: dict[TlvId, Callable[[DeviceReport, Tlv], None]] = {
    TlvId(T.DEVICE_ID): _device_id,
    TlvId(T.HARDWARE_DESC): _hardware_desc,
    TlvId(T.FIRMWARE_IMAGE_INFO): _image_info,
    **{TlvId(t): _response for t in RESPONSE_TLVS},
}


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
    subscribe, cgms = _answer_parts(settings)
    session_tlv = encode_tlv(T.SESSION_ID, pb.SessionID(id=session))
    payload = b"".join((subscribe, session_tlv, cgms, group_assign(group_id)))
    return sign_validity(payload, key, now, settings.signature_validity)


@lru_cache(maxsize=64)
def _answer_parts(settings: AnswerSettings) -> tuple[bytes, bytes]:
    """ReportSubscribe and CGMSSettings TLVs: the same in every answer."""
    sub = pb.ReportSubscribe(
        interval=settings.report_interval, tlvid=list(settings.report_tlvs)
    )
    cgms = pb.CGMSSettings(
        regIntervalMin=settings.reg_min, regIntervalMax=settings.reg_max
    )
    return encode_tlv(T.REPORT_SUBSCRIBE, sub), encode_tlv(T.CGMS_SETTINGS, cgms)


@lru_cache(maxsize=1024)
def group_assign(group_id: int) -> bytes:
    """GroupAssign (55): the device's firmware group."""
    return encode_tlv(T.GROUP_ASSIGN, pb.Group(type=GROUP_FIRMWARE, id=group_id))


def sign_validity(
    payload: bytes, key: ec.EllipticCurvePrivateKey, now: float, validity: int
) -> bytes:
    """Sign with a SignatureValidity window from a minute ago to ``validity``."""
    start = max(0, int(now) - 60)
    return sign_payload(payload, key, valid_from=start, valid_until=int(now) + validity)
