"""meshfleet benchmarks against the limits of this machine (figures, never pass/fail).

Orchestration layer behind ``meshfleet bench SCENARIO`` and ``tools/bench.py``.
Every run prints one JSON line; the summary gives the medians of the runs
next to the targets of the issue "Benchmarks". The head-end and the fleet run
as a user runs them: ``meshfleet headend run`` and ``meshfleet fleet run``
child processes on loopback (prefix addressing with a local route when root,
one port per device otherwise; multicast relayed by the fleet), driven
through the SOAP NB API and the head-end's ``/metrics``.

requests
    The fleet answers ``GET /c?q=75`` over ``--devices`` device addresses; a
    raw asyncio UDP echo (uvloop) and one plain aiocoap server get the same
    closed-loop stream in the same run (server in its own process, the
    blocking load generator here).
register
    ``--devices`` devices, no jitter, boot time 0: from starting the fleet
    process to all of them "up" at the head-end. The agent's registration
    trickle (``[registration] min = 1``, the smallest) still spreads the
    first POSTs over 0.5..2 s.
upload
    Then startUpload of a ``--image-kib`` image with ``--loss`` link loss,
    unpaced, to all complete; ImageBlock datagrams sent (multicast + unicast)
    next to the minimum the loss rate implies, ``nblocks + devices x nblocks
    x loss / (1 - loss)`` (every block multicast once, each lost copy sent
    again until it gets through).
api
    getFirmwareUploadStatus latency (p50/p99), polled every 100 ms by one
    client while that upload runs (about 100 calls: the p99 is not simply
    the slowest call).
reload
    Then, with the link loss switched off again, scheduleReload for the next
    whole second ("now"; the API refuses a time not after now) to all devices
    running the new version (boot 0), polled while the call is open (it
    answers once every LoadResponse is in).
memory
    Fleet RSS once every device is registered and idle, per device, at each
    of ``--sizes``; also the growth over a one-device fleet.
soak
    ``--devices`` (100,000) devices reporting every 300 s for ``--minutes``:
    the fleet's CPU (% of one core) and RSS growth over the window.

The bench head-end runs unpaced uploads of 1024-byte blocks with a=1 s
async windows, serves 512 members at once in the unicast fill-in, and uses
a CoAP ACK timeout of 0.5 s, as do the devices (loopback has no mesh
latency; the default is the RFC's 2 s); its CGMSSettings (1..8 s) let
rebooted devices register again at once. Everything else is the default
configuration.

All loops are bounded in count and time; everything is on loopback.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing as mp
import os
import random
import secrets
import select
import socket
import statistics
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from emulator.lab.procs import (
    Child,
    LabError,
    ProcessSet,
    free_port,
    meshfleet_command,
    run_meshfleet,
)

logger = logging.getLogger(__name__)

Target = tuple[str, int]
Ready = Callable[[list[Target]], None]
Emit = Callable[[str], None]

GROUP = "bench"
GROUP_ID = 7
HWID = "OPENCSMP"
OLD_VERSION = "6.8.1"
NEW_VERSION = "6.10.2"
IMAGE_NAME = f"bench-{NEW_VERSION}.bin"
PREFIX = "fd00:6d66:bec::/64"
BLOCK_SIZE = 1024
"""``[upload] block_size`` of the bench head-end (the demo's; 512 is the default)."""
API_POLL = 0.1
"""Seconds between two getFirmwareUploadStatus calls of the upload bench."""

#: scenario -> (figure key, target text, check(value) -> bool)
TARGETS: dict[str, list[tuple[str, str, Callable[[float], bool]]]] = {
    "requests": [
        ("fleet_vs_echo", ">= 0.5 of raw UDP", lambda v: v >= 0.5),
        ("fleet_vs_aiocoap", ">= 10x aiocoap", lambda v: v >= 10),
    ],
    "register": [("register_s", "<= 5 s", lambda v: v <= 5)],
    "upload": [
        ("upload_s", "<= 15 s", lambda v: v <= 15),
        ("blocks_vs_min", "<= 1.3x min datagrams", lambda v: v <= 1.3),
    ],
    "reload": [("reload_s", "<= 5 s", lambda v: v <= 5)],
    "api": [("api_p99_ms", "p99 <= 50 ms", lambda v: v <= 50)],
    "memory": [
        ("rss_kb_per_device_100000", "<= 3 KB/device at 100,000", lambda v: v <= 3)
    ],
    "soak": [
        ("fleet_cpu_pct", "CPU <= 25 % of one core", lambda v: v <= 25),
        ("rss_growth_pct", "RSS growth <= 5 %", lambda v: v <= 5),
    ],
}
SCENARIOS = tuple(TARGETS)


@dataclass(frozen=True)
class BenchOptions:
    runs: int = 3
    devices: int | None = None
    """Default per scenario: 1,000 (requests), 10,000, 100,000 (soak)."""
    seconds: float = 3.0
    window: int = 64
    sizes: tuple[int, ...] = (10_000, 100_000)
    loss: float = 0.02
    image_kib: int = 256
    minutes: float = 10.0
    timeout: float = 300.0
    log_dir: Path | None = None


class BenchError(LabError):
    """A run could not finish; the message says where."""


# ------------------------------------------------------ requests: servers


def _use_uvloop() -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass


def serve_echo(ready: Ready) -> None:
    import asyncio

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: Any) -> None:
            self.transport.sendto(data, addr)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            Echo, local_addr=("::1", 0), family=socket.AF_INET6
        )
        ready([("::1", transport.get_extra_info("sockname")[1])])
        await asyncio.sleep(3600)

    _use_uvloop()
    asyncio.run(main())


