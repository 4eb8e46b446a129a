"""The live page and its JSON status API (web layer, aiohttp adapter).

:func:`add_web_routes` mounts, on an existing application (the NB API's, say):

- ``GET /``: the page (``static/index.html``);
- ``GET /static/<file>``: its script and style sheet;
- ``GET /api/...``: the JSON status API below, the only thing the page uses.

Every route goes through the ``authorize`` callback when one is given: HTTP
Basic as on the NB API, where the ``monitor`` role suffices
(:func:`basic_authorizer` builds that callback from the NB API users). A
refused request gets 401 with a ``WWW-Authenticate`` challenge for the NB
API's realm, so a browser asks once and reuses the credentials.

JSON status API
===============
All answers are JSON objects (``Cache-Control: no-store``); errors are
``{"error": text}`` with 400 (bad parameter) or 404 (unknown group or
device). Times are POSIX seconds; datetimes ISO 8601 UTC.

``GET /api/status``
    ``{"time": server time, "events_last": newest event seq, "series_latest":
    newest series second or null, "groups": [group, ...]}``; a group is
    ``{"name", "group_id", "address", "members", "action_status",
    "upload_states": {state: count}, "complete", "image", "scheduled_reload"}``.

``GET /api/grid?group=G&version=V``
    Devices of group G (the whole fleet without ``group``) in a stable order:
    ``{"group", "count", "legend": [state name by code], "states": base64 of
    one code byte per device, "version": token of the device list, "eui64":
    the EUI-64s concatenated, 16 hex digits each}``. ``eui64`` is left out
    when ``version`` equals the current token, so polls of 100,000 devices
    carry about 133 kB (gzip when the client accepts it).

``GET /api/devices/<eui64>``
    ``{"eui64", "address", "hardware_id", "running_version", "group",
    "slots": [{"index", "role", "name", "version", "blocks",
    "total_blocks"}], "last_heard", "up", "upload_state"}``.

``GET /api/images?group=G``
    getFirmwareImageInfoList for G: ``{"group", "action_status",
    "scheduled_reload", "images": [{"name", "version", "running",
    "uploaded", "backup"}]}``.

``GET /api/series?since=T``
    One-second buckets from second T on (all kept, up to 15 minutes, without
    ``since``): ``{"latest", "window", "t": [...], "multicast": [...],
    "unicast": [...], "completion": {group: [[t, complete, total], ...]}}``.
    Seconds missing from ``t`` had no blocks. The newest bucket may still
    grow: poll again with ``since`` set to it.

``GET /api/events?since=N&limit=L``
    Events with a seq above N, oldest first, at most L (default 200, at most
    1000): ``{"last": newest seq, "events": [{"seq", "t", "kind", "text",
    "group", "eui64", "code"}]}``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import hdrs, web

from emulator.headend.api import ImageInfoList
from emulator.nbapi.auth import Authenticator, User, challenge, may_call, parse_basic
from emulator.web.feed import FeedEvent, LiveFeed
from emulator.web.status import DeviceGrid, GroupStatus, StatusSource

log = logging.getLogger(__name__)

Authorize = Callable[[web.Request], Awaitable[bool]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STATIC_DIR = Path(__file__).with_name("static")
SOURCE_KEY: web.AppKey[StatusSource] = web.AppKey("meshfleet_web_source")

#: Events per /api/events answer: default and ceiling.
EVENTS_DEFAULT = 200
EVENTS_MAX = 1000
#: Concurrent scrypt checks of :func:`basic_authorizer`.
MAX_PARALLEL_VERIFY = 4

_EUI64 = re.compile(r"^[0-9A-Fa-f]{16}$")
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
_STATIC_NAME = r"{name:[A-Za-z0-9_-][A-Za-z0-9_.-]*}"


# -- JSON shapes (pure) -----------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(timespec="seconds") + "Z"


def group_json(group: GroupStatus) -> dict[str, Any]:
    """The JSON object of one group in ``/api/status``."""
    return {
        "name": group.name,
        "group_id": group.group_id,
        "address": group.address,
        "members": group.members,
        "action_status": group.action_status,
        "upload_states": dict(group.upload_states),
        "complete": group.complete,
        "image": group.image,
        "scheduled_reload": _iso(group.scheduled_reload),
    }


def grid_version(grid: DeviceGrid) -> str:
    """A token that changes when the grid's device list or order changes."""
    digest = hashlib.blake2b(digest_size=12)
    for start in range(0, len(grid.eui64), 4096):
        digest.update("".join(grid.eui64[start : start + 4096]).encode("ascii"))
    return digest.hexdigest()


