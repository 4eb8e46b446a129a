"""Benchmark the fleet runtime: requests/s next to a raw UDP echo, bytes/device.

    .venv/bin/python tools/bench_fleet.py [--requests 20000] [--devices 1000]
        [--runs 3] [--memory 10000,100000]

Throughput: a closed-loop client (``--window`` requests in flight) sends CON
``GET /c?q=75`` to the fleet's device addresses round robin (prefix
addressing when root, loopback ports otherwise), and the same datagrams to a
raw asyncio UDP echo server in the same process and run. One JSON line per
run, then the medians and their ratio.

Memory: devices built and registered in-process (no sockets), measured with
tracemalloc and RSS; bytes per idle registered device at each size. Every
loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import socket
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emulator.coap.message import Code, Message, Type, encode, request_options  # noqa: E402
from emulator.fleet.config import parse_config  # noqa: E402
from emulator.fleet.runtime import Fleet  # noqa: E402

DEADLINE = 60.0


class Client(asyncio.DatagramProtocol):
    """Closed loop: keeps ``window`` requests in flight until ``total`` done."""

    def __init__(self, targets: list[tuple[str, int]], total: int, window: int) -> None:
        self.targets = targets
        self.total = total
        self.window = window
        self.sent = 0
        self.done = 0
        self.finished = asyncio.get_running_loop().create_future()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        for _ in range(self.window):
            self._send()

    def _send(self) -> None:
        if self.sent >= self.total or self.transport is None:
            return
        mid = self.sent & 0xFFFF
        msg = Message(
            Type.CON,
            Code.GET,
            mid,
            mid.to_bytes(2, "big"),
            request_options("c", ["q=75"]),
        )
        self.transport.sendto(encode(msg), self.targets[self.sent % len(self.targets)])
        self.sent += 1

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.done += 1
        if self.done >= self.total and not self.finished.done():
            self.finished.set_result(None)
        else:
            self._send()


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)  # type: ignore[attr-defined]


async def _drive(targets: list[tuple[str, int]], total: int, window: int) -> float:
    loop = asyncio.get_running_loop()
    client = Client(targets, total, window)
    start = time.perf_counter()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: client, local_addr=("::1", 0), family=socket.AF_INET6
    )
    try:
        await asyncio.wait_for(client.finished, DEADLINE)
    except TimeoutError:
        pass
    finally:
        transport.close()
    return client.done / (time.perf_counter() - start)


async def bench_echo(total: int, window: int) -> float:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        Echo, local_addr=("::1", 0), family=socket.AF_INET6
    )
    try:
        port = transport.get_extra_info("sockname")[1]
        return await _drive([("::1", port)], total, window)
    finally:
        transport.close()


async def bench_fleet(devices: int, total: int, window: int) -> tuple[float, str]:
    root = os.geteuid() == 0
    config = parse_config(
        {
            "fleet": {
                "devices": devices,
                "addressing": "prefix" if root else "loopback-ports",
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
    try:
        await asyncio.sleep(0.2)
        targets = [fleet.local_address(eui) for eui in fleet.devices]
        return await _drive(targets, total, window), fleet.mode
    finally:
        await fleet.stop()


def registration_answer() -> bytes:
    from emulator.csmp import csmp_pb2 as pb
    from emulator.csmp.registry import T, encode_tlv

    return encode_tlv(T.REPORT_SUBSCRIBE, pb.ReportSubscribe(interval=0)) + encode_tlv(
        T.SESSION_ID, pb.SessionID(id="bench")
    )


def memory(devices: int) -> dict[str, float]:
    """Bytes per idle registered device, without sockets."""
    config = parse_config(
        {"fleet": {"devices": devices, "boot_time": 0.0, "power_on_jitter": 0.0}}
    )
    gc.collect()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    fleet = Fleet(config)
    now = time.time()
    fleet._build_devices(now)  # noqa: SLF001 - measured without sockets
    answer = registration_answer()
    later = now + 3600
    for device in fleet.devices.values():
        device.on_timer(later)
        device.on_timer(later + 3600)
        device.on_registration_answer(Code.VALID, answer, later + 3600)
    registered = sum(d.registered for d in fleet.devices.values())
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0
    return {
        "devices": devices,
        "registered": registered,
        "traced_bytes_per_device": round(used / devices, 1),
        "rss_bytes_per_device": round(rss * 1024 / devices, 1),
    }


async def main_async(args: argparse.Namespace) -> None:
    fleet_rates, echo_rates = [], []
    for run in range(args.runs):
        echo = await bench_echo(args.requests, args.window)
        rate, mode = await bench_fleet(args.devices, args.requests, args.window)
        echo_rates.append(echo)
        fleet_rates.append(rate)
        print(
            json.dumps(
                {
                    "run": run,
                    "mode": mode,
                    "devices": args.devices,
                    "fleet_rps": round(rate),
                    "echo_rps": round(echo),
                }
            )
        )
    fm, em = statistics.median(fleet_rates), statistics.median(echo_rates)
    print(
        json.dumps(
            {
                "median_fleet_rps": round(fm),
                "median_echo_rps": round(em),
                "ratio": round(fm / em, 3),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--memory", default="10000,100000")
    parser.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args()
    if not args.no_uvloop:
        try:
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        except ImportError:
            pass
    if args.runs:
        asyncio.run(main_async(args))
    for size in filter(None, args.memory.split(",")):
        # one child per size, so RSS of one does not colour the other
        if os.fork() == 0:
            print(json.dumps(memory(int(size))), flush=True)
            os._exit(0)
        os.wait()


if __name__ == "__main__":
    main()
