"""Wire vectors captured from Cisco's reference agent, read with our codecs.

``tests/vectors/agent/`` holds CoAP payloads (``*.bin``) and the full datagrams
(``manifest.json``) that the csmp-agent-lib Linux sample (commit 7e6ba60) sent
to a capture NMS; see the README there. These tests pin the facts a device
emulator must copy (TLV order, padded length varints, field presence, response
codes) and check that our schema round-trips every value the agent wrote.
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet

from emulator.coap import message as cm
from emulator.csmp import csmp_pb2 as pb
from emulator.csmp.registry import T, decode_as, decode_value
from emulator.csmp.tlv import Tlv, TlvId, pull_tlvs, push_tlv, push_varint

VECTORS = Path(__file__).parent / "vectors" / "agent"
EID = "00173B1122334455"
CISCO_PEN = 5771
AGENT_VENDOR = TlvId(127, CISCO_PEN)
"""The agent frames its vendor TLVs as ``127, 5771, 127``; the real subtype is
field 1 of the value."""
RUN_HASH = bytes.fromhex(
    "61e7e176e2fbcc3e1cc85bb1f499a4026d28cf1d66167691913fd9805be55ba1"
)
# The 5000-byte image the capture NMS announced in its TransferRequest.
CAPTURE_IMAGE = bytes((i * 7) & 0xFF for i in range(5000))

BIN_FILES = sorted(p.name for p in VECTORS.glob("*.bin"))


@cache
def manifest() -> dict[str, Any]:
    with open(VECTORS / "manifest.json", encoding="utf-8") as f:
        doc: dict[str, Any] = json.load(f)
    return doc


def capture(name: str) -> dict[str, Any]:
    for entry in manifest()["captures"]:
        if entry["name"] == name:
            found: dict[str, Any] = entry
            return found
    raise KeyError(name)


def datagram(name: str) -> cm.Message:
    return cm.decode(bytes.fromhex(capture(name)["datagram"]))


def payload(name: str) -> bytes:
    return (VECTORS / f"{name}.bin").read_bytes()


def tlvs(name: str) -> list[Tlv]:
    return pull_tlvs(payload(name))


def ids(name: str) -> list[str]:
    return [str(t.id) for t in tlvs(name)]


def values(name: str, tlv_type: int) -> list[Message]:
    return [decode_value(t) for t in tlvs(name) if t.id == TlvId(tlv_type)]


def is_vendor_q_quirk(name: str, tlv: Tlv) -> bool:
    """GET /c?q=e5771.1: the agent dispatches on the type alone and frames
    TlvIndex (type 1) content as vendor TLV e5771.1."""
    return name == "get_q_vendor" and tlv.id == TlvId(1, CISCO_PEN)


# --------------------------------------------------------------------------
# Every vector: framing, typed decoding, byte-exact re-encoding.


def test_vectors_present() -> None:
    assert "register.bin" in BIN_FILES
    assert len(BIN_FILES) >= 30


@pytest.mark.parametrize("name", BIN_FILES)
def test_framing_padded_and_reframes_identically(name: str) -> None:
    data = (VECTORS / name).read_bytes()
    out = b""
    for tlv in pull_tlvs(data):
        # The agent writes every length as a two-byte varint (0x94 0x00 = 20).
        head = push_tlv(tlv.id, b"")[:-1]  # type (and PEN/subtype) only
        length_bytes = data[tlv.start + len(head) : tlv.start + len(head) + 2]
        assert length_bytes == push_varint(len(tlv.value), 2), (name, tlv.id)
        assert length_bytes[0] & 0x80, "length varint is padded even when < 128"
        out += push_tlv(tlv.id, tlv.value, length_width=2)
    assert out == data


@pytest.mark.parametrize("name", BIN_FILES)
def test_values_decode_and_reencode_byte_exact(name: str) -> None:
    stem = name.removesuffix(".bin")
    for tlv in pull_tlvs((VECTORS / name).read_bytes()):
        if is_vendor_q_quirk(stem, tlv):
            index = decode_as(tlv, pb.TlvIndex)
            assert index.SerializeToString() == tlv.value
            continue
        msg = decode_value(tlv)
        assert len(UnknownFieldSet(msg)) == 0, (name, tlv.id)  # all fields known
        # Unframed, our plain framing differs only by the padding.
        assert msg.SerializeToString() == tlv.value, (name, tlv.id)


def test_manifest_datagrams_match_payload_files() -> None:
    for entry in manifest()["captures"]:
        msg = cm.decode(bytes.fromhex(entry["datagram"]))
        if entry.get("file"):
            assert msg.payload == (VECTORS / entry["file"]).read_bytes()
        elif "code" in entry:
            assert msg.payload == b"", entry["name"]
        if "code" in entry:
            assert cm.code_text(msg.code) == entry["code"]
            assert cm.Type(msg.type).name == entry["type"]


def test_responses_are_piggybacked_acks_without_options() -> None:
    """Every answer to a CON request is an ACK that echoes the MID and token
    (0 to 8 bytes) and carries no option at all (no Content-Format)."""
    checked = 0
    for entry in manifest()["captures"]:
        if "request" not in entry or entry["type"] != "ACK":
            continue
        request = bytes.fromhex(entry["request"])
        msg = datagram(entry["name"])
        assert msg.options == []
        assert msg.mid == int.from_bytes(request[2:4], "big") or entry["name"] == (
            "coap_short"
        )
        try:
            req = cm.decode(request)
        except cm.CoapError:
            continue
        assert msg.token == req.token, entry["name"]
        checked += 1
    assert checked > 40
    assert datagram("get_token8").token == bytes(range(1, 9))
    assert datagram("get_notoken").token == b""


# --------------------------------------------------------------------------
# Registration: CON POST /r


def test_registration_coap_header() -> None:
    msg = datagram("register")
    assert msg.type == cm.Type.CON
    assert msg.code == cm.Code.POST
    assert msg.uri_path == ["r"]
    assert msg.token == b""
    assert msg.options == [(cm.Option.URI_PATH, b"r")]  # no Content-Format
    assert msg.payload[:3] == b"\x02\x94\x00"


def test_registration_tlv_order() -> None:
    assert ids("register") == [
        "2", "18", "11", "12", "12", "16", "16", "16", "17", "23", "23",
        "25", "35", "13", "75", "75", "75",
    ] + [str(AGENT_VENDOR)] * 5  # fmt: skip


def test_registration_retries_use_new_mids() -> None:
    times = manifest()["registration_attempt_times_s"]
    assert len(times) == 3
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    # trickle with -min 2 -max 8: 3 s, then 7 s (doubling interval)
    assert 2.5 < gaps[0] < 4.5 and 5.5 < gaps[1] < 8.5
    assert datagram("register").mid == 2  # attempts 0, 1, 2: one MID each
    assert datagram("report").mid == 3  # same counter for agent requests


def test_registration_device_id() -> None:
    (dev,) = values("register", T.DEVICE_ID)
    assert isinstance(dev, pb.DeviceID)
    assert dev.HasField("type") and dev.type == 1
    assert re.fullmatch(r"[0-9A-F]{16}", dev.id) and dev.id == EID


def test_registration_hardware_desc() -> None:
    (hw,) = values("register", T.HARDWARE_DESC)
    assert isinstance(hw, pb.HardwareDesc)
    present = {f.name for f, _ in hw.ListFields()}
    assert present == {
        "entPhysicalIndex", "entPhysicalDescr", "entPhysicalClass",
        "entPhysicalName", "entPhysicalHardwareRev", "entPhysicalFirmwareRev",
        "entPhysicalSerialNum", "entPhysicalMfgName", "entPhysicalModelName",
        "entPhysicalFunction",
    }  # fmt: skip
    assert hw.entPhysicalFirmwareRev == "6.6.99"
    assert hw.entPhysicalModelName == "OPENCSMP"  # = the hwId of TLV 75
    assert hw.entPhysicalSerialNum == EID
    assert hw.entPhysicalFunction == 1
    assert hw.entPhysicalClass == 9


def test_registration_firmware_slots() -> None:
    slots = values("register", T.FIRMWARE_IMAGE_INFO)
    assert [s.index for s in slots] == [1, 2, 3]  # type: ignore[attr-defined]
    for s in slots:
        assert isinstance(s, pb.FirmwareImageInfo)
        for field in ("index", "fileHash", "fileName", "version", "fileSize"):
            assert s.HasField(field), (s.index, field)
        assert s.HasField("blockSize") and s.blockSize == 0
        assert s.HasField("hwInfo") and s.hwInfo.HasField("hwId")
        assert len(s.fileHash) == 32
        assert not s.HasField("bitmap") and not s.HasField("loadTime")
    run, upload, backup = slots
    assert isinstance(run, pb.FirmwareImageInfo)
    assert isinstance(upload, pb.FirmwareImageInfo)
    assert isinstance(backup, pb.FirmwareImageInfo)
    assert run.fileHash == RUN_HASH and run.isRunning and not run.HasField("isDefault")
    assert run.fileName == "opencsmp-node-6.6.99" and run.version == "6.6.99"
    assert run.fileSize == 27904 and run.hwInfo.hwId == "OPENCSMP"
    # empty slots: zero hash, empty strings, hwInfo with an empty hwId
    assert upload.fileHash == bytes(32) and upload.fileName == ""
    assert upload.fileSize == 0
    assert not upload.HasField("isRunning") and not upload.HasField("isDefault")
    assert upload.hwInfo.hwId == ""
    assert backup.isDefault and backup.fileHash == bytes(32)


def test_registration_other_values() -> None:
    (rs,) = values("register", T.REPORT_SUBSCRIBE)
    assert isinstance(rs, pb.ReportSubscribe)
    assert rs.HasField("interval") and rs.interval == 0 and list(rs.tlvid) == []
    (now,) = values("register", T.CURRENT_TIME)
    assert isinstance(now, pb.CurrentTime)
    assert [f.name for f, _ in now.ListFields()] == ["posix"]
    ifaces = values("register", T.INTERFACE_DESC)
    assert [(i.ifIndex, i.ifName) for i in ifaces] == [  # type: ignore[attr-defined]
        (1, "lo"),
        (2, "lowpan"),
    ]
    assert ifaces[1].ifPhysAddress == bytes.fromhex(EID)  # type: ignore[attr-defined]
    vendor = [decode_value(t) for t in tlvs("register") if t.id == AGENT_VENDOR]
    for sub, v in enumerate(vendor, 1):
        assert isinstance(v, pb.VendorTlv)
        assert v.subType == sub and v.value == bytes([sub]) * 32


# --------------------------------------------------------------------------
# Reports and asynchronous answers (agent -> NMS, NON POST /c)


def test_periodic_report_prepends_session_and_time() -> None:
    msg = datagram("report")
    assert (msg.type, msg.code, msg.uri_path, msg.token) == (
        cm.Type.NON, cm.Code.POST, ["c"], b"",
    )  # fmt: skip
    assert ids("report") == ["7", "18", "22", "23", "23"]
    (sid,) = values("report", T.SESSION_ID)
    assert isinstance(sid, pb.SessionID) and sid.id == "meshfleet-capture-1"


def test_async_get_answer_is_non_post_without_token() -> None:
    msg = datagram("get_non_async")
    assert (msg.type, msg.code, msg.uri_path, msg.token) == (
        cm.Type.NON, cm.Code.POST, ["c"], b"",
    )  # fmt: skip
    assert ids("get_non_async") == ["22"]  # no SessionID / CurrentTime


def test_non_post_without_output_answers_notification() -> None:
    msg = datagram("post_non_group_assign")
    assert (msg.type, msg.code, msg.uri_path) == (cm.Type.NON, cm.Code.POST, ["c"])
    assert msg.token == bytes.fromhex("4d460001")  # the request's token
    assert ids("post_non_group_assign") == ["2", "44"]
    (note,) = values("post_non_group_assign", T.CGMS_NOTIFICATION)
    assert isinstance(note, pb.CGMSNotification) and note.code == 0


# --------------------------------------------------------------------------
# GET /c


def test_get_answers_one_tlv_type() -> None:
    for tid in (1, 2, 7, 11, 12, 13, 16, 17, 18, 22, 23, 25, 35, 53, 75):
        assert set(ids(f"get_{tid}")) == {str(tid)}
        assert capture(f"get_{tid}")["code"] == "2.05"
    for tid in (55, 58):  # nothing to report yet: 2.05, empty payload
        assert capture(f"get_{tid}")["code"] == "2.05"
        assert capture(f"get_{tid}")["file"] is None
    assert capture("get_65")["code"] == "2.05" and capture("get_65")["file"] is None


def test_tlv_index() -> None:
    (index,) = values("get_1", T.TLV_INDEX)
    assert isinstance(index, pb.TlvIndex)
    assert list(index.tlvid) == [
        "1", "2", "7", "55", "58", "13", "11", "12", "16", "17", "18", "22",
        "23", "25", "35", "53", "75", "76", "77", "79",
    ]  # fmt: skip
    assert payload("get_c") == payload("get_1")  # GET /c = TlvIndex


def test_get_paths_and_slot_index() -> None:
    assert payload("get_path_75") == payload("get_75")
    assert payload("get_path_11") == payload("get_11")
    (one,) = values("get_75_1", T.FIRMWARE_IMAGE_INFO)
    assert isinstance(one, pb.FirmwareImageInfo) and one.index == 1
    assert payload("get_75_1") == payload("get_75")[: len(payload("get_75_1"))]
    (two,) = values("get_75_2", T.FIRMWARE_IMAGE_INFO)
    assert isinstance(two, pb.FirmwareImageInfo) and two.index == 2


def test_query_formats() -> None:
    # only one q option is read, ids separated by spaces; unknown ids skipped
    assert ids("get_q_space") == ["11", "22"]
    for name in ("get_q_plus", "get_q_comma", "get_q_two_options"):
        assert ids(name) == ["11"], name
    assert capture("get_q_9999")["code"] == "4.04"
    assert capture("get_path_9999")["code"] == "4.04"


# --------------------------------------------------------------------------
# POST /c


def test_group_assign_then_group_info() -> None:
    assert capture("post_group_assign")["code"] == "2.01"
    assert capture("post_group_assign")["file"] is None  # no SessionID/Time
    info = values("get_58_after_assign", T.GROUP_INFO)
    assert [(g.type, g.id) for g in info] == [(2, 7)]  # type: ignore[attr-defined]
    info = values("get_58_after_assign_cfg", T.GROUP_INFO)
    assert [(g.type, g.id) for g in info] == [(1, 3), (2, 7)]  # type: ignore[attr-defined]


def test_transfer_request_gets_no_transfer_response() -> None:
    for name in (
        "post_transfer",
        "post_transfer_dup",
        "post_transfer_too_big",
        "post_transfer_bad_bs",
        "post_transfer_bad_hash",
        "post_transfer_run_hash",
        "post_transfer_wrong_hwid",
        "post_image_block",
    ):
        assert capture(name)["code"] == "2.01", name
        assert capture(name)["file"] is None, name
    slots = values("get_75_after_transfer", T.FIRMWARE_IMAGE_INFO)
    upload = slots[1]
    assert isinstance(upload, pb.FirmwareImageInfo)
    assert upload.index == 2
    assert upload.fileHash == hashlib.sha256(CAPTURE_IMAGE).digest()
    assert (upload.fileName, upload.version) == ("capture.bin", "6.7.1")
    assert (upload.fileSize, upload.blockSize) == (5000, 1024)
    assert upload.hwInfo.hwId == "OPENCSMP"
    assert upload.HasField("bitmap")
    (after,) = values("get_75_2_after_block", T.FIRMWARE_IMAGE_INFO)
    assert isinstance(after, pb.FirmwareImageInfo)
    assert after.bitmap == b"\x80"  # block 0 of 5, most significant bit first


@pytest.mark.parametrize(
    ("name", "tlv_type", "response"),
    [
        ("post_load_unknown", T.LOAD_RESPONSE, 3),
        ("post_load_incomplete", T.LOAD_RESPONSE, 2),
        ("post_load_run", T.LOAD_RESPONSE, 9),
        ("post_cancel_unknown", T.CANCEL_LOAD_RESPONSE, 0),
        ("post_setbackup_unknown", T.SET_BACKUP_RESPONSE, 0),
    ],
)
def test_firmware_responses_then_session_and_time(
    name: str, tlv_type: int, response: int
) -> None:
    assert capture(name)["code"] == "2.01"
    assert ids(name) == [str(tlv_type), "7", "18"]
    (resp,) = values(name, tlv_type)
    assert isinstance(resp, pb.FirmwareResponse)
    assert resp.HasField("response") and resp.response == response
    assert len(resp.fileHash) == 32 and not resp.HasField("loadTime")


def test_description_request_answers_inline() -> None:
    assert capture("post_description_request")["code"] == "2.01"
    assert ids("post_description_request") == ["75", "75", "75", "22", "7", "18"]


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("delete_c", "4.05"),
        ("put_c", "4.05"),
        ("post_bad_varint", "4.04"),
        ("post_overrun", "4.04"),
        ("post_bad_value", "4.04"),
        ("post_unknown_tlv", "4.04"),
        ("post_empty", "2.01"),
        ("post_session_time", "2.01"),
        ("post_report_subscribe", "2.01"),
        ("get_bad_path", "4.00"),
        ("coap_short", "4.00"),
        ("coap_bad_option", "4.00"),
    ],
)
def test_error_codes(name: str, code: str) -> None:
    entry = capture(name)
    assert entry["code"] == code
    assert entry["type"] == "ACK" and entry["file"] is None
