"""Device wire behaviour: registration bytes, answers, GET/POST, signing, async."""

from __future__ import annotations

from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from emulator.coap.message import Code
from emulator.csmp import csmp_pb2 as pb
from emulator.csmp.registry import T, decode_as, encode_tlv
from emulator.csmp.signing import sign_payload
from emulator.csmp.tlv import Tlv, TlvId, pull_tlvs
from emulator.firmware.blockstore import BlockStore
from emulator.node import Device, DeviceProfile, Identity, Send
from emulator.node.builders import get, post, request
from emulator.node.query import parse_query

T0 = 1_700_000_000.0
EUI = 0x00173B0B0012ABCD
IDENTITY = Identity(EUI, "2001:db8::217:3b0b:12:abcd")


def make_device(profile: DeviceProfile | None = None, seed: int = 7) -> Device:
    return Device(IDENTITY, profile or DeviceProfile(), BlockStore(), seed=seed)


def booted(profile: DeviceProfile | None = None) -> tuple[Device, float]:
    dev = make_device(profile)
    dev.power_on(T0)
    now = T0 + dev.profile.boot_time
    assert dev.on_timer(now) == []
    return dev, now


def register(dev: Device, now: float, answer: bytes | None = None) -> float:
    due = dev.next_deadline()
    assert due is not None and due >= now
    sends = dev.on_timer(due)
    assert [s.kind for s in sends] == ["register"]
    if answer is None:
        answer = encode_tlv(T.REPORT_SUBSCRIBE, pb.ReportSubscribe(interval=0))
    dev.on_registration_answer(Code.VALID, answer, due)
    assert dev.registered
    return due


def tlv_ids(payload: bytes) -> list[TlvId]:
    return [t.id for t in pull_tlvs(payload)]


def first(payload: bytes, tlv_type: int) -> Tlv:
    return next(t for t in pull_tlvs(payload) if t.id == (tlv_type, 0))


# ------------------------------------------------------------ registration


def test_silent_while_booting_then_registers_in_trickle_window() -> None:
    dev = make_device()
    dev.power_on(T0)
    assert not dev.online(T0)
    assert dev.handle(get("c/2"), T0 + 1) is None
    assert dev.next_deadline() == T0 + 30
    assert dev.on_timer(T0 + 30) == []
    due = dev.next_deadline()
    assert due is not None
    # first interval I = reg_min: offset in [0, I), then [I/2, I]
    assert T0 + 30 + 15 <= due < T0 + 30 + 60
    sends = dev.on_timer(due)
    assert sends[0].path == "r" and sends[0].confirmable


def _split_raw(payload: bytes) -> list[tuple[bytes, bytes, bytes]]:
    """(type bytes, length bytes, value) with the raw length encoding."""
    out = []
    pos = 0
    while pos < len(payload):
        start = pos
        head = 3 if payload[pos] == 0x7F else 1
        if head == 3:
            head = 1 + 2 + 1  # 127, PEN 5771 (two bytes), subtype 127
        type_bytes = payload[start : start + head]
        pos += head
        length = (payload[pos] & 0x7F) | (payload[pos + 1] << 7)
        out.append(
            (type_bytes, payload[pos : pos + 2], payload[pos + 2 : pos + 2 + length])
        )
        pos += 2 + length
    return out


def test_registration_payload_is_agent_shaped_and_padded() -> None:
    dev, now = booted()
    payload = dev.registration_payload(now)
    # DeviceID first, exactly as the agent writes it: 20 bytes -> 0x94 0x00
    device_id = b"\x02\x94\x00" + b"\x08\x01\x12\x10" + b"00173B0B0012ABCD"
    assert payload.startswith(device_id)
    posix = int(now).to_bytes(4, "little")  # not used: check via decode below
    del posix
    ids = [t.type for t in tlv_ids(payload)]
    assert ids == [
        2,
        18,
        11,
        12,
        12,
        16,
        16,
        16,
        17,
        23,
        23,
        25,
        35,
        13,
        75,
        75,
        75,
        127,
    ]
    raw = _split_raw(payload)
    for _type, length, _value in raw:
        assert len(length) == 2 and length[0] & 0x80 and length[1] < 0x80
    vendor = raw[-1]
    assert vendor[0] == b"\x7f\x8b\x2d\x7f"  # 127, PEN 5771, subtype 127
    assert vendor[1] + vendor[2] == b"\x8d\x00" + b"\x08\x01\x12\x09meshfleet"
    assert decode_as(first(payload, 18), pb.CurrentTime).posix == int(now)


