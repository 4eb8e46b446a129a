"""Firmware campaigns of one group: the head-end's sans-IO engine.

Layer ``headend``; the flows are those of the CSMP Internet-Draft, "Device
Firmware Update" (CSMP.md, "Group flows" and "What FND does with it").

An :class:`UploadCampaign` uploads one image to the members of one group; a
:class:`CommandCampaign` sends SetBackupRequest, LoadRequest or
CancelLoadRequest to them and collects the answers. Both are plain state
machines: they take events (``on_transfer_response``, ``on_slots``,
``on_command_response``, ``on_failed``) and ticks (``poll(now)``), and return
:class:`Send` records that the NMS core turns into CoAP messages. They never
read a clock or touch a socket.

Theory of operation of an upload (multicast mode)::

    TRANSFER   TransferRequest by multicast (NON, GroupMatch, a=<window>,
               signed); TransferResponses arrive as async reports.
    TRANSFER_UNICAST
               after the window: a unicast (CON) TransferRequest to every
               member that did not answer; go on if at least one accepted.
    BLOCKS     every ImageBlock by multicast (NON, GroupMatch, unsigned) at
               the pace; the last block's POST also carries
               DescriptionRequest(75) with a=<window>, and so does about every
               10 % when the blocks take longer than a few windows (progress
               reports of a slow transfer; an unpaced one needs none).
    FILL       per member: a bitmap (from a report made after the last
               block, else CON GET /c/75/2), then the missing blocks by
               unicast NON POST /c, then the bitmap again; repeated up to
               max_rounds; members never accepted get a unicast transfer
               first. At most ``unicast_parallel`` members at a time. A
               member whose report arrives starts at once; the others wait
               for theirs (the collect window: one window after the first
               report, at most four after the last block), then get read.

The transfer window ends early once every member has answered.
    DONE / FAILED / STOPPED

In unicast mode (a group without multicast address) the campaign starts in
FILL. Unicast ImageBlocks are NON: a lost block costs nothing until the next
bitmap read, which is CON (retransmitted, and counted as an attempt when it
fails), so no per-block acknowledgement traffic is needed.

The per-member fill loop is the table :data:`_FILL_ACTIONS` (what a member in
a given :class:`Step` needs next).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, KeysView
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any, NamedTuple

from emulator.coap.message import Code
from emulator.csmp import csmp_pb2 as pb
from emulator.csmp.registry import GROUP_FIRMWARE, T, encode_tlv
from emulator.firmware import bitmap
from emulator.headend.inventory import BACKUP, RUN, UPLOAD, SlotInfo

logger = logging.getLogger(__name__)

#: CSMP firmware response codes the engine treats specially (CSMP.md).
RC_OK = 0
RC_DUPLICATE_TRANSFER = 11
RC_INVALID_REQUEST = 6
RC_IMAGE_RUNNING = 9


class Purpose(StrEnum):
    """Why a message is sent (correlation, metrics)."""

    TRANSFER = "transfer"
    BLOCK = "block"
    BITMAP = "bitmap"
    COMMAND = "command"
    ASSIGN = "assign"
    READ = "read"


class Send(NamedTuple):
    """One request the NMS core must send."""

    eui: str | None
    """Destination device, or None for the group's multicast target."""
    method: int
    path: str
    query: tuple[str, ...]
    payload: bytes
    """TLVs, unsigned; the core appends the signature when ``signed``."""
    signed: bool
    confirmable: bool
    purpose: Purpose


