"""One emulated CG-mesh device speaking CSMP (sans-IO: no socket, no clock).

Device layer, CSMP.md sections "Transport" (GET/POST on ``/c``, query options,
async answers, registration on ``/r`` with its trickle retry, reports),
"Signed POSTs", "Group flows" and "Firmware slots and response codes". The
reference agent (``csmpserver.c``, ``cgmsagent.c``) is the authority on wire
behaviour; differences from CSMP.md are noted where they are decided.

The fleet runtime feeds a :class:`Device` requests (:meth:`Device.handle`),
registration outcomes and timer ticks (:meth:`Device.on_timer` whenever
``now >= next_deadline()``), and sends whatever comes back. Time is always the
``now`` argument (POSIX seconds). A device is small (``__slots__``, shared
profile and images, bitmaps as ints, a counter-based PRNG).
"""

from __future__ import annotations

import functools
import logging
import random
import string
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from google.protobuf.message import Message

from emulator.coap.message import Code, is_success
from emulator.csmp import csmp_pb2 as pb
from emulator.csmp.registry import GROUP_CONFIG, GROUP_FIRMWARE, T, decode_as
from emulator.csmp.registry import encode_tlv as _encode_tlv
from emulator.csmp.signing import SignatureStatus, check_signature
from emulator.csmp.tlv import CodecError, Tlv, TlvId, pull_tlvs, push_tlv, push_varint
from emulator.firmware import bitmap
from emulator.firmware.blockstore import BlockStore, ImageKey
from emulator.node import describe, snapshot
from emulator.node.firmware import HASH_LEN, UPLOAD, Firmware, Rc, Upload
from emulator.node.io import Request, Response, Send
from emulator.node.memo import IdentityMemo, decode_shared
from emulator.node.profile import (
    NO_GROUPS,
    DeviceFaults,
    DeviceProfile,
    Identity,
    SlotImage,
    UploadState,
    intern_ids,
    intern_image,
    shared_groups,
)
from emulator.node.query import Query, parse_query
from emulator.node.rng import uniform
from emulator.node.template import Template, build_template

logger = logging.getLogger(__name__)

#: Registration TLVs, in the agent's order (the vendor TLV is appended).
REGISTRATION_TLVS = (
    T.DEVICE_ID,
    T.CURRENT_TIME,
    T.HARDWARE_DESC,
    T.INTERFACE_DESC,
    T.IP_ADDRESS,
    T.IP_ROUTE,
    T.INTERFACE_METRICS,
    T.IP_ROUTE_RPL_METRICS,
    T.WPAN_STATUS,
    T.GROUP_INFO,
    T.REPORT_SUBSCRIBE,
    T.FIRMWARE_IMAGE_INFO,
)
#: TLVs a POST may carry without a signature (the agent's exempt list).
SIGNATURE_EXEMPT = frozenset({T.DESCRIPTION_REQUEST, T.IMAGE_BLOCK})
#: TLVs the POST loop passes over (handled before it).
_PRE_PROCESSED = frozenset({T.SIGNATURE, T.SIGNATURE_VALIDITY, T.GROUP_MATCH})
#: Vendor TLV subtype with which a device reports a failed boot of a new
#: image (value: that image's file hash) in its next registration.
BOOT_FAILED_SUBTYPE = 0xBF
#: Most async answers a device holds at once (the agent holds one).
MAX_PENDING_ASYNC = 8

_GROUP_TYPES = (GROUP_CONFIG, GROUP_FIRMWARE)
# Enum members used per request, bound once: looking one up on its class
# costs about 0.2 us on Python 3.11.
_GET, _POST = Code.GET, Code.POST
_CONTENT, _NOT_FOUND = Code.CONTENT, Code.NOT_FOUND
_IMAGE_INFO = T.FIRMWARE_IMAGE_INFO

Getter = Callable[["Device", float, int], Sequence[Message]]
Poster = Callable[["Device", Tlv, float], bytes]


class _Unsupported(Exception):
    """A POSTed TLV the device does not accept (agent: CSMP_OP_UNSUPPORTED)."""


