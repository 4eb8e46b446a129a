"""CoAP codec and the sans-IO exchange layer (emulator.coap)."""

from __future__ import annotations

import aiocoap
import pytest
from hypothesis import given
from hypothesis import strategies as st

from emulator.coap.exchange import (
    ExchangeLayer,
    IncomingRequest,
    IncomingResponse,
    RequestFailed,
    TransportTuning,
)
from emulator.coap.message import (
    CoapError,
    Code,
    Message,
    Type,
    decode,
    encode,
    request_options,
)

DEV_A = ("fd00::1", 61628)
DEV_B = ("fd00::2", 61628)
NMS = ("fd00::ff", 61628)


def test_codec_matches_aiocoap() -> None:
    msg = Message(Type.CON, Code.GET, 0x1234, b"tk", request_options("c", ["q=11+75"]))
    wire = encode(msg)
    theirs = aiocoap.Message.decode(wire)
    assert theirs.opt.uri_path == ("c",)
    assert theirs.opt.uri_query == ("q=11+75",)
    assert theirs.mid == 0x1234 and theirs.token == b"tk"
    ours = aiocoap.Message(code=aiocoap.GET, uri_path=["c"], uri_query=["q=11+75"])
    ours.mtype, ours.mid, ours.token = aiocoap.CON, 0x1234, b"tk"
    assert decode(ours.encode()) == msg


def test_long_options_and_payload_round_trip() -> None:
    options = [(11, b"c"), (15, b"x" * 20), (15, b"y" * 300), (2000, b"")]
    msg = Message(Type.NON, Code.POST, 7, b"", options, b"\x01\x02")
    assert decode(encode(msg)) == msg


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"\x40\x01", "shorter"),
        (b"\x80\x01\x00\x01", "version 2"),
        (b"\x49\x01\x00\x01", "token length 9"),
        (b"\x42\x01\x00\x01a", "truncated token"),
        (b"\x40\x01\x00\x01\xff", "payload marker"),
        (b"\x40\x01\x00\x01\xb5c", "runs past"),
        (b"\x40\x01\x00\x01\xf0", "nibble 15"),
    ],
)
def test_malformed_datagrams(wire: bytes, reason: str) -> None:
    with pytest.raises(CoapError, match=reason):
        decode(wire)


@given(st.binary(max_size=64))
def test_decode_raises_only_coap_error(data: bytes) -> None:
    try:
        decode(data)
    except CoapError:
        pass


def _con_get(mid: int, token: bytes = b"t1") -> bytes:
    return encode(Message(Type.CON, Code.GET, mid, token, request_options("c")))


def test_duplicate_detection_includes_local_address() -> None:
    ex = ExchangeLayer(seed=1)
    first = ex.receive_datagram(_con_get(5), DEV_A, NMS, now=0)
    assert isinstance(first, IncomingRequest)
    # the same mid from the same peer to ANOTHER device is a new request
    other = ex.receive_datagram(_con_get(5), DEV_B, NMS, now=0)
    assert isinstance(other, IncomingRequest)
    ex.respond(first, Code.CONTENT, b"A", now=0)
    ex.respond(other, Code.CONTENT, b"B", now=0)
    sent = ex.datagrams_to_send()
    assert [decode(d.data).payload for d in sent] == [b"A", b"B"]
    assert [d.local for d in sent] == [DEV_A, DEV_B]
    # a retransmitted CON gets the cached answer of its own device again
    assert ex.receive_datagram(_con_get(5), DEV_B, NMS, now=1) is None
    (again,) = ex.datagrams_to_send()
    assert decode(again.data).payload == b"B" and again.local == DEV_B
    assert ex.stats["duplicates"] == 1