@dataclass(frozen=True, slots=True)
class ImageRef:
    """The image a campaign sends (one copy of the bytes per campaign)."""

    name: str
    version: str
    sha256: bytes
    hwid: str
    data: bytes = field(repr=False)
    block_size: int = 512

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def nblocks(self) -> int:
        return -(-len(self.data) // self.block_size)

    def block(self, num: int) -> bytes:
        start = num * self.block_size
        return self.data[start : start + self.block_size]


@dataclass(frozen=True, slots=True)
class UploadTuning:
    """Pacing and bounds of an upload (``[upload]`` of the config)."""

    pace: float = 50.0
    batch: int = 64
    async_window: int = 10
    grace: float = 2.0
    max_rounds: int = 8
    max_attempts: int = 3
    max_duration: float = 3600.0
    unicast_parallel: int = 32


class Phase(Enum):
    TRANSFER = "transfer"
    TRANSFER_UNICAST = "transfer_unicast"
    BLOCKS = "blocks"
    COLLECT = "collect"
    FILL = "fill"
    DONE = "done"
    FAILED = "failed"
    STOPPED = "stopped"


#: Phases in which the campaign is still working.
ACTIVE_PHASES = frozenset(
    {Phase.TRANSFER, Phase.TRANSFER_UNICAST, Phase.BLOCKS, Phase.COLLECT, Phase.FILL}
)


class Outcome(StrEnum):
    """Per-member outcome of an upload."""

    PENDING = "pending"
    """No answer to the TransferRequest yet."""
    ACCEPTED = "accepted"
    COMPLETE = "complete"
    REFUSED = "refused"
    FAILED = "failed"
    UNREACHABLE = "unreachable"


OPEN_OUTCOMES = frozenset({Outcome.PENDING, Outcome.ACCEPTED})


class Step(Enum):
    """Where a member is in the per-member loop."""

    IDLE = "idle"
    """Waiting for the group phases (multicast)."""
    NEED_TRANSFER = "need_transfer"
    AWAIT_TRANSFER = "await_transfer"
    NEED_BITMAP = "need_bitmap"
    AWAIT_BITMAP = "await_bitmap"
    READY = "ready"
    """Bitmap known: send what is missing."""
    SENDING = "sending"
    DONE = "done"


#: Steps that occupy one of the ``unicast_parallel`` places.
BUSY_STEPS = frozenset({Step.AWAIT_TRANSFER, Step.AWAIT_BITMAP, Step.SENDING})
#: Steps that wait for their turn in the queue.
QUEUED_STEPS = frozenset({Step.NEED_TRANSFER, Step.NEED_BITMAP, Step.READY})


class UploadStatus(StrEnum):
    """Per-device upload state names of getFirmwareUploadStatus."""

    NOT_STARTED = "notStarted"
    PENDING = "pending"
    ACCEPTED = "accepted"
    IN_PROGRESS = "inProgress"
    PARTIAL = "partial"
    COMPLETE = "complete"
    REFUSED = "refused"
    FAILED = "failed"
    UNREACHABLE = "unreachable"


@dataclass(slots=True)
class Member:
    """One member's progress in an upload."""

    eui: str
    outcome: Outcome = Outcome.PENDING
    step: Step = Step.IDLE
    code: int | None = None
    """CSMP response code of a refusal."""
    reason: str = ""
    bits: int = 0
    """Blocks the device is known to hold (block n at bit n)."""
    bits_at: float = -1.0
    """When ``bits`` was last reported (-1: never)."""
    rounds: int = 0
    attempts: int = 0
    queue: deque[int] = field(default_factory=deque)
    """Blocks still to send by unicast in this round."""

    def to_row(self) -> dict[str, Any]:
        return Member.row_of(self.snapshot())

    def snapshot(self) -> tuple[Any, ...]:
        """The persisted fields, as immutable values (for :meth:`row_of`)."""
        return (
            self.eui,
            self.outcome,
            self.code,
            self.reason,
            self.bits,
            self.rounds,
            self.attempts,
        )

    @staticmethod
    def row_of(state: tuple[Any, ...]) -> dict[str, Any]:
        """The store row of a :meth:`snapshot` (any thread)."""
        eui, outcome, code, reason, bits, rounds, attempts = state
        return {
            "eui": eui,
            "outcome": outcome.value,
            "code": code,
            "reason": reason,
            "bits": format(bits, "x"),
            "rounds": rounds,
            "attempts": attempts,
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Member:
        return cls(
            eui=str(row["eui"]),
            outcome=Outcome(row.get("outcome", "pending")),
            code=row.get("code"),
            reason=str(row.get("reason", "")),
            bits=int(str(row.get("bits", "0")) or "0", 16),
            rounds=int(row.get("rounds", 0)),
            attempts=int(row.get("attempts", 0)),
        )


def group_match(group_id: int) -> bytes:
    return encode_tlv(T.GROUP_MATCH, pb.Group(type=GROUP_FIRMWARE, id=group_id))


def _post(
    eui: str | None,
    payload: bytes,
    purpose: Purpose,
    *,
    signed: bool,
    query: tuple[str, ...] = (),
) -> Send:
    """A POST /c: CON to a device, NON to the group."""
    return Send(eui, Code.POST, "c", query, payload, signed, eui is not None, purpose)


class UploadCampaign:
    """Upload one image to one group's members (see the module doc)."""

    kind = "upload"

    def __init__(
        self,
        op_id: int,
        group_key: str,
        group_id: int,
        image: ImageRef,
        members: Iterable[str],
        tuning: UploadTuning,
        *,
        multicast: bool,
        now: float,
    ) -> None:
        self.op_id = op_id
        self.group_key = group_key
        self.group_id = group_id
        self.image = image
        self.tuning = tuning
        self.multicast = multicast
        self.started = now
        self.deadline = now + tuning.max_duration
        self.members: dict[str, Member] = {e: Member(e) for e in members}
        self._open = len(self.members)
        self._pending = len(self.members)
        """Members whose outcome is PENDING."""
        self._in_transfer = 0
        """Members in NEED_TRANSFER or AWAIT_TRANSFER."""
        self._collect_until = float("inf")
        """End of the collect window (members without a fresh report wait)."""
        self._collect_heard = False
        self.phase = Phase.FILL
        self.next_block = 0
        self.last_block_at = 0.0
        self.finished_at = 0.0
        self.reason = ""
        self._phase_until = now
        self._credit = float(tuning.batch)
        self._last_poll = now
        self._queue: deque[Member] = deque()
        self._sending: deque[Member] = deque()
        self._busy = 0
        self._dirty: set[str] = set(self.members)
        self._progressed: set[str] = set()
        # Running tally of the members by status key (see :meth:`tally`):
        # members changed since the last tally are in ``_changed``.
        self._changed: set[str] = set(self.members)
        self._keys: dict[str, tuple[Outcome, int]] = {}
        self._tally: dict[tuple[Outcome, int], int] = {}
        self._out: list[Send] = []
        self._block_tlvs: dict[int, bytes] = {}
        self.stats = {"multicast_blocks": 0, "unicast_blocks": 0, "block_bytes": 0}
        self._wake = now

    @classmethod
    def restore(
        cls,
        op_id: int,
        group_key: str,
        group_id: int,
        image: ImageRef,
        members: Iterable[Member],
        tuning: UploadTuning,
        *,
        multicast: bool,
        row: dict[str, Any],
        now: float,
    ) -> UploadCampaign:
        """A campaign rebuilt from the store; call :meth:`resume` to run it."""
        campaign = cls(
            op_id, group_key, group_id, image, (), tuning, multicast=multicast, now=now
        )
        campaign.started = float(row.get("started", now))
        campaign.members = {m.eui: m for m in members}
        campaign._changed = set(campaign.members)
        for member in campaign.members.values():
            closed = member.outcome not in OPEN_OUTCOMES
            member.step = Step.DONE if closed else Step.IDLE
        campaign._open = sum(
            1 for m in campaign.members.values() if m.outcome in OPEN_OUTCOMES
        )
        campaign._pending = sum(
            1 for m in campaign.members.values() if m.outcome is Outcome.PENDING
        )
        campaign.phase = Phase(row.get("phase", Phase.FILL.value))
        campaign.next_block = int(row.get("next_block", 0))
        campaign.reason = str(row.get("reason", ""))
        campaign.finished_at = float(row.get("finished", 0.0))
        return campaign

    # ---------------------------------------------------------- lifecycle

    def start(self, now: float) -> None:
        """Begin: multicast transfer, or unicast fill-in for every member."""
        if self.multicast:
            self._set_phase(Phase.TRANSFER, now + self._window())
            self._out.append(self._group_transfer())
        else:
            self._set_phase(Phase.FILL, float("inf"))
            for member in self.members.values():
                self._set_step(member, Step.NEED_TRANSFER)

    def resume(self, phase: Phase, next_block: int, now: float) -> None:
        """Continue after a restart from the persisted phase and members."""
        self.deadline = now + self.tuning.max_duration
        if phase in (Phase.TRANSFER, Phase.TRANSFER_UNICAST) and self.multicast:
            self.start(now)
            return
        if phase is Phase.BLOCKS and self.multicast:
            self.next_block = next_block
            self._set_phase(Phase.BLOCKS, now)
            return
        self._enter_fill(now, fresh_since=float("inf"))

    def stop(self, now: float) -> None:
        """Stop sending at once; members keep what they have."""
        self._finish(Phase.STOPPED, now, "stopped by operator")

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE_PHASES

    def add_member(self, eui: str) -> None:
        """A device joined the group (or registered) while the upload runs."""
        if eui in self.members or not self.active:
            return
        member = Member(eui)
        self.members[eui] = member
        self._open += 1
        self._pending += 1
        self._touch(eui)
        if self.phase is Phase.FILL or self.phase is Phase.TRANSFER_UNICAST:
            self._set_step(member, Step.NEED_TRANSFER)

    # ------------------------------------------------------------- events

    def on_transfer_response(self, eui: str, code: int, now: float) -> None:
        """A TransferResponse (71) for our hash, async or as a CON answer."""
        member = self.members.get(eui)
        if member is None or member.outcome not in OPEN_OUTCOMES:
            return
        self._touch(eui)
        if code == RC_OK or code == RC_DUPLICATE_TRANSFER:
            self._accept(member, fresh=code == RC_OK, now=now)
        else:
            member.code = code
            self._close(member, Outcome.REFUSED, f"refused with code {code}")
        self._check_transfer_done(now)

    def on_transfer_applied(self, eui: str, now: float) -> None:
        """A unicast TransferRequest answered 2.01 without TransferResponse.

        The reference agent applies an accepted request silently; the bitmap
        is then read as after a duplicate transfer.
        """
        member = self.members.get(eui)
        if member is not None and member.step is Step.AWAIT_TRANSFER:
            self._touch(eui)
            self._accept(member, fresh=False, now=now)
            self._check_transfer_done(now)

    def on_slots(
        self, eui: str, slots: Iterable[SlotInfo], now: float, *, read: bool = False
    ) -> None:
        """FirmwareImageInfo (75) from a report or async answer, or (``read``)
        the answer to our GET, which is current and replaces what we knew.

        Reports can be stale (an async answer is built when the request
        arrives and sent up to ``a`` seconds later, out of order), so their
        bitmaps are merged: during one download a device only gains blocks.
        """
        member = self.members.get(eui)
        if member is None or member.outcome not in OPEN_OUTCOMES:
            return
        for slot in slots:
            if slot.file_hash == self.image.sha256:
                self._on_our_slot(member, slot, now, read)
            elif slot.index == UPLOAD and read and member.step is Step.AWAIT_BITMAP:
                # The device no longer holds our transfer (reboot, replaced),
                # or never did though it answered 11 (duplicate transfer):
                # start over, a bounded number of times (a round each).
                member.bits = 0
                self._touch(eui)
                member.rounds += 1
                if member.rounds > self.tuning.max_rounds:
                    self._close(
                        member,
                        Outcome.FAILED,
                        f"lost the transfer {member.rounds} times "
                        "(accepted, then no UPLOAD slot with the image)",
                    )
                    self._check_transfer_done(now)
                    return
                member.outcome = Outcome.PENDING
                self._pending += 1
                self._set_step(member, Step.NEED_TRANSFER)

    def _on_our_slot(
        self, member: Member, slot: SlotInfo, now: float, read: bool
    ) -> None:
        if slot.index in (RUN, BACKUP) or slot.complete:
            self._touch(member.eui)
            member.bits = bitmap.full(self.image.nblocks)
            self._close(member, Outcome.COMPLETE, "")
            self._check_transfer_done(now)
            return
        if member.outcome is Outcome.PENDING:
            self._touch(member.eui)
            self._accept(member, fresh=False, now=now)
        else:
            self._touch_progress(member.eui)
        member.bits = slot.bits() if read else member.bits | slot.bits()
        member.bits_at = now
        if member.step is Step.AWAIT_BITMAP and read:
            self._set_step(member, Step.READY)
        elif (
            member.step is Step.IDLE
            and self.phase is Phase.FILL
            and member.outcome is Outcome.ACCEPTED
            and now > self.last_block_at > 0
        ):
            self._set_step(member, Step.READY)  # its report after the last block
            if not self._collect_heard:
                # Reports come within a window of each other once the
                # devices have the last block: wait one more window.
                self._collect_heard = True
                self._collect_until = min(self._collect_until, now + self._window())
        self._check_transfer_done(now)

    def on_failed(self, eui: str, purpose: Purpose, reason: str, now: float) -> None:
        """A CON request to a member got no (or an error) answer."""
        member = self.members.get(eui)
        if member is None or member.outcome not in OPEN_OUTCOMES:
            return
        expected = {
            Purpose.TRANSFER: Step.AWAIT_TRANSFER,
            Purpose.BITMAP: Step.AWAIT_BITMAP,
        }
        if expected.get(purpose) is not member.step:
            return
        self._touch(eui)
        member.attempts += 1
        if member.attempts >= self.tuning.max_attempts:
            self._close(member, Outcome.UNREACHABLE, f"no answer: {reason}")
        else:
            retry = (
                Step.NEED_TRANSFER if purpose is Purpose.TRANSFER else Step.NEED_BITMAP
            )
            self._set_step(member, retry)
        self._check_transfer_done(now)

    # --------------------------------------------------------------- tick

    def next_deadline(self) -> float | None:
        """When :meth:`poll` has work, or None when finished."""
        if not self.active:
            return None
        return min(self._wake, self._phase_until, self._collect_until, self.deadline)

    def poll(self, now: float) -> list[Send]:
        """Advance to ``now``; the sends that are due."""
        if self.active and now >= self.deadline:
            self._time_out(now)
        budget = self._budget(now)
        if self.phase is Phase.TRANSFER and not self._pending:
            self._phase_until = now  # everyone answered: no need to wait
        if self.phase is Phase.TRANSFER and now >= self._phase_until:
            self._end_transfer_window(now)
        if self.phase is Phase.BLOCKS:
            budget -= self._send_group_blocks(budget, now)
        if self.phase is Phase.COLLECT:  # restored from an older state file
            self._enter_fill(now, fresh_since=self.last_block_at)
        if self.phase is Phase.FILL and now >= self._collect_until:
            self._end_collect(now)
        if self.phase in (Phase.TRANSFER_UNICAST, Phase.FILL):
            self._serve_queue(now)
        if self.phase is Phase.FILL:
            budget -= self._send_unicast_blocks(budget, now)
            self._check_fill_done(now)
        self._schedule(now)
        out, self._out = self._out, []
        return out

    def _budget(self, now: float) -> int:
        t = self.tuning
        if t.pace <= 0:
            self._credit = float(t.batch)
        else:
            elapsed = max(0.0, now - self._last_poll)
            self._credit = min(float(t.batch), self._credit + elapsed * t.pace)
        self._last_poll = now
        return int(self._credit)

    def _schedule(self, now: float) -> None:
        """Set when the next poll is due (work waiting for budget or a turn)."""
        has_blocks = self.phase is Phase.BLOCKS or (
            self.phase is Phase.FILL and bool(self._sending)
        )
        if has_blocks:
            t = self.tuning
            need = 0.0 if t.pace <= 0 else max(0.0, (1.0 - self._credit) / t.pace)
            self._wake = now + need
        elif self._queue and self._busy < self.tuning.unicast_parallel:
            self._wake = now
        else:
            self._wake = float("inf")

    def take_dirty(self, volatile: bool = True) -> list[Member]:
        """Members changed since the last call (for the store); with
        ``volatile`` False, not those whose only change is more blocks."""
        dirty, self._dirty = self._dirty, set()
        if volatile:
            dirty |= self._progressed
            self._progressed = set()
        else:
            self._progressed -= dirty
        return [self.members[e] for e in dirty if e in self.members]

    def _touch(self, eui: str) -> None:
        """``eui`` changed: for the store and for the running tally."""
        self._dirty.add(eui)
        self._changed.add(eui)

    def _touch_progress(self, eui: str) -> None:
        """``eui`` holds more blocks (written less often than :meth:`_touch`)."""
        self._progressed.add(eui)
        self._changed.add(eui)

    def tally(self) -> tuple[dict[UploadStatus, int], int]:
        """Members per getFirmwareUploadStatus state, and how many hold part
        of the image (``partialUpload``), without visiting every member:
        O(members changed since the last call + states)."""
        self._refresh_tally()
        counts = dict.fromkeys(UploadStatus, 0)
        partial = 0
        running = self.active
        for key, n in self._tally.items():
            if n:
                counts[_key_status(key, running)] += n
                partial += n if key[1] == 1 else 0
        return counts, partial

    def tally_for(self, in_group: KeysView[str]) -> tuple[dict[UploadStatus, int], int]:
        """:meth:`tally` for the devices now in the group (``in_group``):
        members that left are taken out, devices that joined since the start
        count as notStarted (set operations, no per-member status)."""
        counts, partial = self.tally()
        started = self.members.keys()
        if len(in_group) != len(started) or not in_group >= started:
            gone, gone_partial = self.tally_of(started - in_group)
            for state, n in gone.items():
                counts[state] -= n
            partial -= gone_partial
            counts[UploadStatus.NOT_STARTED] += len(in_group - started)
        return counts, partial

    def tally_of(self, euis: Iterable[str]) -> tuple[dict[UploadStatus, int], int]:
        """As :meth:`tally` for some members only (by a full visit)."""
        self._refresh_tally()
        counts = dict.fromkeys(UploadStatus, 0)
        partial = 0
        running = self.active
        keys = self._keys
        for eui in euis:
            key = keys.get(eui)
            if key is not None:
                counts[_key_status(key, running)] += 1
                partial += key[1] == 1
        return counts, partial

    def _refresh_tally(self) -> None:
        if not self._changed:
            return
        changed, self._changed = self._changed, set()
        nblocks = self.image.nblocks
        keys, tally = self._keys, self._tally
        for eui in changed:
            member = self.members.get(eui)
            old = keys.pop(eui, None)
            if old is not None:
                tally[old] -= 1
            if member is None:
                continue
            key = (member.outcome, _bits_state(member.bits, nblocks))
            keys[eui] = key
            tally[key] = tally.get(key, 0) + 1

    # ------------------------------------------------------------ phases

    def _set_phase(self, phase: Phase, until: float) -> None:
        logger.debug(
            "upload %d (%s): phase %s", self.op_id, self.group_key, phase.value
        )
        self.phase = phase
        self._phase_until = until
        self._wake = min(self._wake, until)

    def _window(self) -> float:
        return self.tuning.async_window + self.tuning.grace

    def _end_transfer_window(self, now: float) -> None:
        self._set_phase(Phase.TRANSFER_UNICAST, float("inf"))
        for member in self.members.values():
            if member.outcome is Outcome.PENDING:
                self._set_step(member, Step.NEED_TRANSFER)
        self._check_transfer_done(now)

    def _check_transfer_done(self, now: float) -> None:
        """Leave TRANSFER_UNICAST once no member waits for a transfer answer."""
        if self.phase is Phase.TRANSFER and not self._pending:
            self._wake = now
            return
        if self.phase is not Phase.TRANSFER_UNICAST:
            return
        if self._in_transfer:
            return
        if self._open == self._pending:  # nobody accepted
            if any(m.outcome is Outcome.COMPLETE for m in self.members.values()):
                self._finish(Phase.DONE, now, "")
            else:
                self._finish(Phase.FAILED, now, "no member accepted the transfer")
            return
        self._set_phase(Phase.BLOCKS, now)

    def _enter_fill(
        self, now: float, fresh_since: float, *, collect: bool = False
    ) -> None:
        """FILL; with ``collect``, members without a fresh bitmap wait one
        window for their report (:meth:`_end_collect`) instead of being read."""
        self._set_phase(Phase.FILL, float("inf"))
        if collect:
            # No report yet: the devices may still be busy with the blocks.
            self._collect_until = now + COLLECT_SILENCE_WINDOWS * self._window()
            self._collect_heard = False
        for member in self.members.values():
            if member.outcome is Outcome.PENDING:
                self._set_step(member, Step.NEED_TRANSFER)
            elif member.outcome is Outcome.ACCEPTED:
                if member.bits_at > fresh_since or (
                    not collect and member.bits_at == fresh_since
                ):
                    self._set_step(member, Step.READY)
                elif not collect:
                    self._set_step(member, Step.NEED_BITMAP)
        self._check_fill_done(now)

    def _end_collect(self, now: float) -> None:
        """The collect window is over: read the members still waiting."""
        self._collect_until = float("inf")
        for member in self.members.values():
            if member.step is Step.IDLE and member.outcome is Outcome.ACCEPTED:
                self._set_step(member, Step.NEED_BITMAP)

    def _check_fill_done(self, now: float) -> None:
        if self.phase is not Phase.FILL:
            return
        if self._open > 0:
            return
        complete = any(m.outcome is Outcome.COMPLETE for m in self.members.values())
        self._finish(Phase.DONE if complete else Phase.FAILED, now, "")

    def _time_out(self, now: float) -> None:
        for member in self.members.values():
            if member.outcome in OPEN_OUTCOMES:
                self._touch(member.eui)
                self._close(member, Outcome.FAILED, "upload timed out")
        self._finish(Phase.DONE, now, "timed out")

    def _finish(self, phase: Phase, now: float, reason: str) -> None:
        if not self.active:
            return
        self.phase = phase
        self.finished_at = now
        self.reason = reason
        self._queue.clear()
        self._sending.clear()
        for member in self.members.values():
            member.queue.clear()
            if member.step is not Step.DONE:
                member.step = Step.IDLE
        self._busy = 0
        self._in_transfer = 0
        self._collect_until = float("inf")
        logger.info(
            "upload %d (%s) %s %s", self.op_id, self.group_key, phase.value, reason
        )

    # ----------------------------------------------------- member machine

    def _set_step(self, member: Member, step: Step) -> None:
        old = member.step
        self._in_transfer += (step in _TRANSFER_STEPS) - (old in _TRANSFER_STEPS)
        if old in BUSY_STEPS:
            self._busy -= 1
            if self._queue:
                self._wake = -1.0  # a place is free: serve the queue
        if step in BUSY_STEPS:
            self._busy += 1
        member.step = step
        if step in QUEUED_STEPS and old not in QUEUED_STEPS:
            self._queue.append(member)
            self._wake = -1.0
        if step is Step.SENDING:
            self._sending.append(member)

    def _accept(self, member: Member, *, fresh: bool, now: float) -> None:
        if member.outcome is Outcome.PENDING:
            self._pending -= 1
        member.outcome = Outcome.ACCEPTED
        member.attempts = 0
        if fresh:
            member.bits, member.bits_at = 0, now
        if self.phase is Phase.FILL:
            self._set_step(member, Step.READY if fresh else Step.NEED_BITMAP)
        elif member.step is not Step.IDLE:
            self._set_step(member, Step.IDLE)

    def _close(self, member: Member, outcome: Outcome, reason: str) -> None:
        if member.outcome in OPEN_OUTCOMES:
            self._open -= 1
            if not self._open:
                self._wake = -1.0  # let the next poll finish the campaign
        if member.outcome is Outcome.PENDING:
            self._pending -= 1
        member.outcome = outcome
        member.reason = reason
        member.queue.clear()
        self._set_step(member, Step.DONE)

    def _serve_queue(self, now: float) -> None:
        limit = self.tuning.unicast_parallel
        queue = self._queue
        for _ in range(len(queue)):
            if self._busy >= limit:
                return
            member = queue.popleft()
            action = _FILL_ACTIONS.get(member.step)
            if action is None:
                continue  # moved on since it was queued
            if (
                self.phase is Phase.TRANSFER_UNICAST
                and member.step is not Step.NEED_TRANSFER
            ):
                queue.append(member)
                continue
            action(self, member, now)

    def _send_transfer(self, member: Member, now: float) -> None:
        payload = encode_tlv(T.TRANSFER_REQUEST, self._transfer_request())
        self._out.append(_post(member.eui, payload, Purpose.TRANSFER, signed=True))
        self._set_step(member, Step.AWAIT_TRANSFER)

    def _send_bitmap_read(self, member: Member, now: float) -> None:
        self._out.append(
            Send(member.eui, Code.GET, "c/75/2", (), b"", False, True, Purpose.BITMAP)
        )
        self._set_step(member, Step.AWAIT_BITMAP)

    def _start_round(self, member: Member, now: float) -> None:
        if member.rounds >= self.tuning.max_rounds:
            got = bitmap.count(member.bits)
            self._touch(member.eui)
            self._close(
                member,
                Outcome.FAILED,
                f"gave up after {member.rounds} rounds "
                f"({got} of {self.image.nblocks} blocks)",
            )
            return
        member.rounds += 1
        self._touch(member.eui)
        missing = bitmap.missing(member.bits, self.image.nblocks)
        if not missing:
            # Every block is there: read again to see the completed slot.
            self._send_bitmap_read(member, now)
            return
        member.queue = deque(missing)
        self._set_step(member, Step.SENDING)

    # --------------------------------------------------------- block sends

    def _send_group_blocks(self, budget: int, now: float) -> int:
        image = self.image
        total = image.nblocks
        every = self._describe_every()
        sent = 0
        while sent < budget and self.next_block < total:
            num = self.next_block
            describe = num == total - 1 or (every > 0 and (num + 1) % every == 0)
            self._out.append(self._group_block(num, describe))
            self.next_block += 1
            sent += 1
        self.stats["multicast_blocks"] += sent
        self._credit -= sent
        if self.next_block >= total:
            self.last_block_at = now
            self._enter_fill(now, fresh_since=now, collect=True)
        return sent

    def _describe_every(self) -> int:
        """Blocks between progress DescriptionRequests (0: the last only).

        Every 10 % when the blocks take longer than four collect windows at
        the pace; an unpaced or short transfer only asks after the last one
        (every member would otherwise report ten times in a few seconds)."""
        t, total = self.tuning, self.image.nblocks
        if t.pace <= 0 or total / t.pace < 4 * self._window():
            return 0
        return max(1, total // 10)

    def _send_unicast_blocks(self, budget: int, now: float) -> int:
        sent = 0
        sending = self._sending
        while sent < budget and sending:
            member = sending.popleft()
            if member.step is not Step.SENDING:
                continue
            num = member.queue.popleft()
            payload = self._unicast_block(num)
            self._out.append(
                Send(
                    member.eui, Code.POST, "c", (), payload, False, False, Purpose.BLOCK
                )
            )
            self.stats["block_bytes"] += len(payload)
            sent += 1
            if member.queue:
                sending.append(member)
            else:
                self._send_bitmap_read(member, now)
        self.stats["unicast_blocks"] += sent
        self._credit -= sent
        return sent

    # ---------------------------------------------------------- payloads

    def _transfer_request(self) -> pb.TransferRequest:
        img = self.image
        req = pb.TransferRequest(
            fileHash=img.sha256,
            fileName=img.name,
            version=img.version,
            fileSize=img.size,
            blockSize=img.block_size,
        )
        req.hwInfo.hwId = img.hwid
        return req

    def _group_transfer(self) -> Send:
        payload = group_match(self.group_id) + encode_tlv(
            T.TRANSFER_REQUEST, self._transfer_request()
        )
        query = (f"a={self.tuning.async_window}",)
        return _post(None, payload, Purpose.TRANSFER, signed=True, query=query)

    def _unicast_block(self, num: int) -> bytes:
        """The ImageBlock TLV of block ``num`` (encoded once per campaign)."""
        payload = self._block_tlvs.get(num)
        if payload is None:
            payload = encode_tlv(T.IMAGE_BLOCK, self._block_msg(num))
            self._block_tlvs[num] = payload
        return payload

    def _block_msg(self, num: int) -> pb.ImageBlock:
        return pb.ImageBlock(
            fileHash=self.image.sha256, blockNum=num, blockData=self.image.block(num)
        )

    def _group_block(self, num: int, describe: bool) -> Send:
        payload = group_match(self.group_id) + encode_tlv(
            T.IMAGE_BLOCK, self._block_msg(num)
        )
        query: tuple[str, ...] = ()
        if describe:
            payload += encode_tlv(
                T.DESCRIPTION_REQUEST, pb.DescriptionRequest(tlvid=["75"])
            )
            query = (f"a={self.tuning.async_window}",)
        self.stats["block_bytes"] += len(payload)
        return Send(None, Code.POST, "c", query, payload, False, False, Purpose.BLOCK)

    # ------------------------------------------------------------ status

    def status_of(self, eui: str) -> UploadStatus:
        """The getFirmwareUploadStatus state of one member."""
        member = self.members.get(eui)
        if member is None:
            return UploadStatus.NOT_STARTED
        return _status(member, self.image.nblocks, self.active)

    def blocks_of(self, eui: str) -> int:
        member = self.members.get(eui)
        return 0 if member is None else bitmap.count(member.bits)

    def to_row(self) -> dict[str, Any]:
        return {
            "phase": self.phase.value,
            "next_block": self.next_block,
            "reason": self.reason,
            "started": self.started,
            "finished": self.finished_at,
        }


_TRANSFER_STEPS = frozenset({Step.NEED_TRANSFER, Step.AWAIT_TRANSFER})
#: Collect windows to wait after the last block when no report comes at all.
COLLECT_SILENCE_WINDOWS = 4

_FillAction = Callable[[UploadCampaign, Member, float], None]
#: What a member queued in a step needs next (the per-member fill loop).
_FILL_ACTIONS: dict[Step, _FillAction] = {
    Step.NEED_TRANSFER: UploadCampaign._send_transfer,
    Step.NEED_BITMAP: UploadCampaign._send_bitmap_read,
    Step.READY: UploadCampaign._start_round,
}


def _bits_state(bits: int, nblocks: int) -> int:
    """0: no block, 1: part of the image (partialUpload), 2: all of it."""
    if not bits:
        return 0
    return 1 if bitmap.count(bits) < nblocks else 2


def _key_status(key: tuple[Outcome, int], running: bool) -> UploadStatus:
    """The state of a member from its tally key (as :func:`_status`)."""
    outcome, held = key
    if outcome is Outcome.PENDING:
        return UploadStatus.PENDING if running else UploadStatus.NOT_STARTED
    if outcome is Outcome.ACCEPTED:
        if not held:
            return UploadStatus.ACCEPTED if running else UploadStatus.PARTIAL
        return UploadStatus.IN_PROGRESS if running else UploadStatus.PARTIAL
    return _CLOSED_STATUS[outcome]


def _status(member: Member, nblocks: int, running: bool) -> UploadStatus:
    outcome = member.outcome
    if outcome is Outcome.PENDING:
        return UploadStatus.PENDING if running else UploadStatus.NOT_STARTED
    if outcome is Outcome.ACCEPTED:
        if not member.bits:
            return UploadStatus.ACCEPTED if running else UploadStatus.PARTIAL
        return UploadStatus.IN_PROGRESS if running else UploadStatus.PARTIAL
    return _CLOSED_STATUS[outcome]


_CLOSED_STATUS = {
    Outcome.COMPLETE: UploadStatus.COMPLETE,
    Outcome.REFUSED: UploadStatus.REFUSED,
    Outcome.FAILED: UploadStatus.FAILED,
    Outcome.UNREACHABLE: UploadStatus.UNREACHABLE,
}


# ======================================================== group commands


class CommandKind(StrEnum):
    BACKUP = "backup"
    RELOAD = "reload"
    CANCEL = "cancel"


#: kind -> (request TLV, response TLV)
_COMMAND_TLVS = {
    CommandKind.BACKUP: (T.SET_BACKUP_REQUEST, T.SET_BACKUP_RESPONSE),
    CommandKind.RELOAD: (T.LOAD_REQUEST, T.LOAD_RESPONSE),
    CommandKind.CANCEL: (T.CANCEL_LOAD_REQUEST, T.CANCEL_LOAD_RESPONSE),
}


def response_tlv(kind: CommandKind) -> int:
    return int(_COMMAND_TLVS[kind][1])


@dataclass(slots=True)
class CommandMember:
    eui: str
    code: int | None = None
    """The device's response code; None while it has not answered."""
    failed: str = ""
    """Why no answer came (after the unicast attempts)."""
    attempts: int = 0
    step: Step = Step.IDLE
    asked_now: bool = False
    """Asked again to load now after refusing a load time that had passed."""


class CommandCampaign:
    """Send one group command and collect the members' answers.

    Multicast mode: one NON POST to the group (GroupMatch, a=<window>,
    signed), then after the window a unicast CON POST to each member that has
    not answered (at most ``unicast_parallel`` at once, ``max_attempts``
    each). Unicast mode starts with the unicast part.
    """

    def __init__(
        self,
        op_id: int,
        kind: CommandKind,
        group_key: str,
        group_id: int,
        file_hash: bytes,
        members: Iterable[str],
        tuning: UploadTuning,
        *,
        multicast: bool,
        now: float,
        load_time: int = 0,
    ) -> None:
        self.op_id = op_id
        self.kind = kind
        self.group_key = group_key
        self.group_id = group_id
        self.file_hash = file_hash
        self.load_time = load_time
        self.tuning = tuning
        # A load time within the answer window cannot be met by everyone
        # (a busy mesh delivers the request late): ask for a load now.
        self._load_now = bool(
            load_time and load_time - now <= tuning.async_window + tuning.grace
        )
        self.multicast = multicast
        self.started = now
        self.finished_at = 0.0
        self.members = {e: CommandMember(e) for e in members}
        self.phase = Phase.TRANSFER if multicast else Phase.FILL
        self._until = now
        self._queue: deque[CommandMember] = deque()
        self._busy = 0
        self._out: list[Send] = []
        self._dirty: set[str] = set(self.members)
        self._answered = 0
        """Members with a response code."""
        self._closed = 0
        """Members answered or given up on (step DONE)."""
        self.resumed = False
        """Rebuilt from the store after a restart (see :meth:`resume`)."""

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE_PHASES

    def start(self, now: float) -> None:
        if self.multicast:
            self._until = now + self.tuning.async_window + self.tuning.grace
            payload = group_match(self.group_id) + self._request()
            query = (f"a={self.tuning.async_window}",)
            self._out.append(
                _post(None, payload, Purpose.COMMAND, signed=True, query=query)
            )
        else:
            self._go_unicast(now)

    def resume(self, now: float) -> None:
        """Continue after a restart, members as restored from the store: those
        with an answer or given up on stay as they are, the others are asked
        again by unicast (the multicast window has passed; a request a device
        already applied is applied again harmlessly: a SetBackupRequest copies
        the same image, a LoadRequest for the pending load keeps it). A reload
        member that answers 9 (image running) counts as accepted: it ran the
        load the lost answer was for."""
        self.resumed = True
        self._answered = self._closed = 0
        for member in self.members.values():
            if member.code is not None or member.failed:
                member.step = Step.DONE
                self._answered += member.code is not None
                self._closed += 1
        self._dirty.clear()
        self._go_unicast(now)

    def _request(self, now: float | None = None) -> bytes:
        """The request TLV. A LoadRequest for a time within the answer window
        ("now"), or sent (by unicast) once its load time has come, asks for a
        load now (loadTime 0): a member reached late still reloads, a moment
        late, instead of refusing a time in the past."""
        tlv = _COMMAND_TLVS[self.kind][0]
        if self.kind is CommandKind.RELOAD:
            load_time = self.load_time
            if self._load_now or (now is not None and load_time and now >= load_time):
                load_time = 0
            msg: Any = pb.LoadRequest(fileHash=self.file_hash, loadTime=load_time)
        else:
            msg = pb.HashRequest(fileHash=self.file_hash)
        return encode_tlv(tlv, msg)

    def _go_unicast(self, now: float) -> None:
        self.phase = Phase.FILL
        self._until = float("inf")
        for member in self.members.values():
            if member.code is None and member.step is not Step.DONE:
                member.step = Step.NEED_TRANSFER
                self._queue.append(member)
        self._check_done(now)

    def on_command_response(self, eui: str, code: int, now: float) -> None:
        member = self.members.get(eui)
        if member is None or member.code is not None or not self.active:
            return
        if self._late_for_load(member, code, now):
            return
        if self.resumed and self.kind is CommandKind.RELOAD:
            code = RC_OK if code == RC_IMAGE_RUNNING else code
        member.code = code
        member.failed = ""
        self._answered += 1
        if member.step is not Step.DONE:
            self._closed += 1
        if member.step is Step.AWAIT_TRANSFER:
            self._busy -= 1
        member.step = Step.DONE
        self._dirty.add(eui)
        self._check_done(now)

    def on_loaded(self, eui: str, now: float) -> bool:
        """Member ``eui`` of a reload registered again running the image: it
        carried out the load, so its LoadResponse is taken as given (0). Its
        answer was an async one, lost with the reboot it announced, and
        asking again by unicast would make it load, and reboot, a second time
        (the UPLOAD slot still holds the image). True when this was news."""
        member = self.members.get(eui)
        if self.kind is not CommandKind.RELOAD or member is None:
            return False
        if member.code is not None or not self.active:
            return False
        self.on_command_response(eui, RC_OK, now)
        return member.code == RC_OK

    def _late_for_load(self, member: CommandMember, code: int, now: float) -> bool:
        """A member refused the LoadRequest as invalid once the load time had
        passed (it got the request late): ask it again, by unicast, to load
        now (see :meth:`_request`). True when the answer is set aside."""
        if (
            self.kind is not CommandKind.RELOAD
            or code != RC_INVALID_REQUEST
            or not self.load_time
            or now < self.load_time
            or member.asked_now
        ):
            return False
        member.asked_now = True
        if self.phase is Phase.FILL:  # else the window's end queues it
            if member.step is Step.AWAIT_TRANSFER:
                self._busy -= 1
            member.step = Step.NEED_TRANSFER
            self._queue.append(member)
        return True

    def on_failed(self, eui: str, purpose: Purpose, reason: str, now: float) -> None:
        member = self.members.get(eui)
        if member is None or member.step is not Step.AWAIT_TRANSFER:
            return
        self._busy -= 1
        member.attempts += 1
        if member.attempts >= self.tuning.max_attempts:
            member.failed = reason or "no answer"
            member.step = Step.DONE
            self._closed += 1
            self._dirty.add(eui)
        else:
            member.step = Step.NEED_TRANSFER
            self._queue.append(member)
        self._check_done(now)

    def stop(self, now: float) -> None:
        self._finish(now)

    def next_deadline(self) -> float | None:
        if not self.active:
            return None
        if self._out:  # the multicast request of start(): send it now
            return -1.0
        if self.phase is Phase.TRANSFER:
            return self._until
        if self._queue and self._busy < self.tuning.unicast_parallel:
            return -1.0
        return None

    def poll(self, now: float) -> list[Send]:
        if self.phase is Phase.TRANSFER and now >= self._until:
            self._go_unicast(now)
        if self.phase is Phase.FILL:
            while self._queue and self._busy < self.tuning.unicast_parallel:
                member = self._queue.popleft()
                if member.step is not Step.NEED_TRANSFER:
                    continue
                member.step = Step.AWAIT_TRANSFER
                self._busy += 1
                self._out.append(
                    _post(member.eui, self._request(now), Purpose.COMMAND, signed=True)
                )
        out, self._out = self._out, []
        return out

    def _check_done(self, now: float) -> None:
        """Finish once every member answered (or, unicast, was given up on)."""
        total = len(self.members)
        if self.phase is not Phase.FILL:
            if self._answered >= total:
                self._finish(now)
            return
        if self._closed >= total:
            self._finish(now)

    def _finish(self, now: float) -> None:
        if self.active:
            self.phase = Phase.DONE
            self.finished_at = now
            self._queue.clear()
            logger.info(
                "%s %d (%s) done: %s",
                self.kind.value,
                self.op_id,
                self.group_key,
                self.counts(),
            )

    def take_dirty(self, volatile: bool = True) -> list[CommandMember]:
        dirty, self._dirty = self._dirty, set()
        return [self.members[e] for e in dirty]

    def counts(self) -> dict[str, int]:
        """members, accepted, refused, noResponse, pending, refusedCode<N>."""
        result = {"members": len(self.members), "accepted": 0, "refused": 0}
        result.update(noResponse=0, pending=0)
        for member in self.members.values():
            if member.code == RC_OK:
                result["accepted"] += 1
            elif member.code is not None:
                result["refused"] += 1
                name = f"refusedCode{member.code}"
                result[name] = result.get(name, 0) + 1
            elif member.failed or not self.active:
                result["noResponse"] += 1
            else:
                result["pending"] += 1
        return result

    def result_of(self, eui: str) -> str:
        member = self.members.get(eui)
        if member is None:
            return ""
        if member.code == RC_OK:
            return "ok"
        if member.code is not None:
            return f"refused {member.code}"
        return "no response" if (member.failed or not self.active) else "pending"
