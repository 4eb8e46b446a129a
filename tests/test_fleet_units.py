"""Pure parts of the fleet: config, addressing, timer wheel, sharding, faults."""

from __future__ import annotations

import ipaddress
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emulator.fleet.addressing import device_address, group_address, interface_id
from emulator.fleet.config import (
    ConfigError,
    DeviceFaultRule,
    LinkRule,
    parse_config,
)
from emulator.fleet.faults import DOWN, UP, DeviceKey, FaultSchedule, LinkModel
from emulator.fleet.inventory import format_inventory, plan_fleet, read_inventory_csv
from emulator.fleet.sharding import in_shard, parse_shard, shard_of
from emulator.fleet.timerwheel import TimerWheel

# ------------------------------------------------------------------ config


def test_config_defaults_give_a_fleet() -> None:
    config = parse_config({})
    assert config.devices == 100
    assert config.prefix == "fd00:6d66::/64"
    assert config.eui64_base == 0x00173BAB00000001
    assert config.nms == ("::1", 61628)
    assert config.hardware[0].images[0].version == "6.8.1"


def test_config_reports_every_problem_at_once() -> None:
    data = {
        "fleet": {"devices": -1, "prefix": "fd00::/96", "nms": "[::1", "colour": 1},
        "registration": {"min": 10, "max": 5},
        "hardware": [
            {"name": "a", "weight": 0, "images": [{"version": 6.10}]},
            {"name": "a"},
        ],
        "faults": {"link": [{"loss": 2.0, "hardware": "nope"}]},
    }
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    problems = info.value.problems
    text = "\n".join(problems)
    for expected in (
        "fleet.devices",
        "fleet.prefix",
        "fleet.nms",
        "fleet.colour: unknown key",
        "registration.max",
        "hardware[0].weight",
        "hardware[0].images[0].version",
        'write it as a string, e.g. "6.1"',
        "mix name 'a' used more than once",
        "faults.link[0].loss",
        "faults.link[0].hardware",
    ):
        assert expected in text, expected
    assert len(problems) >= 10


def test_version_strings_stay_strings() -> None:
    config = parse_config(
        {"hardware": [{"name": "m", "images": [{"slot": "run", "version": "6.10.0"}]}]}
    )
    assert config.hardware[0].images[0].version == "6.10.0"
    entries = read_inventory_csv("eui64,versions\n00173bab000000aa,6.10;6.9.1\n")
    assert entries[0].versions == ("6.10", "6.9.1")


def test_inventory_csv_problems_listed() -> None:
    with pytest.raises(Exception) as info:
        read_inventory_csv("eui64,address\nzz,\n00173bab00000001,not-an-ip\n")
    assert "line 2" in str(info.value) and "line 3" in str(info.value)


def test_fnd_inventory_format() -> None:
    config = parse_config({"fleet": {"devices": 2}})
    text = format_inventory(plan_fleet(config), "fnd", config.seed)
    lines = text.splitlines()
    assert lines[0] == "eid,deviceType,lat,lng"
    assert lines[1].startswith("00173bab00000001,cgmesh,")


# -------------------------------------------------------------- addressing


def test_slaac_interface_id_vectors() -> None:
    # RFC 4291 App. A: invert the U/L bit of the first octet
    assert interface_id(0x00173BAB00000001) == 0x02173BAB00000001
    assert interface_id(0x0217_3BAB_0000_0001) == 0x00173BAB00000001
    assert interface_id(0x3C97_0EFF_FE12_3456) == 0x3E97_0EFF_FE12_3456
    prefix = ipaddress.IPv6Network("fd00:6d66::/64")
    assert device_address(prefix, 0x00173BAB00000001) == "fd00:6d66::217:3bab:0:1"
    assert device_address(prefix, 0x3C970EFFFE123456) == "fd00:6d66::3e97:eff:fe12:3456"
    assert group_address("ff05::6d66:0:0:0", 7, {}) == "ff05::6d66:0:0:7"
    assert group_address("ff05::6d66:0:0:0", 7, {7: "ff02::7"}) == "ff02::7"


@given(st.integers(0, 2**64 - 1))
def test_interface_id_is_an_involution(eui: int) -> None:
    assert interface_id(interface_id(eui)) == eui


# -------------------------------------------------------------- timer wheel


@given(
    st.sampled_from(["fd00:6d66::/64", "::/64", "2001:db8:0:1::/64", "fe80::/10"]),
    st.integers(0, (1 << 64) - 1),
)
def test_device_address_text_is_ipaddress_text(prefix: str, eui: int) -> None:
    network = ipaddress.IPv6Network(prefix)
    value = int(network.network_address) | interface_id(eui)
    assert device_address(network, eui) == str(ipaddress.IPv6Address(value))


def test_device_address_edge_values() -> None:
    zero = ipaddress.IPv6Network("::/64")
    for eui in (
        0,
        1 << 57,
        (1 << 57) | 1,
        0xFFFF << 32 | 0x02000000 << 32,
        0x0102030405060708,
    ):
        value = interface_id(eui)
        assert device_address(zero, eui) == str(ipaddress.IPv6Address(value))


