"""A small client of the Firmware Upgrade NB API (SOAP 1.1 client layer).

Builds request envelopes as FND's document shows them
(``shared/reference/fnd-nbapi-firmware-upgrade.txt``), posts them with HTTP
Basic credentials over stdlib ``urllib`` (keeping the CLI light), and parses
responses into :class:`~emulator.headend.api.OpResult` objects with typed
data. :class:`NbapiClient` is synchronous; :class:`AsyncNbapiClient` wraps
it in threads and satisfies the :class:`~emulator.headend.api.FirmwareApi`
protocol, so a remote head-end can stand in for a local one.

Transport and protocol troubles raise :class:`NbapiError` subclasses; API
return codes never do.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from lxml import etree

from emulator.headend.api import ImageInfo, ImageInfoList, OpResult, ValuePair
from emulator.nbapi import soap
from emulator.nbapi.wsdl import SERVICE_PATH, SOAP_ENV, TNS

log = logging.getLogger(__name__)

DEFAULT_URL = f"http://127.0.0.1:8080{SERVICE_PATH}"
MAX_RESPONSE = 16 * 1024 * 1024


class NbapiError(Exception):
    """The call did not yield an API result."""


class NbapiConnectionError(NbapiError):
    """The server could not be reached or the connection failed."""


class NbapiAuthError(NbapiError):
    """The server refused the credentials (HTTP 401)."""


class NbapiProtocolError(NbapiError):
    """The server answered something that is not a valid response."""


class NbapiFault(NbapiError):
    """The server answered with a SOAP Fault."""

    def __init__(self, faultcode: str, faultstring: str) -> None:
        super().__init__(f"{faultcode}: {faultstring}")
        self.faultcode = faultcode
        self.faultstring = faultstring


# ------------------------------------------------------------------ decoding


def _text(parent: etree._Element, tag: str, default: str | None = None) -> str:
    element = parent.find(tag)
    if element is None:
        if default is None:
            raise NbapiProtocolError(f"response lacks <{tag}>")
        return default
    return element.text or ""


def _int(parent: etree._Element, tag: str) -> int:
    try:
        return int(_text(parent, tag))
    except ValueError:
        raise NbapiProtocolError(f"<{tag}> is not an integer") from None


def _pairs(ret: etree._Element, code: int) -> list[ValuePair] | None:
    elements = ret.findall("valuePair")
    if not elements and code != 0:
        return None
    return [ValuePair(_text(e, "name"), _int(e, "value")) for e in elements]


def _image(element: etree._Element) -> ImageInfo:
    return ImageInfo(
        name=_text(element, "name"),
        version=_text(element, "version"),
        running=_int(element, "runningCount"),
        uploaded=_int(element, "uploadedCount"),
        backup=_int(element, "backupCount"),
    )


def _parse_time(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        raise NbapiProtocolError(f"bad scheduledReloadTime {text!r}") from None


def _images(ret: etree._Element, code: int) -> ImageInfoList | None:
    elements = ret.findall("firmwareImageInfo")
    status = ret.find("actionStatus")
    if not elements and status is None and code != 0:
        return None
    reload_text = ret.findtext("scheduledReloadTime")
    return ImageInfoList(
        images=[_image(e) for e in elements],
        action_status=(status.text or "") if status is not None else "",
        scheduled_reload=_parse_time(reload_text) if reload_text else None,
    )


def _raise_fault(fault: etree._Element) -> None:
    code = fault.findtext("faultcode") or "?"
    message = fault.findtext("faultstring") or ""
    raise NbapiFault(code.strip(), message.strip())


def _payload(body: bytes) -> etree._Element:
    try:
        root = soap.parse_xml(body, max_size=MAX_RESPONSE)
    except soap.SoapFault as exc:
        raise NbapiProtocolError(exc.message) from None
    children = root.find(f"{{{SOAP_ENV}}}Body")
    if root.tag != f"{{{SOAP_ENV}}}Envelope" or children is None or not len(children):
        raise NbapiProtocolError("not a SOAP 1.1 response envelope")
    payload = children[0]
    if payload.tag == f"{{{SOAP_ENV}}}Fault":
        _raise_fault(payload)
    return payload


def parse_response(operation: str, body: bytes) -> OpResult[Any]:
    """The result in a response envelope; :class:`NbapiFault` for a Fault."""
    op = soap.OPERATIONS[operation]
    payload = _payload(body)
    if payload.tag != f"{{{TNS}}}{op.name}Response":
        raise NbapiProtocolError(f"unexpected response element {payload.tag}")
    ret = payload.find("return")
    if ret is None:
        raise NbapiProtocolError("response lacks <return>")
    code = _int(ret, "code")
    message = _text(ret, "message", "")
    data: object = None
    if op.kind is soap.ResultKind.PAIRS:
        data = _pairs(ret, code)
    elif op.kind is soap.ResultKind.IMAGES:
        data = _images(ret, code)
    return OpResult(code, message, data)


# ----------------------------------------------------------------- transport


def basic_auth(user: str, password: str) -> str:
    """The ``Authorization`` header value for HTTP Basic."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


