"""Shared test fixtures: root detection for network-namespace tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


def have_root_net() -> bool:
    """True when we may create namespaces, routes and veths (root + iproute2)."""
    return os.geteuid() == 0 and shutil.which("ip") is not None


requires_root = pytest.mark.skipif(
    not have_root_net(), reason="needs root and iproute2 (ip netns, routes)"
)


def _find_vectors() -> Path:
    """shared/reference/vectors beside the checkout (CI), or the workplace's."""
    repo = Path(__file__).resolve().parent.parent
    for candidate in (
        repo.parent / "shared" / "reference" / "vectors",
        Path("/work/shared/reference/vectors"),
    ):
        if candidate.is_dir():
            return candidate
    return repo.parent / "shared" / "reference" / "vectors"


#: The two real firmware images of the reference material.
VECTORS = _find_vectors()


@pytest.fixture
def image_loads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """EUI-64s of the devices that load a new image, one entry per load.

    Counts ``Device._load`` calls that move a slot's image to RUN (a plain
    reboot does not count), so a test can assert each device loaded once.
    """
    from emulator.node.device import Device

    loads: list[int] = []
    load = Device._load

    def counted(device: Device, now: float) -> None:
        if device.firmware.load_slot:
            loads.append(device.identity.eui64)
        load(device, now)

    monkeypatch.setattr(Device, "_load", counted)
    return loads
