"""Abuse: signed POSTs with a wrong key, a bad window, or replayed too late.

Devices of a real fleet require signed POSTs with a validity window
(``[security] require_signed_post``, ``require_valid_check``); a test client
signs with :func:`emulator.csmp.signing.sign_payload` and talks to them over
the fleet's socket. CSMP.md "Signed POSTs" and the reference agent: a bad
signature or window is 4.01, a missing signature 4.03; a refused POST changes
nothing on the device.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from test_fleet_support import free_port, free_port_range, start_client

from emulator.coap.message import Code
from emulator.csmp import csmp_pb2 as pb
from emulator.csmp.registry import T, encode_tlv
from emulator.csmp.signing import sign_payload
from emulator.fleet.config import parse_config
from emulator.fleet.runtime import Fleet

ASSIGN = encode_tlv(T.GROUP_ASSIGN, pb.Group(type=2, id=5))
REBOOT = encode_tlv(T.REBOOT_REQUEST, pb.RebootRequest(flag=1))


def _fleet(tmp_path: Path, key: ec.EllipticCurvePrivateKey) -> Fleet:
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    cert = tmp_path / "nms.pem"
    cert.write_bytes(pem)
    config = parse_config(
        {
            "fleet": {
                "devices": 2,
                "addressing": "loopback-ports",
                "port_base": free_port_range(2),
                "nms": f"[::1]:{free_port()}",
                "boot_time": 0.0,
                "power_on_jitter": 0.0,
            },
            "security": {
                "require_signed_post": True,
                "require_valid_check": True,
                "nms_certificate": str(cert),
            },
            "multicast": {"mode": "off"},
        }
    )
    return Fleet(config)


async def test_signed_posts_refused_with_the_documented_codes(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    wrong = ec.generate_private_key(ec.SECP256R1())
    fleet = _fleet(tmp_path, key)
    await fleet.start()
    client, transport = await start_client()
    eui = next(iter(fleet.devices))
    device = fleet.devices[eui]
    remote = fleet.local_address(eui)

    async def post(payload: bytes) -> int:
        answer = await client.request(remote, "c", code=Code.POST, payload=payload)
        assert answer is not None, "no answer"
        return int(answer[0].code)

    try:
        assert await client.request(remote, "c/2") is not None  # booted
        now = int(time.time())
        before = device.snapshot()
        refused: dict[str, tuple[bytes, int]] = {
            "wrong key": (
                sign_payload(ASSIGN, wrong, valid_from=now - 5, valid_until=now + 60),
                Code.UNAUTHORIZED,
            ),
            "expired": (
                sign_payload(ASSIGN, key, valid_from=now - 60, valid_until=now - 30),
                Code.UNAUTHORIZED,
            ),
            "not yet valid": (
                sign_payload(ASSIGN, key, valid_from=now + 30, valid_until=now + 60),
                Code.UNAUTHORIZED,
            ),
            "no window": (sign_payload(ASSIGN, key), Code.UNAUTHORIZED),
            "tampered": (
                sign_payload(
                    ASSIGN, key, valid_from=now - 5, valid_until=now + 60
                ).replace(b"\x10\x05", b"\x10\x06", 1),
                Code.UNAUTHORIZED,
            ),
            "unsigned": (ASSIGN, Code.FORBIDDEN),
            "unsigned reboot": (REBOOT, Code.FORBIDDEN),
        }
        for name, (payload, code) in refused.items():
            assert await post(payload) == code, name
            assert device.snapshot() == before, name
        assert fleet.stats["reboots"] == 0

        # a good one is applied; the same bytes replayed after their window
        # are refused and change nothing
        good = sign_payload(ASSIGN, key, valid_from=now - 1, valid_until=now + 1)
        assert await post(good) == Code.CREATED
        assert device.groups == {2: 5}
        applied = device.snapshot()
        await asyncio.sleep(max(0.0, now + 2.2 - time.time()))
        assert await post(good) == Code.UNAUTHORIZED
        assert device.snapshot() == applied
        # the other device never saw any of it
        other = [d for e, d in fleet.devices.items() if e != eui][0]
        assert other.groups == {}
        assert fleet.requests[("POST", "4xx")] == len(refused) + 1
    finally:
        transport.close()
        await fleet.stop()
