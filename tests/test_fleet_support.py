"""Helpers for the fleet tests: a minimal test NMS and a CoAP GET client.

No tests here; the ``test_fleet_*`` modules import from it.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from collections.abc import Callable
from typing import cast

from emulator.coap.message import Code, Message, Type, decode, encode, request_options
from emulator.csmp import csmp_pb2 as pb
from emulator.csmp.registry import T, decode_as, encode_tlv
from emulator.csmp.tlv import pull_tlvs


def free_port(host: str = "::1") -> int:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _ephemeral_ports() -> tuple[int, int]:
    """The kernel's range for port-0 binds (Linux default 32768-60999)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def free_port_range(count: int) -> int:
    """A base port with ``count`` free UDP ports on ::1 after it.

    The range lies outside the kernel's ephemeral range, so no port-0 bind made
    later in the test (head-end, relay, HTTP) can take one of its ports between
    this check and the fleet's own binds.
    """
    low, high = _ephemeral_ports()
    spans = [(10000, low - count), (high + 1, 65536 - count)]
    starts = [base for a, b in spans for base in range(a, b + 1, 997)]
    if not starts:
        raise RuntimeError(f"no room for {count} ports outside {low}-{high}")
    turn = (time.monotonic_ns() // 1000) % len(starts)
    for base in starts[turn:] + starts[:turn]:
        socks = []
        try:
            for port in range(base, base + count):
                s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("::1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


def registration_answer(group: int = 0) -> bytes:
    parts = [
        encode_tlv(T.REPORT_SUBSCRIBE, pb.ReportSubscribe(interval=0)),
        encode_tlv(T.SESSION_ID, pb.SessionID(id="test-session")),
    ]
    if group:
        parts.append(encode_tlv(T.GROUP_ASSIGN, pb.Group(type=2, id=group)))
    return b"".join(parts)


def device_id(payload: bytes) -> str:
    for tlv in pull_tlvs(payload):
        if tlv.id == (T.DEVICE_ID, 0):
            return decode_as(tlv, pb.DeviceID).id.lower()
    return ""


class TestNms(asyncio.DatagramProtocol):
    """Answers CON POST /r with 2.03 (+ TLVs); records reports and answers."""

    __test__ = False

    def __init__(self, group: int = 0) -> None:
        self.answer = registration_answer(group)
        self.registered: dict[str, tuple[str, int]] = {}
        """EUI-64 text -> source address of its registration."""
        self.posts: Counter[str] = Counter()
        self.async_payloads: list[tuple[tuple[str, int], bytes]] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.on_register: Callable[[str], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        msg = decode(data)
        remote = (str(addr[0]), int(addr[1]))
        if msg.code != Code.POST:
            return
        if msg.uri_path == ["r"] and msg.type == Type.CON:
            answer = Message(Type.ACK, Code.VALID, msg.mid, msg.token, [], self.answer)
            assert self.transport is not None
            self.transport.sendto(encode(answer), remote)
            eui = device_id(msg.payload)
            self.registered[eui] = remote
            if self.on_register is not None:
                self.on_register(eui)
        elif msg.uri_path == ["c"]:
            self.posts[remote[0]] += 1
            self.async_payloads.append((remote, msg.payload))


async def start_nms(
    host: str = "::1", port: int = 0, group: int = 0, sock: socket.socket | None = None
) -> tuple[TestNms, asyncio.DatagramTransport]:
    loop = asyncio.get_running_loop()
    nms = TestNms(group)
    if sock is not None:
        transport, _ = await loop.create_datagram_endpoint(lambda: nms, sock=sock)
    else:
        transport, _ = await loop.create_datagram_endpoint(
            lambda: nms, local_addr=(host, port), family=socket.AF_INET6
        )
    return nms, transport


async def wait_for(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        await asyncio.sleep(0.05)
    return cond()


class CoapClient(asyncio.DatagramProtocol):
    """A tiny CON GET client that records the source of each answer."""

    __test__ = False

    def __init__(self) -> None:
        self.waiting: dict[int, asyncio.Future[tuple[Message, tuple[str, int]]]] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self.mid = 1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        msg = decode(data)
        fut = self.waiting.pop(msg.mid, None)
        if fut is not None and not fut.done():
            fut.set_result((msg, (str(addr[0]), int(addr[1]))))

    async def request(
        self,
        remote: tuple[str, int],
        path: str,
        query: list[str] | None = None,
        *,
        code: int = Code.GET,
        payload: bytes = b"",
        confirmable: bool = True,
        timeout: float = 3.0,
    ) -> tuple[Message, tuple[str, int]] | None:
        self.mid = (self.mid + 1) & 0xFFFF
        kind = Type.CON if confirmable else Type.NON
        msg = Message(
            kind,
            code,
            self.mid,
            self.mid.to_bytes(2, "big"),
            request_options(path, query),
            payload,
        )
        assert self.transport is not None
        self.transport.sendto(encode(msg), remote)
        if not confirmable:
            return None
        fut = asyncio.get_running_loop().create_future()
        self.waiting[self.mid] = fut
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return None


async def start_client(
    sock: socket.socket | None = None,
) -> tuple[CoapClient, asyncio.DatagramTransport]:
    loop = asyncio.get_running_loop()
    client = CoapClient()
    if sock is not None:
        transport, _ = await loop.create_datagram_endpoint(lambda: client, sock=sock)
    else:
        transport, _ = await loop.create_datagram_endpoint(
            lambda: client, local_addr=("::1", 0), family=socket.AF_INET6
        )
    return client, transport


def tlv_types(payload: bytes) -> list[int]:
    return [t.id.type for t in pull_tlvs(payload)]
