"""The NB API service description (SOAP 1.1 WSDL layer).

Loads the hand-written ``meshDeviceOps.wsdl`` shipped beside this module (the
Firmware Upgrade API of Cisco IoT FND's Northbound API, see
``shared/reference/NBAPI.md``) and renders it with the ``soap:address`` that
clients should post to. Also exposes the embedded XML Schema.
"""

from __future__ import annotations

import logging
from functools import cache
from importlib import resources

from lxml import etree

log = logging.getLogger(__name__)

#: Target namespace of the service (operation elements live in it).
TNS = "http://meshDeviceOps.nbapi.cgms.cisco.com/"
#: SOAP 1.1 envelope namespace.
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
#: SOAP 1.2 envelope namespace (only recognised to answer VersionMismatch).
SOAP12_ENV = "http://www.w3.org/2003/05/soap-envelope"
WSDL_NS = "http://schemas.xmlsoap.org/wsdl/"
WSDL_SOAP_NS = "http://schemas.xmlsoap.org/wsdl/soap/"
XSD_NS = "http://www.w3.org/2001/XMLSchema"
#: Path of the service endpoint; the WSDL is at ``SERVICE_PATH + "?wsdl"``.
SERVICE_PATH = "/nbapi/meshDeviceOps"
WSDL_FILE = "meshDeviceOps.wsdl"


@cache
def wsdl_template() -> bytes:
    """The WSDL file as shipped (placeholder ``soap:address``)."""
    return resources.files("emulator.nbapi").joinpath(WSDL_FILE).read_bytes()


def _parse_trusted(data: bytes) -> etree._Element:
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, remove_blank_text=False
    )
    return etree.fromstring(data, parser)


def render_wsdl(location: str) -> bytes:
    """The WSDL with every ``soap:address`` pointing at ``location``."""
    root = _parse_trusted(wsdl_template())
    for address in root.iter(f"{{{WSDL_SOAP_NS}}}address"):
        address.set("location", location)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def schema_element() -> etree._Element:
    """A standalone copy of the ``xs:schema`` embedded in the WSDL."""
    root = _parse_trusted(wsdl_template())
    schema = root.find(f"{{{WSDL_NS}}}types/{{{XSD_NS}}}schema")
    if schema is None:  # pragma: no cover - the shipped file has one
        raise LookupError("no xs:schema in the WSDL")
    return etree.fromstring(etree.tostring(schema))
