"""Hypothesis strategies for the fault suite: CoAP datagrams, TLV payloads, SOAP.

No tests here; ``test_fuzz_*`` and ``tools/fuzz.py`` import from it. Every
strategy mixes three sources: plain random bytes, well-formed structures with
random content (valid CoAP header, random options; framed TLVs with random
ids and values) and mutations (bit flips, truncation, insertion, deletion,
duplication) of real messages the fleet and the head-end exchange.
"""

from __future__ import annotations

import hashlib

from hypothesis import strategies as st

from emulator.coap.message import Code, Message, Type, encode, request_options
from emulator.csmp import csmp_pb2 as pb
from emulator.csmp.registry import T, encode_tlv
from emulator.csmp.tlv import TlvId, push_tlv

HASH = hashlib.sha256(b"fuzz").digest()


def _hw(hwid: str = "OPENCSMP") -> pb.TransferRequest:
    req = pb.TransferRequest(
        fileHash=HASH,
        fileName="fuzz.bin",
        version="9.9.9",
        fileSize=4096,
        blockSize=512,
    )
    req.hwInfo.hwId = hwid
    return req


#: Real TLVs of the flows (POST bodies, reports, registrations).
SEED_TLVS: tuple[bytes, ...] = (
    encode_tlv(T.DEVICE_ID, pb.DeviceID(type=1, id="00173bab00000001")),
    encode_tlv(T.SESSION_ID, pb.SessionID(id="fuzz")),
    encode_tlv(T.CURRENT_TIME, pb.CurrentTime(posix=1_700_000_000)),
    encode_tlv(T.DESCRIPTION_REQUEST, pb.DescriptionRequest(tlvid=["75", "2"])),
    encode_tlv(T.REPORT_SUBSCRIBE, pb.ReportSubscribe(interval=3600, tlvid=["22"])),
    encode_tlv(T.CGMS_SETTINGS, pb.CGMSSettings(regIntervalMin=5, regIntervalMax=60)),
    encode_tlv(T.GROUP_ASSIGN, pb.Group(type=2, id=7)),
    encode_tlv(T.GROUP_MATCH, pb.Group(type=2, id=7)),
    encode_tlv(T.TRANSFER_REQUEST, _hw()),
    encode_tlv(T.IMAGE_BLOCK, pb.ImageBlock(fileHash=HASH, blockNum=0, blockData=b"x")),
    encode_tlv(T.LOAD_REQUEST, pb.LoadRequest(fileHash=HASH, loadTime=1)),
    encode_tlv(T.CANCEL_LOAD_REQUEST, pb.HashRequest(fileHash=HASH)),
    encode_tlv(T.SET_BACKUP_REQUEST, pb.HashRequest(fileHash=HASH)),
    encode_tlv(T.TRANSFER_RESPONSE, pb.FirmwareResponse(fileHash=HASH, response=0)),
    encode_tlv(T.LOAD_RESPONSE, pb.FirmwareResponse(fileHash=HASH, response=2)),
    encode_tlv(
        T.FIRMWARE_IMAGE_INFO,
        pb.FirmwareImageInfo(
            index=2,
            fileHash=HASH,
            fileName="fuzz.bin",
            version="9.9.9",
            fileSize=4096,
            blockSize=512,
            bitmap=b"\xf0",
        ),
    ),
    encode_tlv(
        T.FIRMWARE_IMAGE_INFO,
        pb.FirmwareImageInfo(index=1, fileHash=HASH, version="6.8.1", isRunning=True),
    ),
    encode_tlv(
        T.HARDWARE_DESC,
        pb.HardwareDesc(entPhysicalFirmwareRev="6.8.1", entPhysicalModelName="M"),
    ),
    encode_tlv(T.SIGNATURE_VALIDITY, pb.SignatureValidity(notBefore=1, notAfter=2)),
    encode_tlv(T.SIGNATURE, pb.Signature(value=b"\x30\x03\x06\x01\x00")),
    encode_tlv(TlvId(T.VENDOR, 26484), pb.VendorTlv(subType=1, value=b"v")),
)

#: Request paths and queries of the flows.
SEED_PATHS = ("c", "c/2", "c/75", "c/75/2", "r", "c/e26484.1", "c/999", "x/y/z/w")
SEED_QUERIES = ((), ("q=75",), ("q=2+75+22",), ("a=1",), ("a=0", "r=[::1]:1"))


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    """``base`` with a few random edits."""
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(("flip", "truncate", "insert", "delete", "dup")))
        pos = draw(st.integers(0, max(len(data), 1) - 1)) if data else 0
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            del data[pos : pos + draw(st.integers(1, 8))]
        elif op == "dup" and data:
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 16))]
    return bytes(data)


