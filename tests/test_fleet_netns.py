"""The fleet across a veth pair between two network namespaces (root + ip netns).

Namespace A holds the head-end side (a test NMS and a CoAP client, whose
sockets are created inside A from a thread that entered it with setns(2)).
Namespace B runs ``python -m emulator.cli.fleet run`` with 500 devices at
their own addresses (prefix addressing, local route in B) and multicast joins
on B's veth. Checked: every device registers from its own address, answers a
GET from its own address, and receives an ImageBlock sent to the firmware
group's real IPv6 multicast address. Namespaces and veths are always removed.
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from test_fleet_support import start_client, start_nms, tlv_types, wait_for

from emulator.coap.message import Code
from emulator.csmp import csmp_pb2 as pb
from emulator.csmp.registry import T, encode_tlv
from emulator.firmware.image import build_image
from emulator.fleet.addressing import group_address

R = TypeVar("R")
CLONE_NEWNET = 0x40000000
DEVICES = 500
GROUP = 7
PREFIX = "fd00:6d66::/64"
ROOT = Path(__file__).resolve().parent.parent


def _can_netns() -> bool:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, check=False)
    return out.returncode == 0


pytestmark = pytest.mark.skipif(not _can_netns(), reason="needs root and ip netns")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str, str, str]]:
    tag = f"{os.getpid() % 100000}"
    ns_a, ns_b = f"mfA{tag}", f"mfB{tag}"
    veth_a, veth_b = f"mfa{tag}", f"mfb{tag}"
    try:
        _ip("netns", "add", ns_a)
        _ip("netns", "add", ns_b)
        _ip("link", "add", veth_a, "type", "veth", "peer", "name", veth_b)
        _ip("link", "set", veth_a, "netns", ns_a)
        _ip("link", "set", veth_b, "netns", ns_b)
        for ns, dev, addr in ((ns_a, veth_a, "fd01::1"), (ns_b, veth_b, "fd01::2")):
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{addr}/64", "dev", dev, "nodad")
            _ip("-n", ns, "link", "set", dev, "up", "multicast", "on")
        _ip("-n", ns_a, "-6", "route", "add", PREFIX, "via", "fd01::2", "dev", veth_a)
        _ip(
            "-n", ns_a, "-6", "route", "add", "ff00::/8", "dev", veth_a, "table", "main"
        )
        yield ns_a, ns_b, veth_a, veth_b
    finally:
        for ns in (ns_a, ns_b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def in_netns(ns: str, fn: Callable[[], R]) -> R:
    """Run ``fn`` in a thread that entered network namespace ``ns``."""
    libc = ctypes.CDLL(None, use_errno=True)
    result: list[R] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns failed")
            finally:
                os.close(fd)
            result.append(fn())
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


def _udp(bind: tuple[str, int]) -> socket.socket:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE: 500 answers
    sock.bind(bind)
    sock.setblocking(False)
    return sock


def _metrics(port: int) -> str:
    with socket.create_connection(("::1", port), timeout=5) as conn:
        conn.sendall(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return -1.0


def _write_config(path: Path, veth_b: str) -> None:
    path.write_text(
        f"""
[fleet]
devices = {DEVICES}
prefix = "{PREFIX}"
addressing = "prefix"
nms = "[fd01::1]:61628"
boot_time = 0.0
power_on_jitter = 1.0
metrics_port = 9188
[registration]
min = 1
max = 2
[multicast]
mode = "join"
interface = "{veth_b}"
"""
    )


def _payloads() -> tuple[bytes, bytes]:
    image = build_image(b"y" * 5000, hwid="OPENCSMP", version="6.9.0")
    digest = hashlib.sha256(image).digest()
    match = encode_tlv(T.GROUP_MATCH, pb.Group(type=2, id=GROUP))
    req = pb.TransferRequest(
        fileHash=digest,
        fileName="n.bin",
        version="6.9.0",
        fileSize=len(image),
        blockSize=1024,
    )
    req.hwInfo.hwId = "OPENCSMP"
    block = pb.ImageBlock(fileHash=digest, blockNum=0, blockData=image[:1024])
    return (
        match + encode_tlv(T.TRANSFER_REQUEST, req),
        match + encode_tlv(T.IMAGE_BLOCK, block),
    )


async def test_fleet_in_a_namespace(
    namespaces: tuple[str, str, str, str], tmp_path: Path
) -> None:
    ns_a, ns_b, veth_a, veth_b = namespaces
    config = tmp_path / "fleet.toml"
    _write_config(config, veth_b)
    nms_sock = in_netns(ns_a, lambda: _udp(("fd01::1", 61628)))
    client_sock = in_netns(ns_a, lambda: _udp(("fd01::1", 0)))
    ifindex = in_netns(ns_a, lambda: socket.if_nametoindex(veth_a))
    client_sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
    nms, nms_transport = await start_nms(group=GROUP, sock=nms_sock)
    client, client_transport = await start_client(sock=client_sock)
    cmd = [
        "ip",
        "netns",
        "exec",
        ns_b,
        sys.executable,
        "-m",
        "emulator.cli.fleet",
        "run",
        str(config),
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "fleet.log", "wb"),
    )
    try:
        registered = await wait_for(lambda: len(nms.registered) == DEVICES, 30)
        assert registered, (tmp_path / "fleet.log").read_text()[-3000:]
        prefix_start = PREFIX.split("::")[0]
        assert all(src[0].startswith(prefix_start) for src in nms.registered.values())
        answers = await asyncio.gather(
            *(
                client.request(src, "c", ["q=11"], timeout=5)
                for src in nms.registered.values()
            )
        )
        assert all(a is not None for a in answers)
        assert all(
            a[1] == src
            for a, src in zip(answers, nms.registered.values(), strict=True)
            if a
        )
        assert all(tlv_types(a[0].payload) == [11] for a in answers if a)
        group = (group_address("ff05::6d66:0:0:0", GROUP, {}), 61628)
        transfer, block = _payloads()
        await client.request(
            group, "c", ["a=1"], code=Code.POST, payload=transfer, confirmable=False
        )
        assert await wait_for(lambda: len(nms.async_payloads) >= DEVICES, 10)
        await client.request(
            group, "c", code=Code.POST, payload=block, confirmable=False
        )
        metric = "meshfleet_fleet_blocks_received_total"
        assert await wait_for(
            lambda: _sample(in_netns(ns_b, lambda: _metrics(9188)), metric) == DEVICES,
            10,
        )
    finally:
        client_transport.close()
        nms_transport.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, (tmp_path / "fleet.log").read_text()[-3000:]
