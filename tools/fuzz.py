"""Bounded-time fuzzing of meshfleet's input paths (issue "Faults, bad input").

    .venv/bin/python tools/fuzz.py [--seconds 60] [--targets tlv,coap,...]
        [--seed 0]

Targets (each gets ``--seconds`` of generation, hypothesis-driven, strategies
of ``tests/fuzz_support.py``):

tlv       TLV framing: ``pull_tlvs`` raises only CodecError; what it reads
          re-frames and reads back the same; every value decodes or raises
          CodecError.
coap      CoAP codec: ``decode`` raises only CoapError; a decoded message
          encodes and decodes back the same.
device    ``Device.handle`` of a healthy and a signing device: never raises,
          answers only CSMP codes, still answers GET /c/2 with its own
          DeviceID, its state still snapshots and restores.
headend   ``HeadEndCore.receive_datagram`` with registrations, reports and
          random datagrams from members, during an upload: never raises,
          inventory consistent.
soap      ``soap.handle`` of the NB API: a response or a SOAP fault, each a
          schema-valid envelope; ``parse_request`` raises only SoapFault.

Prints one line per target (inputs tried, failures) and the first failure's
shrunk input; exit status 1 when any target failed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import random
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from fuzz_support import (  # noqa: E402
    SEED_PATHS,
    SEED_QUERIES,
    coap_datagrams,
    mutated,
    soap_bodies,
    tlv_payloads,
)
from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from emulator.coap.message import (  # noqa: E402
    CoapError,
    Code,
    Message,
    Type,
    decode,
    encode,
    request_options,
)
from emulator.csmp import csmp_pb2 as pb  # noqa: E402
from emulator.csmp.registry import decode_as, decode_value  # noqa: E402
from emulator.csmp.signing import sign_payload  # noqa: E402
from emulator.csmp.tlv import CodecError, pull_tlvs, push_tlvs  # noqa: E402
from emulator.firmware.blockstore import BlockStore  # noqa: E402
from emulator.firmware.image import build_image  # noqa: E402
from emulator.node.device import Device  # noqa: E402
from emulator.node.firmware import image_from_file  # noqa: E402
from emulator.node.io import Request  # noqa: E402
from emulator.node.profile import DeviceProfile, Identity  # noqa: E402

HWID = "OPENCSMP"
NOW = 1_700_000_000.0


class Target:
    """One fuzz target: a strategy and a check that raises on a failure."""

    def __init__(
        self, name: str, strategy: st.SearchStrategy[Any], check: Callable[[Any], None]
    ) -> None:
        self.name = name
        self.strategy = strategy
        self.check = check
        self.tried = 0

    def run(self, seconds: float, first_seed: int) -> tuple[int, str]:
        """Generate for ``seconds``; (inputs tried, first failure or "")."""
        deadline = time.monotonic() + seconds
        batch = 0
        while time.monotonic() < deadline:

            def body(value: Any) -> None:
                self.tried += 1
                self.check(value)

            test = settings(
                max_examples=200,
                deadline=None,
                database=None,
                phases=(Phase.generate, Phase.shrink),
                suppress_health_check=list(HealthCheck),
            )(seed(first_seed + batch)(given(self.strategy)(body)))
            batch += 1
            try:
                test()
            except Exception:
                return self.tried, traceback.format_exc(limit=8)
        return self.tried, ""


# ------------------------------------------------------------------- codecs


def check_tlv(data: bytes) -> None:
    try:
        tlvs = pull_tlvs(data)
    except CodecError:
        return
    again = pull_tlvs(push_tlvs((t.id, t.value) for t in tlvs))
    assert [(t.id, t.value) for t in again] == [(t.id, t.value) for t in tlvs]
    for tlv in tlvs:
        try:
            decode_value(tlv)
        except CodecError:
            pass


def check_coap(data: bytes) -> None:
    try:
        msg = decode(data)
    except CoapError:
        return
    again = decode(encode(msg))
    assert (again.type, again.code, again.mid, again.token) == (
        msg.type,
        msg.code,
        msg.mid,
        msg.token,
    )
    assert again.options == msg.options and again.payload == msg.payload


# ------------------------------------------------------------------- device


def _firmware(version: str, size: int, seed_: int) -> bytes:
    payload = random.Random(seed_).randbytes(size)
    return build_image(payload, hwid=HWID, version=version, name="mesh")


class DeviceTarget:
    """Two devices (plain and signed POSTs) fed random requests."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.store = BlockStore()
        image = image_from_file(self.store, _firmware("6.8.1", 3000, 1), 512, "r")
        self.devices: list[Device] = []
        profiles = (
            DeviceProfile(boot_time=0.0, reg_min=1, reg_max=4),
            DeviceProfile(
                boot_time=0.0,
                reg_min=1,
                reg_max=4,
                req_signed_post=True,
                req_valid_check_post=True,
                nms_key=self.key.public_key(),
            ),
        )
        for i, profile in enumerate(profiles):
            ident = Identity(eui64=0x00173BAB00000001 + i, address=f"fd00::{i + 1}")
            device = Device(ident, profile, self.store, seed=i + 1, run_image=image)
            device.power_on(NOW)
            self.devices.append(device)
        self.now = NOW
        self._signed: dict[tuple[bytes, bool], bytes] = {}

    def _sign(self, payload: bytes, window: bool) -> bytes:
        # ECDSA signatures are randomized: one per payload keeps replays equal.
        key = (payload, window)
        if key not in self._signed:
            start, end = (int(NOW) - 10, int(NOW) + 10**6) if window else (None, None)
            self._signed[key] = sign_payload(
                payload, self.key, valid_from=start, valid_until=end
            )
        return self._signed[key]

    def strategy(self) -> st.SearchStrategy[Any]:
        payloads = st.one_of(
            tlv_payloads(),
            tlv_payloads().map(lambda p: self._sign(p, True)),
            mutated(tlv_payloads().map(lambda p: self._sign(p, False))),
        )
        return st.lists(
            st.tuples(
                st.sampled_from((0, 1)),
                st.one_of(st.sampled_from((Code.GET, Code.POST)), st.integers(0, 255)),
                st.one_of(
                    st.sampled_from(SEED_PATHS).map(lambda p: tuple(p.split("/"))),
                    st.lists(st.text(max_size=8), max_size=4).map(tuple),
                ),
                st.one_of(
                    st.sampled_from(SEED_QUERIES),
                    st.lists(st.text(max_size=12), max_size=3).map(tuple),
                ),
                payloads,
                st.booleans(),
                st.booleans(),
                st.floats(0, 5),
            ),
            min_size=1,
            max_size=5,
        )

    def check(self, requests: list[Any]) -> None:
        for which, method, path, query, payload, con, multicast, dt in requests:
            device = self.devices[which]
            self.now += dt
            request = Request(method, path, query, payload, con, multicast)
            response = device.handle(request, self.now)
            if response is not None:
                assert 0x40 <= response.code < 0xC0, response
            device.on_timer(self.now)
        for device in self.devices:
            self.now += 1.0
            device.on_timer(self.now)
            get = Request(Code.GET, ("c", "2"), (), b"", True, False)
            answer = device.handle(get, self.now + 1000)
            if device.online(self.now + 1000):
                assert answer is not None and answer.code == Code.CONTENT
                (tlv,) = pull_tlvs(answer.payload)
                eui = decode_as(tlv, pb.DeviceID).id.lower()
                assert eui == device.identity.eui64_text.lower()
            snap = device.snapshot()
            again = Device.restore(
                device.identity, device.profile, self.store, snap, seed=1, now=self.now
            )
            assert again.snapshot() == snap