def grid_json(
    grid: DeviceGrid, group: str | None, known_version: str | None = None
) -> dict[str, Any]:
    """The ``/api/grid`` object; ValueError on a malformed grid."""
    count = len(grid.eui64)
    if len(grid.states) != count:
        raise ValueError(f"grid has {count} devices but {len(grid.states)} states")
    if len(grid.legend) > 256:
        raise ValueError("grid legend has more than 256 states")
    version = grid_version(grid)
    answer: dict[str, Any] = {
        "group": group,
        "count": count,
        "legend": list(grid.legend),
        "states": base64.b64encode(bytes(grid.states)).decode("ascii"),
        "version": version,
    }
    if known_version != version:
        joined = "".join(grid.eui64)
        if len(joined) != 16 * count:
            raise ValueError("grid EUI-64s must be 16 hex digits each")
        answer["eui64"] = joined
    return answer


def images_json(group: str, info: ImageInfoList) -> dict[str, Any]:
    """The ``/api/images`` object."""
    return {
        "group": group,
        "action_status": info.action_status,
        "scheduled_reload": _iso(info.scheduled_reload),
        "images": [
            {
                "name": image.name,
                "version": image.version,
                "running": image.running,
                "uploaded": image.uploaded,
                "backup": image.backup,
            }
            for image in info.images
        ],
    }


def series_json(feed: LiveFeed, since: float) -> dict[str, Any]:
    """The ``/api/series`` object: buckets from second ``since`` on."""
    seconds: list[int] = []
    multicast: list[int] = []
    unicast: list[int] = []
    completion: dict[str, list[list[int]]] = {}
    for bucket in feed.buckets_since(since):
        seconds.append(bucket.t)
        multicast.append(bucket.multicast)
        unicast.append(bucket.unicast)
        for name, (done, total) in bucket.completion.items():
            completion.setdefault(name, []).append([bucket.t, done, total])
    return {
        "latest": feed.latest,
        "window": feed.window,
        "t": seconds,
        "multicast": multicast,
        "unicast": unicast,
        "completion": completion,
    }


def event_json(item: FeedEvent) -> dict[str, Any]:
    """One event of ``/api/events``."""
    return {
        "seq": item.seq,
        "t": item.t,
        "kind": item.kind,
        "text": item.text,
        "group": item.group,
        "eui64": item.eui64,
        "code": item.code,
    }


# -- HTTP -------------------------------------------------------------------


def _json(data: Mapping[str, Any], *, status: int = 200) -> web.Response:
    body = json.dumps(data, separators=(",", ":"), allow_nan=False)
    return web.Response(
        status=status,
        text=body,
        content_type="application/json",
        headers={hdrs.CACHE_CONTROL: "no-store"},
    )


def _error(status: int, text: str) -> web.Response:
    return _json({"error": text}, status=status)