def test_registration_payload_unpadded_when_profile_says_so() -> None:
    dev, now = booted(DeviceProfile(length_width=0))
    assert dev.registration_payload(now).startswith(b"\x02\x14\x08\x01\x12\x10")


def fnd_answer(key: ec.EllipticCurvePrivateKey, now: float) -> bytes:
    body = encode_tlv(
        T.REPORT_SUBSCRIBE, pb.ReportSubscribe(interval=300, tlvid=["23", "25"])
    ) + encode_tlv(T.SESSION_ID, pb.SessionID(id="s-42"))
    return sign_payload(body, key, valid_from=int(now) - 60, valid_until=int(now) + 60)


def test_fnd_answer_signed_is_applied_and_reports_start() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    profile = DeviceProfile(
        req_signed_resp=True, req_valid_check_resp=True, nms_key=key.public_key()
    )
    dev, now = booted(profile)
    due = dev.next_deadline()
    assert due is not None
    dev.on_timer(due)
    answer = fnd_answer(key, due)
    assert tlv_ids(answer)[-2:] == [TlvId(76), TlvId(77)]
    dev.on_registration_answer(Code.VALID, answer, due)
    assert dev.registered and dev.session_id == "s-42"
    assert dev.next_deadline() == due  # first report right away
    (report,) = dev.on_timer(due)
    assert report.kind == "report" and not report.confirmable and report.path == "c"
    assert [t.type for t in tlv_ids(report.payload)] == [7, 18, 23, 23, 25]
    nxt = dev.next_deadline()
    assert nxt is not None and due + 150 <= nxt <= due + 300


def test_registration_answer_failures_keep_retrying() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    profile = DeviceProfile(req_signed_resp=True, nms_key=key.public_key())
    dev, now = booted(profile)
    due = dev.next_deadline()
    assert due is not None
    dev.on_timer(due)
    dev.on_registration_answer(Code.NOT_FOUND, b"", due)
    dev.on_registration_answer(Code.VALID, fnd_answer(other, due), due)
    dev.on_registration_answer(Code.VALID, b"", due)  # the agent needs a TLV
    dev.on_registration_failed(due)
    assert not dev.registered
    second = dev.next_deadline()
    assert second is not None and second > due
    # the interval doubles: second attempt falls in [t0 + I, t0 + 2I]
    assert [s.kind for s in dev.on_timer(second)] == ["register"]
    dev.on_registration_answer(Code.VALID, fnd_answer(key, second), second)
    assert dev.registered


def test_answer_cgms_settings_and_group_assign_applied() -> None:
    dev, now = booted()
    answer = (
        encode_tlv(T.REPORT_SUBSCRIBE, pb.ReportSubscribe(interval=0))
        + encode_tlv(
            T.CGMS_SETTINGS, pb.CGMSSettings(regIntervalMin=5, regIntervalMax=50)
        )
        + encode_tlv(T.GROUP_ASSIGN, pb.Group(type=2, id=9))
    )
    now = register(dev, now, answer)
    assert dev.groups == {2: 9}
    resp = dev.handle(get("c/42"), now)
    assert resp is not None and resp.code == Code.CONTENT
    settings = decode_as(first(resp.payload, 42), pb.CGMSSettings)
    assert (settings.regIntervalMin, settings.regIntervalMax) == (5, 50)


def test_unsupported_tlv_in_answer_fails_registration() -> None:
    dev, now = booted()
    due = dev.next_deadline()
    assert due is not None
    dev.on_timer(due)
    dev.on_registration_answer(
        Code.VALID, encode_tlv(T.HARDWARE_DESC, pb.HardwareDesc()), due
    )
    assert not dev.registered


