"""UdpEndpoint: a time-bounded send goes on in later loop turns, in order."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from emulator.net.udp import Addr, UdpEndpoint


def _socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind(("::1", 0))
    sock.setblocking(False)
    return sock


async def _receive(sock: socket.socket, count: int, timeout: float) -> list[bytes]:
    loop = asyncio.get_running_loop()
    got: list[bytes] = []
    deadline = loop.time() + timeout
    while len(got) < count and loop.time() < deadline:
        try:
            got.append(sock.recv(2048))
        except BlockingIOError:
            await asyncio.sleep(0.005)
    return got


@contextmanager
def _sender(budget: float | None) -> Iterator[tuple[UdpEndpoint, Addr, socket.socket]]:
    """An endpoint that sends (``send_budget=budget``), a target address and
    the socket behind it; both closed on exit."""
    receiver, sender = _socket(), _socket()
    endpoint = UdpEndpoint(sender, lambda batch, now: None, send_budget=budget)
    try:
        yield endpoint, receiver.getsockname()[:2], receiver
    finally:
        endpoint.close()
        receiver.close()


async def test_send_budget_spreads_a_big_send_over_loop_turns() -> None:
    with _sender(0.0) as (endpoint, target, receiver):
        datagrams = [(b"%04d" % i, endpoint.local, target) for i in range(100)]
        endpoint.send(datagrams)
        assert 0 < endpoint.backlog < 100  # the rest waits for the next turns
        got = await _receive(receiver, 100, timeout=5)
        assert got == [d[0] for d in datagrams]
        assert endpoint.backlog == 0 and endpoint.sent == 100


async def test_closed_endpoint_drops_its_backlog_quietly() -> None:
    with _sender(0.0) as (endpoint, target, _receiver):
        endpoint.send([(b"x", endpoint.local, target)] * 50)
        endpoint.close()
        await asyncio.sleep(0.05)  # the queued turn runs against a closed socket
        assert endpoint.backlog == 0


async def test_without_budget_a_send_goes_out_at_once() -> None:
    with _sender(None) as (endpoint, target, _receiver):
        endpoint.send([(b"%d" % i, endpoint.local, target) for i in range(50)])
        assert endpoint.backlog == 0 and endpoint.sent == 50


async def test_datagrams_from_one_remote_share_one_address_tuple() -> None:
    receiver, sender = _socket(), _socket()
    got: list[tuple[bytes, tuple[str, int], tuple[str, int]]] = []
    endpoint = UdpEndpoint(receiver, lambda batch, now: got.extend(batch))
    try:
        for i in range(3):
            sender.sendto(b"%d" % i, endpoint.local)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while len(got) < 3 and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert [d for d, _, _ in got] == [b"0", b"1", b"2"]
        remotes = [r for _, _, r in got]
        assert remotes[0] == sender.getsockname()[:2]
        assert remotes[0] is remotes[1] is remotes[2]
    finally:
        endpoint.close()
        sender.close()