def random_tlv() -> st.SearchStrategy[bytes]:
    """One framed TLV with a random id (vendor too) and random value."""
    ids = st.one_of(
        st.integers(1, 130),
        st.builds(TlvId, st.integers(0, 300), st.integers(1, 2**32 - 1)),
    )
    return st.builds(
        lambda i, v, w: push_tlv(i, v, length_width=w),
        ids,
        st.binary(max_size=64),
        st.sampled_from((0, 2)),
    )


def tlv_payloads() -> st.SearchStrategy[bytes]:
    """TLV payloads: seeds, random TLVs, their mutations, random bytes."""
    framed = st.lists(
        st.one_of(st.sampled_from(SEED_TLVS), random_tlv()), max_size=6
    ).map(b"".join)
    return st.one_of(framed, mutated(framed), st.binary(max_size=200))


@st.composite
def coap_messages(draw: st.DrawFn) -> bytes:
    """A well-formed CoAP header with random options and payload."""
    kind = draw(st.sampled_from(list(Type)))
    code = draw(
        st.one_of(
            st.sampled_from((Code.GET, Code.POST, Code.PUT, Code.DELETE)),
            st.sampled_from(list(Code)),
            st.integers(0, 255),
        )
    )
    if draw(st.booleans()):
        options = request_options(
            draw(st.sampled_from(SEED_PATHS)), list(draw(st.sampled_from(SEED_QUERIES)))
        )
    else:
        numbers = sorted(draw(st.lists(st.integers(0, 2000), max_size=6)))
        options = [(n, draw(st.binary(max_size=20))) for n in numbers]
    message = Message(
        kind,
        code,
        draw(st.integers(0, 0xFFFF)),
        draw(st.binary(max_size=8)),
        options,
        draw(tlv_payloads()),
    )
    return encode(message)


def coap_datagrams() -> st.SearchStrategy[bytes]:
    """Datagrams for a CoAP endpoint: structured, mutated, truncated, random."""
    structured = coap_messages()
    return st.one_of(
        structured,
        mutated(structured),
        structured.flatmap(lambda d: st.integers(0, len(d)).map(lambda n: d[:n])),
        st.binary(max_size=300),
    )


# ------------------------------------------------------------------------ SOAP

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
TNS = "http://meshDeviceOps.nbapi.cgms.cisco.com/"
OPERATIONS = (
    "startUpload",
    "stopUpload",
    "getFirmwareUploadStatus",
    "getFirmwareImageInfoList",
    "setBackupFirmwareImage",
    "scheduleReload",
)
PARAMS = (
    "devType",
    "firmwareGroup",
    "firmwareImageName",
    "reloadGmtTime",
    "utcDateAndTime",
    "other",
)
_TEXT = st.one_of(
    st.sampled_from(("cgmesh", "meters", "fw.bin", "2030-01-01T00:00:00", "", "?")),
    st.text(max_size=30),
)


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@st.composite
def soap_envelopes(draw: st.DrawFn) -> bytes:
    """A SOAP 1.1 request with a random operation and random parameters."""
    op = draw(st.one_of(st.sampled_from(OPERATIONS), st.from_regex(r"[a-zA-Z]{1,12}")))
    params = draw(st.lists(st.tuples(st.sampled_from(PARAMS), _TEXT), max_size=6))
    body = "".join(f"<{n}>{_xml_escape(v)}</{n}>" for n, v in params)
    header = draw(st.sampled_from(("", "<e:Header/>", "<e:Header><x>1</x></e:Header>")))
    text = (
        f'<e:Envelope xmlns:e="{SOAP_ENV}" xmlns:m="{TNS}">{header}'
        f"<e:Body><m:{op}>{body}</m:{op}></e:Body></e:Envelope>"
    )
    try:
        return text.encode(draw(st.sampled_from(("utf-8", "utf-16"))))
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


def soap_bodies() -> st.SearchStrategy[bytes]:
    """SOAP bodies: well-formed, mutated, truncated, random."""
    envelopes = soap_envelopes()
    return st.one_of(
        envelopes,
        mutated(envelopes),
        envelopes.flatmap(lambda d: st.integers(0, len(d)).map(lambda n: d[:n])),
        st.binary(max_size=300),
        st.text(max_size=200).map(lambda t: t.encode("utf-8", "replace")),
    )
