"""Fault: devices that refuse a transfer, power-cycle mid-download or fail to boot.

One fleet, one upload, then a reload: 13 devices refuse the transfer, each
with one of the codes 1-13 (``[[faults.device]] kind = "refuse_transfer"``),
two power-cycle while blocks arrive, two fail to boot the new image and fall
back (``boot_fail``). The head-end must report each: getFirmwareUploadStatus
value pairs, per-device outcome with the CSMP code, and the running counts of
getFirmwareImageInfoList after the reload.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from faults_support import (
    VERSION,
    fleet_raw,
    free_port,
    make_fleet,
    pairs,
    start_headend,
    wait_for,
)

from emulator.headend.engine import RC_DUPLICATE_TRANSFER, Outcome, UploadStatus

pytestmark = pytest.mark.slow
DEVICES = 24
CODES = range(1, 14)


def in_seconds(seconds: float) -> str:
    when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)
    return when.strftime("%Y-%m-%d %H:%M:%S")


async def test_refusals_power_cycles_and_boot_failures(tmp_path: Path) -> None:
    relay = free_port()
    head = await start_headend(
        tmp_path, relay, image_size=48 * 1024, upload={"pace": 40}
    )
    raw = fleet_raw(DEVICES, head.csmp_port, relay)
    euis = [p.eui64 for p in make_fleet(raw).planned]
    refusers = dict(zip(euis[: len(CODES)], CODES, strict=True))
    cycled = euis[13:15]
    broken = euis[15:17]
    raw["faults"] = {
        "device": [
            {"kind": "refuse_transfer", "code": code, "devices": [f"{eui:016x}"]}
            for eui, code in refusers.items()
        ]
        + [{"kind": "boot_fail", "devices": [f"{e:016x}" for e in broken]}]
    }
    fleet = make_fleet(raw)
    await fleet.start()
    api = head.api
    try:
        await wait_for(lambda: len(head.inventory) == DEVICES, 60, "registrations")
        assert (await api.start_upload(None, "meters", "fw.bin")).code == 0
        upload = head.core.uploads["meters"]
        await wait_for(lambda: upload.next_block > 10, 30, "multicast blocks")
        for eui in cycled:
            fleet.power_cycle(eui)
        await wait_for(lambda: not upload.active, 90, "upload")

        accepting = DEVICES - len(CODES)
        status = pairs(await api.get_upload_status(None, "meters"))
        # 11 (duplicate transfer) reads as "already downloading": the device
        # then shows no such upload and fails after max_rounds restarts.
        assert status["refused"] == len(CODES) - 1, status
        assert status["failed"] == 1, status
        assert status["complete"] == accepting, status
        assert status["unreachable"] == status["partialUpload"] == 0, status
        for eui, code in refusers.items():
            text = f"{eui:016X}"
            member = upload.members[text]
            assert fleet.devices[eui].firmware.upload is None
            if code == RC_DUPLICATE_TRANSFER:
                assert member.outcome is Outcome.FAILED, member
                assert "lost the transfer" in member.reason
                continue
            assert (member.outcome, member.code) == (Outcome.REFUSED, code), code
            assert upload.status_of(text) is UploadStatus.REFUSED
        # the power-cycled devices kept their blocks and finished once
        assert fleet.stats["uploads_completed"] == accepting, fleet.stats

        when = in_seconds(6)
        reload = pairs(await api.schedule_reload(None, "meters", "fw.bin", when))
        assert reload["accepted"] == accepting, reload

        def settled() -> bool:
            new = sum(d.running_version == VERSION for d in fleet.devices.values())
            return new == accepting - len(broken) and all(
                d.registered for d in fleet.devices.values()
            )

        await wait_for(settled, 60, "reloads")
        for eui in broken:
            assert fleet.devices[eui].running_version == "6.8.1"
        info = await api.get_image_info_list(None, "meters")
        assert info.code == 0 and info.data is not None

        def running() -> dict[str, int]:
            data = head.api.image_info("meters")
            return {i.version: i.running for i in data.images if i.running}

        await wait_for(
            lambda: (
                running()
                == {VERSION: accepting - len(broken), "6.8.1": len(CODES) + len(broken)}
            ),
            30,
            f"image info running counts {running()}",
        )
        for eui in broken:
            record = head.inventory.get(f"{eui:016X}")
            assert record is not None
            assert record.results["reload"] == "boot failed (6.8.1)", record.results
        assert head.api.action_status("meters") == "RELOADED"
    finally:
        await fleet.stop()
        await head.stop()