def _number(request: web.Request, name: str, default: float) -> float | None:
    """Query parameter ``name`` as a finite number, None when malformed."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if value == value and abs(value) < 1e15 else None


def _compressed(response: web.Response) -> web.Response:
    response.enable_compression()
    return response


class _Web:
    """The request handlers, bound to one status source."""

    def __init__(self, source: StatusSource) -> None:
        self.source = source
        self.static = {
            path.name: path
            for path in STATIC_DIR.iterdir()
            if path.is_file() and path.suffix in _CONTENT_TYPES
        }

    async def page(self, request: web.Request) -> web.StreamResponse:
        return self._file("index.html")

    async def static_file(self, request: web.Request) -> web.StreamResponse:
        return self._file(request.match_info["name"])

    def _file(self, name: str) -> web.StreamResponse:
        path = self.static.get(name)
        if path is None:
            raise web.HTTPNotFound()
        return web.Response(
            body=path.read_bytes(),
            headers={
                hdrs.CONTENT_TYPE: _CONTENT_TYPES[path.suffix],
                hdrs.CACHE_CONTROL: "no-cache",
            },
        )

    async def status(self, request: web.Request) -> web.StreamResponse:
        feed = self.source.feed
        return _json(
            {
                "time": time.time(),
                "events_last": feed.last_seq,
                "series_latest": feed.latest,
                "groups": [group_json(g) for g in self.source.groups()],
            }
        )

    async def grid(self, request: web.Request) -> web.StreamResponse:
        group = request.query.get("group") or None
        grid = self.source.grid(group)
        if grid is None:
            return _error(404, f"no firmware group {group!r}")
        data = grid_json(grid, group, request.query.get("version"))
        return _compressed(_json(data))

    async def device(self, request: web.Request) -> web.StreamResponse:
        eui64 = request.match_info["eui64"]
        if not _EUI64.match(eui64):
            return _error(400, "an EUI-64 is 16 hex digits")
        detail = self.source.device(eui64)
        if detail is None:
            return _error(404, f"no device {eui64}")
        return _json(detail)

    async def images(self, request: web.Request) -> web.StreamResponse:
        group = request.query.get("group")
        if not group:
            return _error(400, "group is required")
        info = await self.source.image_info(group)
        if info is None:
            return _error(404, f"no firmware group {group!r}")
        return _json(images_json(group, info))

    async def series(self, request: web.Request) -> web.StreamResponse:
        since = _number(request, "since", 0.0)
        if since is None:
            return _error(400, "since must be a number of seconds")
        return _compressed(_json(series_json(self.source.feed, since)))

    async def events(self, request: web.Request) -> web.StreamResponse:
        since = _number(request, "since", 0.0)
        limit = _number(request, "limit", EVENTS_DEFAULT)
        if since is None or limit is None or limit < 1:
            return _error(400, "since and limit must be numbers, limit positive")
        feed = self.source.feed
        found = feed.events_since(int(since), min(int(limit), EVENTS_MAX))
        return _json({"last": feed.last_seq, "events": [event_json(e) for e in found]})


def _guarded(handler: Handler, authorize: Authorize | None) -> Handler:
    if authorize is None:
        return handler

    async def guarded(request: web.Request) -> web.StreamResponse:
        if not await authorize(request):
            return web.Response(
                status=401,
                text="401: Unauthorized\n",
                headers={hdrs.WWW_AUTHENTICATE: challenge()},
            )
        return await handler(request)

    return guarded


def add_web_routes(
    app: web.Application, source: StatusSource, authorize: Authorize | None
) -> None:
    """Mount the live page and the JSON status API on ``app``.

    ``authorize`` decides per request (True: serve it, False: 401); None
    serves everyone.
    """
    service = _Web(source)
    app[SOURCE_KEY] = source
    routes: list[tuple[str, Handler]] = [
        ("/", service.page),
        ("/static/" + _STATIC_NAME, service.static_file),
        ("/api/status", service.status),
        ("/api/grid", service.grid),
        ("/api/devices/{eui64}", service.device),
        ("/api/images", service.images),
        ("/api/series", service.series),
        ("/api/events", service.events),
    ]
    for path, handler in routes:
        app.router.add_get(path, _guarded(handler, authorize))


def basic_authorizer(users: Mapping[str, User]) -> Authorize:
    """An ``authorize`` callback checking HTTP Basic against NB API users.

    Any user whose role may read the NB API (``monitor`` and ``operator``)
    may see the page.
    """
    auth = Authenticator(users)
    slots = asyncio.Semaphore(MAX_PARALLEL_VERIFY)

    async def authorize(request: web.Request) -> bool:
        credentials = parse_basic(request.headers.get(hdrs.AUTHORIZATION))
        if credentials is None:
            return False
        user = auth.cached(*credentials)
        if user is None:
            async with slots:
                user = await asyncio.to_thread(auth.verify, *credentials)
        if user is None:
            log.info("web: bad credentials for user %r", credentials[0])
            return False
        return may_call(user.role, "getFirmwareImageInfoList")

    return authorize
