"""The fleet on loopback without privileges: loopback-ports addressing, relay.

50 devices on ``[::1]:base+i`` register against a minimal test NMS, answer
``GET /c?q=11+75`` from an aiocoap client, and receive a relayed "multicast"
TransferRequest and ImageBlock for their firmware group.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket

import aiocoap
import pytest
from prometheus_client import CollectorRegistry
from test_fleet_support import (
    free_port_range,
    start_client,
    start_nms,
    tlv_types,
    wait_for,
)

from emulator.coap.message import Code
from emulator.csmp import csmp_pb2 as pb
from emulator.csmp.registry import T, encode_tlv
from emulator.firmware.image import build_image
from emulator.fleet.config import parse_config
from emulator.fleet.runtime import Fleet
from emulator.node.profile import UploadState

DEVICES = 50
GROUP = 7


def loopback_config(nms_port: int, base: int, devices: int = DEVICES) -> dict:
    return {
        "fleet": {
            "devices": devices,
            "addressing": "loopback-ports",
            "port_base": base,
            "nms": f"[::1]:{nms_port}",
            "boot_time": 0.0,
            "power_on_jitter": 0.3,
            "seed": 42,
        },
        "registration": {"min": 1, "max": 2},
        "multicast": {"relay": "[::1]:0"},
    }


@pytest.fixture
async def running() -> tuple[Fleet, object]:
    nms, nms_transport = await start_nms(group=GROUP)
    port = nms_transport.get_extra_info("sockname")[1]
    base = free_port_range(DEVICES)
    fleet = Fleet(parse_config(loopback_config(port, base)))
    await fleet.start()
    try:
        yield fleet, nms
    finally:
        await fleet.stop()
        nms_transport.close()


async def test_registers_and_answers_gets(running: tuple[Fleet, object]) -> None:
    fleet, nms = running
    assert fleet.mode == "loopback-ports"
    assert await wait_for(lambda: len(nms.registered) == DEVICES, 15)
    # each registered from its own port
    sources = {fleet.local_address(int(eui, 16)) for eui in nms.registered}
    assert sources == set(nms.registered.values())
    assert await wait_for(lambda: all(d.registered for d in fleet.devices.values()), 5)
    ctx = await aiocoap.Context.create_client_context()
    try:
        for eui in list(fleet.devices)[:DEVICES]:
            host, port = fleet.local_address(eui)
            req = aiocoap.Message(
                code=aiocoap.GET, uri=f"coap://[{host}]:{port}/c?q=11+75"
            )
            resp = await asyncio.wait_for(ctx.request(req).response, 5)
            assert resp.code == aiocoap.CONTENT
            types = tlv_types(resp.payload)
            assert types[0] == 11 and 75 in types
    finally:
        await ctx.shutdown()
    assert fleet.requests[("GET", "2xx")] == DEVICES


def _transfer_and_block() -> tuple[bytes, bytes]:
    image = build_image(b"x" * 3000, hwid="OPENCSMP", version="6.9.0")
    digest = hashlib.sha256(image).digest()
    match = encode_tlv(T.GROUP_MATCH, pb.Group(type=2, id=GROUP))
    req = pb.TransferRequest(
        fileHash=digest,
        fileName="new.bin",
        version="6.9.0",
        fileSize=len(image),
        blockSize=1024,
    )
    req.hwInfo.hwId = "OPENCSMP"
    transfer = match + encode_tlv(T.TRANSFER_REQUEST, req)
    block = pb.ImageBlock(fileHash=digest, blockNum=0, blockData=image[:1024])
    return transfer, match + encode_tlv(T.IMAGE_BLOCK, block)


async def test_relay_fans_out_to_group(running: tuple[Fleet, object]) -> None:
    fleet, nms = running
    assert fleet.multicast_mode == "relay" and fleet.relay_address is not None
    assert await wait_for(lambda: all(d.registered for d in fleet.devices.values()), 15)
    assert all(d.groups.get(2) == GROUP for d in fleet.devices.values())
    transfer, block = _transfer_and_block()
    client, transport = await start_client()
    try:
        relay = fleet.relay_address
        await client.request(
            relay, "c", ["a=1"], code=Code.POST, payload=transfer, confirmable=False
        )
        assert await wait_for(lambda: len(nms.async_payloads) >= DEVICES, 5)
        assert all(T.TRANSFER_RESPONSE in tlv_types(p) for _, p in nms.async_payloads)
        await client.request(
            relay, "c", code=Code.POST, payload=block, confirmable=False
        )
        assert await wait_for(lambda: fleet.stats["blocks_received"] == DEVICES, 5)
    finally:
        transport.close()
    states = {d.upload_state for d in fleet.devices.values()}
    assert states == {UploadState.DOWNLOADING}
    registry = CollectorRegistry()
    registry.register(fleet.metrics_collector())
    value = registry.get_sample_value
    assert value("meshfleet_fleet_devices", {"state": "registered"}) == DEVICES
    assert value("meshfleet_fleet_blocks_received_total") == DEVICES
    assert (
        value("meshfleet_fleet_multicast_total", {"what": "delivered"}) == 2 * DEVICES
    )
    assert value("meshfleet_fleet_uploads", {"state": "downloading"}) == DEVICES


async def test_stop_is_idempotent_and_closes_sockets() -> None:
    base = free_port_range(5)
    fleet = Fleet(parse_config(loopback_config(9, base, devices=5)))
    await fleet.start()
    await fleet.stop()
    await fleet.stop()
    for port in range(base, base + 5):  # the fleet's ports are free again
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", port))
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert not tasks


async def test_request_that_moves_a_deadline_rearms_the_timer(
    running: tuple[Fleet, object],
) -> None:
    """A RebootRequest (or a LoadRequest) must fire when due, not later.

    Regression: datagrams moved device deadlines without re-arming the one
    timer, so a scheduled reload waited for some unrelated timer.
    """
    fleet, _nms = running
    await wait_for(lambda: fleet.stats["registrations_ok"] == DEVICES, 10)
    eui = next(iter(fleet.devices))
    client, transport = await start_client()
    try:
        reboot = encode_tlv(T.REBOOT_REQUEST, pb.RebootRequest(flag=1))
        answer = await client.request(
            fleet.local_address(eui), "c", code=Code.POST, payload=reboot
        )
        assert answer is not None and answer[0].code == Code.CREATED
        wheel_due = fleet._wheel.next_deadline()
        assert fleet._timer is not None and wheel_due is not None
        assert fleet._timer._when <= wheel_due
        before = fleet.stats["registrations_sent"]
        # boot_time is 0: the reboot shows as a new registration at once
        assert await wait_for(lambda: fleet.stats["registrations_sent"] > before, 4)
    finally:
        transport.close()
