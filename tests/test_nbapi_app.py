"""HTTP front of the NB API (emulator.nbapi.app) over a real aiohttp server.

Auth (401), roles (-99), size limits (413), the WSDL fetch, metrics, and the
schema validity of every SOAP response the server sends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from lxml import etree
from prometheus_client import CollectorRegistry

from emulator.headend.api import INVALID_PERMISSIONS
from emulator.nbapi.app import API_KEY, REGISTRY_KEY, make_app
from emulator.nbapi.auth import Role, User, hash_password
from emulator.nbapi.client import basic_auth
from emulator.nbapi.schema_check import attach_response_validator, validate_response
from emulator.nbapi.testing import FakeFirmwareApi
from emulator.nbapi.wsdl import SOAP_ENV, TNS, WSDL_NS, WSDL_SOAP_NS

PATH = "/nbapi/meshDeviceOps"
OPERATOR = basic_auth("admin", "s3cret")
MONITOR = basic_auth("viewer", "l00k")

START = f"""<soapenv:Envelope xmlns:soapenv="{SOAP_ENV}" xmlns:mes="{TNS}">
<soapenv:Header/><soapenv:Body><mes:startUpload>
<firmwareGroup>default-cgmesh</firmwareGroup>
<firmwareImageName>cg-mesh-6.6.0.bin</firmwareImageName>
</mes:startUpload></soapenv:Body></soapenv:Envelope>""".encode()

STATUS = f"""<soapenv:Envelope xmlns:soapenv="{SOAP_ENV}" xmlns:mes="{TNS}">
<soapenv:Body><mes:getFirmwareUploadStatus>
<firmwareGroup>default-cgmesh</firmwareGroup>
</mes:getFirmwareUploadStatus></soapenv:Body></soapenv:Envelope>""".encode()


def make_users() -> dict[str, User]:
    return {
        "admin": User("admin", Role.OPERATOR, hash_password("s3cret", n=1024)),
        "viewer": User("viewer", Role.MONITOR, hash_password("l00k", n=1024)),
    }


@dataclass
class Served:
    client: TestClient[web.Request, web.Application]
    api: FakeFirmwareApi
    registry: CollectorRegistry
    errors: list[str]


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    api = FakeFirmwareApi()
    registry = CollectorRegistry()
    app = make_app(api, make_users(), registry=registry, max_body=4096)
    errors = attach_response_validator(app)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield Served(client, api, registry, errors)
    assert errors == []


def auth_headers(auth: str | None) -> dict[str, str]:
    return {} if auth is None else {"Authorization": auth}


async def post(
    served: Served, body: bytes, auth: str | None = OPERATOR
) -> aiohttp.ClientResponse:
    headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}
    return await served.client.post(
        PATH, data=body, headers=headers | auth_headers(auth)
    )


async def test_operator_starts_an_upload(served: Served) -> None:
    response = await post(served, START)
    assert response.status == 200
    assert response.content_type == "text/xml"
    ret = validate_response(await response.read()).find("return")
    assert ret is not None and ret.findtext("code") == "0"
    assert served.api.calls == [
        ("start_upload", (None, "default-cgmesh", "cg-mesh-6.6.0.bin"))
    ]


@pytest.mark.parametrize(
    "auth",
    [None, basic_auth("admin", "wrong"), basic_auth("nobody", "x"), "Basic !!"],
)
async def test_bad_credentials_get_401(served: Served, auth: str | None) -> None:
    response = await post(served, START, auth)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith('Basic realm="')
    assert served.api.calls == []


async def test_monitor_gets_invalid_permissions(served: Served) -> None:
    response = await post(served, START, MONITOR)
    assert response.status == 200
    ret = validate_response(await response.read()).find("return")
    assert ret is not None
    assert (ret.findtext("code"), ret.findtext("message")) == (
        "-99",
        INVALID_PERMISSIONS,
    )
    assert served.api.calls == []
    response = await post(served, STATUS, MONITOR)
    ret = validate_response(await response.read()).find("return")
    assert ret is not None and ret.findtext("code") == "0"


async def test_oversized_body_by_content_length(served: Served) -> None:
    response = await post(served, START + b" " * 5000)
    assert response.status == 413
    assert served.api.calls == []


async def test_oversized_body_streamed_without_length(served: Served) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield START
        for _ in range(10):
            yield b" " * 1000

    response = await post(served, chunks())  # type: ignore[arg-type]
    assert response.status == 413


async def test_fault_is_http_500(served: Served) -> None:
    response = await post(served, b"<not-xml")
    assert response.status == 500
    fault = validate_response(await response.read())
    assert fault.findtext("faultcode") == "soap:Client"


async def test_wsdl_requires_auth(served: Served) -> None:
    response = await served.client.get(f"{PATH}?wsdl")
    assert response.status == 401
    response = await served.client.get(f"{PATH}?wsdl", headers=auth_headers(MONITOR))
    assert response.status == 200
    root = etree.fromstring(await response.read())
    assert root.tag == f"{{{WSDL_NS}}}definitions"
    address = root.find(f".//{{{WSDL_SOAP_NS}}}address")
    assert address is not None
    assert address.get("location") == str(served.client.make_url(PATH))


async def test_wsdl_query_is_case_insensitive(served: Served) -> None:
    response = await served.client.get(f"{PATH}?WSDL", headers=auth_headers(OPERATOR))
    assert response.status == 200
    assert (await served.client.get(PATH, headers=auth_headers(OPERATOR))).status == 404


async def test_metrics_count_operations_and_codes(served: Served) -> None:
    await post(served, START)
    await post(served, START)  # group now active: -6
    await post(served, START, MONITOR)
    await post(served, b"junk")
    await post(served, START, None)
    response = await served.client.get("/metrics")
    assert response.status == 200
    text = await response.text()
    for line in (
        'meshfleet_nbapi_requests_total{code="0",operation="startUpload"} 1.0',
        'meshfleet_nbapi_requests_total{code="-6",operation="startUpload"} 1.0',
        'meshfleet_nbapi_requests_total{code="-99",operation="startUpload"} 1.0',
        'meshfleet_nbapi_requests_total{code="fault",operation="unknown"} 1.0',
        'meshfleet_nbapi_rejected_total{reason="unauthorized"} 1.0',
    ):
        assert line in text


async def test_app_is_composable() -> None:
    api = FakeFirmwareApi()
    app = make_app(api, make_users())

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app.router.add_get("/hello", hello)
    assert app[API_KEY] is api
    assert isinstance(app[REGISTRY_KEY], CollectorRegistry)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        assert await (await client.get("/hello")).text() == "hello"
        response = await client.post(PATH, data=STATUS, headers=auth_headers(OPERATOR))
        assert response.status == 200