class Device:
    """One CSMP endpoint: request handling, registration, reports, firmware."""

    __slots__ = (
        "identity",
        "profile",
        "store",
        "faults",
        "_seed",
        "_draws",
        "_fw",
        "_groups",
        "_session",
        "_rep_interval",
        "_rep_ids",
        "_reg_min",
        "_reg_max",
        "_powered",
        "_boot_until",
        "_boot_at",
        "_registered",
        "_reg_due",
        "_reg_t0",
        "_reg_ivl",
        "_rep_due",
        "_reboot_due",
        "_asyncs",
        "_prev_run",
        "_boot_failed",
    )

    def __init__(
        self,
        identity: Identity,
        profile: DeviceProfile,
        store: BlockStore,
        *,
        seed: int,
        run_image: ImageKey | SlotImage | None = None,
        run_name: str = "",
        run_version: str = "",
        run_size: int = 0,
        backup_image: SlotImage | None = None,
        faults: DeviceFaults | None = None,
    ) -> None:
        self.identity = identity
        self.profile = profile
        self.store = store
        self.faults = faults
        """Injected faults (None: healthy); the runtime may replace it."""
        self._seed = seed
        self._draws = 0
        run = _slot_image(run_image, run_name, run_version, run_size, profile)
        backup = intern_image(backup_image) if backup_image else None
        self._fw = Firmware(run, backup)
        self._groups = NO_GROUPS
        self._session: str | None = None
        self._rep_interval = profile.report_interval
        self._rep_ids = intern_ids(tuple(profile.report_tlvs))
        self._reg_min = profile.reg_min
        self._reg_max = profile.reg_max
        self._powered = False
        self._boot_until: float | None = None
        self._boot_at = 0.0
        self._prev_run: SlotImage | None = None
        self._boot_failed: bytes | None = None
        self._reset_volatile()

    def _reset_volatile(self) -> None:
        self._registered = False
        self._reg_due: float | None = None
        self._reg_t0 = 0.0
        self._reg_ivl = 0.0
        self._rep_due: float | None = None
        self._reboot_due: float | None = None
        self._asyncs: list[tuple[float, Send]] | None = None

    # -------------------------------------------------------- observability

    @property
    def registered(self) -> bool:
        """Whether the NMS accepted the current registration."""
        return self._registered

    def online(self, now: float) -> bool:
        """Powered and done booting at ``now``."""
        return self._powered and (self._boot_until is None or now >= self._boot_until)

    @property
    def booting(self) -> bool:
        """A boot started and not finished yet (even one due now: with a boot
        time of 0 the device is online again at once but has not settled)."""
        return self._boot_until is not None

    @property
    def running_version(self) -> str:
        """Version of the RUN slot's image ("" when none)."""
        run = self._fw.run
        return run.version if run is not None else ""

    @property
    def backup_version(self) -> str:
        """Version of the BACKUP slot's image ("" when none)."""
        backup = self._fw.backup
        return backup.version if backup is not None else ""

    @property
    def upload_state(self) -> UploadState:
        """State of the UPLOAD slot."""
        return self._fw.upload_state()

    @property
    def firmware(self) -> Firmware:
        """The slots (read-only use, for tests and tools)."""
        return self._fw

    @property
    def groups(self) -> dict[int, int]:
        """Group type -> id, for the groups the device is in."""
        return {t: g for t, g in zip(_GROUP_TYPES, self._groups, strict=True) if g}

    @property
    def group_ids(self) -> tuple[int, int]:
        """(config group id, firmware group id), 0 for none (cheap to compare)."""
        return self._groups

    @property
    def booted_at(self) -> float:
        """When the current boot finished (0.0 before the first one): a new
        value means the device lost its volatile state (exchanges included)."""
        return self._boot_at

    @property
    def session_id(self) -> str | None:
        """The SessionID the NMS gave the device."""
        return self._session

    # --------------------------------------------------------------- power

    def power_on(self, now: float) -> None:
        """Boot: silent for the profile's boot time, then register."""
        self._powered = True
        self._boot(now)

    def power_cycle(self, now: float) -> None:
        """Lose volatile state (pending load included), keep flash; boot."""
        self._fw.cancel_pending()
        self._prev_run = None
        self._powered = True
        self._boot(now)

    def power_off(self) -> None:
        """Stop: no answers, no timers, until :meth:`power_on`."""
        self._powered = False
        self._boot_until = None
        self._reset_volatile()

    def _boot(self, now: float) -> None:
        self._reset_volatile()
        self._boot_until = now + self.profile.boot_time
        logger.debug("%016X: booting until %.1f", self.identity.eui64, self._boot_until)

    def _settle(self, now: float) -> bool:
        """Finish a boot that is due; True when the device is online."""
        if not self._powered:
            return False
        if self._boot_until is not None:
            if now < self._boot_until:
                return False
            self._finish_boot(self._boot_until, now)
        return True

    def _finish_boot(self, booted: float, now: float) -> None:
        self._boot_until = None
        self._boot_at = booted
        previous, self._prev_run = self._prev_run, None
        faults, new = self.faults, self._fw.run
        if previous is not None and new is not None and faults and faults.fail_boot:
            logger.debug("%016X: %s failed to boot", self.identity.eui64, new.version)
            self._boot_failed = new.key.file_hash
            self._fw.run = previous
        self._start_registration(now)

    def _rand(self) -> float:
        value = uniform(self._seed, self._draws)
        self._draws += 1
        return value

    # --------------------------------------------------------------- timers

    def next_deadline(self) -> float | None:
        """When :meth:`on_timer` has something to do (None: nothing)."""
        if not self._powered:
            return None
        if self._boot_until is not None:
            return self._boot_until
        first = self._reg_due
        for t in (self._rep_due, self._reboot_due):
            if t is not None and (first is None or t < first):
                first = t
        if self._fw.load_slot and (first is None or self._fw.load_due < first):
            first = self._fw.load_due
        if self._asyncs:
            due = min(due for due, _ in self._asyncs)
            if first is None or due < first:
                first = due
        return first

    def on_timer(self, now: float) -> list[Send]:
        """Run what is due at ``now``; returns the requests to send."""
        if not self._settle(now):
            return []
        if self._reboot_due is not None and now >= self._reboot_due:
            self._reboot(now)
            return []
        if self._fw.load_slot and now >= self._fw.load_due:
            self._load(now)
            return []
        sends: list[Send] = []
        if self._reg_due is not None and now >= self._reg_due:
            sends.append(self._registration_send(now))
        if self._rep_due is not None and now >= self._rep_due:
            sends.append(self._report_send(now))
        if self._asyncs:
            sends.extend(self._due_asyncs(now))
        return sends

    def _reboot(self, now: float) -> None:
        logger.debug("%016X: rebooting", self.identity.eui64)
        self._boot(now)

    def _load(self, now: float) -> None:
        image = self._fw.take_load()
        if image is None:
            return
        logger.debug("%016X: loading %s", self.identity.eui64, image.version)
        self._prev_run, self._fw.run = self._fw.run, image
        self._boot(now)

    def _due_asyncs(self, now: float) -> list[Send]:
        assert self._asyncs is not None
        due = [send for t, send in self._asyncs if t <= now]
        self._asyncs = [(t, s) for t, s in self._asyncs if t > now] or None
        return due

    def _queue_async(self, payload: bytes, query: Query, now: float) -> None:
        bound = query.delay or self.profile.async_default_delay
        send = Send(query.path, payload, False, "async", query.target)
        pending = self._asyncs or []
        if len(pending) >= MAX_PENDING_ASYNC:
            pending.pop(0)
        pending.append((now + self._rand() * bound, send))
        self._asyncs = pending

    # --------------------------------------------------------- registration

    def _start_registration(self, now: float) -> None:
        """Trickle as the agent runs it: I = reg_min, first in [I/2, I]
        after a random offset below I, then doubling up to reg_max."""
        ivl = float(max(self._reg_min, 1))
        self._reg_ivl = ivl
        self._reg_t0 = now + self._rand() * ivl
        self._reg_due = self._reg_t0 + ivl / 2 + self._rand() * ivl / 2

    def _advance_registration(self, now: float) -> None:
        self._reg_t0 = max(self._reg_t0 + self._reg_ivl, now)
        ivl = min(self._reg_ivl * 2, float(max(self._reg_max, self._reg_min, 1)))
        self._reg_ivl = ivl
        self._reg_due = self._reg_t0 + ivl / 2 + self._rand() * ivl / 2

    def registration_payload(self, now: float) -> bytes:
        """The TLVs of a registration POST /r (lengths padded as the agent).

        Rendered from the profile's :class:`~emulator.node.template.Template`
        (the same bytes as :meth:`registration_payload_generic`, which is used
        when there is no template for this device).
        """
        template = _registration_template(self)
        values = self._registration_values(now) if template is not None else None
        if template is None or values is None:
            return self.registration_payload_generic(now)
        payload = template.render(values)
        if self._boot_failed is not None:
            payload += self._boot_failed_tlv()
        return payload

    def _registration_values(self, now: float) -> list[bytes] | None:
        """The hole values of the registration template (None: go generic)."""
        ident = self.identity
        eui64 = ident.eui64
        uptime = int(now - self._boot_at)
        if not 0 <= eui64 <= _MAX_EUI64 or uptime < 0:
            return None
        width = self.profile.length_width
        g0, g1 = self._groups
        return [
            _time_tlv(int(now) & 0xFFFFFFFF, width),
            self._cached_tlv(("m", min(uptime, 10), width), T.INTERFACE_METRICS, now),
            self._cached_tlv(("g", g0, g1, width), T.GROUP_INFO, now),
            self._cached_tlv(
                ("r", self._rep_interval, self._rep_ids, width), T.REPORT_SUBSCRIBE, now
            ),
            self._read_image_info(0),
            f"{eui64:016X}".encode(),
            eui64.to_bytes(8, "big"),
            describe.link_local_iid(ident),
            describe.packed_address(ident.address),
            ident.serial.encode(),
        ]

    def _cached_tlv(self, key: tuple[Any, ...], tlv_type: int, now: float) -> bytes:
        """A TLV whose encoding depends only on ``key`` (which has the width)."""
        data = _SMALL_TLVS.get(key)
        if data is None:
            data = self._read(TlvId(tlv_type), now) or b""
            if len(_SMALL_TLVS) >= 4096:
                _SMALL_TLVS.clear()
            _SMALL_TLVS[key] = data
        return data

    def _boot_failed_tlv(self) -> bytes:
        assert self._boot_failed is not None
        failed = pb.VendorTlv(subType=BOOT_FAILED_SUBTYPE, value=self._boot_failed)
        return self._encode(TlvId(T.VENDOR, self.profile.vendor_pen), failed)

    def registration_payload_generic(self, now: float) -> bytes:
        """:meth:`registration_payload` TLV by TLV (the reference encoder)."""
        parts = [self._read(TlvId(t), now) or b"" for t in REGISTRATION_TLVS]
        parts.append(self._read(TlvId(T.VENDOR, self.profile.vendor_pen), now) or b"")
        if self._boot_failed is not None:
            parts.append(self._boot_failed_tlv())
        return b"".join(parts)

    def _registration_send(self, now: float) -> Send:
        self._advance_registration(now)
        logger.debug("%016X: registering", self.identity.eui64)
        return Send("r", self.registration_payload(now), True, "register")

    def on_registration_answer(self, code: int, payload: bytes, now: float) -> None:
        """The NMS answered the registration CON with ``code``.

        A 2.xx answer's TLVs are applied as if POSTed (signature checked when
        the profile requires signed responses). A non-2.xx answer, a bad
        signature, an empty body (the agent needs at least one TLV) or a TLV
        the device cannot apply is a failure: the trickle timer goes on.
        Anything to send (the first report) comes from :meth:`on_timer`.
        """
        if not self._settle(now) or self._registered or self._reg_due is None:
            return
        reason = self._registration_error(code, payload, now)
        if reason:
            logger.debug("%016X: registration failed: %s", self.identity.eui64, reason)
            return
        self._registered = True
        self._reg_due = None
        self._boot_failed = None
        if self._rep_interval:
            self._rep_due = now
        logger.debug("%016X: registered", self.identity.eui64)

    def _registration_error(self, code: int, payload: bytes, now: float) -> str:
        if not is_success(code):
            return f"answer code {code >> 5}.{code & 0x1F:02d}"
        try:
            tlvs = pull_tlvs(payload)
        except CodecError as exc:
            return exc.reason
        if not tlvs:
            return "empty answer"
        if self.profile.req_signed_resp:
            check = check_signature(
                payload,
                tlvs,
                self.profile.nms_key,
                now=now,
                require_validity=self.profile.req_valid_check_resp,
            )
            if check.status is not SignatureStatus.OK:
                return f"signature {check.status.value}: {check.reason}"
        return self._apply_answer(tlvs, now)

    def _apply_answer(self, tlvs: list[Tlv], now: float) -> str:
        for tlv in tlvs:
            if tlv.id in _SIGNATURE_IDS:
                continue
            try:
                self._apply(tlv, now)
            except (_Unsupported, CodecError):
                return f"cannot apply TLV {tlv.id}"
        return ""

    def on_registration_failed(self, now: float) -> None:
        """The registration CON timed out; the trickle timer retries."""
        logger.debug("%016X: registration timed out", self.identity.eui64)

    # -------------------------------------------------------------- reports

    def _schedule_report(self, now: float) -> None:
        ivl = self._rep_interval
        self._rep_due = now + ivl * (0.5 + 0.5 * self._rand()) if ivl else None

    def _report_send(self, now: float) -> Send:
        self._schedule_report(now)
        parts = [self._session_and_time(now)]
        for text in self._rep_ids:
            try:
                parts.append(self._read(TlvId.parse(text), now) or b"")
            except CodecError:
                continue
        return Send("c", b"".join(parts), False, "report")

    def _session_and_time(self, now: float) -> bytes:
        return (self._read(TlvId(T.SESSION_ID), now) or b"") + (
            self._read(TlvId(T.CURRENT_TIME), now) or b""
        )

    # ------------------------------------------------------------- requests

    def handle(self, req: Request, now: float) -> Response | None:
        """Answer one CoAP request; None means stay silent.

        Silent while offline, for a NON request (its answer, if any, goes out
        later from :meth:`on_timer` as a NON POST), and for a multicast POST
        without a matching GroupMatch.
        """
        if not self._settle(now):
            return None
        query = _shared_query(req.query)
        result = self._dispatch(req, query, now)
        if result is None:
            return None
        code, payload = result
        if req.confirmable:
            return Response(code, payload)
        if payload and is_success(code):
            self._queue_async(payload, query, now)
        return None

    def _dispatch(
        self, req: Request, query: Query, now: float
    ) -> tuple[int, bytes] | None:
        target = _shared_path(req.path)
        if target is None:
            return _NOT_FOUND, b""
        if req.method == _GET:
            return self._get(target[0], target[1], query, now)
        if req.method == _POST:
            return self._post(req, now)
        return Code.METHOD_NOT_ALLOWED, b""

    def _get(
        self, tlv_id: TlvId, index: int, query: Query, now: float
    ) -> tuple[int, bytes]:
        ids = (tlv_id,) if query.ids is None else query.ids
        if query.ids is not None:
            index = 0
        if len(ids) == 1:
            data = self._read(ids[0], now, index)
            return (_NOT_FOUND, b"") if data is None else (_CONTENT, data)
        parts: list[bytes] = []
        for one in ids:
            data = self._read(one, now, index)
            if data is None and len(ids) == 1:
                return _NOT_FOUND, b""
            parts.append(data or b"")
        return _CONTENT, b"".join(parts)

    def _read(self, tlv_id: TlvId, now: float, index: int = 0) -> bytes | None:
        """Encoded TLV(s) of a GET; None when the TLV is not supported."""
        if tlv_id.vendor:
            return self._read_vendor(tlv_id)
        if tlv_id.type == _IMAGE_INFO:
            return self._read_image_info(index)
        getter = _GETTERS.get(tlv_id.type)
        if getter is None:
            return None
        return b"".join(self._encode(tlv_id, m) for m in getter(self, now, index))

    def _read_image_info(self, index: int) -> bytes:
        if index > 3:
            return b""  # the agent answers an unknown slot with nothing
        if index:
            return self._image_info_tlv(index)
        fw = self._fw
        up = fw.upload
        if up is not None and up.state is UploadState.DOWNLOADING:
            return b"".join([self._image_info_tlv(i) for i in (1, 2, 3)])
        # Not downloading: all three slots are shared encodings (see below).
        upload = up.image if up is not None else None
        run, backup, profile = fw.run, fw.backup, self.profile
        key = (id(run), id(upload), id(backup), fw.load_slot, fw.load_time)
        cached = _ALL_INFO_TLVS.get(key)
        if (
            cached is not None
            and cached[0] is run
            and cached[1] is upload
            and cached[2] is backup
            and cached[3] is profile
        ):
            return cached[4]
        data = b"".join([self._image_info_tlv(i) for i in (1, 2, 3)])
        if len(_ALL_INFO_TLVS) >= 4096:
            _ALL_INFO_TLVS.clear()
        _ALL_INFO_TLVS[key] = (run, upload, backup, profile, data)
        return data

    def _image_info_tlv(self, index: int) -> bytes:
        """Encoded TLV 75 of one slot; shared between devices unless downloading.

        FND reads TLV 75 of every device; RUN and BACKUP slots hold interned
        images, so their encoding is the same across the fleet.
        """
        fw = self._fw
        up = fw.upload
        if index == UPLOAD and up is not None and up.state is UploadState.DOWNLOADING:
            return self._upload_info_tlv(up)
        image = fw.slot_image(index)
        load = fw.load_time if fw.load_slot == index else 0
        key = (id(image), index, load, id(self.profile))
        cached = _INFO_TLVS.get(key)
        if cached is not None and cached[0] is image and cached[1] is self.profile:
            return cached[2]
        data = self._encode(T.FIRMWARE_IMAGE_INFO, fw.image_info(index, self.profile))
        if len(_INFO_TLVS) >= 4096:
            _INFO_TLVS.clear()
        _INFO_TLVS[key] = (image, self.profile, data)
        return data

    def _upload_info_tlv(self, up: Upload) -> bytes:
        """TLV 75 of the downloading UPLOAD slot: the shared encoding of its
        other fields with this device's bitmap spliced in (the same bytes as
        encoding ``image_info(UPLOAD)``; the fill-in reads it per round)."""
        fw, profile, image = self._fw, self.profile, up.image
        load = fw.load_time if fw.load_slot == UPLOAD else 0
        key = (id(image), load, id(profile))
        parts = _UPLOAD_INFO.get(key)
        if parts is None or parts[0] is not image or parts[1] is not profile:
            head, tail = _upload_info_parts(fw, profile)
            if len(_UPLOAD_INFO) >= 256:
                _UPLOAD_INFO.clear()
            parts = _UPLOAD_INFO[key] = (image, profile, head, tail)
        bits = bitmap.to_bytes(up.bits, image.nblocks)
        value = b"".join((parts[2], push_varint(len(bits)), bits, parts[3]))
        return push_tlv(_IMAGE_INFO, value, length_width=profile.length_width)

    def _read_vendor(self, tlv_id: TlvId) -> bytes | None:
        if tlv_id.vendor != self.profile.vendor_pen:
            return None
        return b"".join(
            self._encode(tlv_id, pb.VendorTlv(subType=sub, value=value))
            for sub, value in self.profile.vendor_tlvs
            if tlv_id.type in (T.VENDOR, sub)
        )

    def _encode(self, tlv_id: TlvId | int, msg: Message) -> bytes:
        return _encode_tlv(tlv_id, msg, length_width=self.profile.length_width)

    def _post(self, req: Request, now: float) -> tuple[int, bytes] | None:
        try:
            tlvs = _shared_tlvs(req.payload)
        except CodecError as exc:
            logger.debug("%016X: bad framing: %s", self.identity.eui64, exc.reason)
            return Code.BAD_REQUEST, b""
        denied = self._signature_error(req.payload, tlvs, now)
        if denied:
            return denied, b""
        match = self._group_match(tlvs)
        if match is False or (match is None and req.multicast):
            # The agent answers a CON whose GroupMatch fails with 4.00.
            return (
                None
                if req.multicast or not req.confirmable
                else (
                    Code.BAD_REQUEST,
                    b"",
                )
            )
        return self._apply_all(tlvs, req.confirmable, now)

    def _signature_error(self, payload: bytes, tlvs: list[Tlv], now: float) -> int:
        profile = self.profile
        if not profile.req_signed_post:
            return 0
        check = check_signature(
            payload,
            tlvs,
            profile.nms_key,
            now=now,
            require_validity=profile.req_valid_check_post,
        )
        if check.status is SignatureStatus.BAD:
            return Code.UNAUTHORIZED
        if check.status is SignatureStatus.MISSING and any(
            t.id.vendor or (t.id.type not in SIGNATURE_EXEMPT | _PRE_PROCESSED)
            for t in tlvs
        ):
            # The agent fails at the first non-exempt TLV, after applying the
            # exempt ones before it; we refuse before applying anything.
            return Code.FORBIDDEN
        return 0

    def _group_match(self, tlvs: list[Tlv]) -> bool | None:
        tlv = next((t for t in tlvs if t.id == (T.GROUP_MATCH, 0)), None)
        if tlv is None:
            return None
        try:
            group = decode_shared(tlv, pb.Group)
        except CodecError:
            return False
        if group.type not in _GROUP_TYPES or not group.HasField("id"):
            return False
        return self._groups[group.type - 1] == group.id != 0

    def _apply_all(
        self, tlvs: list[Tlv], confirmable: bool, now: float
    ) -> tuple[int, bytes] | None:
        out: list[bytes] = []
        failed: list[TlvId] = []
        for tlv in tlvs:
            if not tlv.id.vendor and tlv.id.type in _PRE_PROCESSED:
                continue
            try:
                out.append(self._apply(tlv, now))
            except (_Unsupported, CodecError):
                if confirmable:
                    return Code.NOT_FOUND, b""
                failed.append(tlv.id)
        if failed:
            logger.debug("%016X: NON POST failed TLVs %s", self.identity.eui64, failed)
            return None
        body = b"".join(out)
        if body:
            body += self._session_and_time(now)
        return Code.CREATED, body

    def _apply(self, tlv: Tlv, now: float) -> bytes:
        if tlv.id.vendor:
            return self._post_vendor(tlv, now)
        poster = _POSTERS.get(tlv.id.type)
        if poster is None:
            raise _Unsupported(str(tlv.id))
        return poster(self, tlv, now)

    # ------------------------------------------------------- POST handlers

    def _post_vendor(self, tlv: Tlv, now: float) -> bytes:
        msg = decode_shared(tlv, pb.VendorTlv)
        if not (msg.HasField("subType") and msg.HasField("value")):
            raise _Unsupported("vendor TLV without subType or value")
        return b""

    def _post_noop(self, tlv: Tlv, now: float) -> bytes:
        decode_shared(tlv, pb.CurrentTime)
        return b""

    def _post_session(self, tlv: Tlv, now: float) -> bytes:
        msg = decode_shared(tlv, pb.SessionID)
        self._session = msg.id if msg.HasField("id") else None
        return b""

    def _post_description(self, tlv: Tlv, now: float) -> bytes:
        msg = decode_shared(tlv, pb.DescriptionRequest)
        parts: list[bytes] = []
        for text in msg.tlvid:
            try:
                parts.append(self._read(TlvId.parse(text), now) or b"")
            except CodecError:
                continue
        return b"".join(parts)

    def _post_report_subscribe(self, tlv: Tlv, now: float) -> bytes:
        msg = decode_shared(tlv, pb.ReportSubscribe)
        if msg.HasField("interval"):
            self._rep_interval = msg.interval
        if msg.tlvid:
            self._rep_ids = intern_ids(tuple(msg.tlvid))
        if self._registered:
            self._schedule_report(now)
        return b""

    def _set_group(self, slot: int, group_id: int) -> None:
        ids = (group_id, self._groups[1]) if slot == 0 else (self._groups[0], group_id)
        self._groups = shared_groups(ids)

    def _post_cgms_settings(self, tlv: Tlv, now: float) -> bytes:
        msg = decode_shared(tlv, pb.CGMSSettings)
        low = msg.regIntervalMin if msg.HasField("regIntervalMin") else self._reg_min
        high = msg.regIntervalMax if msg.HasField("regIntervalMax") else self._reg_max
        if 0 < low <= high:
            self._reg_min, self._reg_max = low, high
        return b""

    def _post_reboot(self, tlv: Tlv, now: float) -> bytes:
        decode_shared(tlv, pb.RebootRequest)
        self._reboot_due = now
        return b""

    def _post_group_assign(self, tlv: Tlv, now: float) -> bytes:
        group = decode_shared(tlv, pb.Group)
        if group.type in _GROUP_TYPES and group.HasField("id"):
            self._set_group(group.type - 1, group.id)
        return b""

    def _post_group_evict(self, tlv: Tlv, now: float) -> bytes:
        group = decode_shared(tlv, pb.Group)
        if group.type in _GROUP_TYPES:
            slot = group.type - 1
            if not group.HasField("id") or self._groups[slot] == group.id:
                self._set_group(slot, 0)
        return b""

    def _post_transfer(self, tlv: Tlv, now: float) -> bytes:
        req = decode_shared(tlv, pb.TransferRequest)
        code = self._fw.transfer(req, self.profile, self.faults)
        logger.debug("%016X: TransferRequest -> %d", self.identity.eui64, code)
        if code != Rc.OK:
            # As the agent: a refusal carries the code only.
            return self._encode(T.TRANSFER_RESPONSE, pb.FirmwareResponse(response=code))
        if not self.profile.transfer_ok_response:
            return b""
        answer = pb.FirmwareResponse(fileHash=req.fileHash, response=code)
        return self._encode(T.TRANSFER_RESPONSE, answer)

    def _post_block(self, tlv: Tlv, now: float) -> bytes:
        msg = decode_shared(tlv, pb.ImageBlock)
        faults = self.faults
        fails = bool(
            faults is not None
            and faults.flash_write_error_rate > 0
            and self._rand() < faults.flash_write_error_rate
        )
        self._fw.block(msg, self.store, self.profile, fails)
        return b""

    def _post_load(self, tlv: Tlv, now: float) -> bytes:
        req = decode_shared(tlv, pb.LoadRequest)
        code = self._fw.load(req, now)
        answer = _fw_answer(req.fileHash, code)
        if code == Rc.OK:
            answer.loadTime = req.loadTime
        return self._encode(T.LOAD_RESPONSE, answer)

    def _post_cancel_load(self, tlv: Tlv, now: float) -> bytes:
        req = decode_shared(tlv, pb.HashRequest)
        code = self._fw.cancel(req)
        return self._encode(T.CANCEL_LOAD_RESPONSE, _fw_answer(req.fileHash, code))

    def _post_set_backup(self, tlv: Tlv, now: float) -> bytes:
        req = decode_shared(tlv, pb.HashRequest)
        code = self._fw.set_backup(req)
        return self._encode(T.SET_BACKUP_RESPONSE, _fw_answer(req.fileHash, code))

    # --------------------------------------------------------- GET handlers

    def _get_tlv_index(self, now: float, index: int) -> list[Message]:
        ids = [str(t) for t in sorted(_GETTERS)]
        ids.append(str(TlvId(T.VENDOR, self.profile.vendor_pen)))
        return [pb.TlvIndex(tlvid=ids)]

    def _get_device_id(self, now: float, index: int) -> list[Message]:
        return [describe.device_id(self.identity)]

    def _get_session(self, now: float, index: int) -> list[Message]:
        return [pb.SessionID(id=self._session)] if self._session is not None else []

    def _get_hardware(self, now: float, index: int) -> list[Message]:
        return [
            describe.hardware_desc(self.identity, self.profile, self.running_version)
        ]

    def _get_interfaces(self, now: float, index: int) -> list[Message]:
        return list(describe.interface_desc(self.identity))

    def _get_report_subscribe(self, now: float, index: int) -> list[Message]:
        return [pb.ReportSubscribe(interval=self._rep_interval, tlvid=self._rep_ids)]

    def _get_addresses(self, now: float, index: int) -> list[Message]:
        return list(describe.ip_address(self.identity))

    def _get_route(self, now: float, index: int) -> list[Message]:
        return [describe.ip_route(self.identity)]

    def _get_time(self, now: float, index: int) -> list[Message]:
        return [pb.CurrentTime(posix=int(now) & 0xFFFFFFFF)]

    def _get_uptime(self, now: float, index: int) -> list[Message]:
        return [pb.Uptime(sysUpTime=max(0, int(now - self._boot_at)))]

    def _get_metrics(self, now: float, index: int) -> list[Message]:
        return list(describe.interface_metrics(int(now - self._boot_at)))

    def _get_rpl_metrics(self, now: float, index: int) -> list[Message]:
        return [describe.rpl_metrics()]

    def _get_wpan(self, now: float, index: int) -> list[Message]:
        return [describe.wpan_status()]

    def _get_rpl_instance(self, now: float, index: int) -> list[Message]:
        return [describe.rpl_instance()]

    def _get_cgms_settings(self, now: float, index: int) -> list[Message]:
        return [
            pb.CGMSSettings(regIntervalMin=self._reg_min, regIntervalMax=self._reg_max)
        ]

    def _get_cgms_status(self, now: float, index: int) -> list[Message]:
        return [pb.CGMSStatus(registered=self._registered)]

    def _get_groups(self, now: float, index: int) -> list[Message]:
        return [pb.Group(type=t, id=g) for t, g in self.groups.items()]

    def _get_transfer(self, now: float, index: int) -> list[Message]:
        up = self._fw.upload
        if up is None or up.state is not UploadState.DOWNLOADING:
            return []
        image = up.image
        req = pb.TransferRequest(
            fileHash=image.key.file_hash,
            fileName=image.name,
            version=image.version,
            fileSize=image.size,
            blockSize=image.key.block_size,
        )
        req.hwInfo.hwId = image.hwid
        return [req]

    def _get_load(self, now: float, index: int) -> list[Message]:
        fw = self._fw
        image = fw.slot_image(fw.load_slot) if fw.load_slot else None
        if image is None:
            return []
        return [pb.LoadRequest(fileHash=image.key.file_hash, loadTime=fw.load_time)]

    def _get_image_info(self, now: float, index: int) -> list[Message]:
        if index > 3:
            return []  # the agent answers an unknown slot with nothing
        slots = (index,) if index else (1, 2, 3)
        return [self._fw.image_info(i, self.profile) for i in slots]

    def _get_signature_settings(self, now: float, index: int) -> list[Message]:
        p = self.profile
        return [
            pb.SignatureSettings(
                reqSignedPost=p.req_signed_post,
                reqValidCheckPost=p.req_valid_check_post,
                reqSignedResp=p.req_signed_resp,
                reqValidCheckResp=p.req_valid_check_resp,
            )
        ]

    # ----------------------------------------------------------- persistence

    def snapshot(self) -> dict[str, Any]:
        """Durable state as plain types (cbor2-friendly)."""
        return snapshot.dump(self)

    @classmethod
    def restore(
        cls,
        identity: Identity,
        profile: DeviceProfile,
        store: BlockStore,
        snap: dict[str, Any],
        *,
        seed: int,
        now: float,
    ) -> Device:
        """A device rebuilt from :meth:`snapshot` and booted at ``now``.

        Raises ValueError (with the reason) for a bad snapshot.
        """
        device = cls(identity, profile, store, seed=seed)
        snapshot.load(device, snap)
        device.power_on(now)
        return device