def serve_fleet(ready: Ready, devices: int) -> None:
    import asyncio

    from emulator.fleet.config import parse_config
    from emulator.fleet.runtime import Fleet
    from emulator.gctune import tune_for_long_lived_heap

    async def main() -> None:
        config = parse_config(
            {
                "fleet": {
                    "devices": devices,
                    "addressing": "prefix" if os.geteuid() == 0 else "loopback-ports",
                    "prefix": "fd00:6d66:bec::/64",
                    "port": 0,
                    "nms": "[::1]:9",
                    "boot_time": 0.0,
                    "power_on_jitter": 0.0,
                },
                "registration": {"min": 3600, "max": 3600},
                "multicast": {"mode": "off"},
            }
        )
        fleet = Fleet(config)
        await fleet.start()
        tune_for_long_lived_heap()  # as `meshfleet fleet run` does
        await asyncio.sleep(0.5)
        ready([fleet.local_address(eui) for eui in fleet.devices])
        await asyncio.sleep(3600)

    _use_uvloop()
    asyncio.run(main())


def serve_aiocoap(ready: Ready, payload: bytes) -> None:
    import asyncio

    import aiocoap
    import aiocoap.resource as resource

    class C(resource.Resource):  # type: ignore[misc]
        async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
            return aiocoap.Message(code=aiocoap.CONTENT, payload=payload)

    async def main() -> None:
        port = free_port(socket.SOCK_DGRAM)
        site = resource.Site()
        site.add_resource(["c"], C())
        await aiocoap.Context.create_server_context(site, bind=("::1", port))
        ready([("::1", port)])
        await asyncio.sleep(3600)

    asyncio.run(main())


def _server_main(kind: str, queue: Any, arg: Any) -> None:
    def ready(targets: list[Target]) -> None:
        queue.put(targets)

    if kind == "echo":
        serve_echo(ready)
    elif kind == "fleet":
        serve_fleet(ready, int(arg))
    else:
        serve_aiocoap(ready, bytes(arg))


class Server:
    """A server under test in its own process."""

    def __init__(self, kind: str, arg: Any = None) -> None:
        ctx = mp.get_context("spawn")
        self.queue = ctx.Queue()
        self.process = ctx.Process(
            target=_server_main, args=(kind, self.queue, arg), daemon=True
        )

    def __enter__(self) -> list[Target]:
        self.process.start()
        targets: list[Target] = self.queue.get(timeout=120)
        return targets

    def __exit__(self, *exc: object) -> None:
        self.process.kill()
        self.process.join(10)


# ---------------------------------------------------------- load generator


def _request(mid: int) -> bytes:
    from emulator.coap.message import Code, Message, Type, encode, request_options

    token = mid.to_bytes(2, "big")
    return encode(
        Message(Type.CON, Code.GET, mid, token, request_options("c", ["q=75"]))
    )