def test_duplicate_window_expires() -> None:
    ex = ExchangeLayer(TransportTuning(exchange_lifetime=10), seed=1)
    assert ex.receive_datagram(_con_get(9), DEV_A, NMS, now=0) is not None
    assert ex.receive_datagram(_con_get(9), DEV_A, NMS, now=5) is None
    ex.handle_timer(11)
    assert ex.receive_datagram(_con_get(9), DEV_A, NMS, now=11) is not None


def test_dedup_state_is_capped() -> None:
    ex = ExchangeLayer(TransportTuning(max_dedup_records=100), seed=1)
    for mid in range(1000):
        ex.receive_datagram(_con_get(mid), DEV_A, NMS, now=0)
    assert len(ex._seen) <= 101


def test_con_request_retransmits_then_fails() -> None:
    tuning = TransportTuning(ack_timeout=1.0, ack_random_factor=1.0, max_retransmit=2)
    ex = ExchangeLayer(tuning, seed=1)
    msg = Message(Type.CON, Code.POST, options=request_options("r"), payload=b"x")
    handle = ex.request(DEV_A, NMS, msg, now=0)
    assert len(ex.datagrams_to_send()) == 1
    assert ex.get_timer() == pytest.approx(1.0)
    assert ex.handle_timer(1.0) == []
    assert len(ex.datagrams_to_send()) == 1  # first retransmission
    assert ex.handle_timer(3.0) == []  # back-off doubled: 1 + 2
    assert len(ex.datagrams_to_send()) == 1
    events = ex.handle_timer(7.0)
    assert events == [RequestFailed(handle, DEV_A, NMS, "no answer")]
    assert ex.pending_requests == 0


def test_piggybacked_response_matches_by_token_and_pair() -> None:
    ex = ExchangeLayer(seed=2)
    msg = Message(Type.CON, Code.POST, options=request_options("r"))
    handle = ex.request(DEV_A, NMS, msg, now=0)
    (out,) = ex.datagrams_to_send()
    req = decode(out.data)
    ack = Message(Type.ACK, Code.VALID, req.mid, req.token, [], b"ok")
    # the same answer arriving at another device's address does not match
    assert ex.receive_datagram(encode(ack), DEV_B, NMS, now=0.1) is None
    event = ex.receive_datagram(encode(ack), DEV_A, NMS, now=0.1)
    assert isinstance(event, IncomingResponse)
    assert event.handle == handle and event.message.payload == b"ok"
    assert ex.handle_timer(100) == []  # nothing left to retransmit


def test_separate_response_after_empty_ack() -> None:
    ex = ExchangeLayer(seed=3)
    handle = ex.request(DEV_A, NMS, Message(Type.CON, Code.GET), now=0)
    req = decode(ex.datagrams_to_send()[0].data)
    empty_ack = Message(Type.ACK, Code.EMPTY, req.mid)
    assert ex.receive_datagram(encode(empty_ack), DEV_A, NMS, now=0.1) is None
    assert ex.handle_timer(5) == []  # acked: no retransmission
    assert ex.datagrams_to_send() == []
    separate = Message(Type.CON, Code.CONTENT, 777, req.token, [], b"late")
    event = ex.receive_datagram(encode(separate), DEV_A, NMS, now=6)
    assert isinstance(event, IncomingResponse) and event.handle == handle
    (ack,) = ex.datagrams_to_send()
    assert decode(ack.data).type == Type.ACK and decode(ack.data).mid == 777


def test_reset_fails_request_and_ping_gets_reset() -> None:
    ex = ExchangeLayer(seed=4)
    handle = ex.request(DEV_A, NMS, Message(Type.CON, Code.GET), now=0)
    mid = decode(ex.datagrams_to_send()[0].data).mid
    rst = encode(Message(Type.RST, Code.EMPTY, mid))
    assert ex.receive_datagram(rst, DEV_A, NMS, now=0) == RequestFailed(
        handle, DEV_A, NMS, "reset by peer"
    )
    ping = encode(Message(Type.CON, Code.EMPTY, 42))
    assert ex.receive_datagram(ping, DEV_A, NMS, now=0) is None
    (pong,) = ex.datagrams_to_send()
    assert decode(pong.data) == Message(Type.RST, Code.EMPTY, 42)


