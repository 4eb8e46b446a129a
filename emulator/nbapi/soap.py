"""SOAP 1.1 codec and dispatcher of the Firmware Upgrade NB API (protocol layer).

Pure functions, no web framework: :func:`parse_request` turns a request body
into an operation name and its parameters, :func:`build_response` and
:func:`build_fault` make response envelopes, and :func:`handle` runs a whole
exchange against a :class:`~emulator.headend.api.FirmwareApi`, returning the
HTTP status, headers and body for a thin server adapter (see ``app.py``).

The contract is FND's ``meshDeviceOps`` service
(``shared/reference/fnd-nbapi-firmware-upgrade.txt``) as read in ``NBAPI.md``:
dispatch on the Body's first element whatever the SOAPAction; parameter (and
operation) names match case-insensitively, in any namespace and order;
devType may be absent; stopUpload may carry an ignored firmwareImageName;
scheduleReload takes reloadGmtTime or utcDateAndTime. Malformed requests get
SOAP 1.1 faults (HTTP 500); API-level errors are return codes in a normal
response.

Parsing is hardened: no DTD (any DOCTYPE is refused), no entity expansion, no
network, bounded size and depth.
"""

from __future__ import annotations

import codecs
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from lxml import etree

from emulator.headend.api import (
    INVALID_PERMISSIONS,
    FirmwareApi,
    ImageInfoList,
    OpResult,
    ReturnCode,
    ValuePair,
)
from emulator.nbapi.auth import Role, may_call
from emulator.nbapi.wsdl import SOAP12_ENV, SOAP_ENV, TNS

log = logging.getLogger(__name__)

MAX_BODY = 256 * 1024
MAX_DEPTH = 16
CONTENT_TYPE = "text/xml; charset=utf-8"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
_ACTOR_NEXT = "http://schemas.xmlsoap.org/soap/actor/next"

DEV_TYPE = "devType"
GROUP = "firmwareGroup"
IMAGE = "firmwareImageName"
RELOAD_GMT = "reloadGmtTime"
UTC_DATE = "utcDateAndTime"