def _fw_answer(file_hash: bytes, code: int) -> pb.FirmwareResponse:
    answer = pb.FirmwareResponse(response=code)
    if len(file_hash) == HASH_LEN:
        answer.fileHash = file_hash
    return answer


def _upload_info_parts(fw: Firmware, profile: DeviceProfile) -> tuple[bytes, bytes]:
    """FirmwareImageInfo of the downloading UPLOAD slot, encoded around its
    bitmap: (fields 1-6 and the bitmap's tag, fields 8-11). Protobuf writes
    known fields in number order, and the bitmap (7) is always present."""
    info = fw.image_info(UPLOAD, profile)
    info.ClearField("bitmap")
    whole = info.SerializeToString()
    for name in ("isDefault", "isRunning", "loadTime", "hwInfo"):
        info.ClearField(name)
    head = info.SerializeToString()
    assert whole.startswith(head)
    return head + _BITMAP_TAG, whole[len(head) :]


def _parse_path(path: tuple[str, ...]) -> tuple[TlvId, int] | None:
    """(TLV id, index) of ``/c``, ``/c/<id>``, ``/c/<id>/<index>``."""
    if not path or path[0] != "c" or len(path) > 3:
        return None
    if len(path) == 1:
        return TlvId(T.TLV_INDEX), 0
    try:
        tlv_id = TlvId.parse(path[1])
    except CodecError:
        return None
    if len(path) == 2:
        return tlv_id, 0
    if not path[2].isdigit() or len(path[2]) > 9:
        return None
    return tlv_id, int(path[2])


