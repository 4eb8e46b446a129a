"""Fault: a fifth of the fleet loses its link during an upload.

The outage (``[[faults.link]] fraction = 0.2, outages = [[start, end]]``, set
through the same rules the control API replaces) starts with the first
multicast block and covers most of them (paced at 20 blocks/s);
the devices behind it finish by unicast when they come back, and nobody
downloads the image twice.
"""

from __future__ import annotations

import time
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

from emulator.fleet.config import LinkRule
from emulator.fleet.faults import select_devices

pytestmark = pytest.mark.slow
DEVICES = 50


async def test_fifth_of_fleet_unreachable_during_upload(tmp_path: Path) -> None:
    relay = free_port()
    head = await start_headend(
        tmp_path, relay, image_size=48 * 1024, upload={"pace": 20}
    )
    fleet = make_fleet(fleet_raw(DEVICES, head.csmp_port, relay))
    await fleet.start()
    api = head.api
    try:
        await wait_for(lambda: len(head.inventory) == DEVICES, 60, "registrations")
        assert (await api.start_upload(None, "meters", "fw.bin")).code == 0
        upload = head.core.uploads["meters"]
        await wait_for(lambda: upload.next_block > 0, 30, "first multicast block")
        elapsed = time.time() - fleet.started_at
        rule = LinkRule(fraction=0.2, outages=((elapsed, elapsed + 4.0),))
        fleet.set_link_rules([rule])
        cut = select_devices(rule, 0, fleet.config.seed, fleet._device_keys)
        cut_euis = {fleet.planned[i].eui64 for i in cut}
        assert 4 <= len(cut) <= 18, len(cut)
        await wait_for(lambda: not upload.active, 120, "upload")
        status = pairs(await api.get_upload_status(None, "meters"))
        assert status["complete"] == DEVICES, status
        assert status["partialUpload"] == 0, status
        assert fleet.link.counts["outage"] > 0
        assert head.core.stats["blocks_unicast"] > 0, (head.core.stats, upload.stats)
        for eui in cut_euis:
            device = fleet.devices[eui]
            assert device.firmware.upload is not None
            assert device.firmware.upload.image.version == VERSION
        # each device completed the image exactly once
        assert fleet.stats["uploads_completed"] == DEVICES, fleet.stats
    finally:
        await fleet.stop()
        await head.stop()
