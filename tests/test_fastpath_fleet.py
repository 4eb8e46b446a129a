"""The fleet's fast paths do what the generic paths do.

Two in-process fleets (no sockets) with the same config and seed get the same
datagrams; one runs as shipped, the other with the fast paths switched off
(``Fleet._fast_request`` answering False, ``group_block`` answering None,
``ExchangeLayer.accept_response`` answering None and ``LinkModel.split``
deciding device by device). Both must send the same bytes,
end with the same device state (snapshots, pending async answers, deadlines)
and keep the same books (stats, requests, link and exchange counters).
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import pytest

from emulator.coap.exchange import Datagram
from emulator.coap.message import Code, Message, Type, decode, encode, request_options
from emulator.csmp import csmp_pb2 as pb
from emulator.csmp.registry import T, encode_tlv
from emulator.firmware.image import build_image
from emulator.fleet import runtime
from emulator.fleet.config import LinkRule, parse_config
from emulator.fleet.faults import LinkModel
from emulator.fleet.runtime import Fleet
from emulator.node import DeviceFaults, UploadState
from emulator.node.builders import post
from emulator.node.io import Send

NMS = ("2001:db8::10", 61628)
RELAY = ("::1", 61629)
BS = 256
IMAGE = build_image(bytes(range(256)) * 24, hwid="OPENCSMP", version="9.9.9")
IMAGE_HASH = hashlib.sha256(IMAGE).digest()
NBLOCKS = -(-len(IMAGE) // BS)
GROUP = 7


class Recorder:
    """Stands in for the fleet's UDP endpoint: keeps what it is given."""

    def __init__(self) -> None:
        self.sent: list[Datagram] = []

    def send(self, datagrams: list[Datagram]) -> None:
        self.sent.extend(datagrams)


def make_fleet(devices: int, fast: bool, monkeypatch: pytest.MonkeyPatch) -> Fleet:
    config = parse_config(
        {
            "fleet": {
                "devices": devices,
                "boot_time": 0.0,
                "power_on_jitter": 0.0,
                "nms": f"[{NMS[0]}]:{NMS[1]}",
                "seed": 5,
            },
            "registration": {"min": 3600, "max": 3600},
            "multicast": {"mode": "off"},
        }
    )
    fleet = Fleet(config)
    now = 1_800_000_000.0
    fleet.started_at = now
    fleet._build_devices(now)
    fleet._local_of = [(p.address, 61628) for p in fleet.planned]
    fleet._by_local = {a: i for i, a in enumerate(fleet._local_of)}
    fleet._main = Recorder()  # type: ignore[assignment]
    for device in fleet._devs:
        device.on_timer(now)
    if not fast:
        slow(fleet, monkeypatch)
    return fleet