def _slot_image(
    run: ImageKey | SlotImage | None,
    name: str,
    version: str,
    size: int,
    profile: DeviceProfile,
) -> SlotImage | None:
    if run is None:
        return None
    if isinstance(run, SlotImage):
        return intern_image(run)
    return intern_image(SlotImage(run, name, version, size, profile.hardware_id))


_GETTERS: dict[int, Getter] = {
    T.TLV_INDEX: Device._get_tlv_index,
    T.DEVICE_ID: Device._get_device_id,
    T.SESSION_ID: Device._get_session,
    T.HARDWARE_DESC: Device._get_hardware,
    T.INTERFACE_DESC: Device._get_interfaces,
    T.REPORT_SUBSCRIBE: Device._get_report_subscribe,
    T.IP_ADDRESS: Device._get_addresses,
    T.IP_ROUTE: Device._get_route,
    T.CURRENT_TIME: Device._get_time,
    T.UPTIME: Device._get_uptime,
    T.INTERFACE_METRICS: Device._get_metrics,
    T.IP_ROUTE_RPL_METRICS: Device._get_rpl_metrics,
    T.WPAN_STATUS: Device._get_wpan,
    T.CGMS_SETTINGS: Device._get_cgms_settings,
    T.CGMS_STATUS: Device._get_cgms_status,
    T.RPL_INSTANCE: Device._get_rpl_instance,
    T.GROUP_ASSIGN: Device._get_groups,
    T.GROUP_INFO: Device._get_groups,
    T.TRANSFER_REQUEST: Device._get_transfer,
    T.LOAD_REQUEST: Device._get_load,
    T.FIRMWARE_IMAGE_INFO: Device._get_image_info,
    T.SIGNATURE_SETTINGS: Device._get_signature_settings,
}

