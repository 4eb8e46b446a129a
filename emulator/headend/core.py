"""The head-end's NMS core: CSMP endpoint, inventory upkeep, campaigns (sans-IO).

Layer ``headend``; CSMP.md "Transport", "Group flows" and "What FND does with
it". One :class:`HeadEndCore` owns the CoAP :class:`ExchangeLayer` of the
head-end's CSMP socket, answers device registrations (POST ``/r``), absorbs
reports and async responses (POST ``/c``), keeps the :class:`Inventory` and
the group assignments current, and runs the firmware campaigns of
:mod:`emulator.headend.engine`, turning their :class:`Send` records into CoAP
messages.

Its surface is aioquic's: :meth:`receive_datagram`, :meth:`handle_timer`,
:meth:`get_timer`, :meth:`datagrams_to_send`, all with ``now`` (POSIX
seconds) passed in. Every TLV a device sends, whatever carried it (report,
async answer, or the answer to one of our requests), goes through one path,
:meth:`_absorb`. Bad input from devices is counted and logged at debug,
never raised. Persistence reads the changes with :meth:`take_changes`.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric import ec

from emulator.coap.exchange import (
    Addr,
    Datagram,
    ExchangeLayer,
    IncomingRequest,
    IncomingResponse,
    RequestFailed,
    TransportTuning,
)
from emulator.coap.message import (
    Code,
    Message,
    Type,
    code_text,
    is_success,
    request_options,
)
from emulator.csmp.registry import T
from emulator.csmp.tlv import CodecError
from emulator.headend.config import HeadEndConfig
from emulator.headend.engine import (
    CommandCampaign,
    CommandKind,
    ImageRef,
    Purpose,
    Send,
    UploadCampaign,
    UploadTuning,
    response_tlv,
)
from emulator.headend.groups import GroupSpec, GroupTable
from emulator.headend.inventory import RUN, DeviceRecord, Inventory
from emulator.headend.nms import (
    AnswerSettings,
    DeviceReport,
    group_assign,
    parse_report,
    registration_answer,
    sign_validity,
)

logger = logging.getLogger(__name__)

Campaign = UploadCampaign | CommandCampaign

#: Per-device reload result of a device that fell back from the new image.
BOOT_FAILED = "boot failed"
#: Seconds during which a device that registers again (its answer was late
#: or lost) gets the same signed answer (same SessionID), saving the sign;
#: also bounded by reg_interval_min and half the signature validity.
REGISTRATION_REUSE = 10.0


class SessionIds:
    """Random CSMP session ids (16 hex digits), drawn from the OS in chunks.

    One ``os.urandom`` call per registration cost 55-80 us under the
    registration storm (a getrandom system call each); a 4 KiB chunk serves
    512 sessions.
    """

    CHUNK = 4096

    def __init__(self) -> None:
        self._pool = b""
        self._pos = 0

    def take(self) -> str:
        if self._pos + 8 > len(self._pool):
            self._pool, self._pos = os.urandom(self.CHUNK), 0
        pos = self._pos
        self._pos = pos + 8
        return self._pool[pos : pos + 8].hex()


#: Counter names of :attr:`HeadEndCore.stats`.
STAT_NAMES = (
    "registrations",
    "registrations_reused",
    "reports",
    "async_responses",
    "ignored_tlvs",
    "bad_input",
    "unknown_device",
    "bad_request",
    "blocks_multicast",
    "blocks_unicast",
    "bytes_sent",
    "requests_failed",
    "group_assigns",
)


class CoreObserver(Protocol):
    """What the core tells an optional observer (the live view), as it happens.

    Called synchronously from the core's event and timer paths, so each call
    must be cheap and must not raise. Finished campaigns go to
    :attr:`HeadEndCore.on_finished`; per-member outcomes (refusals, failures)
    are in the campaigns themselves.
    """

    def block_sent(self, now: float, unicast: bool) -> None:
        """One ImageBlock left, to the group (multicast) or to one device."""

    def registered(
        self, now: float, record: DeviceRecord, previous_version: str | None
    ) -> None:
        """A device registered; ``previous_version``: None when new to us."""

    def campaign_started(self, now: float, campaign: Campaign) -> None:
        """An upload or group command started (not a restored one)."""


@dataclass(slots=True)
class Reload:
    """A reload scheduled for a group."""

    at: float
    file_hash: bytes
    op_id: int


def tuning_from(config: HeadEndConfig) -> UploadTuning:
    u = config.upload
    return UploadTuning(
        pace=u.pace,
        batch=u.batch,
        async_window=u.async_window,
        grace=u.grace,
        max_rounds=u.max_rounds,
        max_attempts=u.max_attempts,
        max_duration=u.max_duration,
        unicast_parallel=u.unicast_parallel,
    )


class HeadEndCore:
    """The sans-IO NMS (see the module doc)."""

    def __init__(
        self,
        config: HeadEndConfig,
        key: ec.EllipticCurvePrivateKey,
        groups: GroupTable,
        inventory: Inventory,
        *,
        local: Addr = ("::", 61628),
        seed: int | None = None,
    ) -> None:
        self.config = config
        self.key = key
        self.groups = groups
        self.inventory = inventory
        self.local = local
        c = config.csmp
        self.exchange = ExchangeLayer(
            TransportTuning(ack_timeout=c.ack_timeout, max_retransmit=c.max_retransmit),
            seed=seed,
        )
        n = config.nms
        self.answer = AnswerSettings(
            n.report_interval,
            n.report_tlvs,
            n.reg_interval_min,
            n.reg_interval_max,
            n.signature_validity,
        )
        self.tuning = tuning_from(config)
        self.stats: dict[str, int] = dict.fromkeys(STAT_NAMES, 0)
        self.uploads: dict[str, UploadCampaign] = {}
        """Latest upload per group key (running or finished)."""
        self.commands: dict[str, CommandCampaign] = {}
        """Latest backup/reload/cancel per group key."""
        self.reloads: dict[str, Reload] = {}
        self.next_op_id = 1
        self.finished_ops: Counter[tuple[str, str]] = Counter()
        """Finished operations by (kind, final phase), since start."""
        self.on_finished: list[Callable[[Campaign], None]] = []
        self.observer: CoreObserver | None = None
        """Told about block sends, registrations, started campaigns."""
        self._active: list[Campaign] = []
        self._handles: dict[int, tuple[str, Purpose]] = {}
        self._written: dict[int, tuple[Any, ...]] = {}
        self._reg_answers: dict[str, tuple[float, int, Any, Any, str, bytes]] = {}
        """EUI -> (until, group id, settings, key, session, signed answer)."""
        self._session_ids = SessionIds()
        self._reg_prune_at = 0.0

    # ------------------------------------------------------------- input

    def receive_datagram(
        self, data: bytes, local: Addr, remote: Addr, now: float
    ) -> None:
        """One datagram from the CSMP socket."""
        event = self.exchange.receive_datagram(data, local, remote, now)
        if isinstance(event, IncomingRequest):
            self._on_request(event, now)
        elif isinstance(event, IncomingResponse):
            self._on_response(event, now)
        elif isinstance(event, RequestFailed):
            self._on_failed(event, now)

    def handle_timer(self, now: float) -> None:
        """Retransmit, expire, and let the campaigns send what is due."""
        for event in self.exchange.handle_timer(now):
            if isinstance(event, RequestFailed):
                self._on_failed(event, now)
        self._poll(now)

    def get_timer(self) -> float | None:
        deadlines = [d for c in self._active if (d := c.next_deadline()) is not None]
        exchange = self.exchange.get_timer()
        if exchange is not None:
            deadlines.append(exchange)
        return min(deadlines) if deadlines else None

    def datagrams_to_send(self) -> list[Datagram]:
        return self.exchange.datagrams_to_send()

    # ---------------------------------------------------------- requests

    def _on_request(self, req: IncomingRequest, now: float) -> None:
        msg = req.message
        path = msg.uri_path
        if msg.code == Code.POST and path == ["r"]:
            self._register(req, now)
        elif msg.code == Code.POST and path == ["c"]:
            self._report(req, now)
        else:
            self.stats["bad_request"] += 1
            logger.debug("unexpected %r from %s", msg, req.remote)
            code = Code.NOT_FOUND if msg.code == Code.POST else Code.METHOD_NOT_ALLOWED
            self._answer(req, code, now)

    def _answer(
        self, req: IncomingRequest, code: int, now: float, payload: bytes = b""
    ) -> None:
        if req.message.type == Type.CON or payload:
            self.exchange.respond(req, code, payload, now=now)

    def _parse(self, payload: bytes, remote: Addr) -> DeviceReport | None:
        try:
            return parse_report(payload)
        except CodecError as exc:
            self.stats["bad_input"] += 1
            logger.debug("bad payload from %s: %s", remote, exc.reason)
            return None

    def _register(self, req: IncomingRequest, now: float) -> None:
        report = self._parse(req.message.payload, req.remote)
        if report is None or not report.eui:
            if report is not None:
                self.stats["bad_input"] += 1
                logger.debug("registration without DeviceID from %s", req.remote)
            self._answer(req, Code.BAD_REQUEST, now)
            return
        self.stats["registrations"] += 1
        known = self.inventory.get(report.eui)
        previous = None if known is None else known.version
        record = self._record_for(report, req.remote, now)
        record.registrations += 1
        group = self.groups.group_for(record.eui, record.address, record.hardware_id)
        self._set_group(record, group, now, push=False)
        answer = self._registration_answer(record, group.id, now)
        self.exchange.respond(req, Code.VALID, answer, now=now)
        self._absorb(record, report, now)
        self._note_reloaded(record, now)
        if self.observer is not None:
            self.observer.registered(now, record, previous)
        if not report.slots:
            self._send(
                Send(
                    record.eui, Code.GET, "c", ("q=75",), b"", False, True, Purpose.READ
                ),
                None,
                now,
            )

    def _registration_answer(
        self, record: DeviceRecord, group_id: int, now: float
    ) -> bytes:
        """A new session and signed answer, or the previous ones when the
        device registers again within :data:`REGISTRATION_REUSE` (the
        registration storm: an ECDSA sign per duplicate otherwise)."""
        cache = self._reg_answers
        cached = cache.get(record.eui)
        if (
            cached is not None
            and now < cached[0]
            and cached[1] == group_id
            and cached[2] is self.answer
            and cached[3] is self.key
            and cached[4] == record.session
        ):
            self.stats["registrations_reused"] += 1
            return cached[5]
        record.session = self._session_ids.take()
        answer = registration_answer(
            self.answer, record.session, group_id, self.key, now
        )
        a = self.answer
        reuse = min(REGISTRATION_REUSE, a.reg_min, a.signature_validity / 2)
        if now >= self._reg_prune_at:
            for eui in [e for e, c in cache.items() if c[0] <= now]:
                del cache[eui]
            self._reg_prune_at = now + REGISTRATION_REUSE
        cache[record.eui] = (now + reuse, group_id, a, self.key, record.session, answer)
        return answer

    def _record_for(
        self, report: DeviceReport, remote: Addr, now: float
    ) -> DeviceRecord:
        record = self.inventory.get(report.eui)
        if record is None:
            record = DeviceRecord(report.eui, remote[0], remote[1], first_seen=now)
            self.inventory.add(record)
        else:
            self.inventory.move(record, remote)
        if report.firmware_rev:
            record.version = report.firmware_rev
        if report.function:
            record.function = report.function
        run = next((s for s in report.slots if s.index == RUN), None)
        if run is not None and run.hwid:
            record.hardware_id = run.hwid
        elif report.model and not record.hardware_id:
            record.hardware_id = report.model
        self.inventory.touch(record, now)
        self.inventory.mark(record.eui)  # a registration is a durable change
        return record

    def _report(self, req: IncomingRequest, now: float) -> None:
        report = self._parse(req.message.payload, req.remote)
        if report is None:
            self._answer(req, Code.BAD_REQUEST, now)
            return
        record = self.inventory.by_addr(req.remote)
        if record is None and report.eui:
            record = self.inventory.get(report.eui)
            if record is not None:
                self.inventory.move(record, req.remote)
        if record is None:
            self.stats["unknown_device"] += 1
            logger.debug("report from unknown device %s", req.remote)
            self._answer(req, Code.NOT_FOUND, now)
            return
        self._answer(req, Code.CHANGED, now)
        self.stats["reports"] += 1
        if report.responses:
            self.stats["async_responses"] += 1
        self.inventory.touch(record, now)
        self._absorb(record, report, now)

    # --------------------------------------------------------- responses

    def _on_response(self, event: IncomingResponse, now: float) -> None:
        info = self._handles.pop(event.handle, None)
        if info is None:
            return
        eui, purpose = info
        record = self.inventory.get(eui)
        msg = event.message
        if not is_success(msg.code):
            self._fail(eui, purpose, f"answered {code_text(msg.code)}", now)
            return
        report = self._parse(msg.payload, event.remote)
        if record is None or report is None:
            self._fail(eui, purpose, "bad answer", now)
            return
        self.inventory.touch(record, now)
        self._absorb(record, report, now, read=purpose is Purpose.BITMAP)
        if purpose is Purpose.READ:  # the slots of a registration without them
            self._note_reloaded(record, now)
        self._check_answered(record, report, purpose, now)

    def _check_answered(
        self, record: DeviceRecord, report: DeviceReport, purpose: Purpose, now: float
    ) -> None:
        """A success answer without the TLV we asked for."""
        if purpose is Purpose.TRANSFER and not any(
            tlv == T.TRANSFER_RESPONSE for tlv, _, _ in report.responses
        ):
            # The reference agent applies an accepted TransferRequest silently.
            for campaign in self._campaigns_of(record.eui):
                if isinstance(campaign, UploadCampaign):
                    campaign.on_transfer_applied(record.eui, now)
        elif purpose is Purpose.BITMAP and not report.slots:
            self._fail(record.eui, purpose, "answer without TLV 75", now)
        elif purpose is Purpose.COMMAND and not report.responses:
            self._fail(record.eui, purpose, "answer without response TLV", now)

    def _on_failed(self, event: RequestFailed, now: float) -> None:
        info = self._handles.pop(event.handle, None)
        if info is not None:
            self._fail(info[0], info[1], event.reason or "no answer", now)

    def _fail(self, eui: str, purpose: Purpose, reason: str, now: float) -> None:
        self.stats["requests_failed"] += 1
        logger.debug("%s request to %s failed: %s", purpose.value, eui, reason)
        for campaign in self._campaigns_of(eui):
            campaign.on_failed(eui, purpose, reason, now)

    # ------------------------------------------------------------ absorb

    def _absorb(
        self,
        record: DeviceRecord,
        report: DeviceReport,
        now: float,
        *,
        read: bool = False,
    ) -> None:
        """Everything a device told us, wherever it came from."""
        self.stats["ignored_tlvs"] += report.ignored
        if report.slots:
            self.inventory.update_slots(record, report.slots, read=read)
        if report.boot_failed:
            self._note_boot_failure(record, report.boot_failed)
        campaigns = self._campaigns_of(record.eui)
        for campaign in campaigns:
            if isinstance(campaign, UploadCampaign) and report.slots:
                campaign.on_slots(record.eui, report.slots, now, read=read)
        for tlv, file_hash, code in report.responses:
            self._route_response(record, campaigns, tlv, file_hash, code, now)

    def _route_response(
        self,
        record: DeviceRecord,
        campaigns: list[Campaign],
        tlv: int,
        file_hash: bytes,
        code: int,
        now: float,
    ) -> None:
        for campaign in campaigns:
            if isinstance(campaign, UploadCampaign):
                # A refusal carries the code only (as the reference agent).
                ours = file_hash in (b"", campaign.image.sha256)
                if tlv == T.TRANSFER_RESPONSE and ours:
                    campaign.on_transfer_response(record.eui, code, now)
            elif tlv == response_tlv(campaign.kind) and file_hash == campaign.file_hash:
                campaign.on_command_response(record.eui, code, now)
                record.results[campaign.kind.value] = campaign.result_of(record.eui)
                if campaign.kind is CommandKind.BACKUP and code == 0:
                    self.inventory.set_backup(record, file_hash)
                self.inventory.mark(record.eui)

    def _note_boot_failure(self, record: DeviceRecord, file_hash: bytes) -> None:
        """The device fell back after failing to boot ``file_hash``."""
        logger.info("%s failed to boot %s", record.eui, file_hash.hex()[:16])
        command = self.commands.get(record.group)
        if (
            command is not None
            and command.kind is CommandKind.RELOAD
            and command.file_hash == file_hash
        ):
            record.results[command.kind.value] = f"{BOOT_FAILED} ({record.version})"
            self.inventory.mark(record.eui)

    def _note_reloaded(self, record: DeviceRecord, now: float) -> None:
        """A device that (re)registered: see :meth:`credit_load`."""
        command = self.commands.get(record.group)
        if command is not None:
            self.credit_load(command, record, now)

    def credit_load(
        self, command: CommandCampaign, record: DeviceRecord, now: float
    ) -> None:
        """If ``record`` runs the image of the reload ``command``, the device
        has loaded it (:meth:`CommandCampaign.on_loaded`): its result and
        inventory row say so. Also for a reload resumed after a restart."""
        if command.kind is not CommandKind.RELOAD:
            return
        if record.runs(command.file_hash) and command.on_loaded(record.eui, now):
            record.results[command.kind.value] = command.result_of(record.eui)
            self.inventory.mark(record.eui)

    def _campaigns_of(self, eui: str) -> list[Campaign]:
        return [c for c in self._active if eui in c.members]

    # ------------------------------------------------------------ groups

    def _set_group(
        self, record: DeviceRecord, group: GroupSpec, now: float, *, push: bool
    ) -> None:
        if record.group == group.key:
            return
        self.inventory.set_group(record, group.key)
        self.inventory.mark(record.eui)
        upload = self.uploads.get(group.key)
        if upload is not None and upload.active:
            upload.add_member(record.eui)
        if push:
            self.stats["group_assigns"] += 1
            payload = group_assign(group.id)
            self._send(
                Send(
                    record.eui, Code.POST, "c", (), payload, True, True, Purpose.ASSIGN
                ),
                None,
                now,
            )

    def apply_groups(self, specs: Iterable[GroupSpec], now: float) -> int:
        """Install new groups; push GroupAssign to every device that moves."""
        self.groups.replace(specs)
        moved = 0
        for record in self.inventory:
            group = self.groups.group_for(
                record.eui, record.address, record.hardware_id
            )
            if group.key != record.group:
                moved += 1
                self._set_group(record, group, now, push=True)
        return moved

    # --------------------------------------------------------- campaigns

    def new_op_id(self) -> int:
        op_id = self.next_op_id
        self.next_op_id += 1
        return op_id

    def start_upload(
        self, group: GroupSpec, image: ImageRef, members: list[str], now: float
    ) -> UploadCampaign:
        multicast = group.target(self.config.csmp.device_port) is not None
        campaign = UploadCampaign(
            self.new_op_id(),
            group.key,
            group.id,
            image,
            members,
            self.tuning,
            multicast=multicast,
            now=now,
        )
        campaign.start(now)
        self.uploads[group.key] = campaign
        self.adopt(campaign)
        if self.observer is not None:
            self.observer.campaign_started(now, campaign)
        return campaign

    def start_command(
        self,
        kind: CommandKind,
        group: GroupSpec,
        file_hash: bytes,
        members: list[str],
        now: float,
        *,
        load_time: int = 0,
    ) -> CommandCampaign:
        tuning = self.tuning
        window = self.config.commands.async_window
        campaign = CommandCampaign(
            self.new_op_id(),
            kind,
            group.key,
            group.id,
            file_hash,
            members,
            replace(tuning, async_window=window),
            multicast=group.target(self.config.csmp.device_port) is not None,
            now=now,
            load_time=load_time,
        )
        campaign.start(now)
        self.commands[group.key] = campaign
        if kind is CommandKind.RELOAD:
            self.reloads[group.key] = Reload(
                float(load_time), file_hash, campaign.op_id
            )
        elif kind is CommandKind.CANCEL:
            self.reloads.pop(group.key, None)
        self.adopt(campaign)
        if self.observer is not None:
            self.observer.campaign_started(now, campaign)
        return campaign

    def adopt(self, campaign: Campaign) -> None:
        """Run a campaign (new, or restored from the store)."""
        if campaign.active and campaign not in self._active:
            self._active.append(campaign)

    def stop_upload(self, group_key: str, now: float) -> bool:
        campaign = self.uploads.get(group_key)
        if campaign is None or not campaign.active:
            return False
        campaign.stop(now)
        self._poll(now)
        return True

    @property
    def active_campaigns(self) -> list[Campaign]:
        return list(self._active)

    def _poll(self, now: float) -> None:
        finished: list[Campaign] = []
        for campaign in self._active:
            deadline = campaign.next_deadline()
            if deadline is not None and deadline <= now:
                sends = campaign.poll(now)
                for send in sends:
                    self._send(send, campaign.group_key, now)
            if not campaign.active:
                finished.append(campaign)
        for campaign in finished:
            self._active.remove(campaign)
            self.finished_ops[(str(campaign.kind), campaign.phase.value)] += 1
            for listener in self.on_finished:
                listener(campaign)

    def _send(self, send: Send, group_key: str | None, now: float) -> None:
        target = self._target(send, group_key)
        if target is None:
            return
        payload = send.payload
        if send.signed:
            payload = sign_validity(
                payload, self.key, now, self.answer.signature_validity
            )
        kind = Type.CON if send.confirmable else Type.NON
        options = request_options(send.path, list(send.query))
        message = Message(kind, send.method, options=options, payload=payload)
        if send.purpose is Purpose.BLOCK:
            name = "blocks_unicast" if send.eui else "blocks_multicast"
            self.stats[name] += 1
            if self.observer is not None:
                self.observer.block_sent(now, send.eui is not None)
        self.stats["bytes_sent"] += len(payload)
        if send.confirmable:
            handle = self.exchange.request(self.local, target, message, now)
            assert send.eui is not None
            self._handles[handle] = (send.eui, send.purpose)
        else:
            self.exchange.send_non(self.local, target, message, now)

    def _target(self, send: Send, group_key: str | None) -> Addr | None:
        if send.eui is not None:
            record = self.inventory.get(send.eui)
            return None if record is None else record.addr
        group = self.groups.get(group_key or "")
        if group is None:
            return None
        return group.target(self.config.csmp.device_port)

    # ------------------------------------------------------- persistence

    def take_changes(
        self, volatile: bool = True
    ) -> tuple[list[DeviceRecord], list[tuple[Campaign, list[Any]]]]:
        """Devices and campaigns changed since the last call (``volatile``:
        see :meth:`Inventory.take_dirty`)."""
        devices = self.inventory.take_dirty(volatile)
        campaigns: list[tuple[Campaign, list[Any]]] = []
        for campaign in {
            *self._active,
            *self.uploads.values(),
            *self.commands.values(),
        }:
            members = campaign.take_dirty(volatile)
            state = _campaign_state(campaign)
            if members or self._written.get(campaign.op_id) != state:
                self._written[campaign.op_id] = state
                campaigns.append((campaign, members))
        return devices, campaigns


def _campaign_state(campaign: Campaign) -> tuple[Any, ...]:
    if isinstance(campaign, UploadCampaign):
        return (campaign.phase, campaign.next_block // 64)
    return (campaign.phase,)
