"""CSMP TLV ids and their typed values (protobuf messages of our schema).

The registry layer above :mod:`emulator.csmp.tlv`: it maps each TLV id of
``shared/reference/CSMP.md`` ("TLV ids used here") to its message class in
``csmp.proto``, and turns framed TLVs into typed values and back.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from emulator.csmp import csmp_pb2 as pb
from emulator.csmp.tlv import CodecError, Tlv, TlvId, push_tlv

M = TypeVar("M", bound=Message)


class T(IntEnum):
    """CSMP TLV type numbers (the names follow the CSMP Internet-Draft)."""

    TLV_INDEX = 1
    DEVICE_ID = 2
    SESSION_ID = 7
    DESCRIPTION_REQUEST = 8
    HARDWARE_DESC = 11
    INTERFACE_DESC = 12
    REPORT_SUBSCRIBE = 13
    IP_ADDRESS = 16
    IP_ROUTE = 17
    CURRENT_TIME = 18
    UPTIME = 22
    INTERFACE_METRICS = 23
    IP_ROUTE_RPL_METRICS = 25
    REBOOT_REQUEST = 32
    WPAN_STATUS = 35
    CGMS_SETTINGS = 42
    CGMS_STATUS = 43
    CGMS_NOTIFICATION = 44
    CGMS_STATS = 45
    RPL_INSTANCE = 53
    GROUP_ASSIGN = 55
    GROUP_EVICT = 56
    GROUP_MATCH = 57
    GROUP_INFO = 58
    TRANSFER_REQUEST = 65
    IMAGE_BLOCK = 67
    LOAD_REQUEST = 68
    CANCEL_LOAD_REQUEST = 69
    SET_BACKUP_REQUEST = 70
    TRANSFER_RESPONSE = 71
    LOAD_RESPONSE = 72
    CANCEL_LOAD_RESPONSE = 73
    SET_BACKUP_RESPONSE = 74
    FIRMWARE_IMAGE_INFO = 75
    SIGNATURE_VALIDITY = 76
    SIGNATURE = 77
    SIGNATURE_SETTINGS = 79
    VENDOR = 127


#: TLV type -> message class of its value.
MESSAGE_TYPES: dict[int, type[Message]] = {
    T.TLV_INDEX: pb.TlvIndex,
    T.DEVICE_ID: pb.DeviceID,
    T.SESSION_ID: pb.SessionID,
    T.DESCRIPTION_REQUEST: pb.DescriptionRequest,
    T.HARDWARE_DESC: pb.HardwareDesc,
    T.INTERFACE_DESC: pb.InterfaceDesc,
    T.REPORT_SUBSCRIBE: pb.ReportSubscribe,
    T.IP_ADDRESS: pb.IPAddress,
    T.IP_ROUTE: pb.IPRoute,
    T.CURRENT_TIME: pb.CurrentTime,
    T.UPTIME: pb.Uptime,
    T.INTERFACE_METRICS: pb.InterfaceMetrics,
    T.IP_ROUTE_RPL_METRICS: pb.IPRouteRPLMetrics,
    T.REBOOT_REQUEST: pb.RebootRequest,
    T.WPAN_STATUS: pb.WPANStatus,
    T.CGMS_SETTINGS: pb.CGMSSettings,
    T.CGMS_STATUS: pb.CGMSStatus,
    T.CGMS_NOTIFICATION: pb.CGMSNotification,
    T.CGMS_STATS: pb.CGMSStats,
    T.RPL_INSTANCE: pb.RPLInstance,
    T.GROUP_ASSIGN: pb.Group,
    T.GROUP_EVICT: pb.Group,
    T.GROUP_MATCH: pb.Group,
    T.GROUP_INFO: pb.Group,
    T.TRANSFER_REQUEST: pb.TransferRequest,
    T.IMAGE_BLOCK: pb.ImageBlock,
    T.LOAD_REQUEST: pb.LoadRequest,
    T.CANCEL_LOAD_REQUEST: pb.HashRequest,
    T.SET_BACKUP_REQUEST: pb.HashRequest,
    T.TRANSFER_RESPONSE: pb.FirmwareResponse,
    T.LOAD_RESPONSE: pb.FirmwareResponse,
    T.CANCEL_LOAD_RESPONSE: pb.FirmwareResponse,
    T.SET_BACKUP_RESPONSE: pb.FirmwareResponse,
    T.FIRMWARE_IMAGE_INFO: pb.FirmwareImageInfo,
    T.SIGNATURE_VALIDITY: pb.SignatureValidity,
    T.SIGNATURE: pb.Signature,
    T.SIGNATURE_SETTINGS: pb.SignatureSettings,
}

#: Group types of GroupAssign / GroupMatch / GroupInfo.
GROUP_CONFIG = 1
GROUP_FIRMWARE = 2


def message_type(tlv_id: TlvId) -> type[Message] | None:
    """The value's message class; vendor TLVs use VendorTlv; None if unknown."""
    if tlv_id.vendor:
        return pb.VendorTlv
    return MESSAGE_TYPES.get(tlv_id.type)


def decode_value(tlv: Tlv) -> Message:
    """Parse a TLV's value into its typed message.

    Raises :class:`CodecError` for an unknown id or a malformed value.
    """
    cls = message_type(tlv.id)
    if cls is None:
        raise CodecError(f"unknown TLV {tlv.id}")
    msg = cls()
    try:
        msg.ParseFromString(tlv.value)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise CodecError(f"malformed value of TLV {tlv.id}: {exc}") from None
    return msg


def decode_as(tlv: Tlv, cls: type[M]) -> M:
    """Parse a TLV's value as ``cls`` (caller knows the type)."""
    msg = cls()
    try:
        msg.ParseFromString(tlv.value)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise CodecError(f"malformed value of TLV {tlv.id}: {exc}") from None
    return msg


def encode_tlv(tlv_id: int | TlvId, msg: Message, *, length_width: int = 0) -> bytes:
    """Serialize ``msg`` and frame it as TLV ``tlv_id``."""
    return push_tlv(tlv_id, msg.SerializeToString(), length_width=length_width)


def encode_tlvs(
    items: Iterable[tuple[int | TlvId, Message]], *, length_width: int = 0
) -> bytes:
    """Frame and concatenate several typed TLVs."""
    return b"".join(encode_tlv(i, m, length_width=length_width) for i, m in items)