class NbapiClient:
    """Synchronous NB API client: one method per operation."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        user: str = "admin",
        password: str = "",
        *,
        timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self._auth = basic_auth(user, password)
        self._ssl = ssl_context

    def _post(self, body: bytes) -> bytes:
        request = urllib.request.Request(self.url, data=body, method="POST")
        request.add_header("Content-Type", soap.CONTENT_TYPE)
        request.add_header("SOAPAction", '""')
        request.add_header("Authorization", self._auth)
        try:
            with urllib.request.urlopen(
                request, timeout=self.timeout, context=self._ssl
            ) as response:
                data: bytes = response.read(MAX_RESPONSE + 1)
                return data
        except urllib.error.HTTPError as exc:
            return self._http_error(exc)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise NbapiConnectionError(f"cannot reach {self.url}: {reason}") from None

    def _http_error(self, exc: urllib.error.HTTPError) -> bytes:
        with exc:
            if exc.code == 401:
                raise NbapiAuthError(f"{self.url}: credentials refused (HTTP 401)")
            if exc.code == 500:
                return exc.read(MAX_RESPONSE + 1)  # a SOAP Fault
            raise NbapiProtocolError(f"{self.url}: HTTP {exc.code} {exc.reason}")

    def call(self, operation: str, params: Mapping[str, str | None]) -> OpResult[Any]:
        """Post ``operation`` with ``params`` (SOAP names); the parsed result."""
        log.debug("calling %s at %s", operation, self.url)
        body = self._post(soap.build_request(operation, params))
        return parse_response(operation, body)

    def start_upload(
        self, dev_type: str | None, group: str, image: str
    ) -> OpResult[None]:
        return self.call(
            "startUpload",
            {soap.DEV_TYPE: dev_type, soap.GROUP: group, soap.IMAGE: image},
        )

    def stop_upload(self, dev_type: str | None, group: str) -> OpResult[None]:
        return self.call("stopUpload", {soap.DEV_TYPE: dev_type, soap.GROUP: group})

    def get_upload_status(
        self, dev_type: str | None, group: str
    ) -> OpResult[list[ValuePair]]:
        return self.call(
            "getFirmwareUploadStatus", {soap.DEV_TYPE: dev_type, soap.GROUP: group}
        )

    def get_image_info_list(
        self, dev_type: str | None, group: str
    ) -> OpResult[ImageInfoList]:
        return self.call(
            "getFirmwareImageInfoList", {soap.DEV_TYPE: dev_type, soap.GROUP: group}
        )

    def set_backup_image(
        self, dev_type: str | None, group: str, image: str
    ) -> OpResult[list[ValuePair]]:
        return self.call(
            "setBackupFirmwareImage",
            {soap.DEV_TYPE: dev_type, soap.GROUP: group, soap.IMAGE: image},
        )

    def schedule_reload(
        self, dev_type: str | None, group: str, image: str, reload_time: str
    ) -> OpResult[list[ValuePair]]:
        return self.call(
            "scheduleReload",
            {
                soap.DEV_TYPE: dev_type,
                soap.GROUP: group,
                soap.IMAGE: image,
                soap.RELOAD_GMT: reload_time,
            },
        )


class AsyncNbapiClient:
    """A :class:`~emulator.headend.api.FirmwareApi` over the SOAP API."""

    def __init__(self, client: NbapiClient) -> None:
        self.client = client

    async def start_upload(
        self, dev_type: str | None, group: str, image: str
    ) -> OpResult[None]:
        return await asyncio.to_thread(self.client.start_upload, dev_type, group, image)

    async def stop_upload(self, dev_type: str | None, group: str) -> OpResult[None]:
        return await asyncio.to_thread(self.client.stop_upload, dev_type, group)

    async def get_upload_status(
        self, dev_type: str | None, group: str
    ) -> OpResult[list[ValuePair]]:
        return await asyncio.to_thread(self.client.get_upload_status, dev_type, group)

    async def get_image_info_list(
        self, dev_type: str | None, group: str
    ) -> OpResult[ImageInfoList]:
        return await asyncio.to_thread(self.client.get_image_info_list, dev_type, group)

    async def set_backup_image(
        self, dev_type: str | None, group: str, image: str
    ) -> OpResult[list[ValuePair]]:
        return await asyncio.to_thread(
            self.client.set_backup_image, dev_type, group, image
        )

    async def schedule_reload(
        self, dev_type: str | None, group: str, image: str, reload_time: str
    ) -> OpResult[list[ValuePair]]:
        return await asyncio.to_thread(
            self.client.schedule_reload, dev_type, group, image, reload_time
        )