_XML_INVALID = re.compile(
    "[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)


class FaultCode(Enum):
    """SOAP 1.1 fault codes (the local part; the prefix is the envelope's)."""

    CLIENT = "Client"
    SERVER = "Server"
    VERSION_MISMATCH = "VersionMismatch"
    MUST_UNDERSTAND = "MustUnderstand"


class SoapFault(Exception):
    """A request the service cannot process: answered with a SOAP Fault."""

    def __init__(self, code: FaultCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ResultKind(Enum):
    """What result data an operation's ``return`` carries."""

    NONE = "none"
    PAIRS = "valuePair"
    IMAGES = "firmwareImageInfo"


@dataclass(frozen=True, slots=True)
class SoapRequest:
    """A parsed request: canonical operation name and parameters.

    ``params`` maps canonical parameter names to their stripped text; a
    parameter that was absent is missing, an empty or nil ``devType`` is None.
    """

    operation: str
    params: Mapping[str, str | None]


@dataclass(frozen=True, slots=True)
class SoapResponse:
    """What the HTTP adapter sends, plus labels for metrics and logs."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    operation: str | None = None
    """Canonical operation name; None when the request named none we know."""
    code: int | None = None
    """The FND return code; None for a fault."""


Invoker = Callable[[FirmwareApi, Mapping[str, str | None]], Awaitable[OpResult[Any]]]


@dataclass(frozen=True, slots=True)
class Operation:
    """One of the six operations: its inputs, result data and API call."""

    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    kind: ResultKind
    invoke: Invoker

    @property
    def params(self) -> tuple[str, ...]:
        return self.required + self.optional


def _req(params: Mapping[str, str | None], name: str) -> str:
    return params.get(name) or ""


def _reload_time(params: Mapping[str, str | None]) -> str:
    value = params.get(RELOAD_GMT)
    return value if value is not None else _req(params, UTC_DATE)


async def _start(api: FirmwareApi, p: Mapping[str, str | None]) -> OpResult[Any]:
    return await api.start_upload(p.get(DEV_TYPE), _req(p, GROUP), _req(p, IMAGE))


async def _stop(api: FirmwareApi, p: Mapping[str, str | None]) -> OpResult[Any]:
    return await api.stop_upload(p.get(DEV_TYPE), _req(p, GROUP))


async def _status(api: FirmwareApi, p: Mapping[str, str | None]) -> OpResult[Any]:
    return await api.get_upload_status(p.get(DEV_TYPE), _req(p, GROUP))


async def _images(api: FirmwareApi, p: Mapping[str, str | None]) -> OpResult[Any]:
    return await api.get_image_info_list(p.get(DEV_TYPE), _req(p, GROUP))


async def _backup(api: FirmwareApi, p: Mapping[str, str | None]) -> OpResult[Any]:
    return await api.set_backup_image(p.get(DEV_TYPE), _req(p, GROUP), _req(p, IMAGE))


async def _reload(api: FirmwareApi, p: Mapping[str, str | None]) -> OpResult[Any]:
    return await api.schedule_reload(
        p.get(DEV_TYPE), _req(p, GROUP), _req(p, IMAGE), _reload_time(p)
    )


#: The six operations by their SOAP names.
OPERATIONS: Mapping[str, Operation] = {
    op.name: op
    for op in (
        Operation("startUpload", (GROUP, IMAGE), (DEV_TYPE,), ResultKind.NONE, _start),
        Operation("stopUpload", (GROUP,), (DEV_TYPE, IMAGE), ResultKind.NONE, _stop),
        Operation(
            "getFirmwareUploadStatus", (GROUP,), (DEV_TYPE,), ResultKind.PAIRS, _status
        ),
        Operation(
            "getFirmwareImageInfoList",
            (GROUP,),
            (DEV_TYPE,),
            ResultKind.IMAGES,
            _images,
        ),
        Operation(
            "setBackupFirmwareImage",
            (GROUP, IMAGE),
            (DEV_TYPE,),
            ResultKind.PAIRS,
            _backup,
        ),
        Operation(
            "scheduleReload",
            (GROUP, IMAGE),
            (DEV_TYPE, RELOAD_GMT, UTC_DATE),
            ResultKind.PAIRS,
            _reload,
        ),
    )
}
_BY_LOWER = {name.lower(): op for name, op in OPERATIONS.items()}


# --------------------------------------------------------------------- parsing


class _NoExternal(etree.Resolver):
    """Resolves every external DTD or entity to nothing (no file, no network)."""

    # lxml-stubs 0.5 omit the ``context`` argument lxml passes and takes.
    def resolve(  # type: ignore[override]
        self, system_url: str | None, public_id: str | None, context: object
    ) -> Any:
        log.warning("refused external reference %r", system_url)
        return self.resolve_string("", context)  # type: ignore[call-arg]


def _parser() -> etree.XMLParser:
    # Note: collect_ids=False makes lxml load the external DTD subset; keep it.
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )
    parser.resolvers.add(_NoExternal())
    return parser


_DECLARED = re.compile(rb"""\A\s*<\?xml\s[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)""")
_ASCII_SUPERSETS = frozenset({"utf-8", "utf8", "us-ascii", "ascii", "iso-8859-1"})
_UTF16_STARTS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, b"<\x00", b"\x00<")


def _from_utf16(body: bytes) -> bytes:
    """UTF-16 (WS-I R1012 allows it) re-encoded as UTF-8, declaration too."""
    if body.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        codec = "utf-16"
    else:
        codec = "utf-16-le" if body.startswith(b"<") else "utf-16-be"
    try:
        utf8 = body.decode(codec).encode("utf-8")
    except UnicodeError:
        raise SoapFault(FaultCode.CLIENT, "Malformed UTF-16 request") from None
    match = _DECLARED.match(utf8)
    if match is None:
        return utf8
    return utf8[: match.start(1)] + b"UTF-8" + utf8[match.end(1) :]


def as_utf8(body: bytes) -> bytes:
    """The request in UTF-8 (or an ASCII superset), so byte scans are sound.

    UTF-16 is transcoded; other encodings that are no ASCII superset
    (UTF-32, EBCDIC, ...) are refused.
    """
    if body.startswith(_UTF16_STARTS):
        body = _from_utf16(body)
    if not body.removeprefix(codecs.BOM_UTF8).lstrip().startswith(b"<"):
        raise SoapFault(FaultCode.CLIENT, "Request must be XML in UTF-8 or UTF-16")
    match = _DECLARED.match(body.removeprefix(codecs.BOM_UTF8))
    if match is not None and match[1].decode().lower() not in _ASCII_SUPERSETS:
        raise SoapFault(FaultCode.CLIENT, f"Unsupported encoding {match[1].decode()}")
    return body


def _has_doctype(body: bytes) -> bool:
    """Whether a DTD appears (``body`` in an ASCII superset, see as_utf8)."""
    return b"<!DOCTYPE" in body or b"<!ENTITY" in body


def parse_xml(body: bytes, *, max_size: int = MAX_BODY) -> etree._Element:
    """Parse untrusted XML: size-bounded, no DTD, no entities, no network."""
    if len(body) > max_size:
        raise SoapFault(FaultCode.CLIENT, f"Request larger than {max_size} bytes")
    body = as_utf8(body)
    if _has_doctype(body):
        raise SoapFault(FaultCode.CLIENT, "DOCTYPE is not allowed")
    try:
        root = etree.fromstring(body, _parser())
    except etree.XMLSyntaxError as exc:
        raise SoapFault(FaultCode.CLIENT, f"Malformed XML: {exc.msg}") from None
    docinfo = root.getroottree().docinfo
    if getattr(docinfo, "doctype", "") or docinfo.internalDTD is not None:
        raise SoapFault(FaultCode.CLIENT, "DOCTYPE is not allowed")
    return root


def _check_depth(root: etree._Element, max_depth: int) -> None:
    depth = 0
    for event, _ in etree.iterwalk(root, events=("start", "end")):
        depth += 1 if event == "start" else -1
        if depth > max_depth:
            raise SoapFault(FaultCode.CLIENT, f"XML nested deeper than {max_depth}")


def _local(element: etree._Element) -> str:
    return etree.QName(element).localname


def _namespace(element: etree._Element) -> str | None:
    return etree.QName(element).namespace


def _elements(parent: etree._Element) -> list[etree._Element]:
    return [child for child in parent if isinstance(child.tag, str)]


def _check_envelope(root: etree._Element) -> None:
    if _local(root) == "Envelope" and _namespace(root) == SOAP12_ENV:
        raise SoapFault(FaultCode.VERSION_MISMATCH, "Only SOAP 1.1 is supported")
    if root.tag != f"{{{SOAP_ENV}}}Envelope":
        raise SoapFault(FaultCode.CLIENT, "Not a SOAP 1.1 Envelope")


def _check_headers(envelope: etree._Element) -> None:
    """Refuse header blocks addressed to us that we must understand."""
    for header in envelope.iterchildren(f"{{{SOAP_ENV}}}Header"):
        for block in _elements(header):
            must = block.get(f"{{{SOAP_ENV}}}mustUnderstand", "0").strip()
            actor = block.get(f"{{{SOAP_ENV}}}actor", _ACTOR_NEXT)
            if must in ("1", "true") and actor == _ACTOR_NEXT:
                raise SoapFault(
                    FaultCode.MUST_UNDERSTAND,
                    f"Header {etree.QName(block).text} not understood",
                )


def _operation_element(envelope: etree._Element) -> etree._Element:
    body = envelope.find(f"{{{SOAP_ENV}}}Body")
    if body is None:
        raise SoapFault(FaultCode.CLIENT, "No SOAP Body")
    children = _elements(body)
    if not children:
        raise SoapFault(FaultCode.CLIENT, "Empty SOAP Body")
    return children[0]


def _operation_for(element: etree._Element) -> Operation:
    namespace = _namespace(element)
    op = _BY_LOWER.get(_local(element).lower())
    if op is None or namespace not in (TNS, None):
        name = _clean(etree.QName(element).text)[:200]
        raise SoapFault(FaultCode.CLIENT, f"Unknown operation {name}")
    return op


def _param_text(op: Operation, name: str, element: etree._Element) -> str | None:
    if _elements(element):
        raise SoapFault(FaultCode.CLIENT, f"{op.name}: {name} must be text")
    if element.get(f"{{{XSI_NS}}}nil", "").strip() in ("1", "true"):
        return None
    text = (element.text or "").strip()
    if name == DEV_TYPE and not text:
        return None  # an empty devType reads as an absent one (cgmesh)
    return text


def _read_params(op: Operation, element: etree._Element) -> dict[str, str | None]:
    known = {name.lower(): name for name in op.params}
    params: dict[str, str | None] = {}
    for child in _elements(element):
        name = known.get(_local(child).lower())
        if name is None:
            log.debug("%s: ignoring unknown parameter %s", op.name, _local(child))
            continue
        if name in params:
            raise SoapFault(FaultCode.CLIENT, f"{op.name}: {name} given twice")
        params[name] = _param_text(op, name, child)
    _check_required(op, params)
    return params


def _check_required(op: Operation, params: Mapping[str, str | None]) -> None:
    for name in op.required:
        if name not in params:
            raise SoapFault(FaultCode.CLIENT, f"{op.name}: missing {name}")
    if op.name == "scheduleReload" and not (RELOAD_GMT in params or UTC_DATE in params):
        raise SoapFault(
            FaultCode.CLIENT, f"{op.name}: missing {RELOAD_GMT} or {UTC_DATE}"
        )


def parse_request(
    body: bytes, *, max_size: int = MAX_BODY, max_depth: int = MAX_DEPTH
) -> SoapRequest:
    """The operation and parameters of a request; :class:`SoapFault` if bad."""
    root = parse_xml(body, max_size=max_size)
    _check_depth(root, max_depth)
    _check_envelope(root)
    _check_headers(root)
    element = _operation_element(root)
    op = _operation_for(element)
    return SoapRequest(op.name, _read_params(op, element))


# -------------------------------------------------------------------- building


def _clean(text: str) -> str:
    """``text`` without characters XML 1.0 cannot carry."""
    return _XML_INVALID.sub("\ufffd", text)


def _sub(
    parent: etree._Element, tag: str, text: object | None = None
) -> etree._Element:
    element = etree.SubElement(parent, tag)
    if text is not None:
        element.text = _clean(str(text))
    return element


def _envelope() -> tuple[etree._Element, etree._Element]:
    envelope = etree.Element(
        f"{{{SOAP_ENV}}}Envelope", nsmap={"soap": SOAP_ENV, "mes": TNS}
    )
    return envelope, etree.SubElement(envelope, f"{{{SOAP_ENV}}}Body")


def _serialize(envelope: etree._Element) -> bytes:
    return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")


def format_utc(moment: datetime) -> str:
    """An xsd:dateTime in UTC with a ``Z``; naive times are taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _add_pairs(ret: etree._Element, data: object) -> None:
    if data is None:
        return
    if not isinstance(data, list):
        raise TypeError(f"expected a list of ValuePair, got {type(data).__name__}")
    for pair in data:
        if not isinstance(pair, ValuePair):
            raise TypeError(f"expected ValuePair, got {type(pair).__name__}")
        element = _sub(ret, "valuePair")
        _sub(element, "name", pair.name)
        _sub(element, "value", int(pair.value))


def _add_images(ret: etree._Element, data: object) -> None:
    if data is None:
        return
    if not isinstance(data, ImageInfoList):
        raise TypeError(f"expected ImageInfoList, got {type(data).__name__}")
    for image in data.images:
        element = _sub(ret, "firmwareImageInfo")
        _sub(element, "name", image.name)
        _sub(element, "version", image.version)
        _sub(element, "runningCount", int(image.running))
        _sub(element, "uploadedCount", int(image.uploaded))
        _sub(element, "backupCount", int(image.backup))
    _sub(ret, "actionStatus", data.action_status)
    if data.scheduled_reload is not None:
        _sub(ret, "scheduledReloadTime", format_utc(data.scheduled_reload))


def build_response(operation: str, result: OpResult[Any]) -> bytes:
    """The response envelope of ``operation`` carrying ``result``.

    Raises TypeError when the result data does not fit the operation.
    """
    op = OPERATIONS[operation]
    envelope, body = _envelope()
    wrapper = etree.SubElement(body, f"{{{TNS}}}{op.name}Response")
    ret = _sub(wrapper, "return")
    _sub(ret, "code", int(result.code))
    _sub(ret, "message", result.message)
    if op.kind is ResultKind.PAIRS:
        _add_pairs(ret, result.data)
    elif op.kind is ResultKind.IMAGES:
        _add_images(ret, result.data)
    return _serialize(envelope)


def build_fault(code: FaultCode, message: str) -> bytes:
    """A SOAP 1.1 Fault envelope (``faultcode`` prefixed ``soap:``)."""
    envelope, body = _envelope()
    fault = etree.SubElement(body, f"{{{SOAP_ENV}}}Fault")
    _sub(fault, "faultcode", f"soap:{code.value}")
    _sub(fault, "faultstring", message)
    return _serialize(envelope)


def build_request(operation: str, params: Mapping[str, str | None]) -> bytes:
    """A request envelope as the document's examples show it (client side).

    Parameters whose value is None are left out; order follows the WSDL.
    """
    op = OPERATIONS[operation]
    envelope = etree.Element(
        f"{{{SOAP_ENV}}}Envelope", nsmap={"soapenv": SOAP_ENV, "mes": TNS}
    )
    etree.SubElement(envelope, f"{{{SOAP_ENV}}}Header")
    body = etree.SubElement(envelope, f"{{{SOAP_ENV}}}Body")
    wrapper = etree.SubElement(body, f"{{{TNS}}}{op.name}")
    for name in _wsdl_order(op):
        value = params.get(name)
        if value is not None:
            _sub(wrapper, name, value)
    return _serialize(envelope)


def _wsdl_order(op: Operation) -> list[str]:
    order = (DEV_TYPE, GROUP, IMAGE, RELOAD_GMT, UTC_DATE)
    return [name for name in order if name in op.params]


# -------------------------------------------------------------------- dispatch

_HEADERS: Mapping[str, str] = {"Content-Type": CONTENT_TYPE}


def fault_response(fault: SoapFault, operation: str | None = None) -> SoapResponse:
    """HTTP 500 with a Fault envelope (SOAP 1.1 section 6.2)."""
    body = build_fault(fault.code, fault.message)
    return SoapResponse(500, _HEADERS, body, operation, None)


async def _call(op: Operation, api: FirmwareApi, request: SoapRequest) -> SoapResponse:
    try:
        result = await op.invoke(api, request.params)
        body = build_response(op.name, result)
    except Exception:
        log.exception("%s failed in the head-end", op.name)
        fault = SoapFault(FaultCode.SERVER, f"{op.name}: internal error")
        return fault_response(fault, op.name)
    log.info("%s %s -> %d", op.name, dict(request.params), result.code)
    return SoapResponse(200, _HEADERS, body, op.name, result.code)


def _denied(op: Operation) -> SoapResponse:
    result: OpResult[None] = OpResult.of(ReturnCode.SYSTEM_ERROR, INVALID_PERMISSIONS)
    body = build_response(op.name, result)
    return SoapResponse(200, _HEADERS, body, op.name, result.code)


async def handle(
    body: bytes, api: FirmwareApi, role: Role, *, max_size: int = MAX_BODY
) -> SoapResponse:
    """One SOAP exchange: parse, check the role's permission, call, answer."""
    try:
        request = parse_request(body, max_size=max_size)
    except SoapFault as fault:
        log.info("SOAP %s fault: %s", fault.code.value, fault.message)
        return fault_response(fault)
    op = OPERATIONS[request.operation]
    if not may_call(role, op.name):
        log.info("%s refused for role %s", op.name, role.value)
        return _denied(op)
    return await _call(op, api, request)
