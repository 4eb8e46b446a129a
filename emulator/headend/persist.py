"""Head-end state to SQLite rows and back (layer ``headend``, pure).

What :mod:`emulator.headend.store` writes for the core's changes
(:meth:`HeadEndCore.take_changes`) and how a restarted head-end rebuilds its
inventory and campaigns from the rows. An upload that was running when the
process died resumes where it was (transfer, multicast blocks from the next
block, or unicast fill-in with each member's saved bitmap and rounds); a
backup/reload collection that was running goes on by unicast to the members
whose answer was still missing (:meth:`CommandCampaign.resume`), and its
reload time is kept.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from emulator.headend.core import Campaign, HeadEndCore, Reload
from emulator.headend.engine import (
    ACTIVE_PHASES,
    CommandCampaign,
    CommandKind,
    CommandMember,
    ImageRef,
    Member,
    Phase,
    UploadCampaign,
)
from emulator.headend.inventory import SNAPSHOT_SLOTS, DeviceRecord, SlotInfo
from emulator.headend.store import (
    Lazy,
    OperationRow,
    Write,
    device_write,
    operation_write,
    progress_write,
)

logger = logging.getLogger(__name__)


def change_writes(
    devices: Iterable[DeviceRecord], campaigns: Iterable[tuple[Campaign, list[Any]]]
) -> list[Write]:
    """The store writes for changed devices and campaigns."""
    return list(iter_change_writes(devices, campaigns))


def iter_change_writes(
    devices: Iterable[DeviceRecord], campaigns: Iterable[tuple[Campaign, list[Any]]]
) -> Iterator[Write]:
    """:func:`change_writes` one at a time: each snapshot is taken when its
    write is drawn, so the caller can spread 10,000 of them over several
    event-loop turns (a change made in between marks the record dirty again
    and is written at the next flush)."""
    for d in devices:
        yield device_write(Lazy(device_json, d.snapshot()), d.eui)
    for campaign, members in campaigns:
        yield operation_write(
            campaign.op_id,
            str(campaign.kind),
            campaign.group_key,
            campaign_data(campaign),
        )
        for member in members:
            yield progress_write(campaign.op_id, member.eui, _member_lazy(member))


def campaign_data(campaign: Campaign) -> dict[str, Any]:
    common = {
        "group_id": campaign.group_id,
        "multicast": campaign.multicast,
        "phase": campaign.phase.value,
        "started": campaign.started,
        "finished": campaign.finished_at,
    }
    if isinstance(campaign, UploadCampaign):
        img = campaign.image
        return {
            **common,
            **campaign.to_row(),
            "image": {
                "name": img.name,
                "version": img.version,
                "sha256": img.sha256.hex(),
                "hwid": img.hwid,
                "block_size": img.block_size,
            },
        }
    return {
        **common,
        "file_hash": campaign.file_hash.hex(),
        "load_time": campaign.load_time,
    }


def device_json(state: tuple[Any, ...]) -> str:
    """The JSON of :meth:`DeviceRecord.row_of` (any thread): the scalar fields
    through one ``json.dumps``, each slot's JSON from a cache (devices share
    their frozen slots; a registration storm writes 10,000 rows a second and
    encoding the whole dict every time was the writer's main cost)."""
    at = SNAPSHOT_SLOTS
    row = DeviceRecord.row_of(state[:at] + ((),) + state[at + 1 :])
    del row["slots"]
    head = json.dumps(row)
    slots = ", ".join(map(_slot_json, state[at]))
    return f'{head[:-1]}, "slots": [{slots}]}}'


def _slot_json(slot: SlotInfo) -> str:
    entry = _SLOT_JSON.get(id(slot))
    if entry is not None and entry[0] is slot:
        return entry[1]
    text = json.dumps(slot.to_row())
    if len(_SLOT_JSON) >= _SLOT_JSON_MAX:
        _SLOT_JSON.clear()
    _SLOT_JSON[id(slot)] = (slot, text)  # the slot pins its id
    return text


#: id(SlotInfo) -> (the slot, its JSON); see :func:`device_json`.
_SLOT_JSON: dict[int, tuple[SlotInfo, str]] = {}
_SLOT_JSON_MAX = 4096


def _member_lazy(member: Member | CommandMember) -> Lazy | dict[str, Any]:
    if isinstance(member, Member):
        return Lazy(_member_json, member.snapshot())
    return member_data(member)  # a few small fields: built at once


def _member_json(state: tuple[Any, ...]) -> str:
    """The JSON of :meth:`Member.row_of`, written directly (tens of thousands
    of these per upload; json.dumps of the dict costs five times as much)."""
    eui, outcome, code, reason, bits, rounds, attempts = state
    code_text = "null" if code is None else str(int(code))
    reason_text = json.dumps(reason) if reason else '""'
    return (
        f'{{"eui": {json.dumps(eui)}, "outcome": "{outcome.value}", '
        f'"code": {code_text}, "reason": {reason_text}, "bits": "{bits:x}", '
        f'"rounds": {int(rounds)}, "attempts": {int(attempts)}}}'
    )


