"""Every shipped config under fleet_configs/ loads and means what it says."""

from __future__ import annotations

from pathlib import Path

import pytest

from emulator.fleet.config import load_config

CONFIGS = Path(__file__).resolve().parent.parent / "fleet_configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_config_loads(path: Path) -> None:
    config = load_config(path)
    assert config.devices > 0


def test_the_four_lab_configs_are_there() -> None:
    names = {p.name for p in CONFIGS.glob("*.toml")}
    assert {
        "lab-small.toml", "fleet-10k.toml", "lossy-mesh.toml", "mixed-hardware.toml"
    } <= names  # fmt: skip


def test_ten_thousand_and_mixed_and_lossy_say_what_they_are() -> None:
    assert load_config(CONFIGS / "fleet-10k.toml").devices == 10_000
    mixed = load_config(CONFIGS / "mixed-hardware.toml")
    assert {h.hardware_id for h in mixed.hardware} == {"OPENCSMP", "OPENCSMP-RE"}
    assert mixed.hardware[1].images[0].version == "6.10.0"
    lossy = load_config(CONFIGS / "lossy-mesh.toml")
    assert max(rule.loss for rule in lossy.faults.link) == pytest.approx(0.2)
