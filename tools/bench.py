"""meshfleet benchmarks: figures, never pass/fail (issue "Benchmarks").

    python tools/bench.py requests [--runs 3] [--devices 1000] [--seconds 3]
    python tools/bench.py memory [--sizes 10000,100000]

Each run prints one JSON line; the summary gives medians of the runs and the
ratios. This 2-core machine is noisy: compare ratios measured in the same run
rather than absolute figures across runs.

requests
    The server under test runs in its own process (one core); the load
    generator runs here (the other core): a blocking loop over a few UDP
    sockets keeping ``--window`` CON ``GET /c?q=75`` requests in flight,
    spread over the targets. Three servers get the same stream in the same
    run: a raw asyncio UDP echo (uvloop), the meshfleet fleet with
    ``--devices`` devices at their own addresses (one socket, pktinfo; loopback
    ports without root), and one aiocoap server context answering the same
    payload. Message ids advance per target, so no request is a duplicate.
memory
    Devices built and registered in-process (no sockets); tracemalloc bytes
    and RSS growth per idle registered device at each size.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import select
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

Target = tuple[str, int]
Ready = Callable[[list[Target]], None]


# --------------------------------------------------------------- servers


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
        await asyncio.sleep(0.5)
        ready([fleet.local_address(eui) for eui in fleet.devices])
        await asyncio.sleep(3600)

    _use_uvloop()
    asyncio.run(main())


def serve_aiocoap(ready: Ready, payload: bytes) -> None:
    import asyncio

    import aiocoap
    import aiocoap.resource as resource

    class C(resource.Resource):
        async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
            return aiocoap.Message(code=aiocoap.CONTENT, payload=payload)

    async def main() -> None:
        port = _free_udp_port()
        site = resource.Site()
        site.add_resource(["c"], C())
        await aiocoap.Context.create_server_context(site, bind=("::1", port))
        ready([("::1", port)])
        await asyncio.sleep(3600)

    asyncio.run(main())


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.bind(("::1", 0))
        return int(s.getsockname()[1])


def _server_main(kind: str, queue: Any, arg: Any) -> None:
    def ready(targets: list[Target]) -> None:
        queue.put(targets)

    {"echo": serve_echo, "fleet": serve_fleet, "aiocoap": serve_aiocoap}[kind](
        ready, *([arg] if arg is not None else [])
    )


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


# ------------------------------------------------------------- scenarios


def scenario_requests(args: argparse.Namespace) -> None:
    with Server("fleet", args.devices) as targets:
        payload = _fleet_payload(targets[0])
    rows = []
    for run in range(args.runs):
        row: dict[str, Any] = {"scenario": "requests", "run": run}
        for kind, arg in (
            ("echo", None),
            ("fleet", args.devices),
            ("aiocoap", payload),
        ):
            with Server(kind, arg) as targets:
                row[f"{kind}_rps"] = round(drive(targets, args.seconds, args.window))
        print(json.dumps(row), flush=True)
        rows.append(row)
    _summary(rows, ["echo_rps", "fleet_rps", "aiocoap_rps"])


def _fleet_payload(target: Target) -> bytes:
    """The answer a fleet device gives to GET /c?q=75 (for the aiocoap server)."""
    from emulator.coap.message import decode

    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(_request(1), target)
        return decode(s.recv(2048)).payload


def scenario_memory(args: argparse.Namespace) -> None:
    import subprocess

    tool = Path(__file__).resolve().parent / "bench_fleet.py"
    subprocess.run([sys.executable, str(tool), "--requests", "0", "--memory",
                    args.sizes], check=True)  # fmt: skip


def _summary(rows: list[dict[str, Any]], keys: list[str]) -> None:
    medians = {k: statistics.median(r[k] for r in rows) for k in keys}
    summary: dict[str, Any] = {f"median_{k}": v for k, v in medians.items()}
    if medians.get("echo_rps"):
        summary["fleet_vs_echo"] = round(medians["fleet_rps"] / medians["echo_rps"], 3)
    if medians.get("aiocoap_rps"):
        summary["fleet_vs_aiocoap"] = round(
            medians["fleet_rps"] / medians["aiocoap_rps"], 1
        )
    print(json.dumps(summary), flush=True)
    width = max(len(k) for k in summary)
    print(f"\nsummary (medians of {len(rows)} runs)")
    for key, value in summary.items():
        print(f"  {key:<{width}}  {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="scenario", required=True)
    req = sub.add_parser("requests")
    req.add_argument("--runs", type=int, default=3)
    req.add_argument("--devices", type=int, default=1000)
    req.add_argument("--seconds", type=float, default=3.0)
    req.add_argument("--window", type=int, default=64)
    mem = sub.add_parser("memory")
    mem.add_argument("--sizes", default="10000,100000")
    args = parser.parse_args()
    {"requests": scenario_requests, "memory": scenario_memory}[args.scenario](args)


if __name__ == "__main__":
    main()
