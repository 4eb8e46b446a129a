"""SOAP codec and dispatcher of the NB API (emulator.nbapi.soap), no HTTP.

Covers the request examples of the FND Firmware Upgrade API document, the
variants NBAPI.md accepts, faults, hardening (XXE, billion laughs, depth,
size) and the schema validity of every response built.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from lxml import etree

from emulator.headend.api import (
    INVALID_PERMISSIONS,
    ImageInfo,
    ImageInfoList,
    OpResult,
    ReturnCode,
    ValuePair,
)
from emulator.nbapi import soap
from emulator.nbapi.auth import Role
from emulator.nbapi.schema_check import SchemaViolation, validate_response
from emulator.nbapi.testing import FakeFirmwareApi
from emulator.nbapi.wsdl import SOAP_ENV, TNS

ENV = 'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"'
MES = 'xmlns:mes="http://meshDeviceOps.nbapi.cgms.cisco.com/"'

# The document's raw request examples, verbatim where they are well-formed.
DOC_START_UPLOAD = b"""
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"
                   xmlns:mes="http://meshDeviceOps.nbapi.cgms.cisco.com/">
    <soapenv:Header/>
    <soapenv:Body>
        <mes:startUpload>
            <firmwareGroup>?</firmwareGroup>
            <firmwareImageName>?</firmwareImageName>
        </mes:startUpload>
    </soapenv:Body>
</soapenv:Envelope>
"""

DOC_STOP_UPLOAD = b"""
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"
    xmlns:mes="http://meshDeviceOps.nbapi.cgms.cisco.com/">
    <soapenv:Header/>
    <soapenv:Body>
        <mes:stopUpload>
            <firmwareGroup>?</firmwareGroup>
            <firmwareImageName>?</firmwareImageName>
        </mes:stopUpload>
    </soapenv:Body>
</soapenv:Envelope>
"""

# Split over a page break in the document; joined again.
DOC_UPLOAD_STATUS = b"""
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"
xmlns:mes="http://meshDeviceOps.nbapi.cgms.cisco.com/">
  <soapenv:Header/>
  <soapenv:Body>
    <mes:getFirmwareUploadStatus>
      <firmwareGroup>?</firmwareGroup>
    </mes:getFirmwareUploadStatus>
</soapenv:Body>
</soapenv:Envelope>
"""

# The document shows no example of its own; shaped like the others.
DOC_IMAGE_INFO = b"""
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"
xmlns:mes="http://meshDeviceOps.nbapi.cgms.cisco.com/">
  <soapenv:Header/>
  <soapenv:Body>
    <mes:getFirmwareImageInfoList>
      <firmwareGroup>?</firmwareGroup>
    </mes:getFirmwareImageInfoList>
  </soapenv:Body>
</soapenv:Envelope>
"""

# First example: `<ns1:msg "http://...">` is malformed; the wrapper is dropped
# and the namespace it meant to bind is declared for `mes`.
DOC_SET_BACKUP_1 = b"""
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"
 xmlns:mes="http://meshDeviceOps.nbapi.cgms.cisco.com/">
  <soapenv:Header/>
  <soapenv:Body>
    <mes:setBackupFirmwareImage>
      <firmwareGroup>?</firmwareGroup>
      <firmwareImageName>?</firmwareImageName>
    </mes:setBackupFirmwareImage>
  </soapenv:Body>
</soapenv:Envelope>
"""

# Second example: `<ns1:mes ...>` closed by `</ns1:Envelope>` and the tag
# `<ns1:mes: setBackupFirmwareImage>` are malformed; fixed to a soapenv
# envelope with ns1 bound to the service namespace, parameters qualified.
DOC_SET_BACKUP_2 = b"""
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"
 xmlns:ns1="http://meshDeviceOps.nbapi.cgms.cisco.com/">
  <soapenv:Header/>
  <soapenv:Body>
    <ns1:setBackupFirmwareImage>
      <ns1:firmwareGroup>?</ns1:firmwareGroup>
      <ns1:firmwareImageName>?</ns1:firmwareImageName>
    </ns1:setBackupFirmwareImage>
  </soapenv:Body>