def drive(
    targets: list[Target], seconds: float, window: int, sockets: int = 8
) -> float:
    """Closed-loop load; return answers per second after a short warm-up."""
    template = bytearray(_request(0))
    socks = []
    for _ in range(sockets):
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.bind(("::1", 0))
        s.setblocking(False)
        socks.append(s)
    poller = select.epoll()
    for s in socks:
        poller.register(s.fileno(), select.EPOLLIN)
    by_fd = {s.fileno(): s for s in socks}
    sent = answered = in_flight = 0
    ntargets = len(targets)
    warmup_end = time.perf_counter() + 0.5
    end = warmup_end + seconds
    counted_from = 0
    last_answer = time.perf_counter()

    def send_one() -> None:
        nonlocal sent, in_flight
        i = sent
        target = targets[i % ntargets]
        mid = (i // (ntargets * sockets)) & 0xFFFF
        template[2] = template[4] = mid >> 8
        template[3] = template[5] = mid & 0xFF
        try:
            socks[(i // ntargets) % sockets].sendto(template, target)
        except BlockingIOError:
            return
        sent += 1
        in_flight += 1

    try:
        while True:
            now = time.perf_counter()
            if now >= end:
                break
            if counted_from == 0 and now >= warmup_end:
                counted_from = answered
            while in_flight < window:
                send_one()
            for fd, _ in poller.poll(0.05):
                sock = by_fd[fd]
                while True:
                    try:
                        sock.recv(2048)
                    except BlockingIOError:
                        break
                    answered += 1
                    in_flight -= 1
                    last_answer = now
            if now - last_answer > 0.2:  # lost datagrams: refill the window
                in_flight = 0
                last_answer = now
    finally:
        poller.close()
        for s in socks:
            s.close()
    return (answered - counted_from) / seconds


def requests_run(opts: BenchOptions, payload: bytes) -> dict[str, Any]:
    """One run: the same stream to the echo, the fleet and aiocoap."""
    row: dict[str, Any] = {}
    for kind, arg in (
        ("echo", None),
        ("fleet", opts.devices or 1000),
        ("aiocoap", payload),
    ):
        with Server(kind, arg) as targets:
            row[f"{kind}_rps"] = round(drive(targets, opts.seconds, opts.window))
    return row


def _fleet_payload(target: Target) -> bytes:
    """The answer a fleet device gives to GET /c?q=75 (for the aiocoap server)."""
    from emulator.coap.message import decode

    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(_request(1), target)
        return decode(s.recv(2048)).payload


# --------------------------------------------------------------- the lab


def _addressing() -> str:
    return "prefix" if os.geteuid() == 0 else "loopback-ports"


@dataclass(frozen=True)
class LabSpec:
    devices: int
    image_kib: int = 256
    jitter: float = 0.0
    report_interval: int = 3600
    seed: int = 1


def _headend_toml(spec: LabSpec, http: int, csmp: int, relay: int, key: Path) -> str:
    return f"""
[csmp]
listen = "::1"
port = {csmp}
ack_timeout = 0.5

[http]
listen = "::1"
port = {http}

[nms]
report_interval = {spec.report_interval}
reg_interval_min = 1
reg_interval_max = 8

[upload]
pace = 0
block_size = {BLOCK_SIZE}
async_window = 1
grace = 0.5
unicast_parallel = 512

[commands]
async_window = 1
wait = 30

[images]
verify_key = "{key}"

[[groups]]
name = "{GROUP}"
id = {GROUP_ID}
multicast = "[::1]:{relay}"
hardware_id = ["{HWID}"]
"""


def _fleet_toml(
    spec: LabSpec, csmp: int, relay: int, control: int, nms_pub: Path
) -> str:
    return f"""
[fleet]
devices = {spec.devices}
prefix = "{PREFIX}"
nms = "[::1]:{csmp}"
seed = {spec.seed}
addressing = "{_addressing()}"
port_base = 20000
boot_time = 0.0
power_on_jitter = {spec.jitter}
metrics_port = {control}

[registration]
min = 1
max = 8
ack_timeout = 0.5

[security]
require_signed_post = true
require_signed_response = true
nms_certificate = "{nms_pub}"

[multicast]
mode = "relay"
relay = "[::1]:{relay}"

[[hardware]]
name = "meter"
hardware_id = "{HWID}"
model = "OPENCSMP-NODE"
[[hardware.images]]
slot = "run"
version = "{OLD_VERSION}"
"""


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Lab:
    """A head-end and a fleet in their own processes (see the module doc)."""

    def __init__(self, spec: LabSpec, work: Path, procs: ProcessSet) -> None:
        from emulator.nbapi.client import NbapiClient

        self.spec = spec
        self.work = work
        self.procs = procs
        self.http = free_port()
        self.csmp = free_port(socket.SOCK_DGRAM)
        self.relay = free_port(socket.SOCK_DGRAM)
        self.control = free_port()
        self.password = secrets.token_urlsafe(12)
        self.client = NbapiClient(
            f"http://[::1]:{self.http}/nbapi/meshDeviceOps",
            "admin",
            self.password,
            timeout=60,
        )
        self.fleet: Child | None = None
        self.headend: Child | None = None
        self.nblocks = 0

    def start_headend(self) -> None:
        from cryptography.hazmat.primitives import serialization

        from emulator.firmware.image import build_image, generate_signing_key

        state = self.work / "headend-state"
        run_meshfleet(["headend", "keygen", "--state", str(state)])
        key = generate_signing_key()
        pub = self.work / "image-signing.pub.pem"
        pub.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM,
                serialization.PublicFormat.SubjectPublicKeyInfo,
            )
        )
        size = self.spec.image_kib * 1024 - 256
        payload = random.Random(self.spec.seed).randbytes(size)
        image = self.work / IMAGE_NAME
        data = build_image(
            payload, hwid=HWID, version=NEW_VERSION, name="bench", sign_key=key
        )
        self.nblocks = _nblocks(len(data))
        image.write_bytes(data)
        conf = self.work / "headend.toml"
        conf.write_text(_headend_toml(self.spec, self.http, self.csmp, self.relay, pub))
        run_meshfleet(["headend", "image", "add", str(image), "--state", str(state),
                       "--config", str(conf)])  # fmt: skip
        self.headend = self.procs.start(
            "headend",
            meshfleet_command("headend", "run", "--config", str(conf),
                              "--state", str(state)),
            env={"MESHFLEET_ADMIN_PASSWORD": self.password},
        )  # fmt: skip
        self.wait("head-end HTTP", lambda: bool(self.status_pairs(quiet=True)), 60)

    def start_fleet(self) -> float:
        """Start the fleet process; its start time (time.monotonic())."""
        nms_pub = self.work / "headend-state" / "nms-key.pub.pem"
        conf = self.work / "fleet.toml"
        conf.write_text(
            _fleet_toml(self.spec, self.csmp, self.relay, self.control, nms_pub)
        )
        t0 = time.monotonic()
        self.fleet = self.procs.start(
            "fleet", meshfleet_command("fleet", "run", str(conf))
        )
        return t0

    def set_loss(self, loss: float) -> None:
        """Replace the fleet's link rules: ``loss`` on every device, both ways."""
        body = json.dumps({"link": [{"loss": loss}] if loss > 0 else []}).encode()
        request = urllib.request.Request(
            f"http://[::1]:{self.control}/faults", data=body, method="PUT"
        )
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=30) as answer:
            answer.read()

    # -- reading the head-end ----------------------------------------------

    def status_pairs(self, quiet: bool = False) -> dict[str, int]:
        from emulator.nbapi.client import NbapiError

        try:
            result = self.client.get_upload_status(None, GROUP)
        except NbapiError:
            if not quiet:
                raise
            return {}
        return {p.name: int(p.value) for p in result.data or []}

    def metrics(self) -> dict[str, float]:
        """The head-end's Prometheus samples, ``name{k=v}`` -> value."""
        from prometheus_client.parser import text_string_to_metric_families

        url = f"http://[::1]:{self.http}/metrics"
        with urllib.request.urlopen(url, timeout=30) as answer:
            text = answer.read().decode()
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return out

    def running_new(self) -> int:
        images = self.client.get_image_info_list(None, GROUP).data
        if images is None:
            return 0
        return sum(i.running for i in images.images if i.version == NEW_VERSION)

    def wait(
        self,
        what: str,
        done: Callable[[], bool],
        timeout: float,
        interval: float = 0.1,
    ) -> float:
        """Poll ``done`` until true (bounded by ``timeout``); seconds it took."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        while not done():
            dead = self.procs.dead()
            if dead is not None:
                raise BenchError(
                    f"{dead.name} exited with {dead.process.returncode}:\n"
                    + dead.tail()
                )
            if time.monotonic() > deadline:
                raise BenchError(f"{what} did not finish in {timeout:.0f} s")
            time.sleep(interval)
        return time.monotonic() - t0

    def registered(self) -> int:
        return self.status_pairs().get("up", 0)


@contextmanager
def lab(spec: LabSpec, log_dir: Path | None) -> Iterator[Lab]:
    """A started head-end (no fleet yet); every process gone on exit."""
    with tempfile.TemporaryDirectory("-mfbench") as tmp:
        work = Path(tmp)
        logs = log_dir or work
        logs.mkdir(parents=True, exist_ok=True)
        procs = ProcessSet(logs)
        try:
            the_lab = Lab(spec, work, procs)
            the_lab.start_headend()
            yield the_lab
        except LabError as exc:
            raise BenchError(f"{exc}{procs.tails()}") from exc
        finally:
            procs.stop()


# ------------------------------------------------------------- campaign


def min_blocks(devices: int, nblocks: int, loss: float) -> float:
    """ImageBlock datagrams the loss rate implies at least (module doc)."""
    return nblocks + devices * nblocks * loss / (1.0 - loss)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[k]


def campaign_run(opts: BenchOptions, phases: str, devices: int) -> dict[str, Any]:
    """register [-> upload (+ api latency) [-> reload]]: one run's figures."""
    spec = LabSpec(devices, image_kib=opts.image_kib)
    row: dict[str, Any] = {"devices": devices}
    with lab(spec, opts.log_dir) as the_lab:
        t0 = the_lab.start_fleet()
        the_lab.wait(
            "registration",
            lambda: the_lab.registered() >= devices,
            opts.timeout,
            0.05,
        )
        row["register_s"] = round(time.monotonic() - t0, 3)
        m0 = the_lab.metrics()
        row["registrations"] = m0.get("meshfleet_headend_registrations_total", 0)
        if phases == "register":
            return row
        row["settle_s"] = round(_settle(the_lab, opts.timeout), 3)
        row.update(_upload(the_lab, opts, devices))
        if phases == "reload":
            the_lab.set_loss(0.0)  # the loss rate belongs to the upload figures
            row.update(_reload(the_lab, opts, devices))
    return row


