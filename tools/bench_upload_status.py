"""getFirmwareUploadStatus cost at N members, in process (no sockets).

    .venv/bin/python tools/bench_upload_status.py [N]

Builds an inventory of N devices in one group and a running upload campaign
in which half the members accepted and hold part of the image, then times
``HeadEndApi.upload_status`` (mean of 50 calls) and prints the value pairs.
"""

from __future__ import annotations

import hashlib
import random
import sys
import time
import types

from emulator.headend.engine import ImageRef, UploadCampaign, UploadTuning
from emulator.headend.inventory import DeviceRecord, Inventory
from emulator.headend.operations import HeadEndApi


def main(n: int) -> None:
    inventory = Inventory(600)
    euis = [f"{i:016X}" for i in range(n)]
    for i, eui in enumerate(euis):
        record = DeviceRecord(eui, "::1", i + 1, group="g")
        record.last_heard = time.time()
        inventory.add(record)
    data = random.Random(1).randbytes(256 * 1024)
    image = ImageRef("x", "1", hashlib.sha256(data).digest(), "H", data)
    campaign = UploadCampaign(
        1, "g", 7, image, euis, UploadTuning(), multicast=True, now=0.0
    )
    campaign.start(0.0)
    for i, eui in enumerate(euis[: n // 2]):
        campaign.on_transfer_response(eui, 0, 1.0)
        campaign.members[eui].bits = (1 << (i % 512)) - 1
        campaign._touch(eui)
    core: object = types.SimpleNamespace(
        inventory=inventory, uploads={"g": campaign}, on_finished=[]
    )
    api = HeadEndApi(core, None, read_image=None)  # type: ignore[arg-type]
    api.upload_status("g")
    calls = 50
    start = time.perf_counter()
    for _ in range(calls):
        pairs = api.upload_status("g")
    ms = (time.perf_counter() - start) / calls * 1000
    print(f"upload_status at {n} members: {ms:.1f} ms per call")
    print(", ".join(f"{p.name}={p.value}" for p in pairs))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
