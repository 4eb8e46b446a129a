"""aiohttp adapter of the Firmware Upgrade NB API (HTTP layer).

Serves FND's ``meshDeviceOps`` SOAP 1.1 service
(``shared/reference/fnd-nbapi-firmware-upgrade.txt``, ``NBAPI.md``):

- ``POST /nbapi/meshDeviceOps``: SOAP requests, HTTP Basic auth, handled by
  the pure :func:`emulator.nbapi.soap.handle`;
- ``GET /nbapi/meshDeviceOps?wsdl``: the WSDL, its ``soap:address`` set to the
  URL it was fetched with. Like FND, it requires Basic auth too (any role):
  clients pass their credentials when loading it (zeep: a requests session
  with ``auth``; suds: ``Client(url, username=..., password=...)``);
- ``GET /metrics``: Prometheus text for the given registry, no auth.

Bodies above ``max_body`` get 413, checked on Content-Length and on the bytes
actually streamed. :func:`make_app` returns a plain application to which other
components add their own routes; :func:`add_nbapi_routes` mounts the service
on an existing one.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

from aiohttp import hdrs, web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

from emulator.headend.api import FirmwareApi
from emulator.nbapi import soap
from emulator.nbapi.auth import Authenticator, User, challenge, parse_basic
from emulator.nbapi.wsdl import SERVICE_PATH, render_wsdl

log = logging.getLogger(__name__)

MAX_BODY = soap.MAX_BODY
METRICS_PATH = "/metrics"
#: Concurrent scrypt checks (each costs tens of ms of a thread).
MAX_PARALLEL_VERIFY = 4

#: Where the served API and the metrics registry live on the application.
API_KEY: web.AppKey[FirmwareApi] = web.AppKey("meshfleet_nbapi_api")
REGISTRY_KEY: web.AppKey[CollectorRegistry] = web.AppKey("meshfleet_nbapi_registry")


class _TooLarge(Exception):
    pass


class _Metrics:
    """Request counters of the NB API on one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "meshfleet_nbapi_requests",
            "NB API SOAP requests by operation and return code (or fault)",
            ["operation", "code"],
            registry=registry,
        )
        self.rejected = Counter(
            "meshfleet_nbapi_rejected",
            "NB API HTTP requests refused before SOAP processing",
            ["reason"],
            registry=registry,
        )
        self.seconds = Histogram(
            "meshfleet_nbapi_request_seconds",
            "NB API SOAP request handling time",
            ["operation"],
            registry=registry,
        )

    def observe(self, response: soap.SoapResponse, seconds: float) -> None:
        operation = response.operation or "unknown"
        code = "fault" if response.code is None else str(response.code)
        self.requests.labels(operation=operation, code=code).inc()
        self.seconds.labels(operation=operation).observe(seconds)


@lru_cache(maxsize=32)
def _wsdl_for(location: str) -> bytes:
    return render_wsdl(location)


def _unauthorized() -> web.Response:
    return web.Response(
        status=401,
        text="401: Unauthorized\n",
        headers={hdrs.WWW_AUTHENTICATE: challenge()},
    )


def _too_large(max_body: int) -> web.Response:
    return web.Response(status=413, text=f"413: request body over {max_body} bytes\n")


async def _read_limited(request: web.Request, max_body: int) -> bytes:
    """The request body; :class:`_TooLarge` past ``max_body`` bytes."""
    length = request.content_length
    if length is not None and length > max_body:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > max_body:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


class _Service:
    """The request handlers, bound to one API, user set and registry."""

    def __init__(
        self,
        api: FirmwareApi,
        users: Mapping[str, User],
        registry: CollectorRegistry,
        max_body: int,
    ) -> None:
        self.api = api
        self.auth = Authenticator(users)
        self.metrics = _Metrics(registry)
        self.registry = registry
        self.max_body = max_body
        self._verify_slots = asyncio.Semaphore(MAX_PARALLEL_VERIFY)

    async def authenticate(self, request: web.Request) -> User | None:
        credentials = parse_basic(request.headers.get(hdrs.AUTHORIZATION))
        if credentials is None:
            return None
        user = self.auth.cached(*credentials)
        if user is None:
            async with self._verify_slots:
                user = await asyncio.to_thread(self.auth.verify, *credentials)
        if user is None:
            log.info("NB API: bad credentials for user %r", credentials[0])
        return user

    async def post(self, request: web.Request) -> web.StreamResponse:
        user = await self.authenticate(request)
        if user is None:
            self.metrics.rejected.labels(reason="unauthorized").inc()
            return _unauthorized()
        try:
            body = await _read_limited(request, self.max_body)
        except _TooLarge:
            self.metrics.rejected.labels(reason="too_large").inc()
            return _too_large(self.max_body)
        started = time.perf_counter()
        result = await soap.handle(body, self.api, user.role, max_size=self.max_body)
        self.metrics.observe(result, time.perf_counter() - started)
        return web.Response(
            status=result.status, body=result.body, headers=dict(result.headers)
        )

    async def get(self, request: web.Request) -> web.StreamResponse:
        if "wsdl" not in {key.lower() for key in request.query}:
            return web.Response(status=404, text="append ?wsdl for the WSDL\n")
        if await self.authenticate(request) is None:
            self.metrics.rejected.labels(reason="unauthorized").inc()
            return _unauthorized()
        location = str(request.url.with_query(None))
        return web.Response(
            body=_wsdl_for(location), headers={hdrs.CONTENT_TYPE: soap.CONTENT_TYPE}
        )

    async def metrics_text(self, request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=generate_latest(self.registry),
            headers={hdrs.CONTENT_TYPE: CONTENT_TYPE_LATEST},
        )


def add_nbapi_routes(
    app: web.Application,
    api: FirmwareApi,
    users: Mapping[str, User],
    *,
    registry: CollectorRegistry | None = None,
    max_body: int = MAX_BODY,
    metrics_path: str | None = METRICS_PATH,
) -> None:
    """Mount the NB API (and ``metrics_path`` unless None) on ``app``.

    The metrics are registered on ``registry`` (a fresh one when None), so a
    registry serves at most one NB API.
    """
    registry = registry if registry is not None else CollectorRegistry()
    service = _Service(api, users, registry, max_body)
    app[API_KEY] = api
    app[REGISTRY_KEY] = registry
    app.router.add_post(SERVICE_PATH, service.post)
    app.router.add_get(SERVICE_PATH, service.get, allow_head=False)
    if metrics_path is not None:
        app.router.add_get(metrics_path, service.metrics_text, allow_head=False)


def make_app(
    api: FirmwareApi,
    users: Mapping[str, User],
    *,
    registry: CollectorRegistry | None = None,
    max_body: int = MAX_BODY,
) -> web.Application:
    """A new application serving the NB API, ``/metrics`` included.

    Add further routes to it (``app.router.add_get(...)``,
    ``app.add_subapp(...)``) before it starts.
    """
    app = web.Application(client_max_size=max(max_body, 1024**2))
    add_nbapi_routes(app, api, users, registry=registry, max_body=max_body)
    return app


def ssl_context_from(cert: str | Path, key: str | Path | None = None) -> ssl.SSLContext:
    """A server TLS context (TLS 1.2+) from a PEM certificate chain and key.

    ``key`` may be None when the certificate file also holds the key.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), None if key is None else str(key))
    return context
