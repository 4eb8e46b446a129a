"""One registration exchange in flight per device (fleet runtime, in-process).

A slow or silent NMS must not make devices pile up registration exchanges:
while a device's registration CON is pending in the exchange layer, its
trickle timer firing again sends nothing new (``registrations_deferred``);
the CON is retransmitted by the CoAP rules, and once it fails the next firing
starts a new exchange. An answer to a retransmission registers the device.
"""

from __future__ import annotations

from collections import Counter

from emulator.coap.exchange import Datagram
from emulator.coap.message import Code, Message, Type, decode, encode
from emulator.csmp import csmp_pb2 as pb
from emulator.csmp.registry import T, encode_tlv
from emulator.fleet.config import parse_config
from emulator.fleet.runtime import Fleet

NMS = ("2001:db8::10", 61628)
T0 = 1_800_000_000.0
DEVICES = 6


class Recorder:
    """Stands in for the fleet's UDP endpoint: keeps what it is given."""

    def __init__(self) -> None:
        self.sent: list[Datagram] = []

    def send(self, datagrams: list[Datagram]) -> None:
        self.sent.extend(datagrams)


def silent_nms_fleet() -> Fleet:
    config = parse_config(
        {
            "fleet": {
                "devices": DEVICES,
                "boot_time": 0.0,
                "power_on_jitter": 0.0,
                "nms": f"[{NMS[0]}]:{NMS[1]}",
                "seed": 3,
            },
            "registration": {"min": 2, "max": 8},
            "multicast": {"mode": "off"},
        }
    )
    fleet = Fleet(config)
    fleet.started_at = T0
    fleet._build_devices(T0)
    fleet._local_of = [(p.address, 61628) for p in fleet.planned]
    fleet._by_local = {a: i for i, a in enumerate(fleet._local_of)}
    fleet._main = Recorder()  # type: ignore[assignment]
    return fleet


def in_flight(fleet: Fleet) -> Counter[tuple[str, int]]:
    """Registration exchanges pending in the exchange layer, by device."""
    return Counter(local for local, _remote, _token in fleet.exchange._by_token)


def run(fleet: Fleet, start: float, end: float, step: float = 0.25) -> None:
    t = start
    while t <= end:
        fleet._run_due(t)
        fleet._flush(t)
        assert max(in_flight(fleet).values(), default=0) <= 1, t
        t += step


def registrations(fleet: Fleet) -> list[tuple[tuple[str, int], bytes, int]]:
    """(device address, token, mid) of every registration POST sent."""
    out = []
    for datagram in fleet._main.sent:  # type: ignore[union-attr]
        msg = decode(datagram.data)
        if msg.code == Code.POST and msg.uri_path == ["r"]:
            out.append((datagram.local, msg.token, msg.mid))
    return out


def test_silent_nms_one_exchange_per_device_retransmitted() -> None:
    fleet = silent_nms_fleet()
    run(fleet, T0, T0 + 200)
    sent = registrations(fleet)
    exchanges = Counter((local, token) for local, token, _mid in sent)
    per_device = Counter(local for local, _token in exchanges)
    stats = fleet.stats
    # A failed exchange takes 62-93 s (ACK_TIMEOUT 2 s, 4 retransmissions):
    # at most 4 exchanges per device in 200 s, where the trickle (2-8 s)
    # would have started dozens.
    assert set(per_device) == set(fleet._local_of)
    assert max(per_device.values()) <= 4
    assert stats["registrations_sent"] == len(exchanges)
    assert stats["registrations_deferred"] > 5 * DEVICES
    assert stats["registrations_failed"] >= DEVICES
    assert stats["registrations_failed"] + sum(in_flight(fleet).values()) == len(
        exchanges
    )
    # every failed exchange was sent 5 times (same token, same mid); one in
    # flight may have had its last transmission already
    transmissions = Counter((local, token, mid) for local, token, mid in sent)
    assert max(transmissions.values()) == 5
    assert len(transmissions) == len(exchanges)
    assert (
        stats["registrations_failed"]
        <= Counter(transmissions.values())[5]
        <= stats["registrations_failed"] + DEVICES
    )
    assert fleet.exchange.stats["retransmits"] >= 4 * DEVICES
    assert not any(d.registered for d in fleet._devs)


def test_late_answer_to_a_retransmission_registers() -> None:
    fleet = silent_nms_fleet()
    run(fleet, T0, T0 + 40)
    assert fleet.stats["registrations_deferred"] > 0
    # the NMS finally answers the last transmission of every exchange
    answer = encode_tlv(T.REPORT_SUBSCRIBE, pb.ReportSubscribe(interval=0))
    last = {local: (token, mid) for local, token, mid in registrations(fleet)}
    batch = []
    for local, (token, mid) in last.items():
        ack = Message(Type.ACK, Code.CHANGED, mid, token, [], answer)
        batch.append((encode(ack), local, NMS))
    fleet._on_datagrams(batch, T0 + 40.1)
    assert all(d.registered for d in fleet._devs)
    assert fleet.stats["registrations_ok"] == DEVICES
    assert not fleet._reg_pending and not fleet._reg_handles
    before = fleet.stats["registrations_sent"]
    run(fleet, T0 + 40.25, T0 + 100)
    assert fleet.stats["registrations_sent"] == before


def test_reboot_forgets_the_exchange_in_flight() -> None:
    fleet = silent_nms_fleet()
    run(fleet, T0, T0 + 10)
    first = fleet.stats["registrations_sent"]
    assert first == DEVICES
    fleet._devs[0].power_cycle(T0 + 10.1)
    fleet._wheel.schedule(0, fleet._devs[0].next_deadline())
    t = T0 + 10.25
    while fleet.stats["registrations_sent"] == first and t < T0 + 30:
        fleet._run_due(t)
        fleet._flush(t)
        t += 0.25
    # the rebooted device registers anew although its old CON is in flight
    assert fleet.stats["registrations_sent"] == first + 1
    assert in_flight(fleet)[fleet._local_of[0]] == 2
