"""Abuse: the whole fleet registers at once (2,000 devices, no power-on jitter).

The head-end and the fleet run in this process; RSS is read from
``/proc/self/statm`` before the storm and after every device registered.
No crash, every device in the inventory, memory growth bounded.
"""

from __future__ import annotations

import gc
import os
import resource
import time
from pathlib import Path

import pytest
from faults_support import fleet_raw, free_port, make_fleet, start_headend, wait_for
from test_fleet_support import free_port_range

pytestmark = pytest.mark.slow
DEVICES = 2000
#: Bytes of RSS growth allowed per device (fleet device + head-end record +
#: sockets of loopback-ports addressing, with a wide margin).
BUDGET_PER_DEVICE = 32 * 1024


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_registration_storm_of_2000(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < DEVICES + 200:
        want = min(hard, DEVICES + 1000)
        if want < DEVICES + 200:
            pytest.skip(f"needs {DEVICES + 200} file descriptors, limit {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    relay = free_port()
    head = await start_headend(tmp_path, relay)
    raw = fleet_raw(DEVICES, head.csmp_port, relay, port_base=free_port_range(DEVICES))
    raw["fleet"]["power_on_jitter"] = 0.0
    raw["fleet"]["boot_time"] = 0.0
    gc.collect()
    before = rss()
    fleet = make_fleet(raw)
    started = time.monotonic()
    await fleet.start()
    try:
        await wait_for(lambda: len(head.inventory) == DEVICES, 90, "registrations")
        await wait_for(
            lambda: all(d.registered for d in fleet.devices.values()),
            60,
            "every device registered",
        )
        took = time.monotonic() - started
        gc.collect()
        growth = rss() - before
        stats = head.core.stats
        print(
            f"storm: {DEVICES} registered in {took:.1f}s, RSS +{growth / 2**20:.1f} MiB"
            f" ({growth / DEVICES:.0f} B/device), head-end registrations"
            f" {stats['registrations']}, fleet sent {fleet.stats['registrations_sent']}"
        )
        assert growth < DEVICES * BUDGET_PER_DEVICE, growth
        assert stats["bad_input"] == 0
        assert fleet.stats["registrations_ok"] >= DEVICES
    finally:
        await fleet.stop()
        await head.stop()
