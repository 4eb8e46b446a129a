"""HTTP control API and metrics of a running fleet (layer ``fleet``, aiohttp).

Served on ``--metrics-port`` (``[fleet] metrics_host`` / ``metrics_port``):

- ``GET /metrics``: Prometheus text from :class:`~emulator.fleet.metrics.
  FleetCollector` on a registry of its own;
- ``GET /faults``: the link rules in force, device fault rules, counts;
- ``PUT /faults``: replace the link rules, JSON
  ``{"link": [{"hardware": "meter", "fraction": 0.5, "loss": 0.2}, ...]}``
  with the keys of ``[[faults.link]]``; every problem is reported at once
  (400, ``{"errors": [...]}``);
- ``GET /devices?limit=N``: a summary of the first N devices (default 100);
- ``GET /devices/<eui64>``: one device.

The handlers build (status, body) as plain data (:func:`faults_view` and
friends); aiohttp only carries it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from emulator.fleet.config import TableReader, parse_eui64, read_link_rule

if TYPE_CHECKING:
    from emulator.fleet.runtime import Fleet

logger = logging.getLogger(__name__)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and math.isinf(value):
        return None
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def faults_view(fleet: Fleet) -> dict[str, Any]:
    return {
        "link": [_jsonable(dataclasses.asdict(r)) for r in fleet.link.rules],
        "device": [_jsonable(dataclasses.asdict(r)) for r in fleet.device_faults.rules],
        "counts": dict(fleet.link.counts) | dict(fleet.fault_counts),
    }


def put_faults(fleet: Fleet, body: Any) -> tuple[int, dict[str, Any]]:
    """Replace the link rules from a JSON body; (status, answer)."""
    if not isinstance(body, dict) or not isinstance(body.get("link", []), list):
        return 400, {"errors": ['body must be {"link": [rules]}']}
    problems: list[str] = []
    rules = []
    for k, table in enumerate(body.get("link", [])):
        if not isinstance(table, dict):
            problems.append(f"link[{k}]: expected an object")
            continue
        rules.append(read_link_rule(TableReader(table, f"link[{k}]", problems)))
    if problems:
        return 400, {"errors": problems}
    fleet.set_link_rules(rules)
    return 200, faults_view(fleet)


def device_view(fleet: Fleet, eui64: int, now: float) -> dict[str, Any]:
    device = fleet.devices[eui64]
    fw = device.firmware
    return {
        "eui64": f"{eui64:016x}",
        "address": device.identity.address,
        "hardware_id": device.profile.hardware_id,
        "registered": device.registered,
        "online": device.online(now),
        "running_version": device.running_version,
        "upload_state": device.upload_state.value,
        "upload_blocks": fw.upload.bits.bit_count() if fw.upload else 0,
        "groups": {str(t): g for t, g in device.groups.items()},
    }


class ControlServer:
    """The aiohttp app of one fleet."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.registry = CollectorRegistry()
        self.registry.register(fleet.metrics_collector())
        self._runner: web.AppRunner | None = None
        self.port = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/faults", self._get_faults)
        app.router.add_put("/faults", self._put_faults)
        app.router.add_get("/devices", self._devices)
        app.router.add_get("/devices/{eui64}", self._device)
        return app

    async def start(self, host: str, port: int) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        if server is not None and server.sockets:  # type: ignore[attr-defined]
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        logger.info("control API and metrics on [%s]:%d", host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _get_faults(self, request: web.Request) -> web.Response:
        return web.json_response(faults_view(self.fleet))

    async def _put_faults(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return web.json_response({"errors": ["body is not JSON"]}, status=400)
        status, answer = put_faults(self.fleet, body)
        return web.json_response(answer, status=status)

    async def _devices(self, request: web.Request) -> web.Response:
        text = request.query.get("limit", "100")
        if not text.isdigit():
            return web.json_response({"errors": ["limit must be a number"]}, status=400)
        now = time.time()
        euis = list(self.fleet.devices)[: int(text)]
        return web.json_response(
            {
                "count": len(self.fleet.devices),
                "devices": [device_view(self.fleet, e, now) for e in euis],
            }
        )

    async def _device(self, request: web.Request) -> web.Response:
        try:
            eui = parse_eui64(request.match_info["eui64"])
        except ValueError as exc:
            return web.json_response({"errors": [str(exc)]}, status=400)
        if eui not in self.fleet.devices:
            return web.json_response({"errors": ["no such device"]}, status=404)
        return web.json_response(device_view(self.fleet, eui, time.time()))
