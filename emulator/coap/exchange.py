"""Sans-IO CoAP exchange layer (RFC 7252, sections 4 and 5.3) for many endpoints.

One :class:`ExchangeLayer` serves every local address of a process (the fleet's
thousands of devices, or the head-end's one). It does what the message layer
of RFC 7252 asks, keyed by the *pair* of endpoints, never by the remote alone:

- duplicate detection by ``(local, remote, mid)``: a duplicate CON gets the
  cached answer again, a duplicate NON is dropped (section 4.5);
- message ids per ``(local, remote)`` pair for what we send (section 4.4),
  multicast ones in the upper half of the id space, unicast in the lower;
- tokens to match responses, piggybacked or separate, to our requests;
- retransmission of our CON requests with exponential back-off (section 4.2),
  an empty ACK for separate responses, RST for what we cannot match.

Theory of operation: :meth:`receive_datagram` and :meth:`handle_timer` return
events; everything to send is queued and drained by :meth:`datagrams_to_send`;
:meth:`get_timer` gives the one deadline the edge must arm. Time is always
passed in (``now``, seconds). State is bounded: duplicate records expire after
EXCHANGE_LIFETIME (NON_LIFETIME for NON) and are capped in number; idle
message-id counters are dropped after EXCHANGE_LIFETIME.

Memory (a fleet has one message-id counter per device once it registered): a
counter is one int in a dict keyed by the pair, in two generations that
rotate every EXCHANGE_LIFETIME; a counter not used for a whole generation is
dropped at the next rotation (between one and two lifetimes after its last
use). Dicts emptied after a burst (pending requests) are replaced, so that
their peak size is not kept.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple, TypeAlias

from emulator.coap.message import (
    CoapError,
    Message,
    Type,
    decode,
    encode,
    is_request,
    parse_tail,
    with_payload,
)

Addr: TypeAlias = tuple[str, int]
"""An endpoint: (IPv6 address text, UDP port)."""


@dataclass(frozen=True, slots=True)
class TransportTuning:
    """RFC 7252 section 4.8 transmission parameters (defaults as specified)."""

    ack_timeout: float = 2.0
    ack_random_factor: float = 1.5
    max_retransmit: int = 4
    exchange_lifetime: float = 247.0
    non_lifetime: float = 145.0
    max_dedup_records: int = 500_000
    """Cap on remembered message ids; the oldest go first beyond it."""


class Datagram(NamedTuple):
    """A datagram to send from ``local`` to ``remote``."""

    data: bytes
    local: Addr
    remote: Addr


Cached = bytes | tuple[bytes, bytes] | None
"""A remembered answer: the encoded datagram, (head, payload) of a fast-path
ACK (see :meth:`ExchangeLayer.answer_confirmable`), or None (NON, or not
answered yet)."""


def _replay(cached: bytes | tuple[bytes, bytes]) -> bytes:
    """The datagram of a remembered answer, for a duplicate request."""
    if isinstance(cached, bytes):
        return cached
    return with_payload(*cached)


_datagram = tuple.__new__
"""``_datagram(Datagram, (data, local, remote))``: a Datagram without the
Python-level ``__new__`` of a NamedTuple (hot paths)."""


class IncomingRequest(NamedTuple):
    """A new (not duplicate) request; answer it with :meth:`respond`."""

    message: Message
    local: Addr
    remote: Addr


class IncomingResponse(NamedTuple):
    """A response to a request we sent with :meth:`ExchangeLayer.request`."""

    handle: int
    message: Message
    local: Addr
    remote: Addr


class RequestFailed(NamedTuple):
    """Our CON request got no answer after MAX_RETRANSMIT, or an RST."""

    handle: int
    local: Addr
    remote: Addr
    reason: str


Event: TypeAlias = IncomingRequest | IncomingResponse | RequestFailed


@dataclass(slots=True)
class _Pending:
    handle: int
    datagram: Datagram
    mid: int
    confirmable: bool
    attempts: int
    timeout: float
    deadline: float
    acked: bool = False


class ExchangeLayer:
    """The message and token layers of CoAP for every local endpoint at once."""

    def __init__(
        self, tuning: TransportTuning | None = None, *, seed: int | None = None
    ) -> None:
        self.tuning = tuning or TransportTuning()
        self._rng = random.Random(seed)
        self._out: list[Datagram] = []
        # (local, remote, mid) -> cached answer (None: NON or not yet answered)
        self._seen: dict[tuple[Addr, Addr, int], Cached] = {}
        self._seen_order: deque[tuple[float, tuple[Addr, Addr, int]]] = deque()
        # (local, remote) -> next mid: used in this generation, in the last one
        self._mids: dict[tuple[Addr, Addr], int] = {}
        self._mids_old: dict[tuple[Addr, Addr], int] = {}
        self._mids_rotate = 0.0
        # (local, remote, token) -> pending request; (local, remote, mid) -> same
        self._by_token: dict[tuple[Addr, Addr, bytes], _Pending] = {}
        self._by_mid: dict[tuple[Addr, Addr, int], _Pending] = {}
        self._timers: list[tuple[float, int, tuple[Addr, Addr, bytes]]] = []
        self._next_handle = 1
        self._token_counter = self._rng.getrandbits(32)
        self.stats = {"duplicates": 0, "malformed": 0, "retransmits": 0, "rst": 0}

    # -- receiving -------------------------------------------------------

    def receive_datagram(
        self, data: bytes, local: Addr, remote: Addr, now: float
    ) -> Event | None:
        """Process one datagram; return the event it makes, if any."""
        try:
            msg = decode(data)
        except CoapError as exc:
            self.stats["malformed"] += 1
            if exc.mid is not None and data[0] >> 4 & 3 == Type.CON:
                self._queue(Message(Type.RST, 0, exc.mid), local, remote)
            return None
        if is_request(msg.code):
            return self._receive_request(msg, local, remote, now)
        if msg.code == 0:
            return self._receive_empty(msg, local, remote, now)
        return self._receive_response(msg, local, remote, now)

    def _receive_request(
        self, msg: Message, local: Addr, remote: Addr, now: float
    ) -> IncomingRequest | None:
        if msg.type > Type.NON:
            self.stats["malformed"] += 1
            return None
        key = (local, remote, msg.mid)
        if key in self._seen:
            self.stats["duplicates"] += 1
            cached = self._seen[key]
            if cached is not None:
                self._out.append(Datagram(_replay(cached), local, remote))
            return None
        self._remember(key, now, msg.type == Type.CON)
        return IncomingRequest(msg, local, remote)

    def _receive_empty(
        self, msg: Message, local: Addr, remote: Addr, now: float
    ) -> RequestFailed | None:
        if msg.type == Type.CON:  # CoAP ping
            self._queue(Message(Type.RST, 0, msg.mid), local, remote)
            return None
        pending = self._by_mid.get((local, remote, msg.mid))
        if pending is None:
            return None
        if msg.type == Type.ACK:  # a separate response follows: stop resending
            if not pending.acked:
                pending.acked = True
                pending.deadline = now + self.tuning.exchange_lifetime
                tkey = (local, remote, decode_token(pending.datagram.data))
                heapq.heappush(self._timers, (pending.deadline, pending.handle, tkey))
            return None
        self.stats["rst"] += 1
        self._forget(pending, local, remote)
        return RequestFailed(pending.handle, local, remote, "reset by peer")

    def _receive_response(
        self, msg: Message, local: Addr, remote: Addr, now: float
    ) -> IncomingResponse | None:
        if msg.type == Type.CON:
            key = (local, remote, msg.mid)
            if key in self._seen:
                self.stats["duplicates"] += 1
                self._queue(Message(Type.ACK, 0, msg.mid), local, remote)
                return None
            self._remember(key, now, True)
        pending = self._by_token.get((local, remote, msg.token))
        if pending is None:
            if msg.type == Type.CON:
                self._queue(Message(Type.RST, 0, msg.mid), local, remote)
            return None
        if msg.type == Type.CON:
            self._queue(Message(Type.ACK, 0, msg.mid), local, remote)
        self._forget(pending, local, remote)
        return IncomingResponse(pending.handle, msg, local, remote)

    # -- fast path -------------------------------------------------------

    def accept_request(
        self, local: Addr, remote: Addr, mid: int, confirmable: bool, now: float
    ) -> tuple[Addr, Addr, int] | None:
        """Duplicate check of a request decoded by the caller (fast path).

        The same as :meth:`receive_datagram` does for a well-formed CON or NON
        request: a duplicate is counted, its cached answer queued again, and
        None returned; a new one is remembered and its key returned, for
        :meth:`answer_confirmable`.
        """
        key = (local, remote, mid)
        seen = self._seen
        if key in seen:
            self.stats["duplicates"] += 1
            cached = seen[key]
            if cached is not None:
                self._out.append(Datagram(_replay(cached), local, remote))
            return None
        self._remember(key, now, confirmable)
        return key

    def forget_request(self, key: tuple[Addr, Addr, int]) -> None:
        """Forget a request that its endpoint never took in (a device that
        was off or booting): a retransmission is then a new request, not a
        duplicate with no answer to repeat. ``key`` as :meth:`accept_request`
        returns it, or ``(local, remote, mid)`` of an :class:`IncomingRequest`.
        """
        self._seen.pop(key, None)

    def accept_response(
        self, data: bytes, local: Addr, remote: Addr
    ) -> tuple[int, int, bytes] | None:
        """Match a piggybacked response to a request of ours (fast path).

        For a well-formed ACK carrying a response code whose token matches a
        pending request: the request is forgotten and ``(handle, code,
        payload)`` returned, as :meth:`receive_datagram` would do (its event:
        :class:`IncomingResponse`). None for anything else, untouched: the
        caller then hands the datagram to :meth:`receive_datagram`.
        """
        end = len(data)
        if end < 4:
            return None
        first, code = data[0], data[1]
        tkl = first & 0x0F
        pos = 4 + tkl
        if first & 0xF0 != 0x60 or tkl > 8 or pos > end or code < 64:
            return None
        pending = self._by_token.get((local, remote, data[4:pos]))
        if pending is None:
            return None
        tail = parse_tail(data, pos)
        if tail is None:
            return None
        self._forget(pending, local, remote)
        return pending.handle, code, tail[2]

    def answer_confirmable(
        self, key: tuple[Addr, Addr, int], head: bytes, payload: bytes
    ) -> None:
        """Queue the piggybacked ACK of the CON request :meth:`accept_request`
        returned ``key`` for, ``head`` (header and token, no options) then
        ``payload``, and remember it for duplicates (what :meth:`respond`
        does for a CON).

        Kept as the pair, not the joined bytes: answers are remembered for
        EXCHANGE_LIFETIME and a device's payload is usually one shared object,
        so 60,000 answers a second retained ~300 bytes each otherwise (the
        fleet answered 10-15 % fewer GETs a second for it)."""
        seen = self._seen
        if key in seen:
            seen[key] = (head, payload)
        data = with_payload(head, payload)
        self._out.append(_datagram(Datagram, (data, key[0], key[1])))

    # -- answering -------------------------------------------------------

    def respond(
        self,
        request: IncomingRequest,
        code: int,
        payload: bytes = b"",
        options: list[tuple[int, bytes]] | None = None,
        *,
        now: float,
    ) -> None:
        """Answer a request: piggybacked ACK for CON, a NON response for NON."""
        req = request.message
        if req.type == Type.CON:
            msg = Message(Type.ACK, code, req.mid, req.token, options or [], payload)
            data = encode(msg)
            key = (request.local, request.remote, req.mid)
            if key in self._seen:
                self._seen[key] = data
        else:
            mid = self._next_mid(request.local, request.remote, now)
            msg = Message(Type.NON, code, mid, req.token, options or [], payload)
            data = encode(msg)
        self._out.append(Datagram(data, request.local, request.remote))

    def acknowledge(self, request: IncomingRequest) -> None:
        """Empty ACK for a CON request that will not be answered (e.g. silence)."""
        if request.message.type == Type.CON:
            self._queue(Message(Type.ACK, 0, request.message.mid), *request[1:])

    # -- requesting ------------------------------------------------------

    def request(
        self,
        local: Addr,
        remote: Addr,
        message: Message,
        now: float,
        *,
        expect_response: bool = True,
    ) -> int:
        """Send a request; fills in mid and token; return a handle.

        CON requests are retransmitted until answered or failed. A NON request
        with ``expect_response`` waits EXCHANGE_LIFETIME for a NON response,
        then is forgotten silently.
        """
        message.mid = self._next_mid(local, remote, now)
        if expect_response or message.type == Type.CON:
            message.token = self._new_token()
        datagram = Datagram(encode(message), local, remote)
        self._out.append(datagram)
        handle = self._next_handle
        self._next_handle += 1
        if not (expect_response or message.type == Type.CON):
            return handle
        confirmable = message.type == Type.CON
        t = self.tuning
        timeout = t.ack_timeout * self._rng.uniform(1.0, t.ack_random_factor)
        deadline = now + (timeout if confirmable else t.exchange_lifetime)
        pending = _Pending(
            handle, datagram, message.mid, confirmable, 0, timeout, deadline
        )
        tkey = (local, remote, message.token)
        self._by_token[tkey] = pending
        self._by_mid[(local, remote, message.mid)] = pending
        heapq.heappush(self._timers, (deadline, handle, tkey))
        return handle

    def send_non(self, local: Addr, remote: Addr, message: Message, now: float) -> None:
        """Send a NON message that expects no answer (multicast, async reply)."""
        self.request(local, remote, message, now, expect_response=False)

    # -- timers ----------------------------------------------------------

    def get_timer(self) -> float | None:
        """The earliest deadline at which :meth:`handle_timer` has work."""
        candidates = []
        if self._timers:
            candidates.append(self._timers[0][0])
        if self._seen_order:
            candidates.append(self._seen_order[0][0])
        if self._mids or self._mids_old:
            candidates.append(self._mids_rotate)
        return min(candidates) if candidates else None

    def handle_timer(self, now: float) -> list[Event]:
        """Retransmit, fail timed-out requests, expire old state."""
        events: list[Event] = []
        while self._timers and self._timers[0][0] <= now:
            deadline, handle, tkey = heapq.heappop(self._timers)
            pending = self._by_token.get(tkey)
            if pending is None or pending.handle != handle:
                continue
            if pending.deadline != deadline:
                continue
            failed = self._retransmit_or_fail(pending, tkey, now)
            if failed is not None:
                events.append(failed)
        self._expire(now)
        return events

    def _retransmit_or_fail(
        self, pending: _Pending, tkey: tuple[Addr, Addr, bytes], now: float
    ) -> RequestFailed | None:
        local, remote = tkey[0], tkey[1]
        if not pending.confirmable or pending.acked:
            # NON request or ACKed CON: give up waiting for the response
            reason = "no response" if pending.acked else ""
            self._forget(pending, local, remote)
            if pending.confirmable:
                return RequestFailed(pending.handle, local, remote, reason)
            return None
        if pending.attempts >= self.tuning.max_retransmit:
            self._forget(pending, local, remote)
            return RequestFailed(pending.handle, local, remote, "no answer")
        pending.attempts += 1
        pending.timeout *= 2
        pending.deadline = now + pending.timeout
        self.stats["retransmits"] += 1
        self._out.append(pending.datagram)
        heapq.heappush(self._timers, (pending.deadline, pending.handle, tkey))
        return None

    def _expire(self, now: float) -> None:
        seen, order = self._seen, self._seen_order
        while order and (
            order[0][0] <= now or len(seen) > self.tuning.max_dedup_records
        ):
            seen.pop(order.popleft()[1], None)
        if now >= self._mids_rotate:
            self._rotate_mids(now)

    def _rotate_mids(self, now: float) -> None:
        """Start a new generation of message-id counters (see the module doc)."""
        life = self.tuning.exchange_lifetime
        if now >= self._mids_rotate + life:  # idle for a whole generation
            self._mids_old = {}
        else:
            self._mids_old = self._mids
        self._mids = {}
        self._mids_rotate = now + life

    # -- draining --------------------------------------------------------

    def datagrams_to_send(self) -> list[Datagram]:
        """Everything queued since the last call, in order."""
        out, self._out = self._out, []
        return out

    @property
    def pending_requests(self) -> int:
        return len(self._by_token)

    # -- internals -------------------------------------------------------

    def _queue(self, msg: Message, local: Addr, remote: Addr) -> None:
        self._out.append(Datagram(encode(msg), local, remote))

    def _remember(self, key: tuple[Addr, Addr, int], now: float, con: bool) -> None:
        t = self.tuning
        self._seen[key] = None
        life = t.exchange_lifetime if con else t.non_lifetime
        self._seen_order.append((now + life, key))
        if len(self._seen) > t.max_dedup_records:
            self._expire(now)

    def _next_mid(self, local: Addr, remote: Addr, now: float) -> int:
        if now >= self._mids_rotate:
            self._rotate_mids(now)
        pair = (local, remote)
        mids = self._mids
        mid = mids.get(pair)
        if mid is None:
            mid = self._mids_old.pop(pair, None)
            if mid is None:
                mid = self._rng.getrandbits(16)
        mids[pair] = (mid + 1) & 0xFFFF
        # Multicast and unicast message ids come from disjoint halves, so that
        # a device keying duplicates by (source, mid) alone never mistakes a
        # unicast message for a group message it saw (or the other way round).
        if remote[0][:2].lower() == "ff":
            return mid | 0x8000
        return mid & 0x7FFF

    def _new_token(self) -> bytes:
        self._token_counter = (self._token_counter + 1) & 0xFFFFFFFF
        return self._token_counter.to_bytes(4, "big")

    def _forget(self, pending: _Pending, local: Addr, remote: Addr) -> None:
        token = decode_token(pending.datagram.data)
        self._by_token.pop((local, remote, token), None)
        self._by_mid.pop((local, remote, pending.mid), None)
        if not self._by_token:  # after a burst: do not keep the peak's tables
            self._by_token, self._by_mid = {}, {}


def decode_token(data: bytes) -> bytes:
    """The token of an encoded message (header already validated)."""
    return data[4 : 4 + (data[0] & 0x0F)]
