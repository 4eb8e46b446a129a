"""Benchmark the fleet runtime: requests/s next to a raw UDP echo, bytes/device.

    .venv/bin/python tools/bench_fleet.py [--requests 20000] [--devices 1000]
        [--runs 3] [--memory 10000,100000]

Throughput: a closed-loop client (``--window`` requests in flight) sends CON
``GET /c?q=75`` to the fleet's device addresses round robin (prefix
addressing when root, loopback ports otherwise), and the same datagrams to a
raw asyncio UDP echo server in the same process and run. One JSON line per
run, then the medians and their ratio.

Memory: devices built and registered in-process (no sockets; registration
and the first report through the exchange layer, answers like the
head-end's), measured with tracemalloc and RSS (peak, tracemalloc's own
overhead included); bytes per idle registered device at each size. Every
loop is bounded in count and time.

Micro benchmarks (``--micro registration,get,multicast,unicast-block,...``): one
fleet in-process without sockets, datagrams fed to ``Fleet._on_datagrams`` in
batches as the UDP edge hands them over, outgoing datagrams drained and
dropped; each prints microseconds per operation, the median of ``--runs``:

- ``registration``: registration payload (generic encoder and template), the
  registration POST through the exchange layer, the answer (ACK 2.04 with
  ReportSubscribe and SessionID) back to the device;
- ``get``: CON ``GET /c?q=75`` to device addresses (receive, answer, queue);
- ``multicast``: a relayed NON POST with GroupMatch + ImageBlock fanned out
  to every member of the group (per member), every member downloading;
- ``unicast-block``: NON POST /c with one ImageBlock to one device;
- ``bitmap-get``: CON ``GET /c/75/2`` to downloading devices (TLV 75 of the
  UPLOAD slot with its bitmap, the fill-in's bitmap read).
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
from emulator.node.io import Send  # noqa: E402

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


def headend_like_answer(session: str) -> bytes:
    """What the head-end answers a registration with (unsigned): hourly
    reports, a session of its own, CGMSSettings, firmware group 1."""
    from emulator.csmp import csmp_pb2 as pb
    from emulator.csmp.registry import T, encode_tlv

    subscribe = pb.ReportSubscribe(interval=3600, tlvid=["11", "75"])
    return b"".join(
        (
            encode_tlv(T.REPORT_SUBSCRIBE, subscribe),
            encode_tlv(T.SESSION_ID, pb.SessionID(id=session)),
            encode_tlv(
                T.CGMS_SETTINGS, pb.CGMSSettings(regIntervalMin=1, regIntervalMax=8)
            ),
            encode_tlv(T.GROUP_ASSIGN, pb.Group(type=2, id=1)),
        )
    )


def memory(devices: int) -> dict[str, float]:
    """Bytes per idle registered device, without sockets: registration POSTs
    through the exchange layer, head-end-like answers back through
    ``Fleet._on_datagrams``, the first reports sent (exchange state kept)."""
    from emulator.coap.message import decode

    config = parse_config(
        {
            "fleet": {"devices": devices, "boot_time": 0.0, "power_on_jitter": 0.0},
            "registration": {"min": 1, "max": 8},
            "multicast": {"mode": "off"},
        }
    )
    gc.collect()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    fleet = Fleet(config)
    now = time.time()
    fleet.started_at = now
    fleet._build_devices(now)  # noqa: SLF001 - measured without sockets
    fleet._local_of = [(p.address, 61628) for p in fleet.planned]  # noqa: SLF001
    fleet._by_local = {a: i for i, a in enumerate(fleet._local_of)}  # noqa: SLF001
    fleet._rebuild_group_index()  # noqa: SLF001
    fleet._run_due(now + 0.1)  # noqa: SLF001 - booted: registration timers start
    t = now + 2.5  # every registration due (trickle 1 s: the first in [0.5, 2))
    fleet._run_due(t)  # noqa: SLF001
    batch = []
    for datagram in fleet.exchange.datagrams_to_send():
        msg = decode(datagram.data)
        body = headend_like_answer(os.urandom(8).hex())
        ack = Message(Type.ACK, Code.VALID, msg.mid, msg.token, [], body)
        batch.append((encode(ack), datagram.local, datagram.remote))
    for k in range(0, len(batch), 256):
        fleet._on_datagrams(batch[k : k + 256], t)  # noqa: SLF001
    fleet._run_due(t + 3.0)  # noqa: SLF001 - the first reports
    fleet.exchange.datagrams_to_send()
    registered = sum(d.registered for d in fleet.devices.values())
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0
    return {
        "devices": devices,
        "registered": registered,
        "reports_sent": fleet.stats["reports_sent"],
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


# ------------------------------------------------------------------ micro

NMS = ("2001:db8::10", 61628)
RELAY = ("::1", 61629)
MICRO_IMAGE_BLOCKS = 256
MICRO_BLOCK_SIZE = 1024


def micro_fleet(devices: int) -> tuple[Fleet, float]:
    """A fleet of booted devices at prefix addresses, without sockets."""
    config = parse_config(
        {
            "fleet": {
                "devices": devices,
                "boot_time": 0.0,
                "power_on_jitter": 0.0,
                "nms": f"[{NMS[0]}]:{NMS[1]}",
            },
            "registration": {"min": 3600, "max": 3600},
            "multicast": {"mode": "off"},
        }
    )
    fleet = Fleet(config)
    now = time.time()
    fleet.started_at = now
    fleet._build_devices(now)  # noqa: SLF001 - measured without sockets
    fleet._local_of = [(p.address, 61628) for p in fleet.planned]  # noqa: SLF001
    fleet._by_local = {a: i for i, a in enumerate(fleet._local_of)}  # noqa: SLF001
    for device in fleet.devices.values():
        device.on_timer(now)
    return fleet, now


def coap(
    kind: Type, code: Code, mid: int, path: str, query: list[str], body: bytes
) -> bytes:
    token = (mid & 0xFFFF).to_bytes(2, "big")
    options = request_options(path, query)
    return encode(Message(kind, code, mid & 0xFFFF, token, options, body))


def timed(fn: object, count: int) -> float:
    """Microseconds per operation of ``fn()`` doing ``count`` operations."""
    gc.collect()
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return (time.perf_counter() - start) / count * 1e6


def micro_registration(devices: int) -> dict[str, float]:
    from emulator.coap.message import decode

    fleet, now = micro_fleet(devices)
    devs = list(fleet.devices.values())
    at = now + 1.0
    out: dict[str, float] = {}
    out["payload_generic_us"] = timed(
        lambda: [d.registration_payload_generic(at) for d in devs], len(devs)
    )
    out["payload_us"] = timed(
        lambda: [d.registration_payload(at) for d in devs], len(devs)
    )

    def send() -> None:
        for i, d in enumerate(devs):
            fleet._send(i, Send("r", d.registration_payload(at), True, "register"), at)  # noqa: SLF001
        fleet._flush(at)  # noqa: SLF001

    sent = fleet.exchange._out  # noqa: SLF001 - peek before the flush drops them
    out["send_us"] = timed(send, len(devs))
    del sent
    pending = list(fleet.exchange._by_token.items())  # noqa: SLF001
    answer = registration_answer()
    batch = []
    for (local, remote, token), p in pending:
        mid = decode(p.datagram.data).mid
        ack = encode(Message(Type.ACK, Code.CHANGED, mid, token, [], answer))
        batch.append((ack, local, remote))

    def answers() -> None:
        for k in range(0, len(batch), 64):
            fleet._on_datagrams(batch[k : k + 64], at)  # noqa: SLF001

    out["answer_us"] = timed(answers, len(batch))
    out["registered"] = sum(d.registered for d in devs)
    return out


def micro_get(devices: int, total: int = 20000) -> dict[str, float]:
    fleet, now = micro_fleet(devices)
    locals_ = fleet._local_of  # noqa: SLF001
    remote = ("::1", 40000 + int(time.time() * 1000) % 20000)
    batches = []
    for k in range(0, total, 64):
        batches.append(
            [
                (
                    coap(Type.CON, Code.GET, m, "c", ["q=75"], b""),
                    locals_[m % len(locals_)],
                    remote,
                )
                for m in range(k, min(k + 64, total))
            ]
        )

    def run() -> None:
        for batch in batches:
            fleet._on_datagrams(batch, now)  # noqa: SLF001

    out = {"get_us": timed(run, total)}
    out["answered"] = fleet.requests[("GET", "2xx")]
    return out


def _upload_image() -> tuple[bytes, bytes]:
    import hashlib

    from emulator.firmware.image import build_image

    size = MICRO_IMAGE_BLOCKS * MICRO_BLOCK_SIZE - 256
    data = build_image(
        bytes(range(256)) * (size // 256), hwid="OPENCSMP", version="9.9.9"
    )
    return data, hashlib.sha256(data).digest()


def _downloading_fleet(devices: int, group: int) -> tuple[Fleet, float, bytes, bytes]:
    from emulator.csmp import csmp_pb2 as pb
    from emulator.csmp.registry import T, encode_tlv
    from emulator.node.builders import post

    fleet, now = micro_fleet(devices)
    data, file_hash = _upload_image()
    req = pb.TransferRequest(
        fileHash=file_hash,
        fileName="bench.bin",
        version="9.9.9",
        fileSize=len(data),
        blockSize=MICRO_BLOCK_SIZE,
    )
    req.hwInfo.hwId = "OPENCSMP"
    setup = encode_tlv(T.GROUP_ASSIGN, pb.Group(type=2, id=group)) + encode_tlv(
        T.TRANSFER_REQUEST, req
    )
    for i in range(len(fleet.devices)):
        fleet._deliver(i, post(setup), now)  # noqa: SLF001
    return fleet, now, data, file_hash


def _block_payload(data: bytes, file_hash: bytes, num: int, group: int | None) -> bytes:
    from emulator.csmp import csmp_pb2 as pb
    from emulator.csmp.registry import T, encode_tlv

    chunk = data[num * MICRO_BLOCK_SIZE : (num + 1) * MICRO_BLOCK_SIZE]
    block = pb.ImageBlock(fileHash=file_hash, blockNum=num, blockData=chunk)
    body = encode_tlv(T.IMAGE_BLOCK, block)
    if group is not None:
        body = encode_tlv(T.GROUP_MATCH, pb.Group(type=2, id=group)) + body
    return body


def micro_multicast(devices: int, blocks: int = 20) -> dict[str, float]:
    fleet, now, data, file_hash = _downloading_fleet(devices, 7)
    datagrams = [
        (
            coap(
                Type.NON,
                Code.POST,
                0x8000 + n,
                "c",
                [],
                _block_payload(data, file_hash, n, 7),
            ),
            RELAY,
            NMS,
        )
        for n in range(blocks)
    ]

    def run() -> None:
        for datagram in datagrams:
            fleet._on_datagrams([datagram], now)  # noqa: SLF001

    out = {"per_member_us": timed(run, blocks * devices)}
    out["blocks_received"] = fleet.stats["blocks_received"]
    return out


def micro_unicast_block(devices: int, blocks: int = 8) -> dict[str, float]:
    fleet, now, data, file_hash = _downloading_fleet(devices, 7)
    locals_ = fleet._local_of  # noqa: SLF001
    bodies = [_block_payload(data, file_hash, n, None) for n in range(blocks)]
    items = []
    for n in range(blocks):
        for i in range(devices):
            m = n * devices + i
            items.append(
                (coap(Type.NON, Code.POST, m, "c", [], bodies[n]), locals_[i], NMS)
            )
    batches = [items[k : k + 64] for k in range(0, len(items), 64)]

    def run() -> None:
        for batch in batches:
            fleet._on_datagrams(batch, now)  # noqa: SLF001

    out = {"block_us": timed(run, len(items))}
    out["blocks_received"] = fleet.stats["blocks_received"]
    return out


def micro_bitmap_get(devices: int, blocks: int = 4) -> dict[str, float]:
    """CON GET /c/75/2 to downloading devices (the fill-in's bitmap read)."""
    fleet, now, data, file_hash = _downloading_fleet(devices, 7)
    locals_ = fleet._local_of  # noqa: SLF001
    for n in range(blocks):  # a partial bitmap, different per device
        body = _block_payload(data, file_hash, n, None)
        for i in range(0, devices, n + 1):
            datagram = coap(
                Type.NON, Code.POST, 0x4000 + n * devices + i, "c", [], body
            )
            fleet._on_datagrams([(datagram, locals_[i], NMS)], now)  # noqa: SLF001
    items = [
        (coap(Type.CON, Code.GET, m, "c/75/2", [], b""), locals_[m % devices], NMS)
        for m in range(2 * devices)
    ]
    batches = [items[k : k + 64] for k in range(0, len(items), 64)]

    def run() -> None:
        for batch in batches:
            fleet._on_datagrams(batch, now)  # noqa: SLF001

    out = {"bitmap_get_us": timed(run, len(items))}
    out["answered"] = fleet.requests[("GET", "2xx")]
    return out


MICRO = {
    "registration": micro_registration,
    "get": micro_get,
    "multicast": micro_multicast,
    "unicast-block": micro_unicast_block,
    "bitmap-get": micro_bitmap_get,
}


def micro(modes: list[str], devices: int, runs: int) -> None:
    """Print one JSON line per run and mode, then the medians."""
    for mode in modes:
        results = []
        for run in range(runs):
            result = MICRO[mode](devices)
            results.append(result)
            print(json.dumps({"micro": mode, "run": run, **_rounded(result)}))
        keys = [k for k in results[0] if k.endswith("_us")]
        medians = {k: statistics.median(r[k] for r in results) for k in keys}
        print(json.dumps({"micro": mode, "median_of": runs, **_rounded(medians)}))


def _rounded(values: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 2) for k, v in values.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--memory", default="10000,100000")
    parser.add_argument("--no-uvloop", action="store_true")
    parser.add_argument(
        "--micro", default="", help="comma list: " + ",".join(MICRO) + " (or all)"
    )
    parser.add_argument("--micro-devices", type=int, default=2000)
    args = parser.parse_args()
    if args.micro:
        modes = list(MICRO) if args.micro == "all" else args.micro.split(",")
        micro(modes, args.micro_devices, max(1, args.runs))
        return
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
