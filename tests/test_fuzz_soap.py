"""Fuzzing the SOAP codec of the NB API (emulator.nbapi.soap).

Property: any body (well-formed envelopes with random operations and
parameters, their mutations and truncations, random bytes and text) gives
either an operation response (HTTP 200) or a SOAP Fault (HTTP 500), each a
schema-valid envelope; the parser raises nothing but :class:`SoapFault`.
"""

from __future__ import annotations

import asyncio

from fuzz_support import soap_bodies, soap_envelopes
from hypothesis import HealthCheck, given, settings
from lxml import etree

from emulator.nbapi import soap
from emulator.nbapi.auth import Role
from emulator.nbapi.schema_check import validate_response
from emulator.nbapi.testing import FakeFirmwareApi
from emulator.nbapi.wsdl import SOAP_ENV

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def check_response(response: soap.SoapResponse) -> None:
    child: etree._Element = validate_response(response.body)
    if response.status == 200:
        assert child.find("return") is not None
        assert response.operation in soap.OPERATIONS
    else:
        assert response.status == 500
        assert child.tag == f"{{{SOAP_ENV}}}Fault"
        assert child.findtext("faultcode", "").startswith("soap:")


@FUZZ
@given(soap_bodies())
def test_parse_request_raises_only_soap_faults(body: bytes) -> None:
    try:
        request = soap.parse_request(body)
    except soap.SoapFault as fault:
        assert fault.message
        return
    assert request.operation in soap.OPERATIONS


@FUZZ
@given(soap_bodies())
def test_handle_answers_a_response_or_a_fault(body: bytes) -> None:
    for role in (Role.OPERATOR, Role.MONITOR):
        check_response(asyncio.run(soap.handle(body, FakeFirmwareApi(), role)))


@FUZZ
@given(soap_envelopes())
def test_well_formed_envelopes_reach_the_api_or_fault_cleanly(body: bytes) -> None:
    check_response(asyncio.run(soap.handle(body, FakeFirmwareApi(), Role.OPERATOR)))