_POSTERS: dict[int, Poster] = {
    T.SESSION_ID: Device._post_session,
    T.DESCRIPTION_REQUEST: Device._post_description,
    T.REPORT_SUBSCRIBE: Device._post_report_subscribe,
    T.CURRENT_TIME: Device._post_noop,
    T.REBOOT_REQUEST: Device._post_reboot,
    T.CGMS_SETTINGS: Device._post_cgms_settings,
    T.GROUP_ASSIGN: Device._post_group_assign,
    T.GROUP_EVICT: Device._post_group_evict,
    T.TRANSFER_REQUEST: Device._post_transfer,
    T.IMAGE_BLOCK: Device._post_block,
    T.LOAD_REQUEST: Device._post_load,
    T.CANCEL_LOAD_REQUEST: Device._post_cancel_load,
    T.SET_BACKUP_REQUEST: Device._post_set_backup,
}


# Paths and queries repeat across requests and devices: parse each text once.
# The fan-out hands one payload object to every member of a group: frame once.
_shared_query = functools.lru_cache(maxsize=1024)(parse_query)
_shared_path = functools.lru_cache(maxsize=1024)(_parse_path)
_shared_tlvs = IdentityMemo(pull_tlvs)
#: (id(image), slot, load time, id(profile)) -> (image, profile, encoded TLV 75)
_INFO_TLVS: dict[tuple[int, int, int, int], tuple[object, object, bytes]] = {}
#: (id(run), id(upload image), id(backup), load slot, load time) -> (run,
#: upload image, backup, profile, encoded TLV 75 of slots 1-3), for devices
#: not downloading (their TLV 75 depends on nothing else).
_ALL_INFO_TLVS: dict[
    tuple[int, int, int, int, int], tuple[object, object, object, object, bytes]
] = {}
#: (id(upload image), load time, id(profile)) -> (image, profile, encoded
#: FirmwareImageInfo of the downloading UPLOAD slot before and after its
#: bitmap's length and bytes), see Device._upload_info_tlv.
_UPLOAD_INFO: dict[tuple[int, int, int], tuple[object, object, bytes, bytes]] = {}
#: Field 7 (bitmap), wire type 2.
_BITMAP_TAG = b"\x3a"