</soapenv:Envelope>
"""

DOC_SCHEDULE_RELOAD = b"""
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"
xmlns:mes="http://meshDeviceOps.nbapi.cgms.cisco.com/">
  <soapenv:Header/>
  <soapenv:Body>
    <mes:scheduleReload>
      <firmwareGroup>?</firmwareGroup>
      <firmwareImageName>?</firmwareImageName>
      <reloadGmtTime>?</reloadGmtTime>
    </mes:scheduleReload>
  </soapenv:Body>
</soapenv:Envelope>
"""

DOC_EXAMPLES = {
    "startUpload": DOC_START_UPLOAD,
    "stopUpload": DOC_STOP_UPLOAD,
    "getFirmwareUploadStatus": DOC_UPLOAD_STATUS,
    "getFirmwareImageInfoList": DOC_IMAGE_INFO,
    "setBackupFirmwareImage": DOC_SET_BACKUP_1,
    "scheduleReload": DOC_SCHEDULE_RELOAD,
}


def envelope(op_xml: str, *, prefix: str = "soapenv") -> bytes:
    """A SOAP 1.1 request around ``op_xml`` (which may use the mes prefix)."""
    return (
        f'<{prefix}:Envelope xmlns:{prefix}="{SOAP_ENV}" {MES}>'
        f"<{prefix}:Header/><{prefix}:Body>{op_xml}</{prefix}:Body>"
        f"</{prefix}:Envelope>"
    ).encode()


def fault_of(body: bytes) -> tuple[str, str]:
    child = validate_response(body)
    assert child.tag == f"{{{SOAP_ENV}}}Fault"
    return child.findtext("faultcode") or "", child.findtext("faultstring") or ""


def return_of(body: bytes) -> etree._Element:
    child = validate_response(body)
    ret = child.find("return")
    assert ret is not None
    return ret


async def call(
    body: bytes, api: FakeFirmwareApi | None = None, role: Role = Role.OPERATOR
) -> soap.SoapResponse:
    response = await soap.handle(body, api or FakeFirmwareApi(), role)
    validate_response(response.body)
    assert response.headers["Content-Type"].startswith("text/xml")
    return response


# ------------------------------------------------------------ doc examples


@pytest.mark.parametrize("operation", sorted(DOC_EXAMPLES))
async def test_doc_examples_are_accepted(operation: str) -> None:
    api = FakeFirmwareApi()
    response = await call(DOC_EXAMPLES[operation], api)
    assert response.status == 200
    assert response.operation == operation
    # "?" names no group: an API-level error, not a fault.
    assert response.code == ReturnCode.GROUP_NOT_FOUND
    assert len(api.calls) == 1
    assert api.calls[0][1][:2] == (None, "?")  # devType absent


def test_second_set_backup_example_parses() -> None:
    request = soap.parse_request(DOC_SET_BACKUP_2)
    assert request.operation == "setBackupFirmwareImage"
    assert request.params == {"firmwareGroup": "?", "firmwareImageName": "?"}


def test_stop_upload_ignores_image_name() -> None:
    request = soap.parse_request(DOC_STOP_UPLOAD)
    assert request.operation == "stopUpload"


async def test_schedule_reload_passes_reload_gmt_time() -> None:
    api = FakeFirmwareApi()
    body = envelope(
        "<mes:scheduleReload><firmwareGroup>default-cgmesh</firmwareGroup>"
        "<firmwareImageName>cg-mesh-6.6.0.bin</firmwareImageName>"
        "<reloadGmtTime>2030-01-02T03:04:05</reloadGmtTime></mes:scheduleReload>"
    )
    response = await call(body, api)
    assert response.code == 0
    assert api.calls == [
        (
            "schedule_reload",
            (None, "default-cgmesh", "cg-mesh-6.6.0.bin", "2030-01-02T03:04:05"),
        )
    ]
    ret = return_of(response.body)
    assert [p.findtext("name") for p in ret.findall("valuePair")] == [
        "scheduled",
        "failed",
    ]


async def test_schedule_reload_accepts_utc_date_and_time() -> None:
    api = FakeFirmwareApi()
    body = envelope(
        "<mes:scheduleReload><devType>CGMESH</devType>"
        "<firmwareGroup>DEFAULT-CGMESH</firmwareGroup>"
        "<firmwareImageName>cg-mesh-6.6.0.bin</firmwareImageName>"
        "<utcDateAndTime>2030-01-02*03:04:05</utcDateAndTime></mes:scheduleReload>"
    )
    response = await call(body, api)
    assert response.code == 0
    assert api.calls[0][1][3] == "2030-01-02*03:04:05"


async def test_bad_reload_time_is_a_return_code() -> None:
    body = envelope(
        "<mes:scheduleReload><firmwareGroup>default-cgmesh</firmwareGroup>"
        "<firmwareImageName>cg-mesh-6.6.0.bin</firmwareImageName>"
        "<reloadGmtTime>next tuesday</reloadGmtTime></mes:scheduleReload>"
    )
    response = await call(body)
    assert response.status == 200
    assert response.code == ReturnCode.INVALID_DATE_FORMAT


# ------------------------------------------------------------- variants


async def test_parameter_names_are_case_insensitive() -> None:
    api = FakeFirmwareApi()
    body = envelope(
        "<mes:startUpload><DEVTYPE>cgmesh</DEVTYPE>"
        "<FirmwareGroup>default-cgmesh</FirmwareGroup>"
        "<FIRMWAREIMAGENAME>cg-mesh-6.6.0.bin</FIRMWAREIMAGENAME></mes:startUpload>"
    )
    response = await call(body, api)
    assert response.code == 0
    assert api.calls == [
        ("start_upload", ("cgmesh", "default-cgmesh", "cg-mesh-6.6.0.bin"))
    ]


async def test_operation_name_is_case_insensitive() -> None:
    body = envelope(
        "<mes:GETFIRMWAREUPLOADSTATUS><firmwaregroup>x</firmwaregroup>"
        "</mes:GETFIRMWAREUPLOADSTATUS>"
    )
    response = await call(body)
    assert response.operation == "getFirmwareUploadStatus"
    assert validate_response(response.body).tag == (
        f"{{{TNS}}}getFirmwareUploadStatusResponse"
    )


@pytest.mark.parametrize("prefix", ["S", "SOAP-ENV", "env", "x1"])
async def test_any_envelope_prefix(prefix: str) -> None:
    body = envelope(
        "<mes:stopUpload><firmwareGroup>default-cgmesh</firmwareGroup>"
        "</mes:stopUpload>",
        prefix=prefix,
    )
    response = await call(body)
    assert response.code == ReturnCode.GROUP_INACTIVE


async def test_default_namespace_and_no_header() -> None:
    body = (
        f'<Envelope xmlns="{SOAP_ENV}"><Body>'
        f'<getFirmwareImageInfoList xmlns="{TNS}">'
        '<firmwareGroup xmlns="">default-cgmesh</firmwareGroup>'
        "</getFirmwareImageInfoList></Body></Envelope>"
    ).encode()
    response = await call(body)
    assert response.code == 0


async def test_unqualified_operation_element_is_accepted() -> None:
    body = envelope(
        "<getFirmwareUploadStatus><firmwareGroup>default-cgmesh</firmwareGroup>"
        "</getFirmwareUploadStatus>"
    )
    assert (await call(body)).code == 0


async def test_empty_dev_type_reads_as_absent() -> None:
    api = FakeFirmwareApi()
    body = envelope(
        "<mes:getFirmwareUploadStatus><devType/><firmwareGroup> default-cgmesh "
        "</firmwareGroup></mes:getFirmwareUploadStatus>"
    )
    assert (await call(body, api)).code == 0
    assert api.calls == [("get_upload_status", (None, "default-cgmesh"))]


async def test_other_dev_type_gives_minus_one() -> None:
    body = envelope(
        "<mes:getFirmwareUploadStatus><devType>router</devType>"
        "<firmwareGroup>default-cgmesh</firmwareGroup></mes:getFirmwareUploadStatus>"
    )
    response = await call(body)
    assert response.code == ReturnCode.UNSUPPORTED_DEVICE_TYPE
    assert return_of(response.body).findall("valuePair") == []


async def test_xml_declaration_and_utf8_text() -> None:
    body = b'<?xml version="1.0" encoding="UTF-8"?>' + envelope(
        "<mes:getFirmwareUploadStatus><firmwareGroup>gr\u00fcppe</firmwareGroup>"
        "</mes:getFirmwareUploadStatus>"
    )
    api = FakeFirmwareApi()
    assert (await call(body, api)).code == ReturnCode.GROUP_NOT_FOUND
    assert api.calls[0][1][1] == "gr\u00fcppe"


def test_mustunderstand_header_is_refused() -> None:
    body = envelope("<mes:stopUpload><firmwareGroup>g</firmwareGroup></mes:stopUpload>")
    body = body.replace(
        b"<soapenv:Header/>",
        b'<soapenv:Header><x:Sec xmlns:x="urn:x" soapenv:mustUnderstand="1"/>'
        b"</soapenv:Header>",
    )
    with pytest.raises(soap.SoapFault) as caught:
        soap.parse_request(body)
    assert caught.value.code is soap.FaultCode.MUST_UNDERSTAND


# ---------------------------------------------------------------- faults


FAULT_CASES = {
    "malformed": (b"<soapenv:Envelope", "Malformed XML"),
    "not an envelope": (b"<startUpload/>", "Not a SOAP 1.1 Envelope"),
    "no body": (
        f"<soapenv:Envelope {ENV}><soapenv:Header/></soapenv:Envelope>".encode(),
        "No SOAP Body",
    ),
    "empty body": (envelope(""), "Empty SOAP Body"),
    "unknown op": (envelope("<mes:reboot/>"), "Unknown operation"),
    "foreign namespace": (
        envelope('<x:startUpload xmlns:x="urn:other"/>'),
        "Unknown operation",
    ),
    "missing group": (
        envelope(
            "<mes:startUpload><firmwareImageName>i</firmwareImageName>"
            "</mes:startUpload>"
        ),
        "startUpload: missing firmwareGroup",
    ),
    "missing image": (
        envelope(
            "<mes:setBackupFirmwareImage><firmwareGroup>g</firmwareGroup>"
            "</mes:setBackupFirmwareImage>"
        ),
        "setBackupFirmwareImage: missing firmwareImageName",
    ),
    "missing reload time": (
        envelope(
            "<mes:scheduleReload><firmwareGroup>g</firmwareGroup>"
            "<firmwareImageName>i</firmwareImageName></mes:scheduleReload>"
        ),
        "missing reloadGmtTime or utcDateAndTime",
    ),
    "duplicate": (
        envelope(
            "<mes:stopUpload><firmwareGroup>a</firmwareGroup>"
            "<FIRMWAREGROUP>b</FIRMWAREGROUP></mes:stopUpload>"
        ),
        "firmwareGroup given twice",
    ),
    "structured param": (
        envelope(
            "<mes:stopUpload><firmwareGroup><a>b</a></firmwareGroup></mes:stopUpload>"
        ),
        "must be text",
    ),
}


@pytest.mark.parametrize("case", sorted(FAULT_CASES))
async def test_client_faults(case: str) -> None:
    body, text = FAULT_CASES[case]
    api = FakeFirmwareApi()
    response = await call(body, api)
    assert response.status == 500
    assert response.code is None
    code, message = fault_of(response.body)
    assert code == "soap:Client"
    assert text in message
    assert api.calls == []


async def test_soap12_envelope_gets_version_mismatch() -> None:
    body = (
        b'<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope">'
        b"<e:Body/></e:Envelope>"
    )
    response = await call(body)
    assert fault_of(response.body)[0] == "soap:VersionMismatch"


async def test_head_end_exception_is_a_server_fault() -> None:
    class Broken(FakeFirmwareApi):
        async def stop_upload(self, dev_type: str | None, group: str) -> OpResult[None]:
            raise RuntimeError("boom")

    body = envelope("<mes:stopUpload><firmwareGroup>g</firmwareGroup></mes:stopUpload>")
    response = await call(body, Broken())
    assert response.status == 500
    code, message = fault_of(response.body)
    assert code == "soap:Server"
    assert "boom" not in message


async def test_wrong_data_type_is_a_server_fault() -> None:
    class Wrong(FakeFirmwareApi):
        async def get_upload_status(
            self, dev_type: str | None, group: str
        ) -> OpResult[list[ValuePair]]:
            return OpResult(0, "ok", "not a list")  # type: ignore[arg-type]

    body = envelope(
        "<mes:getFirmwareUploadStatus><firmwareGroup>g</firmwareGroup>"
        "</mes:getFirmwareUploadStatus>"
    )
    response = await call(body, Wrong())
    assert fault_of(response.body)[0] == "soap:Server"


# ------------------------------------------------------------ hardening

XXE = f"""<?xml version="1.0"?>
<!DOCTYPE foo [ <!ENTITY xxe SYSTEM "file:///etc/passwd"> ]>
<soapenv:Envelope {ENV} {MES}><soapenv:Body>
<mes:getFirmwareUploadStatus><firmwareGroup>&xxe;</firmwareGroup>
</mes:getFirmwareUploadStatus></soapenv:Body></soapenv:Envelope>"""

XXE_DTD = f"""<?xml version="1.0"?>
<!DOCTYPE foo SYSTEM "file:///etc/passwd">
<soapenv:Envelope {ENV} {MES}><soapenv:Body>
<mes:getFirmwareUploadStatus><firmwareGroup>x</firmwareGroup>
</mes:getFirmwareUploadStatus></soapenv:Body></soapenv:Envelope>"""

LAUGHS = "\n".join(
    ['<!ENTITY lol0 "lol">']
    + [f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)]
)
BILLION_LAUGHS = f"""<?xml version="1.0"?>
<!DOCTYPE lolz [ {LAUGHS} ]>
<soapenv:Envelope {ENV} {MES}><soapenv:Body>
<mes:getFirmwareUploadStatus><firmwareGroup>&lol9;</firmwareGroup>
</mes:getFirmwareUploadStatus></soapenv:Body></soapenv:Envelope>"""


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
@pytest.mark.parametrize("payload", [XXE, XXE_DTD, BILLION_LAUGHS])
async def test_doctype_payloads_are_refused(payload: str, encoding: str) -> None:
    text = payload.replace('encoding="UTF-8"', "")
    if encoding == "utf-16":
        text = text.replace(
            '<?xml version="1.0"?>', '<?xml version="1.0" encoding="UTF-16"?>'
        )
    api = FakeFirmwareApi()
    response = await call(text.encode(encoding), api)
    code, message = fault_of(response.body)
    assert code == "soap:Client"
    assert "DOCTYPE" in message
    assert b"root:" not in response.body
    assert api.calls == []


def test_lone_entity_reference_is_not_expanded() -> None:
    body = envelope(
        "<mes:stopUpload><firmwareGroup>&undefined;</firmwareGroup></mes:stopUpload>"
    )
    with pytest.raises(soap.SoapFault) as caught:
        soap.parse_request(body)
    assert caught.value.code is soap.FaultCode.CLIENT


def test_depth_limit() -> None:
    deep = "<a>" * 40 + "x" + "</a>" * 40
    body = envelope(
        f"<mes:stopUpload><firmwareGroup>g</firmwareGroup>{deep}</mes:stopUpload>"
    )
    with pytest.raises(soap.SoapFault, match="deeper"):
        soap.parse_request(body)


def test_size_limit() -> None:
    body = envelope(
        "<mes:stopUpload><firmwareGroup>" + "g" * 2000 + "</firmwareGroup>"
        "</mes:stopUpload>"
    )
    with pytest.raises(soap.SoapFault, match="larger"):
        soap.parse_request(body, max_size=1000)


# ------------------------------------------------------------ responses


async def test_monitor_may_read_but_not_write() -> None:
    api = FakeFirmwareApi()
    start = envelope(
        "<mes:startUpload><firmwareGroup>default-cgmesh</firmwareGroup>"
        "<firmwareImageName>cg-mesh-6.6.0.bin</firmwareImageName></mes:startUpload>"
    )
    response = await call(start, api, Role.MONITOR)
    assert response.status == 200
    ret = return_of(response.body)
    assert ret.findtext("code") == "-99"
    assert ret.findtext("message") == INVALID_PERMISSIONS
    assert api.calls == []
    read = envelope(
        "<mes:getFirmwareImageInfoList><firmwareGroup>default-cgmesh</firmwareGroup>"
        "</mes:getFirmwareImageInfoList>"
    )
    assert (await call(read, api, Role.MONITOR)).code == 0


def test_image_info_response_shape() -> None:
    data = ImageInfoList(
        images=[
            ImageInfo("a.bin", "6.6.0", 1, 2, 3),
            ImageInfo("b<&>.bin", "7", 0, 0, 0),
        ],
        action_status="RELOAD_SCHEDULED",
        scheduled_reload=datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    body = soap.build_response(
        "getFirmwareImageInfoList", OpResult.of(ReturnCode.SUCCESS, data=data)
    )
    ret = return_of(body)
    assert [e.tag for e in ret] == [
        "code",
        "message",
        "firmwareImageInfo",
        "firmwareImageInfo",
        "actionStatus",
        "scheduledReloadTime",
    ]
    first = ret.find("firmwareImageInfo")
    assert first is not None
    assert [(e.tag, e.text) for e in first] == [
        ("name", "a.bin"),
        ("version", "6.6.0"),
        ("runningCount", "1"),
        ("uploadedCount", "2"),
        ("backupCount", "3"),
    ]
    assert ret.findtext("scheduledReloadTime") == "2030-01-02T03:04:05Z"
    assert ret.findall("firmwareImageInfo")[1].findtext("name") == "b<&>.bin"


def test_control_characters_in_messages_are_replaced() -> None:
    body = soap.build_response("startUpload", OpResult(-99, "busy\x00\x07 now"))
    assert return_of(body).findtext("message") == "busy\ufffd\ufffd now"


def test_schema_check_rejects_a_bad_response() -> None:
    body = soap.build_response("startUpload", OpResult(0, "ok"))
    broken = body.replace(b"<code>0</code>", b"<code>zero</code>")
    with pytest.raises(SchemaViolation):
        validate_response(broken)


@pytest.mark.parametrize("operation", sorted(soap.OPERATIONS))
def test_build_request_round_trips(operation: str) -> None:
    params = {name: f"v-{name}" for name in soap.OPERATIONS[operation].params}
    request = soap.parse_request(soap.build_request(operation, params))
    assert request.operation == operation
    assert dict(request.params) == params


async def test_utf16_request_is_transcoded() -> None:
    text = (
        '<?xml version="1.0" encoding="UTF-16"?>'
        + envelope(
            "<mes:getFirmwareUploadStatus><firmwareGroup>default-cgmesh</firmwareGroup>"
            "</mes:getFirmwareUploadStatus>"
        ).decode()
    )
    for codec in ("utf-16", "utf-16-le", "utf-16-be"):
        assert (await call(text.encode(codec))).code == 0


@pytest.mark.parametrize("codec", ["utf-32", "cp037"])
def test_encodings_that_are_no_ascii_superset_are_refused(codec: str) -> None:
    text = (
        f'<?xml version="1.0" encoding="{codec}"?>'
        + envelope(
            "<mes:stopUpload><firmwareGroup>g</firmwareGroup></mes:stopUpload>"
        ).decode()
    )
    with pytest.raises(soap.SoapFault) as caught:
        soap.parse_request(text.encode(codec))
    assert caught.value.code is soap.FaultCode.CLIENT