def member_data(member: Member | CommandMember) -> dict[str, Any]:
    if isinstance(member, Member):
        return member.to_row()
    return {
        "eui": member.eui,
        "code": member.code,
        "failed": member.failed,
        "attempts": member.attempts,
    }


@dataclass(frozen=True, slots=True)
class Saved:
    """What a restart needs from the store, read off the event loop."""

    operations: list[OperationRow]
    """The latest upload and latest command of each group."""
    progress: dict[int, list[dict[str, Any]]]
    images: dict[bytes, bytes | None]
    """Bytes of the images of running uploads (None: file lost)."""
    next_op_id: int


def latest_operations(rows: Iterable[OperationRow]) -> list[OperationRow]:
    """Per group, its last upload and its last command."""
    latest: dict[tuple[str, bool], OperationRow] = {}
    for row in rows:
        latest[(row.group_key, row.kind == "upload")] = row
    return sorted(latest.values(), key=lambda r: r.id)


def restore(core: HeadEndCore, saved: Saved, now: float) -> list[Campaign]:
    """Rebuild the latest campaigns; running uploads are resumed."""
    core.next_op_id = max(core.next_op_id, saved.next_op_id)
    restored: list[Campaign] = []
    for row in saved.operations:
        members = saved.progress.get(row.id, [])
        try:
            if row.kind == "upload":
                campaign: Campaign | None = _restore_upload(
                    core, row, members, saved, now
                )
            else:
                campaign = _restore_command(core, row, members, now)
        except (KeyError, ValueError, TypeError) as exc:
            logger.warning("cannot restore operation %d: %s", row.id, exc)
            continue
        if campaign is not None:
            restored.append(campaign)
    return restored


def _restore_upload(
    core: HeadEndCore,
    row: OperationRow,
    members: list[dict[str, Any]],
    saved: Saved,
    now: float,
) -> UploadCampaign | None:
    data = row.data
    img = data["image"]
    sha = bytes.fromhex(img["sha256"])
    raw = saved.images.get(sha)
    phase = Phase(data["phase"])
    ref = ImageRef(
        img["name"],
        img["version"],
        sha,
        img["hwid"],
        raw or b"",
        int(img["block_size"]),
    )
    campaign = UploadCampaign.restore(
        row.id,
        row.group_key,
        int(data["group_id"]),
        ref,
        [Member.from_row(m) for m in members],
        core.tuning,
        multicast=bool(data["multicast"]),
        row=data,
        now=now,
    )
    core.uploads[row.group_key] = campaign
    if campaign.active:
        if raw is None:
            campaign.phase = Phase.FAILED
            campaign.reason = "image file lost"
            campaign.finished_at = now
            return campaign
        campaign.resume(phase, int(data.get("next_block", 0)), now)
        core.adopt(campaign)
        logger.info("resuming upload %d of %s", row.id, row.group_key)
    return campaign


def _restore_command(
    core: HeadEndCore, row: OperationRow, members: list[dict[str, Any]], now: float
) -> CommandCampaign:
    data = row.data
    kind = CommandKind(row.kind)
    campaign = CommandCampaign(
        row.id,
        kind,
        row.group_key,
        int(data["group_id"]),
        bytes.fromhex(data["file_hash"]),
        (),
        core.tuning,
        multicast=bool(data["multicast"]),
        now=float(data.get("started", now)),
        load_time=int(data.get("load_time", 0)),
    )
    for entry in members:
        member = CommandMember(
            str(entry["eui"]),
            entry.get("code"),
            str(entry.get("failed", "")),
            int(entry.get("attempts", 0)),
        )
        campaign.members[member.eui] = member
    core.commands[row.group_key] = campaign
    if kind is CommandKind.RELOAD:
        core.reloads[row.group_key] = Reload(
            float(campaign.load_time), campaign.file_hash, campaign.op_id
        )
    if Phase(data["phase"]) in ACTIVE_PHASES and campaign.members:
        campaign.resume(now)
        for eui in list(campaign.members):  # registered running it before the kill
            record = core.inventory.get(eui)
            if record is not None:
                core.credit_load(campaign, record, now)
        core.adopt(campaign)
        logger.info(
            "resuming %s %d of %s: %d answers missing",
            kind.value,
            row.id,
            row.group_key,
            campaign.counts()["pending"],
        )
    else:
        campaign.phase = Phase.DONE
        campaign.finished_at = float(data.get("finished") or now)
    return campaign