def test_timer_wheel_fires_in_slot_order_never_early() -> None:
    wheel: TimerWheel[str] = TimerWheel(0.05)
    wheel.schedule("a", 10.01)
    wheel.schedule("b", 10.07)
    wheel.schedule("c", 100.0)
    assert wheel.next_deadline() == pytest.approx(10.05)
    assert wheel.pop_due(10.04) == []
    assert wheel.pop_due(10.05) == ["a"]
    wheel.schedule("b", 10.02)  # moved earlier, slot already behind us
    assert wheel.pop_due(10.06) == ["b"]
    assert len(wheel) == 1 and "c" in wheel
    wheel.cancel("c")
    assert wheel.next_deadline() is None and wheel.pop_due(math.inf) == []


def test_timer_wheel_reschedule_and_none() -> None:
    wheel: TimerWheel[int] = TimerWheel(0.05)
    for i in range(1000):
        wheel.schedule(i, 5.0 + i * 0.001)
    wheel.schedule(3, None)
    wheel.schedule(4, 1.0)
    assert wheel.pop_due(1.05) == [4]
    due = wheel.pop_due(7.0)
    assert sorted(due) == [i for i in range(1000) if i not in (3, 4)]
    assert len(wheel) == 0


@given(st.lists(st.tuples(st.integers(0, 50), st.floats(0, 100)), max_size=200))
def test_timer_wheel_matches_a_dict(ops: list[tuple[int, float]]) -> None:
    wheel: TimerWheel[int] = TimerWheel(0.05)
    truth: dict[int, float] = {}
    for key, deadline in ops:
        wheel.schedule(key, deadline)
        truth[key] = deadline
    due = set(wheel.pop_due(50.0))
    assert all(truth[k] < 50.0 for k in due)
    assert {k for k, t in truth.items() if t < 49.95} <= due


# ---------------------------------------------------------------- sharding


def test_shards_cover_every_device_once() -> None:
    euis = list(range(0x00173BAB00000001, 0x00173BAB00000001 + 3000))
    owners = [[i for i in range(4) if in_shard(e, (i, 4))] for e in euis]
    assert all(len(o) == 1 for o in owners)
    sizes = [sum(1 for o in owners if o == [i]) for i in range(4)]
    assert min(sizes) > 600  # even enough
    config = parse_config({"fleet": {"devices": 500}})
    planned = plan_fleet(config)
    picked = [p.eui64 for s in range(3) for p in planned if in_shard(p.eui64, (s, 3))]
    assert sorted(picked) == [p.eui64 for p in planned]
    assert shard_of(euis[0], 4) == shard_of(euis[0], 4)


def test_parse_shard() -> None:
    assert parse_shard("2/5") == (2, 5)
    assert parse_shard("auto/3", {"POD_INDEX": "1"}) == (1, 3)
    with pytest.raises(ValueError):
        parse_shard("5/5")


# ------------------------------------------------------------------ faults


def _devices(n: int) -> list[DeviceKey]:
    return [DeviceKey(0x100 + i, "meter" if i % 2 else "relay") for i in range(n)]


def _fates(seed: int) -> list[object]:
    model = LinkModel(seed, _devices(100))
    model.set_rules(
        [LinkRule(hardware="meter", fraction=0.5, loss=0.3, jitter=0.2, duplicate=0.1)]
    )
    return [model.decide(i % 100, UP if i % 3 else DOWN, 1.0) for i in range(2000)]


def test_link_faults_reproducible_from_seed() -> None:
    assert _fates(7) == _fates(7)
    assert _fates(7) != _fates(8)
    fates = _fates(7)
    assert () in fates and None in fates
    assert any(isinstance(f, tuple) and len(f) == 2 for f in fates)


def test_link_outage_and_selection() -> None:
    model = LinkModel(1, _devices(10))
    model.set_rules([LinkRule(devices=(0x100,), outages=((5.0, 6.0),))])
    assert model.decide(1, UP, 5.5) is None
    assert model.decide(0, UP, 5.5) == ()
    assert model.decide(0, UP, 6.5) == (0.0,)
    assert model.counts["outage"] == 1


def test_fault_schedule_reboot_loop_and_clear() -> None:
    schedule = FaultSchedule(
        [
            DeviceFaultRule(kind="reboot_loop", at=1.0, period=2.0, until=6.0),
            DeviceFaultRule(kind="refuse_transfer", at=0.0, until=3.0, code=4),
        ]
    )
    assert [a.kind for a in schedule.due(0.5)] == ["refuse_transfer"]
    assert [a.kind for a in schedule.due(1.0)] == ["reboot_loop"]
    later = schedule.due(10.0)
    assert [(a.kind, a.clear) for a in later] == [
        ("reboot_loop", False),
        ("refuse_transfer", True),
        ("reboot_loop", False),
    ]
    assert schedule.next_time() is None