def _settle(the_lab: Lab, timeout: float) -> float:
    """Wait until the registration storm is over: no registration and no
    report at the head-end for one second (late duplicates and first
    reports otherwise land in the upload's figures); seconds it took."""

    def counts() -> tuple[float, float]:
        m = the_lab.metrics()
        return (
            m.get("meshfleet_headend_registrations_total", 0.0),
            m.get("meshfleet_headend_reports_total", 0.0),
        )

    t0 = time.monotonic()
    last = counts()
    while time.monotonic() - t0 < timeout:
        time.sleep(1.0)
        now = counts()
        if now == last:
            break
        last = now
    return time.monotonic() - t0


def _upload(the_lab: Lab, opts: BenchOptions, devices: int) -> dict[str, Any]:
    the_lab.set_loss(opts.loss)
    before = the_lab.metrics()
    t0 = time.monotonic()
    started = the_lab.client.start_upload(None, GROUP, IMAGE_NAME)
    if started.code != 0:
        raise BenchError(f"startUpload: {started.code} {started.message}")
    latencies: list[float] = []
    deadline = t0 + opts.timeout
    pairs: dict[str, int] = {}
    while time.monotonic() < deadline:
        t = time.perf_counter()
        pairs = the_lab.status_pairs()
        latencies.append((time.perf_counter() - t) * 1000)
        failed = pairs.get("failed", 0) + pairs.get("refused", 0)
        if failed:
            raise BenchError(f"{failed} devices failed or refused the upload")
        if pairs.get("complete", 0) >= devices:
            break
        time.sleep(API_POLL)
    else:
        raise BenchError(f"upload did not finish in {opts.timeout:.0f} s: {pairs}")
    seconds = time.monotonic() - t0
    after = the_lab.metrics()

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    multicast = delta("meshfleet_headend_blocks_sent_total{mode=multicast}")
    unicast = delta("meshfleet_headend_blocks_sent_total{mode=unicast}")
    nblocks = the_lab.nblocks
    minimum = min_blocks(devices, nblocks, opts.loss)
    return {
        "upload_s": round(seconds, 3),
        "nblocks": nblocks,
        "blocks_multicast": multicast,
        "blocks_unicast": unicast,
        "blocks_min": round(minimum),
        "blocks_vs_min": round((multicast + unicast) / minimum, 3),
        "retransmissions": delta("meshfleet_headend_retransmissions_total"),
        "api_calls": len(latencies),
        "api_p50_ms": round(_percentile(latencies, 0.5), 2),
        "api_p99_ms": round(_percentile(latencies, 0.99), 2),
        "api_max_ms": round(max(latencies), 2),
    }


