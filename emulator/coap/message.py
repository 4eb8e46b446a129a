"""CoAP message codec (RFC 7252, section 3): bytes <-> :class:`Message`.

The lowest CoAP layer, sans-IO and allocation-lean because every datagram of
the fleet and the head-end passes through it. Options are kept as a list of
``(number, value)`` pairs in wire order; the helpers decode the few the CSMP
flows use (Uri-Path, Uri-Query, Content-Format). Block-wise transfer and
Observe are not used by CSMP and are passed through as opaque options.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum


class CoapError(ValueError):
    """A datagram that is not a valid CoAP message; ``reason`` says why."""

    def __init__(self, reason: str, mid: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.mid = mid
        """The message id, when the header was readable (to answer RST)."""


class Type(IntEnum):
    CON = 0
    NON = 1
    ACK = 2
    RST = 3


class Code(IntEnum):
    """Method and response codes as the byte ``class << 5 | detail``."""

    EMPTY = 0
    GET = 1
    POST = 2
    PUT = 3
    DELETE = 4
    CREATED = 65  # 2.01
    DELETED = 66  # 2.02
    VALID = 67  # 2.03
    CHANGED = 68  # 2.04
    CONTENT = 69  # 2.05
    BAD_REQUEST = 128  # 4.00
    UNAUTHORIZED = 129  # 4.01
    BAD_OPTION = 130  # 4.02
    FORBIDDEN = 131  # 4.03
    NOT_FOUND = 132  # 4.04
    METHOD_NOT_ALLOWED = 133  # 4.05
    REQUEST_ENTITY_TOO_LARGE = 141  # 4.13
    INTERNAL_SERVER_ERROR = 160  # 5.00
    SERVICE_UNAVAILABLE = 163  # 5.03


def code_text(code: int) -> str:
    """``2.05`` style text of a code byte."""
    return f"{code >> 5}.{code & 0x1F:02d}"


def is_request(code: int) -> bool:
    return 1 <= code <= 31


def is_success(code: int) -> bool:
    return code >> 5 == 2


class Option(IntEnum):
    URI_HOST = 3
    OBSERVE = 6
    URI_PORT = 7
    URI_PATH = 11
    CONTENT_FORMAT = 12
    URI_QUERY = 15
    BLOCK2 = 23
    BLOCK1 = 27


#: Content-Format of CSMP TLV payloads is not registered; FND sends none.
_PAYLOAD_MARKER = 0xFF


@dataclass(slots=True)
class Message:
    """One CoAP message. ``options`` are (number, value) in ascending order."""

    type: int
    code: int
    mid: int = 0
    token: bytes = b""
    options: list[tuple[int, bytes]] = field(default_factory=list)
    payload: bytes = b""

    @property
    def uri_path(self) -> list[str]:
        return [v.decode("utf-8", "replace") for n, v in self.options if n == 11]

    @property
    def uri_query(self) -> list[str]:
        return [v.decode("utf-8", "replace") for n, v in self.options if n == 15]

    def __repr__(self) -> str:
        return (
            f"<Message {Type(self.type).name} {code_text(self.code)} mid={self.mid}"
            f" token={self.token.hex()} path=/{'/'.join(self.uri_path)}"
            f" query={self.uri_query} payload={len(self.payload)}B>"
        )


def request_options(
    path: str, query: list[str] | None = None
) -> list[tuple[int, bytes]]:
    """Uri-Path and Uri-Query options for ``path`` like ``"c/75"``."""
    options = [(11, seg.encode()) for seg in path.strip("/").split("/") if seg]
    options.extend((15, q.encode()) for q in query or ())
    return options


def _pull_ext(data: bytes, pos: int, nibble: int, mid: int) -> tuple[int, int]:
    if nibble < 13:
        return nibble, pos
    if nibble == 13:
        if pos >= len(data):
            raise CoapError("truncated option", mid)
        return data[pos] + 13, pos + 1
    if nibble == 14:
        if pos + 1 >= len(data):
            raise CoapError("truncated option", mid)
        return ((data[pos] << 8) | data[pos + 1]) + 269, pos + 2
    raise CoapError("reserved option nibble 15", mid)


def decode(data: bytes) -> Message:
    """Parse one datagram; raise :class:`CoapError` when it is not CoAP."""
    if len(data) < 4:
        raise CoapError("datagram shorter than the CoAP header")
    first = data[0]
    if first >> 6 != 1:
        raise CoapError(f"CoAP version {first >> 6}")
    mid = (data[2] << 8) | data[3]
    tkl = first & 0x0F
    if tkl > 8:
        raise CoapError(f"token length {tkl}", mid)
    pos = 4 + tkl
    if pos > len(data):
        raise CoapError("truncated token", mid)
    token = data[4:pos]
    options: list[tuple[int, bytes]] = []
    number = 0
    end = len(data)
    payload = b""
    while pos < end:
        byte = data[pos]
        pos += 1
        if byte == _PAYLOAD_MARKER:
            if pos == end:
                raise CoapError("payload marker without payload", mid)
            payload = data[pos:]
            break
        delta, pos = _pull_ext(data, pos, byte >> 4, mid)
        length, pos = _pull_ext(data, pos, byte & 0x0F, mid)
        if pos + length > end:
            raise CoapError("option value runs past the datagram", mid)
        number += delta
        options.append((number, data[pos : pos + length]))
        pos += length
    return Message((first >> 4) & 0x03, data[1], mid, token, options, payload)


RequestTail = tuple[tuple[str, ...], tuple[str, ...], bytes]
"""Uri-Path segments, Uri-Query options and payload of a request."""


def parse_tail(data: bytes, pos: int) -> RequestTail | None:
    """Uri-Path, Uri-Query and payload of the options starting at ``pos``.

    The fast path's reader for what follows the token: the same checks and
    the same values as :func:`decode` (other options are skipped), None when
    :func:`decode` would raise (the caller then decodes generically).
    """
    path: list[str] = []
    query: list[str] = []
    number = 0
    end = len(data)
    try:
        while pos < end:
            byte = data[pos]
            pos += 1
            if byte == _PAYLOAD_MARKER:
                if pos == end:
                    return None
                return tuple(path), tuple(query), data[pos:]
            delta, length = byte >> 4, byte & 0x0F
            if delta > 12:
                delta, pos = _pull_ext(data, pos, delta, 0)
            if length > 12:
                length, pos = _pull_ext(data, pos, length, 0)
            if pos + length > end:
                return None
            number += delta
            if number == 11:
                path.append(data[pos : pos + length].decode("utf-8", "replace"))
            elif number == 15:
                query.append(data[pos : pos + length].decode("utf-8", "replace"))
            pos += length
    except CoapError:
        return None
    return tuple(path), tuple(query), b""


def ack_head(request: bytes, code: int) -> bytes:
    """Header and token of the ACK answering the (well-formed) CON ``request``
    with ``code``, no options: the request's message id and token reused."""
    tkl = request[0] & 0x0F
    return bytes((0x60 | tkl, code)) + request[2 : 4 + tkl]


def with_payload(head: bytes, payload: bytes) -> bytes:
    """An encoded message without options: ``head``, then ``payload`` behind
    the payload marker when there is one (:func:`encode` of it)."""
    return head + b"\xff" + payload if payload else head


def _ext(value: int) -> tuple[int, bytes]:
    if value < 13:
        return value, b""
    if value < 269:
        return 13, bytes([value - 13])
    value -= 269
    return 14, bytes([value >> 8, value & 0xFF])


def encode(msg: Message) -> bytes:
    """Serialize a message (options must be sorted by number)."""
    token = msg.token
    out = bytearray(
        (
            0x40 | (msg.type << 4) | len(token),
            msg.code,
            (msg.mid >> 8) & 0xFF,
            msg.mid & 0xFF,
        )
    )
    out += token
    last = 0
    for number, value in msg.options:
        d_nib, d_ext = _ext(number - last)
        l_nib, l_ext = _ext(len(value))
        out.append((d_nib << 4) | l_nib)
        out += d_ext
        out += l_ext
        out += value
        last = number
    if msg.payload:
        out.append(_PAYLOAD_MARKER)
        out += msg.payload
    return bytes(out)