# ------------------------------------------------- registration template

#: Hole kinds of the registration template (index into the value list).
_K_TIME, _K_METRICS, _K_GROUPS, _K_REPORT, _K_INFO = range(5)
_K_EUI_TEXT, _K_EUI_BYTES, _K_LL_IID, _K_ADDRESS, _K_SERIAL = range(5, 10)
_REG_HOLES = {
    T.CURRENT_TIME: _K_TIME,
    T.INTERFACE_METRICS: _K_METRICS,
    T.GROUP_INFO: _K_GROUPS,
    T.REPORT_SUBSCRIBE: _K_REPORT,
    T.FIRMWARE_IMAGE_INFO: _K_INFO,
}
_MAX_EUI64 = (1 << 64) - 1
_SENTINEL_EUI64 = 0xA5C396E17B2D4F08
_SENTINEL_ADDRESS = "fd5e:a1c0:93f7:2b64:e8d1:5a0c:7f36:b249"
#: Custom serial numbers shorter than this are encoded generically (a short
#: sentinel could collide with other content).
_MIN_SPLICED_SERIAL = 8
#: (id(profile), running version, len(serial)) -> (profile, template or None)
_REG_TEMPLATES: dict[tuple[int, str, int], tuple[DeviceProfile, Template | None]] = {}
#: Small TLVs whose encoding depends only on their key (metrics, groups, ...).
_SMALL_TLVS: dict[tuple[Any, ...], bytes] = {}
_TIME_TLVS: dict[tuple[int, int], bytes] = {}


