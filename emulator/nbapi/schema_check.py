"""Validate SOAP responses against the WSDL's embedded XSD (test helper layer).

Used by the NB API tests (and any other test that talks to the SOAP front) to
check that what the server sends matches the service description shipped in
``meshDeviceOps.wsdl``: the Body's single child must be valid against the
embedded schema, or be a well-formed SOAP 1.1 Fault.
"""

from __future__ import annotations

import logging
from functools import cache

from aiohttp import web
from lxml import etree

from emulator.nbapi.wsdl import SERVICE_PATH, SOAP_ENV, schema_element

log = logging.getLogger(__name__)


class SchemaViolation(AssertionError):
    """A response does not match the WSDL (an AssertionError for pytest)."""


@cache
def response_schema() -> etree.XMLSchema:
    """The XML Schema embedded in the WSDL, compiled."""
    return etree.XMLSchema(schema_element())


def body_child(envelope: bytes) -> etree._Element:
    """The single element child of a SOAP 1.1 Body, checked for shape."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    root = etree.fromstring(envelope, parser)
    if root.tag != f"{{{SOAP_ENV}}}Envelope":
        raise SchemaViolation(f"root is {root.tag}, not a SOAP 1.1 Envelope")
    body = root.find(f"{{{SOAP_ENV}}}Body")
    if body is None:
        raise SchemaViolation("no SOAP Body")
    children = [c for c in body if isinstance(c.tag, str)]
    if len(children) != 1:
        raise SchemaViolation(f"Body has {len(children)} element children")
    return children[0]


def _check_fault(fault: etree._Element) -> None:
    names = [c.tag for c in fault if isinstance(c.tag, str)]
    if names[:2] != ["faultcode", "faultstring"]:
        raise SchemaViolation(f"Fault children are {names}")


def validate_response(envelope: bytes) -> etree._Element:
    """Check a response envelope; return the Body's child (payload or Fault).

    Raises :class:`SchemaViolation` with the schema's error log otherwise.
    """
    child = body_child(envelope)
    if child.tag == f"{{{SOAP_ENV}}}Fault":
        _check_fault(child)
        return child
    schema = response_schema()
    standalone = etree.fromstring(etree.tostring(child))
    if not schema.validate(standalone):
        raise SchemaViolation(str(schema.error_log))
    return child


def attach_response_validator(app: web.Application) -> list[str]:
    """Validate every SOAP response ``app`` sends; return the list of errors.

    Hooks ``on_response_prepare`` (call before the app starts); a test checks
    that the returned list is still empty at its end.
    """
    errors: list[str] = []

    async def check(request: web.Request, response: web.StreamResponse) -> None:
        if request.method != "POST" or request.path != SERVICE_PATH:
            return
        if not isinstance(response, web.Response) or response.status == 401:
            return
        body = response.body
        if response.status == 413 or not isinstance(body, bytes):
            return
        try:
            validate_response(body)
        except (SchemaViolation, etree.XMLSyntaxError) as exc:
            errors.append(f"{request.path} -> {response.status}: {exc}")

    app.on_response_prepare.append(check)
    return errors
