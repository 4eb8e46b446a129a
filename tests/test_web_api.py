"""Tests of the live page's JSON status API against the in-memory source."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from emulator.nbapi.auth import Role, User, hash_password
from emulator.web.app import add_web_routes, basic_authorizer, grid_json
from emulator.web.demo_source import DemoSource
from emulator.web.feed import EventKind
from emulator.web.status import KNOWN_STATES, DeviceGrid

T0 = 1_700_000_000.0
FIRST = "00173B0000000001"


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return {"Authorization": f"Basic {token}"}


def _user(name: str, role: Role, password: str) -> User:
    return User(name, role, hash_password(password, n=2**4))


@pytest.fixture
def source() -> DemoSource:
    return DemoSource({"north": 30, "south": 20}, now=T0, seed=7)


async def _client(app: web.Application) -> TestClient[web.Request, web.Application]:
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


@pytest.fixture
async def client(
    source: DemoSource,
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application()
    add_web_routes(app, source, None)
    client = await _client(app)
    yield client
    await client.close()


@pytest.fixture
async def guarded(
    source: DemoSource,
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    users = {
        "watcher": _user("watcher", Role.MONITOR, "look"),
        "admin": _user("admin", Role.OPERATOR, "secret"),
    }
    app = web.Application()
    add_web_routes(app, source, basic_authorizer(users))
    client = await _client(app)
    yield client
    await client.close()


Client = TestClient[web.Request, web.Application]


async def test_status_lists_the_groups(client: Client, source: DemoSource) -> None:
    source.set_states("north", "UPLOADED")
    source.set_action("north", "UPLOADING")
    reply = await client.get("/api/status")
    assert reply.status == 200
    assert reply.headers["Cache-Control"] == "no-store"
    data = await reply.json()
    assert [g["name"] for g in data["groups"]] == ["north", "south"]
    north = data["groups"][0]
    assert north["group_id"] == 1 and north["address"] == "ff15::1"
    assert north["members"] == 30 and north["action_status"] == "UPLOADING"
    assert north["upload_states"] == {"UPLOADED": 30}
    assert north["complete"] == 30
    assert north["scheduled_reload"] is None
    assert data["events_last"] == 0 and data["series_latest"] is None
    assert isinstance(data["time"], float)


async def test_grid_is_compact_and_omits_known_devices(
    client: Client, source: DemoSource
) -> None:
    source.set_states("south", "RUNNING")
    reply = await client.get("/api/grid", params={"group": "south"})
    data = await reply.json()
    assert data["count"] == 20 and data["legend"] == list(KNOWN_STATES)
    codes = base64.b64decode(data["states"])
    assert set(codes) == {KNOWN_STATES.index("RUNNING")}
    assert data["eui64"][:16] == "00173B000000001F"
    assert len(data["eui64"]) == 20 * 16
    again = await client.get(
        "/api/grid", params={"group": "south", "version": data["version"]}
    )
    second = await again.json()
    assert "eui64" not in second and second["version"] == data["version"]
    whole = await (await client.get("/api/grid")).json()
    assert whole["group"] is None and whole["count"] == 50
    assert whole["version"] != data["version"]


async def test_grid_of_an_unknown_group_is_404(client: Client) -> None:
    reply = await client.get("/api/grid", params={"group": "nowhere"})
    assert reply.status == 404
    assert "error" in await reply.json()


def test_grid_json_checks_the_arrays() -> None:
    with pytest.raises(ValueError):
        grid_json(DeviceGrid(["00173B0000000001"], b"", ["IDLE"]), None)
    with pytest.raises(ValueError):
        grid_json(DeviceGrid(["short"], b"\x00", ["IDLE"]), None)
    hundred_k = DeviceGrid([f"{i:016X}" for i in range(100_000)], bytes(100_000), ["A"])
    data = grid_json(hundred_k, None)
    assert len(data["states"]) < 140_000 and len(data["eui64"]) == 1_600_000


async def test_device_details(client: Client, source: DemoSource) -> None:
    reply = await client.get(f"/api/devices/{FIRST.lower()}")
    assert reply.status == 200
    data = await reply.json()
    assert data["eui64"] == FIRST and data["group"] == "north"
    assert data["hardware_id"] == "OPENCSMP"
    assert [s["role"] for s in data["slots"]] == ["RUN", "UPLOAD", "BACKUP"]
    assert {"address", "running_version", "last_heard", "up", "upload_state"} <= set(
        data
    )
    assert (await client.get("/api/devices/00173B00000000FF")).status == 404
    assert (await client.get("/api/devices/not-an-eui")).status == 400


async def test_images(client: Client, source: DemoSource) -> None:
    reply = await client.get("/api/images", params={"group": "NORTH"})
    data = await reply.json()
    assert data["group"] == "NORTH" and data["action_status"] == "IDLE"
    names = [image["name"] for image in data["images"]]
    assert names == ["opencsmp-node-6.8.99.bin", "opencsmp-node-6.9.99.bin"]
    assert data["images"][0]["running"] == 30
    assert (await client.get("/api/images")).status == 400
    assert (await client.get("/api/images", params={"group": "x"})).status == 404


async def test_series_and_events_follow_the_feed(
    client: Client, source: DemoSource
) -> None:
    feed = source.feed
    feed.count_blocks(T0, multicast=4)
    feed.count_blocks(T0 + 1, multicast=1, unicast=2)
    feed.sample(T0 + 1, "north", 3, 30)
    feed.event(T0, EventKind.REFUSAL, "TransferRequest refused", eui64=FIRST, code=8)
    feed.event(T0 + 1, EventKind.REBOOT, "rebooted", group="north")

    series = await (await client.get("/api/series")).json()
    assert series["t"] == [int(T0), int(T0) + 1]
    assert series["multicast"] == [4, 1] and series["unicast"] == [0, 2]
    assert series["completion"] == {"north": [[int(T0) + 1, 3, 30]]}
    assert series["latest"] == int(T0) + 1 and series["window"] == 900
    later = await (await client.get("/api/series", params={"since": T0 + 1})).json()
    assert later["t"] == [int(T0) + 1]
    assert (await client.get("/api/series", params={"since": "soon"})).status == 400

    events = await (await client.get("/api/events")).json()
    assert events["last"] == 2
    first = events["events"][0]
    assert first == {
        "seq": 1,
        "t": T0,
        "kind": "refusal",
        "text": "TransferRequest refused",
        "group": None,
        "eui64": FIRST,
        "code": 8,
    }
    newer = await (await client.get("/api/events", params={"since": 1})).json()
    assert [e["seq"] for e in newer["events"]] == [2]
    assert (await client.get("/api/events", params={"limit": 0})).status == 400


async def test_page_and_static_files(client: Client) -> None:
    page = await client.get("/")
    assert page.status == 200
    assert page.headers["Content-Type"].startswith("text/html")
    html = await page.text()
    for asset in ("/static/app.js", "/static/style.css"):
        assert asset in html
        reply = await client.get(asset)
        assert reply.status == 200
    assert (await client.get("/static/missing.js")).status == 404
    assert (await client.get("/static/..%2Fapp.py")).status == 404


async def test_grid_is_gzipped_when_asked(client: Client) -> None:
    reply = await client.get("/api/grid", headers={"Accept-Encoding": "gzip"})
    assert reply.status == 200
    assert reply.headers.get("Content-Encoding") == "gzip"


@pytest.mark.parametrize(
    "path",
    ["/", "/static/app.js", "/api/status", "/api/grid", f"/api/devices/{FIRST}"],
)
async def test_without_credentials_is_401(guarded: Client, path: str) -> None:
    reply = await guarded.get(path)
    assert reply.status == 401
    assert reply.headers["WWW-Authenticate"].startswith("Basic realm=")


async def test_wrong_password_is_401(guarded: Client) -> None:
    for headers in (_basic("watcher", "guess"), _basic("nobody", "look")):
        assert (await guarded.get("/api/status", headers=headers)).status == 401
    garbled = {"Authorization": "Basic not-base64!"}
    assert (await guarded.get("/api/status", headers=garbled)).status == 401


@pytest.mark.parametrize(
    ("user", "password"), [("watcher", "look"), ("admin", "secret")]
)
async def test_monitor_and_operator_may_look(
    guarded: Client, user: str, password: str
) -> None:
    headers = _basic(user, password)
    for path in ("/", "/api/status", "/api/events", "/api/series"):
        reply = await guarded.get(path, headers=headers)
        assert reply.status == 200, path