# ----------------------------------------------------------------- head-end


class HeadEndTarget:
    """A core with three registered devices and an upload running."""

    def __init__(self) -> None:
        from emulator.headend.engine import ImageRef
        from emulator.headend.groups import make_group
        from emulator.headend.testing import GROUP_ADDR, MemoryWire, build_core

        key = ec.generate_private_key(ec.SECP256R1())
        group = make_group("Meters", id=7, multicast=GROUP_ADDR, hardware_ids=[HWID])
        self.core = build_core([group], key)
        self.wire = MemoryWire(self.core)
        self.wire.add_devices(3, _firmware("6.8.1", 2000, 1))
        self.wire.run(60, lambda: len(self.core.inventory) == 3)
        new = _firmware("6.9.1", 8000, 2)
        ref = ImageRef("n.bin", "6.9.1", hashlib.sha256(new).digest(), HWID, new, 256)
        members = [d.eui for d in self.core.inventory.members("meters")]
        self.core.start_upload(group, ref, members, self.wire.now)
        self.seeds = [d.registration_payload(self.wire.now) for d in self.wire.devices]
        self.mid = 0

    def strategy(self) -> st.SearchStrategy[Any]:
        from emulator.headend.testing import device_addr

        remotes = [device_addr(i) for i in range(3)] + [("fd00::99", 61628)]
        payloads = st.one_of(
            tlv_payloads(),
            st.sampled_from(self.seeds),
            mutated(st.sampled_from(self.seeds)),
        )
        request = st.tuples(
            st.sampled_from((Type.CON, Type.NON)),
            st.sampled_from(("r", "c", "x")),
            payloads,
        ).map(self._message)
        return st.lists(
            st.tuples(st.one_of(request, coap_datagrams()), st.sampled_from(remotes)),
            min_size=1,
            max_size=4,
        )

    def _message(self, parts: tuple[int, str, bytes]) -> bytes:
        self.mid = (self.mid + 1) & 0xFFFF
        options = request_options(parts[1])
        return encode(Message(parts[0], Code.POST, self.mid, b"t", options, parts[2]))

    def check(self, batch: list[Any]) -> None:
        from emulator.headend.testing import HEADEND_ADDR

        core = self.core
        for data, remote in batch:
            core.receive_datagram(data, HEADEND_ADDR, remote, self.wire.now)
        self.wire.now += 0.05
        core.handle_timer(self.wire.now)
        core.datagrams_to_send()
        core.take_changes()
        for record in core.inventory:
            assert len(record.eui) == 16 and record.eui == record.eui.upper()
            holder = core.inventory.by_addr(record.addr)
            assert holder is not None and holder.addr == record.addr
            assert record.group == "" or core.groups.get(record.group) is not None