# -------------------------------------------------------------------- GET


def test_get_index_single_and_indexed() -> None:
    dev, now = booted()
    resp = dev.handle(get("c"), now)
    assert resp is not None and resp.code == Code.CONTENT
    index = decode_as(first(resp.payload, 1), pb.TlvIndex)
    assert {"1", "2", "11", "75", "e5771.127"} <= set(index.tlvid)
    resp = dev.handle(get("c/75"), now)
    assert resp is not None and len(tlv_ids(resp.payload)) == 3
    resp = dev.handle(get("c/75/3"), now)
    assert resp is not None
    info = decode_as(first(resp.payload, 75), pb.FirmwareImageInfo)
    assert info.index == 3 and info.isDefault
    resp = dev.handle(get("c/2"), now)
    assert resp is not None
    assert decode_as(first(resp.payload, 2), pb.DeviceID).id == "00173B0B0012ABCD"


@pytest.mark.parametrize("q", ["q=11+75", "q=11 75", "q=11,75", "q=11+99+75"])
def test_get_query_lists(q: str) -> None:
    dev, now = booted()
    resp = dev.handle(get("c", q), now)
    assert resp is not None and resp.code == Code.CONTENT
    assert [t.type for t in tlv_ids(resp.payload)] == [11, 75, 75, 75]


def test_get_unsupported_alone_is_404_and_bad_paths() -> None:
    dev, now = booted()
    for req in (get("c", "q=99"), get("c/99"), get("x"), get("c/abc"), get("c/75/x/y")):
        resp = dev.handle(req, now)
        assert resp is not None and resp.code == Code.NOT_FOUND, req
    resp = dev.handle(request(Code.DELETE, "c/75"), now)
    assert resp is not None and resp.code == Code.METHOD_NOT_ALLOWED
    resp = dev.handle(request(Code.PUT, "c"), now)
    assert resp is not None and resp.code == Code.METHOD_NOT_ALLOWED


def test_vendor_tlvs_get_and_post() -> None:
    profile = DeviceProfile(vendor_tlvs=((1, b"a"), (2, b"bc")))
    dev, now = booted(profile)
    resp = dev.handle(get("c/e5771.127"), now)
    assert resp is not None
    values = [decode_as(t, pb.VendorTlv) for t in pull_tlvs(resp.payload)]
    assert [(v.subType, v.value) for v in values] == [(1, b"a"), (2, b"bc")]
    resp = dev.handle(get("c/e5771.2"), now)
    assert resp is not None and resp.payload == (
        b"\x7f\x8b\x2d\x02\x86\x00" + b"\x08\x02\x12\x02bc"
    )
    assert dev.handle(get("c/e9.127"), now) == (Code.NOT_FOUND, b"")
    vendor = encode_tlv(TlvId(127, 5771), pb.VendorTlv(subType=3, value=b"x"))
    assert dev.handle(post(vendor), now) == (Code.CREATED, b"")
    bad = encode_tlv(TlvId(127, 5771), pb.VendorTlv(subType=3))
    assert dev.handle(post(bad), now) == (Code.NOT_FOUND, b"")


def test_query_parsing() -> None:
    q = parse_query(("q=11+e5771.127", "a=30", "r=coap://[2001:db8::1]:5683/x/c"))
    assert q.ids == (TlvId(11), TlvId(127, 5771))
    assert q.delay == 30 and q.target == ("2001:db8::1", 5683) and q.path == "x/c"
    assert parse_query(("r=coap://[fd00::1]",)).target == ("fd00::1", 61628)
    assert parse_query(("a=x", "r=nonsense")) == parse_query(())


# ------------------------------------------------------------------- POST