def _nblocks(size: int) -> int:
    from emulator.headend.images import choose_block_size

    block = choose_block_size(size, BLOCK_SIZE)
    return -(-size // block)


def _reload(the_lab: Lab, opts: BenchOptions, devices: int) -> dict[str, float]:
    """scheduleReload "now"; seconds to all devices on the new version, and
    until the call returned (it answers once every member's LoadResponse is
    in, so it may return before or after the last device is back)."""
    now = time.time()
    at = int(now) + (2 if now % 1 > 0.7 else 1)  # the next whole second ("now")
    when = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    outcome: dict[str, Any] = {}

    def call() -> None:
        try:
            outcome["result"] = the_lab.client.schedule_reload(
                None, GROUP, IMAGE_NAME, when
            )
        except Exception as exc:  # reported by the caller
            outcome["error"] = exc
        outcome["call_s"] = time.monotonic() - t0

    t0 = time.monotonic()
    caller = threading.Thread(target=call, name="scheduleReload", daemon=True)
    caller.start()
    try:
        running = the_lab.wait(
            "reload",
            lambda: "error" in outcome or the_lab.running_new() >= devices,
            opts.timeout,
            0.1,
        )
    finally:
        caller.join(opts.timeout)
    if "error" in outcome:
        raise BenchError(f"scheduleReload: {outcome['error']}")
    result = outcome.get("result")
    if result is None:
        raise BenchError(f"scheduleReload did not answer in {opts.timeout:.0f} s")
    if result.code != 0:
        raise BenchError(f"scheduleReload: {result.code} {result.message}")
    return {"reload_s": round(running, 3), "reload_call_s": round(outcome["call_s"], 3)}


# -------------------------------------------------------- memory and soak


def _power_on_spread(devices: int) -> float:
    """Power-on jitter of the memory and soak fleets: about 1,500 first
    registrations per second, below what the head-end answers on this
    machine (~3,000/s); faster, 100,000 devices spend minutes in a storm of
    retransmissions and failed exchanges before the figures are taken."""
    return min(120.0, devices / 1500)


def _registered_fleet(the_lab: Lab, devices: int, timeout: float) -> int:
    """Start the fleet, wait until every device is up; the fleet's pid."""
    the_lab.start_fleet()
    the_lab.wait("registration", lambda: the_lab.registered() >= devices, timeout, 0.5)
    assert the_lab.fleet is not None
    return the_lab.fleet.process.pid


def memory_run(opts: BenchOptions) -> dict[str, Any]:
    row: dict[str, Any] = {}
    sizes = (1, *opts.sizes)
    for n in sizes:
        spec = LabSpec(n, jitter=_power_on_spread(n))
        with lab(spec, opts.log_dir) as the_lab:
            pid = _registered_fleet(the_lab, n, opts.timeout)
            time.sleep(3.0)  # idle: registration answers and timers settled
            rss = _rss_bytes(pid)
        if n == 1:
            row["rss_mb_1"] = round(rss / 2**20, 1)
            base = rss
            continue
        row[f"rss_mb_{n}"] = round(rss / 2**20, 1)
        row[f"rss_kb_per_device_{n}"] = round(rss / n / 1000, 3)
        row[f"growth_kb_per_device_{n}"] = round((rss - base) / (n - 1) / 1000, 3)
    return row


def soak_run(opts: BenchOptions, devices: int) -> dict[str, Any]:
    spec = LabSpec(devices, jitter=_power_on_spread(devices), report_interval=300)
    with lab(spec, opts.log_dir) as the_lab:
        pid = _registered_fleet(the_lab, devices, opts.timeout)
        assert the_lab.headend is not None
        hpid = the_lab.headend.process.pid
        time.sleep(5.0)
        rss0 = _rss_bytes(pid)
        cpu0, hcpu0, t0 = _cpu_seconds(pid), _cpu_seconds(hpid), time.monotonic()
        reports0 = the_lab.metrics().get("meshfleet_headend_reports_total", 0.0)
        end = t0 + opts.minutes * 60
        rss_max = rss0
        while time.monotonic() < end:
            time.sleep(min(5.0, max(0.0, end - time.monotonic())))
            if the_lab.procs.dead() is not None:
                raise BenchError("a process died during the soak")
            rss_max = max(rss_max, _rss_bytes(pid))
        wall = time.monotonic() - t0
        cpu, hcpu = _cpu_seconds(pid) - cpu0, _cpu_seconds(hpid) - hcpu0
        rss1 = _rss_bytes(pid)
        reports = the_lab.metrics().get("meshfleet_headend_reports_total", 0.0)
    return {
        "devices": devices,
        "minutes": round(wall / 60, 2),
        "fleet_cpu_pct": round(100 * cpu / wall, 2),
        "headend_cpu_pct": round(100 * hcpu / wall, 2),
        "reports_per_s": round((reports - reports0) / wall, 1),
        "rss_mb_start": round(rss0 / 2**20, 1),
        "rss_mb_end": round(rss1 / 2**20, 1),
        "rss_growth_pct": round(100 * (rss1 - rss0) / rss0, 2),
        "rss_max_growth_pct": round(100 * (rss_max - rss0) / rss0, 2),
    }


# ------------------------------------------------------------- driver


def run(scenario: str, opts: BenchOptions, emit: Emit) -> dict[str, Any]:
    """Run ``scenario`` ``opts.runs`` times (soak: once); the summary."""
    if scenario not in TARGETS:
        raise BenchError(f"unknown scenario {scenario!r}; one of {SCENARIOS}")
    runs = 1 if scenario == "soak" else max(1, opts.runs)
    rows: list[dict[str, Any]] = []
    payload = b""
    if scenario == "requests":
        with Server("fleet", opts.devices or 1000) as targets:
            payload = _fleet_payload(targets[0])
    for k in range(runs):
        row: dict[str, Any] = {"scenario": scenario, "run": k}
        row.update(_one_run(scenario, opts, payload))
        emit(json.dumps(row))
        rows.append(row)
    summary = summarize(scenario, rows)
    emit(json.dumps(summary))
    emit(format_summary(summary))
    return summary


def _one_run(scenario: str, opts: BenchOptions, payload: bytes) -> dict[str, Any]:
    if scenario == "requests":
        return requests_run(opts, payload)
    if scenario == "memory":
        return memory_run(opts)
    if scenario == "soak":
        return soak_run(opts, opts.devices or 100_000)
    phases = {"api": "upload"}.get(scenario, scenario)
    return campaign_run(opts, phases, opts.devices or 10_000)


def summarize(scenario: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [
        k
        for k, v in rows[0].items()
        if k not in ("run", "devices") and isinstance(v, int | float)
    ]
    medians = {k: statistics.median(float(r[k]) for r in rows) for k in keys}
    if scenario == "requests":
        medians["fleet_vs_echo"] = round(medians["fleet_rps"] / medians["echo_rps"], 3)
        medians["fleet_vs_aiocoap"] = round(
            medians["fleet_rps"] / medians["aiocoap_rps"], 1
        )
    summary: dict[str, Any] = {"scenario": scenario, "runs": len(rows)}
    summary["medians"] = {k: round(v, 3) for k, v in medians.items()}
    summary["targets"] = [
        {
            "figure": key,
            "target": text,
            "median": medians.get(key),
            "met": key in medians and check(medians[key]),
        }
        for key, text, check in TARGETS[scenario]
    ]
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"\n{summary['scenario']}: medians of {summary['runs']} run(s)"]
    medians: dict[str, float] = summary["medians"]
    width = max(len(k) for k in medians)
    lines += [f"  {k:<{width}}  {v:g}" for k, v in medians.items()]
    for t in summary["targets"]:
        met = "met" if t["met"] else "MISSED"
        lines.append(f"  target {t['figure']} {t['target']}: {t['median']} ({met})")
    return "\n".join(lines)
