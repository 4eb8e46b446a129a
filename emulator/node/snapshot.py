"""Durable device state as plain data, and its validated restore.

Device layer persistence (CSMP.md "Firmware slots" and the draft's "Device
Groups": slots, group assignments, session and report subscription survive a
reboot). What a device keeps in flash goes into a dict of plain types that
cbor2 writes as is: slots by :class:`ImageKey` reference plus metadata (the
blocks live in the shared BlockStore), the UPLOAD bitmap and overrides, group
ids, the pending load, registration settings, session id and subscription.
Volatile state (registration progress, timers, async answers) is not saved.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from emulator.firmware.blockstore import ImageKey
from emulator.node.firmware import BACKUP, HASH_LEN, UPLOAD, Upload
from emulator.node.profile import (
    SlotImage,
    UploadState,
    intern_ids,
    intern_image,
    shared_groups,
)

if TYPE_CHECKING:
    from emulator.node.device import Device

logger = logging.getLogger(__name__)

VERSION = 1
_STATES = {s.value: s for s in UploadState if s is not UploadState.NONE}
_MAX_U32 = 0xFFFFFFFF


def _image(image: SlotImage | None) -> dict[str, Any] | None:
    if image is None:
        return None
    return {
        "hash": image.key.file_hash,
        "block_size": image.key.block_size,
        "name": image.name,
        "version": image.version,
        "size": image.size,
        "hwid": image.hwid,
    }


def _upload(up: Upload | None) -> dict[str, Any] | None:
    if up is None:
        return None
    return {
        "image": _image(up.image),
        "bits": up.bits,
        "state": up.state.value,
        "overrides": dict(up.overrides or {}),
    }


def dump(device: Device) -> dict[str, Any]:
    """The durable state of ``device``."""
    fw = device._fw
    load = [fw.load_slot, fw.load_due, fw.load_time] if fw.load_slot else None
    return {
        "v": VERSION,
        "run": _image(fw.run),
        "upload": _upload(fw.upload),
        "backup": _image(fw.backup),
        "load": load,
        "groups": list(device._groups),
        "session": device._session,
        "report": [device._rep_interval, list(device._rep_ids)],
        "reg": [device._reg_min, device._reg_max],
        "boot_failed": device._boot_failed,
        "draws": device._draws,
    }


# ----------------------------------------------------------------- restore


def _need(cond: bool, reason: str) -> None:
    if not cond:
        raise ValueError(f"bad device snapshot: {reason}")


def _int(value: object, what: str, low: int = 0, high: int = _MAX_U32) -> int:
    _need(
        isinstance(value, int) and not isinstance(value, bool) and low <= value <= high,
        f"{what} must be an int in {low}..{high}, got {value!r}",
    )
    assert isinstance(value, int)
    return value


def _str(value: object, what: str) -> str:
    _need(isinstance(value, str), f"{what} must be a string")
    assert isinstance(value, str)
    return value


def _load_image(raw: object, what: str) -> SlotImage | None:
    if raw is None:
        return None
    _need(isinstance(raw, dict), f"{what} must be a map")
    assert isinstance(raw, dict)
    file_hash = raw.get("hash")
    _need(isinstance(file_hash, bytes) and len(file_hash) == HASH_LEN, f"{what} hash")
    assert isinstance(file_hash, bytes)
    image = SlotImage(
        ImageKey(file_hash, _int(raw.get("block_size"), f"{what} block_size", 1)),
        _str(raw.get("name"), f"{what} name"),
        _str(raw.get("version"), f"{what} version"),
        _int(raw.get("size"), f"{what} size", 1),
        _str(raw.get("hwid"), f"{what} hwid"),
    )
    return intern_image(image)


def _load_upload(raw: object) -> Upload | None:
    if raw is None:
        return None
    _need(isinstance(raw, dict), "upload must be a map")
    assert isinstance(raw, dict)
    image = _load_image(raw.get("image"), "upload image")
    _need(image is not None, "upload without image")
    assert image is not None
    nblocks = image.nblocks
    bits = _int(raw.get("bits"), "upload bits", 0, (1 << nblocks) - 1)
    state = _STATES.get(raw.get("state"))
    _need(state is not None, f"upload state {raw.get('state')!r}")
    assert state is not None
    overrides = _load_overrides(raw.get("overrides"), image, bits)
    return Upload(image, bits, state, overrides or None)


def _load_overrides(raw: object, image: SlotImage, bits: int) -> dict[int, bytes]:
    _need(isinstance(raw, dict), "upload overrides must be a map")
    assert isinstance(raw, dict)
    out: dict[int, bytes] = {}
    for num, data in raw.items():
        num = _int(num, "override block number", 0, image.nblocks - 1)
        _need(bits >> num & 1 == 1, f"override of block {num} not in the bitmap")
        _need(
            isinstance(data, bytes) and len(data) <= image.key.block_size,
            f"override of block {num} must be at most one block of bytes",
        )
        out[num] = data
    return out


def _load_list(raw: object, what: str, length: int) -> list[Any]:
    _need(
        isinstance(raw, list) and len(raw) == length, f"{what} must be {length} items"
    )
    assert isinstance(raw, list)
    return raw


def load(device: Device, snap: dict[str, Any]) -> None:
    """Put the state of ``snap`` into a freshly built ``device``."""
    _need(isinstance(snap, dict), "not a map")
    _need(snap.get("v") == VERSION, f"version {snap.get('v')!r}, need {VERSION}")
    fw = device._fw
    fw.run = _load_image(snap.get("run"), "run")
    fw.upload = _load_upload(snap.get("upload"))
    fw.backup = _load_image(snap.get("backup"), "backup")
    _restore_load(device, snap.get("load"))
    groups = _load_list(snap.get("groups"), "groups", 2)
    config, firmware = (_int(g, "group id") for g in groups)
    device._groups = shared_groups((config, firmware))
    session = snap.get("session")
    device._session = None if session is None else _str(session, "session")
    interval, ids = _load_list(snap.get("report"), "report", 2)
    device._rep_interval = _int(interval, "report interval")
    _need(isinstance(ids, list), "report ids must be a list")
    device._rep_ids = intern_ids(tuple(_str(i, "report id") for i in ids))
    low, high = (
        _int(v, "reg interval", 1) for v in _load_list(snap.get("reg"), "reg", 2)
    )
    _need(low <= high, "reg min above reg max")
    device._reg_min, device._reg_max = low, high
    failed = snap.get("boot_failed")
    _need(failed is None or isinstance(failed, bytes), "boot_failed must be bytes")
    device._boot_failed = failed
    device._draws = _int(snap.get("draws", 0), "draws", 0, 1 << 62)


def _restore_load(device: Device, raw: object) -> None:
    fw = device._fw
    if raw is None:
        fw.cancel_pending()
        return
    slot, due, load_time = _load_list(raw, "load", 3)
    _need(slot in (UPLOAD, BACKUP), f"load slot {slot!r}")
    _need(isinstance(due, (int, float)) and not isinstance(due, bool), "load due")
    _need(fw.slot_image(slot) is not None, "load of an empty slot")
    if slot == UPLOAD:
        _need(fw.upload_state() is UploadState.COMPLETE, "load of an incomplete upload")
    fw.load_slot, fw.load_due = slot, float(due)
    fw.load_time = _int(load_time, "load time")