def test_post_errors() -> None:
    dev, now = booted()
    assert dev.handle(post(b"\x41\x05ab"), now) == (Code.BAD_REQUEST, b"")
    assert dev.handle(post(b"\x80"), now) == (Code.BAD_REQUEST, b"")
    unknown = encode_tlv(99, pb.SessionID(id="x"))
    assert dev.handle(post(unknown), now) == (Code.NOT_FOUND, b"")
    assert dev.handle(post(unknown, confirmable=False), now) is None
    get_only = encode_tlv(T.HARDWARE_DESC, pb.HardwareDesc())
    assert dev.handle(post(get_only), now) == (Code.NOT_FOUND, b"")
    assert dev.handle(post(b""), now) == (Code.CREATED, b"")


def test_post_response_tlvs_followed_by_session_and_time() -> None:
    dev, now = booted()
    body = encode_tlv(T.SESSION_ID, pb.SessionID(id="abc")) + encode_tlv(
        T.DESCRIPTION_REQUEST, pb.DescriptionRequest(tlvid=["2", "58", "99"])
    )
    dev.handle(post(encode_tlv(T.GROUP_ASSIGN, pb.Group(type=1, id=4))), now)
    resp = dev.handle(post(body), now)
    assert resp is not None and resp.code == Code.CREATED
    assert [t.type for t in tlv_ids(resp.payload)] == [2, 58, 7, 18]
    assert decode_as(first(resp.payload, 7), pb.SessionID).id == "abc"


def test_groups_assign_replace_evict_info() -> None:
    dev, now = booted()
    for group in (
        pb.Group(type=1, id=4),
        pb.Group(type=2, id=5),
        pb.Group(type=2, id=6),
    ):
        dev.handle(post(encode_tlv(T.GROUP_ASSIGN, group)), now)
    assert dev.groups == {1: 4, 2: 6}
    resp = dev.handle(get("c/58"), now)
    assert resp is not None
    infos = [decode_as(t, pb.Group) for t in pull_tlvs(resp.payload)]
    assert [(g.type, g.id) for g in infos] == [(1, 4), (2, 6)]
    dev.handle(post(encode_tlv(T.GROUP_EVICT, pb.Group(type=2, id=5))), now)
    assert dev.groups == {1: 4, 2: 6}
    dev.handle(post(encode_tlv(T.GROUP_EVICT, pb.Group(type=2, id=6))), now)
    assert dev.groups == {1: 4}


def test_multicast_needs_matching_group() -> None:
    dev, now = booted()
    dev.handle(post(encode_tlv(T.GROUP_ASSIGN, pb.Group(type=1, id=4))), now)
    session = encode_tlv(T.SESSION_ID, pb.SessionID(id="m"))
    nomatch = encode_tlv(T.GROUP_MATCH, pb.Group(type=1, id=5))
    match = encode_tlv(T.GROUP_MATCH, pb.Group(type=1, id=4))
    assert dev.handle(post(session, multicast=True, confirmable=False), now) is None
    assert (
        dev.handle(post(nomatch + session, multicast=True, confirmable=False), now)
        is None
    )
    assert dev.session_id is None
    assert dev.handle(post(nomatch + session), now) == (Code.BAD_REQUEST, b"")
    assert (
        dev.handle(post(match + session, multicast=True, confirmable=False), now)
        is None
    )
    assert dev.session_id == "m"


def test_reboot_request_reboots() -> None:
    dev, now = booted()
    now = register(dev, now)
    resp = dev.handle(post(encode_tlv(T.REBOOT_REQUEST, pb.RebootRequest(flag=1))), now)
    assert resp == (Code.CREATED, b"")
    assert dev.next_deadline() == now
    assert dev.on_timer(now) == []
    assert not dev.registered and not dev.online(now + 1)
    assert dev.handle(get("c/2"), now + 1) is None
    assert dev.online(now + 30)


# -------------------------------------------------------------- async


def test_non_get_answered_async_with_redirect() -> None:
    dev, now = booted()
    req = get("c", "q=2", "a=10", "r=coap://[2001:db8::9]:61629/c", confirmable=False)
    assert dev.handle(req, now) is None
    due = dev.next_deadline()
    assert due is not None and now <= due <= now + 10
    sends = [s for s in dev.on_timer(due) if s.kind == "async"]
    direct = dev.handle(get("c/2"), now)
    assert direct is not None
    target = ("2001:db8::9", 61629)
    assert sends == [Send("c", direct.payload, False, "async", target)]