def _time_tlv(posix: int, width: int) -> bytes:
    """CurrentTime (18) of ``posix``, as :meth:`Device._get_time` encodes it."""
    key = (posix, width)
    data = _TIME_TLVS.get(key)
    if data is None:
        msg = pb.CurrentTime(posix=posix)
        data = _encode_tlv(T.CURRENT_TIME, msg, length_width=width)
        if len(_TIME_TLVS) >= 64:
            _TIME_TLVS.clear()
        _TIME_TLVS[key] = data
    return data


def _registration_template(device: Device) -> Template | None:
    """The shared template of ``device``'s registration (None: generic only)."""
    serial = device.identity.serial
    if serial and not (serial.isascii() and len(serial) >= _MIN_SPLICED_SERIAL):
        return None
    profile = device.profile
    key = (id(profile), device.running_version, len(serial))
    entry = _REG_TEMPLATES.get(key)
    if entry is None or entry[0] is not profile:
        entry = (profile, _build_registration_template(device, len(serial)))
        if len(_REG_TEMPLATES) >= 256:
            _REG_TEMPLATES.clear()
        _REG_TEMPLATES[key] = entry
    return entry[1]


def _build_registration_template(device: Device, serial_len: int) -> Template | None:
    """Encode the registration of a sentinel twin of ``device`` generically."""
    serial = ""
    if serial_len:
        pick = random.Random(f"serial:{serial_len}").choices
        serial = "".join(pick(string.ascii_letters, k=serial_len))
    twin = Device(
        Identity(_SENTINEL_EUI64, _SENTINEL_ADDRESS, serial),
        device.profile,
        device.store,
        seed=0,
        run_image=device.firmware.run,
    )
    segments: list[bytes | int] = [
        _REG_HOLES[t] if t in _REG_HOLES else twin._read(TlvId(t), 0.0) or b""
        for t in REGISTRATION_TLVS
    ]
    segments.append(twin._read(TlvId(T.VENDOR, device.profile.vendor_pen), 0.0) or b"")
    ident = twin.identity
    sentinels = [
        (_K_EUI_TEXT, ident.eui64_text.encode(), 1 if serial else 2),
        (_K_EUI_BYTES, _SENTINEL_EUI64.to_bytes(8, "big"), 1),
        (_K_LL_IID, describe.link_local_iid(ident), 1),
        (_K_ADDRESS, describe.packed_address(_SENTINEL_ADDRESS), 1),
    ]
    if serial:
        sentinels.append((_K_SERIAL, serial.encode(), 1))
    template = build_template(segments, sentinels)
    if template is None:
        logger.warning("registration template unusable; encoding generically")
    return template


# --------------------------------------------------- multicast block fan-out


class GroupBlock(NamedTuple):
    """A multicast POST /c with GroupMatch and one ImageBlock, decoded once.

    Made by :func:`group_block` and applied to many members at once by
    :func:`deliver_group_block`.
    """

    request: Request
    tlvs: list[Tlv]
    """Every TLV of the payload (shared, read-only)."""
    group_slot: int
    """Index of the GroupMatch's type in a device's groups (0 or 1)."""
    group_id: int
    """The GroupMatch's id; 0 for a unicast block (:func:`unicast_block`)."""
    block_tlv: Tlv
    block: pb.ImageBlock
    applied: tuple[Tlv, ...]
    """TLVs applied in order (the block and DescriptionRequests)."""
    exempt: bool
    """No Signature TLV and only TLVs exempt from signing: the payload passes
    the signature rules of every profile (``Device._signature_error``)."""
    facts: dict[int, tuple[SlotImage, bool, int]]
    """id(image) -> (image, block fits, full bitmap): what depends only on the
    block and the image, kept with the plan (the runtime reuses plans)."""


class GroupOutcome(NamedTuple):
    """What :func:`deliver_group_block` did, for the fleet's books."""

    received: int
    """Members that stored the block (a new bitmap bit)."""
    duplicates: int
    """Members with an UPLOAD slot whose bitmap did not change."""
    completed: int
    """Members whose upload became COMPLETE with this block."""
    generic: list[int]
    """Members that need the generic path (``Device.handle``)."""
    moved: list[int]
    """Members whose next deadline changed (an async answer was queued)."""


def group_block(request: Request) -> GroupBlock | None:
    """The decoded form of a multicast ImageBlock POST, or None.

    None unless ``request`` is a multicast POST to ``/c`` whose TLVs are one
    well-formed GroupMatch of a known group type with an id, one well-formed
    ImageBlock and possibly DescriptionRequests: anything else goes through
    :meth:`Device.handle` member by member.
    """
    if request.method != _POST or request.path != ("c",) or not request.multicast:
        return None
    try:
        tlvs = _shared_tlvs(request.payload)
        ids = [t.id for t in tlvs]
        if ids.count(_GROUP_MATCH_ID) != 1 or ids.count(_IMAGE_BLOCK_ID) != 1:
            return None
        if any(i not in _GROUP_BLOCK_IDS for i in ids):
            return None
        match = decode_shared(tlvs[ids.index(_GROUP_MATCH_ID)], pb.Group)
        block_tlv = tlvs[ids.index(_IMAGE_BLOCK_ID)]
        block = decode_shared(block_tlv, pb.ImageBlock)
        applied = tuple(t for t in tlvs if t.id != _GROUP_MATCH_ID)
        for tlv in applied:
            if tlv.id == _DESCRIPTION_ID:
                decode_shared(tlv, pb.DescriptionRequest)
    except CodecError:
        return None
    if match.type not in _GROUP_TYPES or not match.HasField("id") or not match.id:
        return None
    slot = match.type - 1
    exempt = _exempt(tlvs)
    return GroupBlock(
        request, tlvs, slot, match.id, block_tlv, block, applied, exempt, {}
    )


def unicast_block(request: Request) -> GroupBlock | None:
    """The decoded form of a unicast POST /c with one ImageBlock, or None.

    For :func:`deliver_group_block` with one member: a plan without group
    (``group_id`` 0, no GroupMatch to check). None unless ``request`` is a
    unicast POST to ``/c`` whose payload is exactly one well-formed ImageBlock
    TLV (what the head-end's fill-in sends); anything else goes through
    :meth:`Device.handle`. The plan does not depend on ``confirmable``.
    """
    if request.method != _POST or request.path != ("c",) or request.multicast:
        return None
    try:
        tlvs = pull_tlvs(request.payload)
        if len(tlvs) != 1 or tlvs[0].id != _IMAGE_BLOCK_ID:
            return None
        block = decode_as(tlvs[0], pb.ImageBlock)
    except CodecError:
        return None
    tlv = tlvs[0]
    return GroupBlock(request, tlvs, 0, 0, tlv, block, (tlv,), _exempt(tlvs), {})