def slow(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    """Switch the fast paths off for ``fleet`` (and group_block for all)."""
    monkeypatch.setattr(fleet, "_fast_request", lambda *args: False)
    monkeypatch.setattr(fleet.exchange, "accept_response", lambda *args: None)
    monkeypatch.setattr(runtime, "group_block", lambda request: None)

    def split(
        devices: list[int], direction: int, elapsed: float
    ) -> tuple[list[int], list[tuple[int, tuple[float, ...]]]]:
        now, held = [], []
        for i in devices:
            fate = LinkModel.decide(fleet.link, i, direction, elapsed)
            if fate is None or fate == (0.0,):
                now.append(i)
            else:
                held.append((i, fate))
        return now, held

    monkeypatch.setattr(fleet.link, "split", split, raising=False)


def state(fleet: Fleet) -> dict[str, Any]:
    sent = fleet._main.sent  # type: ignore[union-attr]
    return {
        "sent": [tuple(d) for d in sent],
        "stats": dict(fleet.stats),
        "requests": dict(fleet.requests),
        "link": dict(fleet.link.counts),
        "exchange": dict(fleet.exchange.stats),
        "devices": [d.snapshot() for d in fleet._devs],
        "asyncs": [d._asyncs for d in fleet._devs],
        "deadlines": [d.next_deadline() for d in fleet._devs],
        "wheel": dict(fleet._wheel._slot_of),
        "delayed": sorted(fleet._delayed),
        "states": [d.upload_state for d in fleet._devs],
    }


def coap(
    kind: Type, code: int, mid: int, path: str, query: list[str], body: bytes
) -> bytes:
    token = (mid * 7919 & 0xFFFFFFFF).to_bytes(4, "big")[: mid % 5]
    msg = Message(kind, code, mid & 0xFFFF, token, request_options(path, query), body)
    return encode(msg)


def block_body(num: int, extra: bytes = b"", group: int = GROUP) -> bytes:
    chunk = IMAGE[num * BS : (num + 1) * BS]
    block = pb.ImageBlock(fileHash=IMAGE_HASH, blockNum=num, blockData=chunk)
    match = encode_tlv(T.GROUP_MATCH, pb.Group(type=2, id=group))
    return match + encode_tlv(T.IMAGE_BLOCK, block) + extra


def description(ids: list[str]) -> bytes:
    return encode_tlv(T.DESCRIPTION_REQUEST, pb.DescriptionRequest(tlvid=ids))


def prepare_upload(fleet: Fleet, now: float) -> None:
    """Most devices in the group and downloading, some not (various ways)."""
    transfer = pb.TransferRequest(
        fileHash=IMAGE_HASH,
        fileName="f.bin",
        version="9.9.9",
        fileSize=len(IMAGE),
        blockSize=BS,
    )
    transfer.hwInfo.hwId = "OPENCSMP"
    assign = encode_tlv(T.GROUP_ASSIGN, pb.Group(type=2, id=GROUP))
    other = encode_tlv(T.GROUP_ASSIGN, pb.Group(type=2, id=GROUP + 1))
    for i, device in enumerate(fleet._devs):
        kind = i % 10
        body = (other if kind == 1 else assign) + (
            b"" if kind == 2 else encode_tlv(T.TRANSFER_REQUEST, transfer)
        )
        fleet._deliver(i, post(body), now)
        if kind == 3:
            device.faults = DeviceFaults(flash_write_error_rate=0.5)
        elif kind == 4:
            device.power_off()
        elif kind == 5:
            device.power_cycle(now)  # booting until now + 0: settles on delivery
        elif kind == 6:
            device.faults = DeviceFaults(fail_boot=True)  # harmless for blocks


def group_datagrams(rng: random.Random) -> list[bytes]:
    """Blocks in a shuffled order with repeats, some with DescriptionRequest
    (before or after the block), some to another group, some odd."""
    order = list(range(NBLOCKS)) * 2
    rng.shuffle(order)
    out = []
    for k, num in enumerate(order):
        mid = 0x8000 + k
        body = block_body(num)
        if k % 7 == 3:
            body = block_body(num, description(["75", "e5771.1"]))
        elif k % 11 == 5:
            chunk = IMAGE[num * BS : (num + 1) * BS]
            block = pb.ImageBlock(fileHash=IMAGE_HASH, blockNum=num, blockData=chunk)
            body = (
                encode_tlv(T.GROUP_MATCH, pb.Group(type=2, id=GROUP))
                + description(["22"])
                + encode_tlv(T.IMAGE_BLOCK, block)
            )
        elif k % 13 == 6:
            body = block_body(num, group=GROUP + 1)
        elif k % 17 == 8:
            body = block_body(num)[:-3]  # bad framing
        elif k % 19 == 9:
            body = block_body(NBLOCKS + 3)  # out of range
        query = ["a=5"] if k % 3 == 0 else []
        out.append(coap(Type.NON, Code.POST, mid, "c", query, body))
    return out


@pytest.mark.parametrize(
    "rules",
    [
        (),
        (LinkRule(loss=0.2),),
        (LinkRule(fraction=0.5, loss=0.3), LinkRule(fraction=0.2, delay=0.5)),
        (
            LinkRule(loss=0.1, outages=((0.0, 5.0),)),
            LinkRule(fraction=0.3, duplicate=0.5),
        ),
    ],
)
def test_multicast_block_fanout_matches_generic(
    rules: tuple[LinkRule, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    results = []
    for fast in (True, False):
        with monkeypatch.context() as patch:
            fleet = make_fleet(60, fast, patch)
            now = fleet.started_at + 1
            prepare_upload(fleet, now)
            fleet.set_link_rules(rules)
            for k, data in enumerate(group_datagrams(random.Random(3))):
                t = now + k * 0.01
                fleet._on_datagrams([(data, RELAY, NMS)], t)
                if k % 9 == 0:  # release held datagrams, run timers
                    fleet._run_due(t)
                    fleet._flush(t)
            fleet._run_due(now + 10)
            fleet._flush(now + 10)
            results.append(state(fleet))
    fast_state, slow_state = results
    for key in fast_state:
        assert fast_state[key] == slow_state[key], key
    assert fast_state["stats"]["uploads_completed"] > 0
    assert fast_state["stats"]["duplicate_blocks"] > 0
    assert UploadState.COMPLETE in fast_state["states"]


def test_multicast_fast_path_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    fleet = make_fleet(20, True, monkeypatch)
    now = fleet.started_at + 1
    prepare_upload(fleet, now)
    calls = []
    monkeypatch.setattr(fleet, "_deliver", lambda i, *a: calls.append(i))
    data = coap(Type.NON, Code.POST, 0x8001, "c", [], block_body(0))
    fleet._on_datagrams([(data, RELAY, NMS)], now)
    # only the faulty, offline and booting members take the generic path
    assert sorted(calls) == [i for i in range(20) if i % 10 in (3, 4, 5)]
    assert fleet.stats["blocks_received"] == len(
        [i for i in range(20) if i % 10 not in (1, 2, 3, 4, 5)]
    )


def request_datagrams(fleet: Fleet, rng: random.Random) -> list[tuple[bytes, Any, Any]]:
    """GETs and POSTs, CON and NON, duplicates, odd options, malformed ones."""
    remote = ("2001:db8::77", 5683)
    locals_ = fleet._local_of
    out = []
    transfer = pb.TransferRequest(
        fileHash=IMAGE_HASH,
        fileName="f.bin",
        version="9.9.9",
        fileSize=len(IMAGE),
        blockSize=BS,
    )
    transfer.hwInfo.hwId = "OPENCSMP"
    for k in range(600):
        i = rng.randrange(len(locals_))
        kind = Type.CON if rng.random() < 0.7 else Type.NON
        pick = k % 12
        if pick == 0:
            data = coap(
                kind, Code.POST, k, "c", [], encode_tlv(T.TRANSFER_REQUEST, transfer)
            )
        elif pick == 1:
            num = rng.randrange(NBLOCKS)
            chunk = IMAGE[num * BS : (num + 1) * BS]
            block = pb.ImageBlock(fileHash=IMAGE_HASH, blockNum=num, blockData=chunk)
            data = coap(kind, Code.POST, k, "c", [], encode_tlv(T.IMAGE_BLOCK, block))
        elif pick == 2:
            data = coap(kind, Code.GET, k, "c/75/2", [], b"")
        elif pick == 3:
            data = coap(kind, Code.GET, k, "c", ["q=11+75", "a=3"], b"")
        elif pick == 4:
            data = coap(kind, Code.GET, k, "c/999", [], b"")
        elif pick == 5:
            data = coap(kind, Code.PUT, k, "c", [], b"x")
        elif pick == 6:
            msg = Message(kind, Code.GET, k, b"", [(11, b"c"), (12, b""), (15, b"q=2")])
            data = encode(msg)
        elif pick == 7:
            data = coap(kind, Code.GET, k, "c", ["q=75"], b"")[:-2] + b"\xff"
        elif pick == 8:
            data = bytes([0x40 | 9]) + b"\x01\x00\x01"  # token length 9
        elif pick == 9:
            data = coap(kind, Code.POST, k, "c", [], b"\x01\x02")  # bad TLV
        elif pick == 10 and out:
            data, _local, _remote = out[rng.randrange(len(out))]  # a duplicate
            out.append((data, _local, _remote))
            continue
        else:
            data = coap(kind, Code.GET, k, "c", ["q=75"], b"")
        out.append((data, locals_[i], remote))
    return out


@pytest.mark.parametrize(
    "rules", [(), (LinkRule(loss=0.3),), (LinkRule(fraction=0.5, delay=0.2),)]
)
def test_request_fast_path_matches_generic(
    rules: tuple[LinkRule, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    results = []
    for fast in (True, False):
        with monkeypatch.context() as patch:
            fleet = make_fleet(30, fast, patch)
            now = fleet.started_at + 1
            prepare_upload(fleet, now)
            fleet.set_link_rules(rules)
            items = request_datagrams(fleet, random.Random(11))
            for k in range(0, len(items), 16):
                t = now + k * 0.01
                fleet._on_datagrams(items[k : k + 16], t)
                fleet._run_due(t)
                fleet._flush(t)
            fleet._run_due(now + 30)
            fleet._flush(now + 30)
            results.append(state(fleet))
    fast_state, slow_state = results
    for key in fast_state:
        assert fast_state[key] == slow_state[key], key
    assert fast_state["requests"][("GET", "2xx")] > 0
    assert fast_state["exchange"]["duplicates"] > 0


def test_request_fast_path_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    fleet = make_fleet(3, True, monkeypatch)
    now = fleet.started_at + 1
    monkeypatch.setattr(fleet, "_receive", lambda *a: pytest.fail("generic path taken"))
    data = coap(Type.CON, Code.GET, 5, "c", ["q=75"], b"")
    fleet._on_datagrams([(data, fleet._local_of[1], NMS)], now)
    (answer,) = fleet._main.sent  # type: ignore[union-attr]
    assert answer.data[0] == 0x60 | (data[0] & 0x0F)
    assert answer.data[1] == Code.CONTENT and answer.data[2:4] == data[2:4]
    assert fleet.requests[("GET", "2xx")] == 1


def test_link_split_equals_decide_device_by_device() -> None:
    from emulator.fleet.faults import DOWN, DeviceKey

    keys = [DeviceKey(0x00173B0000000000 + i, "meter") for i in range(300)]
    rules = (
        LinkRule(fraction=0.4, loss=0.25),
        LinkRule(fraction=0.2, loss=0.1, delay=0.3, jitter=0.1),
        LinkRule(fraction=0.1, loss=0.5, outages=((10.0, 20.0),)),
        LinkRule(fraction=0.1, duplicate=0.3, reorder=0.2),
    )
    bulk, single = LinkModel(9, keys), LinkModel(9, keys)
    bulk.set_rules(rules)
    single.set_rules(rules)
    for elapsed in (1.0, 15.0, 30.0):
        now, held = bulk.split(range(300), DOWN, elapsed)
        fates = {i: single.decide(i, DOWN, elapsed) for i in range(300)}
        assert now == [i for i, f in fates.items() if f is None or f == (0.0,)]
        assert held == [
            (i, f) for i, f in fates.items() if f is not None and f != (0.0,)
        ]
    assert bulk.counts == single.counts


def unicast_block_datagrams(
    fleet: Fleet, rng: random.Random
) -> list[tuple[bytes, Any, Any]]:
    """The fill-in's unicast traffic: ImageBlock POSTs (NON mostly, some CON)
    to every device in a shuffled order with repeats, bitmap reads (CON GET
    /c/75/2), duplicates, and blocks that are odd (foreign hash, out of
    range, short hash prefix, an extra TLV, a query)."""
    remote = ("2001:db8::77", 5683)
    locals_ = fleet._local_of
    out: list[tuple[bytes, Any, Any]] = []
    other_hash = hashlib.sha256(b"other").digest()
    for k in range(2000):
        i = rng.randrange(len(locals_))
        num = rng.randrange(NBLOCKS)
        chunk = IMAGE[num * BS : (num + 1) * BS]
        file_hash, query, extra = IMAGE_HASH, [], b""
        pick = k % 23
        if pick == 1:
            file_hash = other_hash
        elif pick == 2:
            num = NBLOCKS + 1
        elif pick == 3:
            file_hash = IMAGE_HASH[:6]
        elif pick == 4:
            extra = description(["75"])
        elif pick == 5:
            query = ["a=3"]
        elif pick == 6:
            chunk = bytes(len(chunk))  # differs from the stored block
        body = encode_tlv(
            T.IMAGE_BLOCK,
            pb.ImageBlock(fileHash=file_hash, blockNum=num, blockData=chunk),
        )
        kind = Type.CON if k % 5 == 0 else Type.NON
        data = coap(kind, Code.POST, k, "c", query, body + extra)
        if k % 17 == 0:
            data = coap(Type.CON, Code.GET, k, "c/75/2", [], b"")
        elif k % 29 == 0 and out:
            data, _local, _remote = out[rng.randrange(len(out))]  # a duplicate
            out.append((data, _local, _remote))
            continue
        out.append((data, locals_[i], remote))
    return out


@pytest.mark.parametrize(
    "rules", [(), (LinkRule(loss=0.3),), (LinkRule(fraction=0.5, delay=0.2),)]
)
def test_unicast_block_fast_path_matches_generic(
    rules: tuple[LinkRule, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    results = []
    for fast in (True, False):
        with monkeypatch.context() as patch:
            fleet = make_fleet(20, fast, patch)
            now = fleet.started_at + 1
            prepare_upload(fleet, now)
            fleet.set_link_rules(rules)
            items = unicast_block_datagrams(fleet, random.Random(17))
            for k in range(0, len(items), 16):
                t = now + k * 0.01
                fleet._on_datagrams(items[k : k + 16], t)
                fleet._run_due(t)
                fleet._flush(t)
            fleet._run_due(now + 30)
            fleet._flush(now + 30)
            results.append(state(fleet))
    fast_state, slow_state = results
    for key in fast_state:
        assert fast_state[key] == slow_state[key], key
    assert fast_state["stats"]["blocks_received"] > 0
    assert fast_state["stats"]["duplicate_blocks"] > 0
    assert fast_state["stats"]["uploads_completed"] > 0
    assert fast_state["requests"][("POST", "none")] > 0
    assert fast_state["requests"][("POST", "2xx")] > 0


def test_unicast_block_fast_path_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    fleet = make_fleet(20, True, monkeypatch)
    now = fleet.started_at + 1
    prepare_upload(fleet, now)
    calls = []
    monkeypatch.setattr(fleet, "_deliver", lambda i, *a: calls.append(i))
    monkeypatch.setattr(fleet, "_receive", lambda *a: pytest.fail("generic path"))
    block = pb.ImageBlock(fileHash=IMAGE_HASH, blockNum=1, blockData=IMAGE[BS : 2 * BS])
    body = encode_tlv(T.IMAGE_BLOCK, block)
    for i in range(20):
        kind = Type.CON if i % 2 else Type.NON
        data = coap(kind, Code.POST, 100 + i, "c", [], body)
        fleet._on_datagrams([(data, fleet._local_of[i], NMS)], now)
    # only the faulty, offline and booting devices take the generic path; a
    # device of another group (1) downloads all the same
    assert calls == [i for i in range(20) if i % 10 in (3, 4, 5)]
    served = [i for i in range(20) if i % 10 not in (2, 3, 4, 5)]
    assert fleet.stats["blocks_received"] == len(served)
    acks = [d.data for d in fleet._main.sent]  # type: ignore[union-attr]
    assert all(a[0] >> 4 == 0x6 and a[1] == Code.CREATED for a in acks)


def test_upload_slot_info_template_matches_protobuf(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """TLV 75 of a downloading UPLOAD slot (the bitmap read): the spliced
    encoding equals encoding ``image_info(UPLOAD)`` for bitmaps, profiles
    (length width, vendor hardware id) and a pending load time."""
    import dataclasses

    from emulator.node.device import Device

    rng = random.Random(4)
    fleet = make_fleet(3, True, monkeypatch)
    now = fleet.started_at + 1
    transfer = pb.TransferRequest(
        fileHash=IMAGE_HASH,
        fileName="f.bin",
        version="9.9.9",
        fileSize=len(IMAGE),
        blockSize=BS,
    )
    transfer.hwInfo.hwId = "OPENCSMP"
    for i in range(3):
        fleet._deliver(i, post(encode_tlv(T.TRANSFER_REQUEST, transfer)), now)
    base = fleet._devs[0].profile
    profiles = [
        base,
        dataclasses.replace(base, length_width=0),
        dataclasses.replace(base, vendor_hw_id="VHW-1"),
    ]
    for device, profile in zip(fleet._devs, profiles, strict=True):
        device.profile = profile
        up = device.firmware.upload
        assert up is not None and up.state is UploadState.DOWNLOADING
        for bits in (0, 1, (1 << NBLOCKS) - 2, rng.getrandbits(NBLOCKS)):
            up.bits = bits
            for load in (0, 1_900_000_000):
                device.firmware.load_slot, device.firmware.load_time = 2, load
                generic = Device._encode(
                    device,
                    T.FIRMWARE_IMAGE_INFO,
                    device.firmware.image_info(2, profile),
                )
                assert device._read_image_info(2) == generic
            device.firmware.cancel_pending()


def answer_datagrams(fleet: Fleet, rng: random.Random) -> list[tuple[bytes, Any, Any]]:
    """Answers to the devices' registration POSTs: piggybacked (2.04, 4.03,
    empty or bad TLVs, with an option), separate (empty ACK, then a CON or
    NON response), RSTs, duplicates, foreign tokens, malformed options."""
    sent = [decode(d.data) for d in fleet._main.sent]  # type: ignore[union-attr]
    locals_ = [d.local for d in fleet._main.sent]  # type: ignore[union-attr]
    good = encode_tlv(T.REPORT_SUBSCRIBE, pb.ReportSubscribe(interval=0)) + encode_tlv(
        T.SESSION_ID, pb.SessionID(id="s1")
    )
    out = []
    for k, (msg, local) in enumerate(zip(sent, locals_, strict=True)):
        pick = k % 9
        mid, token = msg.mid, msg.token
        if pick == 0:
            answer = Message(Type.ACK, Code.CHANGED, mid, token, [], good)
        elif pick == 1:
            answer = Message(Type.ACK, Code.FORBIDDEN, mid, token, [], b"")
        elif pick == 2:
            answer = Message(Type.ACK, Code.CHANGED, mid, token, [], b"\x01\x02")
        elif pick == 3:
            answer = Message(Type.ACK, Code.CHANGED, mid, token, [(12, b"")], good)
        elif pick == 4:
            out.append((encode(Message(Type.ACK, 0, mid)), local, NMS))
            answer = Message(Type.CON, Code.CHANGED, 0x4000 + k, token, [], good)
        elif pick == 5:
            answer = Message(Type.RST, 0, mid)
        elif pick == 6:
            answer = Message(Type.ACK, Code.CHANGED, mid, token[::-1] + b"x", [], good)
        elif pick == 7:
            data = encode(Message(Type.ACK, Code.CHANGED, mid, token, [], good))
            out.append(
                (data[: 4 + len(token)] + b"\xd0" + data[4 + len(token) :], local, NMS)
            )
            continue
        else:
            answer = Message(Type.NON, Code.CHANGED, 0x5000 + k, token, [], good)
        out.append((encode(answer), local, NMS))
        if rng.random() < 0.2:
            out.append(out[-1])  # a duplicate
    rng.shuffle(out)
    return out


def test_registration_answer_fast_path_matches_generic(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    results = []
    for fast in (True, False):
        with monkeypatch.context() as patch:
            fleet = make_fleet(60, fast, patch)
            now = fleet.started_at + 1
            for i, device in enumerate(fleet._devs):
                fleet._send(
                    i,
                    Send("r", device.registration_payload(now), True, "register"),
                    now,
                )
            fleet._flush(now)
            items = answer_datagrams(fleet, random.Random(8))
            for k in range(0, len(items), 8):
                fleet._on_datagrams(items[k : k + 8], now + 0.5 + k * 0.01)
            fleet._run_due(now + 300)
            fleet._flush(now + 300)
            results.append(state(fleet))
            results[-1]["pending"] = sorted(fleet._reg_pending.items())
            results[-1]["registered"] = [d.registered for d in fleet._devs]
    fast_state, slow_state = results
    for key in fast_state:
        assert fast_state[key] == slow_state[key], key
    assert 0 < fast_state["stats"]["registrations_ok"] < 60
    assert fast_state["stats"]["registrations_refused"] > 0
    assert fast_state["stats"]["registrations_failed"] > 0


@pytest.mark.parametrize("fast", [True, False])
def test_request_to_a_device_that_is_off_is_not_remembered(
    fast: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CON request reaching a device that is off (or booting) was never
    received: its retransmission after the device is back is answered, not
    dropped as a duplicate with no answer to repeat."""
    fleet = make_fleet(3, fast, monkeypatch)
    sent = fleet._main.sent  # type: ignore[union-attr]
    now = fleet.started_at + 10
    local, remote = fleet._local_of[1], ("2001:db8::77", 5683)
    request = coap(Type.CON, Code.GET, 0x1234, "c", ["q=75"], b"")
    fleet._devs[1].power_off()
    fleet._on_datagrams([(request, local, remote)], now)
    assert not sent
    fleet._devs[1].power_on(now + 1)
    fleet._devs[1].on_timer(now + 1)  # boot time 0: online again
    fleet._on_datagrams([(request, local, remote)], now + 2)  # retransmission
    (answer,) = sent
    msg = decode(answer.data)
    assert (msg.type, msg.mid, msg.code) == (Type.ACK, 0x1234, Code.CONTENT)
    fleet._on_datagrams([(request, local, remote)], now + 3)  # a duplicate now
    assert [d.data for d in sent] == [answer.data, answer.data]
    assert fleet.exchange.stats["duplicates"] == 1