# --------------------------------------------------------------------- soap


class SoapTarget:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def check(self, body: bytes) -> None:
        from lxml import etree

        from emulator.nbapi import soap
        from emulator.nbapi.auth import Role
        from emulator.nbapi.schema_check import validate_response
        from emulator.nbapi.testing import FakeFirmwareApi

        try:
            soap.parse_request(body)
        except soap.SoapFault:
            pass
        response = self.loop.run_until_complete(
            soap.handle(body, FakeFirmwareApi(), Role.OPERATOR)
        )
        child: etree._Element = validate_response(response.body)
        assert response.status in (200, 500), response.status
        if response.status == 500:
            assert child.tag.endswith("}Fault")


def targets(names: list[str]) -> list[Target]:
    made: list[Target] = []
    for name in names:
        if name == "tlv":
            made.append(Target(name, tlv_payloads(), check_tlv))
        elif name == "coap":
            made.append(Target(name, coap_datagrams(), check_coap))
        elif name == "device":
            dev = DeviceTarget()
            made.append(Target(name, dev.strategy(), dev.check))
        elif name == "headend":
            head = HeadEndTarget()
            made.append(Target(name, head.strategy(), head.check))
        elif name == "soap":
            made.append(Target(name, soap_bodies(), SoapTarget().check))
        else:
            raise SystemExit(f"unknown target {name!r}")
    return made


ALL = ("tlv", "coap", "device", "headend", "soap")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="per target")
    parser.add_argument("--targets", default=",".join(ALL))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL)
    failed = 0
    for target in targets([n.strip() for n in args.targets.split(",") if n]):
        start = time.monotonic()
        tried, failure = target.run(args.seconds, args.seed)
        took = time.monotonic() - start
        status = "FAILED" if failure else "ok"
        print(f"{target.name:8s} {tried:9d} inputs in {took:6.1f}s  {status}")
        if failure:
            failed += 1
            print(failure)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