def test_non_post_description_request_async() -> None:
    dev, now = booted()
    body = encode_tlv(T.DESCRIPTION_REQUEST, pb.DescriptionRequest(tlvid=["75"]))
    assert dev.handle(post(body, "a=5", confirmable=False), now) is None
    due = dev.next_deadline()
    assert due is not None and due <= now + 5
    (send,) = [s for s in dev.on_timer(due) if s.kind == "async"]
    assert send.target is None and send.path == "c"
    assert [t.type for t in tlv_ids(send.payload)] == [75, 75, 75, 18]


def test_jitter_reproducible_per_seed() -> None:
    a, b = make_device(seed=3), make_device(seed=3)
    c = make_device(seed=4)
    for dev in (a, b, c):
        dev.power_on(T0)
        dev.on_timer(T0 + 30)
    assert a.next_deadline() == b.next_deadline() != c.next_deadline()


# ------------------------------------------------------------ signing


@pytest.fixture
def signed() -> tuple[Device, float, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    profile = DeviceProfile(
        req_signed_post=True, req_valid_check_post=True, nms_key=key.public_key()
    )
    dev, now = booted(profile)
    return dev, now, key


def test_signed_post_accepted(
    signed: tuple[Device, float, ec.EllipticCurvePrivateKey],
) -> None:
    dev, now, key = signed
    body = encode_tlv(T.GROUP_ASSIGN, pb.Group(type=2, id=3))
    payload = sign_payload(body, key, valid_from=int(now) - 5, valid_until=int(now) + 5)
    assert dev.handle(post(payload), now) == (Code.CREATED, b"")
    assert dev.groups == {2: 3}


def test_signed_post_refusals_leave_state(
    signed: tuple[Device, float, ec.EllipticCurvePrivateKey],
) -> None:
    dev, now, key = signed
    other = ec.generate_private_key(ec.SECP256R1())
    body = encode_tlv(T.GROUP_ASSIGN, pb.Group(type=2, id=3))
    n = int(now)
    cases = {
        Code.FORBIDDEN: [body],
        Code.UNAUTHORIZED: [
            sign_payload(body, other, valid_from=n - 5, valid_until=n + 5),
            sign_payload(body, key, valid_from=n - 50, valid_until=n - 5),
            sign_payload(body, key, valid_from=n + 5, valid_until=n + 50),
            sign_payload(body, key),  # validity required but absent
            sign_payload(body, key, valid_from=n - 5, valid_until=n + 5)[:-3]
            + b"\0\0\0",
        ],
    }
    before = dev.snapshot()
    for code, payloads in cases.items():
        for payload in payloads:
            assert dev.handle(post(payload), now) == (code, b"")
    assert dev.snapshot() == before


def test_exempt_tlvs_need_no_signature(
    signed: tuple[Device, float, ec.EllipticCurvePrivateKey],
) -> None:
    dev, now, _ = signed
    block = encode_tlv(T.IMAGE_BLOCK, pb.ImageBlock(fileHash=b"1234", blockNum=0))
    desc = encode_tlv(T.DESCRIPTION_REQUEST, pb.DescriptionRequest(tlvid=["2"]))
    assert dev.handle(post(block), now) == (Code.CREATED, b"")
    resp = dev.handle(post(desc), now)
    assert resp is not None and resp.code == Code.CREATED
    resp = dev.handle(get("c/79"), now)
    assert resp is not None
    settings = decode_as(first(resp.payload, 79), pb.SignatureSettings)
    assert settings.reqSignedPost and settings.reqValidCheckPost


def test_profile_is_shared_and_frozen() -> None:
    profile = DeviceProfile()
    with pytest.raises(AttributeError):
        profile.boot_time = 1  # type: ignore[misc]
    assert replace(profile, boot_time=1).boot_time == 1
    assert IDENTITY.eui64_text == "00173B0B0012ABCD"