def test_message_ids_are_per_pair_and_sequential() -> None:
    ex = ExchangeLayer(seed=5)
    for _ in range(3):
        ex.send_non(DEV_A, NMS, Message(Type.NON, Code.POST), now=0)
    ex.send_non(DEV_B, NMS, Message(Type.NON, Code.POST), now=0)
    mids = [decode(d.data).mid for d in ex.datagrams_to_send()]
    assert mids[1] == (mids[0] + 1) & 0x7FFF and mids[2] == (mids[1] + 1) & 0x7FFF
    assert len(ex._mids) == 2
    ex.handle_timer(1000)
    assert ex._mids == {}  # idle counters are dropped


def test_malformed_con_gets_reset_and_counted() -> None:
    ex = ExchangeLayer(seed=6)
    assert ex.receive_datagram(b"\x40\x01\x00\x09\xf0", DEV_A, NMS, now=0) is None
    (rst,) = ex.datagrams_to_send()
    assert decode(rst.data) == Message(Type.RST, Code.EMPTY, 9)
    assert ex.stats["malformed"] == 1


def test_non_response_to_non_request() -> None:
    ex = ExchangeLayer(seed=7)
    req = Message(Type.NON, Code.GET, 11, b"nt", request_options("c/75"))
    event = ex.receive_datagram(encode(req), DEV_A, NMS, now=0)
    assert isinstance(event, IncomingRequest)
    ex.respond(event, Code.CONTENT, b"v", now=0)
    (out,) = ex.datagrams_to_send()
    answer = decode(out.data)
    assert answer.type == Type.NON and answer.token == b"nt"
    # duplicate NON requests are dropped silently
    assert ex.receive_datagram(encode(req), DEV_A, NMS, now=1) is None
    assert ex.datagrams_to_send() == []


def test_multicast_and_unicast_ids_are_disjoint() -> None:
    ex = ExchangeLayer(seed=8)
    group = ("ff05::6d66:0:0:2", 61628)
    for _ in range(100):
        ex.send_non(NMS, group, Message(Type.NON, Code.POST), now=0)
        ex.send_non(NMS, DEV_A, Message(Type.NON, Code.POST), now=0)
    sent = ex.datagrams_to_send()
    multicast = {decode(d.data).mid for d in sent if d.remote == group}
    unicast = {decode(d.data).mid for d in sent if d.remote == DEV_A}
    assert len(multicast) == len(unicast) == 100
    assert all(m >= 0x8000 for m in multicast) and all(m < 0x8000 for m in unicast)


@pytest.mark.parametrize("payload", [b"", b"\x4b\x05payload"])
def test_fast_path_answer_is_replayed_byte_for_byte_to_a_duplicate(
    payload: bytes,
) -> None:
    layer = ExchangeLayer(seed=1)
    local, remote = ("fd00::1", 61628), ("fd00::99", 5683)
    request = encode(Message(Type.CON, Code.GET, 77, b"tk", request_options("c")))
    key = layer.accept_request(local, remote, 77, True, 0.0)
    assert key is not None
    head = bytes((0x60 | 2, Code.CONTENT)) + request[2:6]
    layer.answer_confirmable(key, head, payload)
    (first,) = layer.datagrams_to_send()
    answer = decode(first.data)
    assert (answer.type, answer.mid, answer.token) == (Type.ACK, 77, b"tk")
    assert answer.payload == payload
    assert layer.accept_request(local, remote, 77, True, 1.0) is None  # again
    (again,) = layer.datagrams_to_send()
    assert again == first
    # the generic path sees the same remembered answer
    assert layer.receive_datagram(request, local, remote, 2.0) is None
    (third,) = layer.datagrams_to_send()
    assert third.data == first.data