def _exempt(tlvs: list[Tlv]) -> bool:
    """Whether ``tlvs`` pass every profile's signature rules unsigned."""
    return all(
        not t.id.vendor
        and t.id.type != T.SIGNATURE
        and t.id.type in SIGNATURE_EXEMPT | _PRE_PROCESSED
        for t in tlvs
    )


def deliver_group_block(
    devices: Sequence[Device], members: Iterable[int], plan: GroupBlock, now: float
) -> GroupOutcome:
    """``Device.handle(plan.request, now)`` for every member, in bulk.

    The same device state and books as the generic path for a member that is
    online (not booting), passes the signature rules of its profile, is in
    the group (multicast plans), has no flash write fault and whose block
    needs no private override; any other member is returned in ``generic``
    untouched. A unicast plan (:func:`unicast_block`) is served the same way
    to its one member.
    """
    run = _GroupRun(plan, now)
    if plan.applied != (plan.block_tlv,):
        for i in members:
            run.one(i, devices[i])
        return run.outcome()
    # The common case (a block and nothing else), inlined: ~1 us a member.
    slot, gid = plan.group_slot, plan.group_id
    num = plan.block.blockNum
    bit = 1 << num
    downloading = UploadState.DOWNLOADING
    generic = run.generic
    for i in members:
        device = devices[i]
        faults = device.faults
        if (
            device._boot_until is not None
            or not device._powered
            or (gid and device._groups[slot] != gid)
            or (faults is not None and faults.flash_write_error_rate > 0)
            or not run.signature_ok(device)
        ):
            generic.append(i)
            continue
        up = device._fw.upload
        if up is None:
            continue
        if up.state is not downloading or up.bits & bit:
            run.duplicates += 1
            continue
        fits, same, full = run.image(device, up.image)
        if not fits:
            run.duplicates += 1
        elif not same:
            generic.append(i)  # a private override: the generic path keeps it
        else:
            up.bits |= bit
            run.received += 1
            if up.bits == full:
                run.complete(device, up)
    return run.outcome()


class _GroupRun:
    """The per-datagram state of :func:`deliver_group_block`."""

    __slots__ = (
        "plan",
        "now",
        "received",
        "duplicates",
        "completed",
        "generic",
        "moved",
        "_profile",
        "_profile_ok",
        "_profiles",
        "_images",
    )

    def __init__(self, plan: GroupBlock, now: float) -> None:
        self.plan = plan
        self.now = now
        self.received = self.duplicates = self.completed = 0
        self.generic: list[int] = []
        self.moved: list[int] = []
        self._profile: DeviceProfile | None = None
        self._profile_ok = False
        self._profiles: dict[int, tuple[DeviceProfile, bool]] = {}
        # id(image) -> (image, store, fits, same as stored, full bitmap)
        self._images: dict[int, tuple[SlotImage, BlockStore, bool, bool, int]] = {}

    def outcome(self) -> GroupOutcome:
        return GroupOutcome(
            self.received, self.duplicates, self.completed, self.generic, self.moved
        )

    def signature_ok(self, device: Device) -> bool:
        """Whether the payload passes the signature rules of the device's
        profile (checked once per profile and datagram)."""
        if self.plan.exempt:
            return True
        profile = device.profile
        if profile is self._profile:
            return self._profile_ok
        entry = self._profiles.get(id(profile))
        if entry is None or entry[0] is not profile:
            payload = self.plan.request.payload
            ok = not device._signature_error(payload, self.plan.tlvs, self.now)
            entry = self._profiles[id(profile)] = (profile, ok)
        self._profile, self._profile_ok = profile, entry[1]
        return entry[1]

    def image(self, device: Device, image: SlotImage) -> tuple[bool, bool, int]:
        """(block fits, equals the stored block, full bitmap) for ``image``;
        offers the block to the store once (as the first member would)."""
        entry = self._images.get(id(image))
        if entry is None or entry[0] is not image or entry[1] is not device.store:
            block = self.plan.block
            fits, full = self._facts(image)
            same = fits and device.store.put(image.key, block.blockNum, block.blockData)
            entry = (image, device.store, fits, same, full)
            self._images[id(image)] = entry
        return entry[2], entry[3], entry[4]

    def _facts(self, image: SlotImage) -> tuple[bool, int]:
        """(block fits, full bitmap) of ``image``, from the plan's cache."""
        facts = self.plan.facts
        entry = facts.get(id(image))
        if entry is None or entry[0] is not image:
            fits = Firmware._block_fits(self.plan.block, image)
            full = bitmap.full(image.nblocks) if fits else 0
            if len(facts) >= _FACTS_LIMIT:
                facts.clear()
            entry = facts[id(image)] = (image, fits, full)
        return entry[1], entry[2]

    def complete(self, device: Device, up: Upload) -> None:
        """The last block arrived: check the image (hash, header), count."""
        device._fw._complete(up, device.store, device.profile)
        if up.state is UploadState.COMPLETE:
            self.completed += 1

    def one(self, i: int, device: Device) -> None:
        """One member of a block with other TLVs (DescriptionRequest): each
        applied in order, as ``_apply_all`` and ``handle`` do for a multicast
        NON, the answer queued as an async one."""
        faults = device.faults
        if (
            device._boot_until is not None
            or not device._powered
            or (
                self.plan.group_id
                and device._groups[self.plan.group_slot] != self.plan.group_id
            )
            or (faults is not None and faults.flash_write_error_rate > 0)
            or not self.signature_ok(device)
        ):
            self.generic.append(i)
            return
        up = device._fw.upload
        stores = self._stores(device, up) if up is not None else False
        if stores is None:
            self.generic.append(i)
            return
        plan, now = self.plan, self.now
        out: list[bytes] = []
        for tlv in plan.applied:
            if tlv is not plan.block_tlv:
                out.append(device._apply(tlv, now))
            elif up is None:
                pass
            elif not stores:
                self.duplicates += 1
            else:
                up.bits |= 1 << plan.block.blockNum
                self.received += 1
                if up.bits == self.image(device, up.image)[2]:
                    self.complete(device, up)
        body = b"".join(out)
        if body:
            body += device._session_and_time(now)
            device._queue_async(body, _shared_query(plan.request.query), now)
            self.moved.append(i)

    def _stores(self, device: Device, up: Upload) -> bool | None:
        """Whether the block sets a bit of ``up`` (None: generic path)."""
        if up.state is not UploadState.DOWNLOADING:
            return False
        if up.bits >> self.plan.block.blockNum & 1:
            return False  # checked first: a duplicate is not offered to the store
        fits, same, _full = self.image(device, up.image)
        if not fits:
            return False
        return True if same else None


_FACTS_LIMIT = 16
_SIGNATURE_IDS = frozenset({TlvId(T.SIGNATURE), TlvId(T.SIGNATURE_VALIDITY)})
_GROUP_MATCH_ID = TlvId(T.GROUP_MATCH)
_IMAGE_BLOCK_ID = TlvId(T.IMAGE_BLOCK)
_DESCRIPTION_ID = TlvId(T.DESCRIPTION_REQUEST)
_GROUP_BLOCK_IDS = frozenset({_GROUP_MATCH_ID, _IMAGE_BLOCK_ID, _DESCRIPTION_ID})
