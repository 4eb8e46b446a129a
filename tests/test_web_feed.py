"""Tests of the live page's feed: event ring buffer and one-second series."""

from __future__ import annotations

import pytest

from emulator.web.feed import EventKind, LiveFeed


def test_events_are_numbered_and_read_after_a_seq() -> None:
    feed = LiveFeed()
    assert feed.last_seq == 0
    assert feed.events_since(0) == []
    first = feed.event(10.0, EventKind.REFUSAL, "refused", group="g", code=8)
    feed.event(11.0, "reboot", "rebooted", eui64="00173B0000000001")
    feed.event(12.0, EventKind.OPERATION, "startUpload")
    assert first.seq == 1 and first.kind == "refusal" and first.code == 8
    assert feed.last_seq == 3
    assert [e.seq for e in feed.events_since(1)] == [2, 3]
    assert [e.seq for e in feed.events_since(0, limit=2)] == [2, 3]
    assert feed.events_since(3) == []


def test_event_ring_buffer_keeps_the_newest() -> None:
    feed = LiveFeed(max_events=5)
    for i in range(12):
        feed.event(float(i), EventKind.INFO, f"e{i}")
    kept = feed.events_since(0)
    assert [e.text for e in kept] == ["e7", "e8", "e9", "e10", "e11"]
    assert feed.last_seq == 12
    assert [e.seq for e in feed.events_since(10)] == [11, 12]


def test_blocks_are_counted_per_second() -> None:
    feed = LiveFeed()
    assert feed.latest is None
    feed.count_blocks(100.2, multicast=1)
    feed.count_blocks(100.9, multicast=2, unicast=5)
    feed.count_blocks(102.0, unicast=1)
    buckets = list(feed.buckets_since(0))
    assert [(b.t, b.multicast, b.unicast) for b in buckets] == [
        (100, 3, 5),
        (102, 0, 1),
    ]
    assert feed.latest == 102
    assert [b.t for b in feed.buckets_since(101)] == [102]
    assert [b.t for b in feed.buckets_since(100.5)] == [100, 102]


def test_completion_samples_keep_the_last_per_second_and_group() -> None:
    feed = LiveFeed()
    feed.sample(50.1, "north", 1, 10)
    feed.sample(50.7, "north", 3, 10)
    feed.sample(50.8, "south", 0, 4)
    feed.sample(51.0, "north", 4, 10)
    first, second = feed.buckets_since(0)
    assert first.completion == {"north": (3, 10), "south": (0, 4)}
    assert second.completion == {"north": (4, 10)}


def test_series_is_bounded_to_the_window() -> None:
    feed = LiveFeed(window=60)
    for t in range(1000, 1300):
        feed.count_blocks(t, multicast=1)
    kept = [b.t for b in feed.buckets_since(0)]
    assert kept[0] == 1300 - 60 and kept[-1] == 1299
    assert len(kept) == 60


def test_a_clock_step_backwards_lands_in_the_newest_bucket() -> None:
    feed = LiveFeed()
    feed.count_blocks(200.0, multicast=1)
    feed.count_blocks(150.0, multicast=2)
    assert [(b.t, b.multicast) for b in feed.buckets_since(0)] == [(200, 3)]


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        LiveFeed(max_events=0)
    feed = LiveFeed()
    with pytest.raises(ValueError):
        feed.count_blocks(1.0, multicast=-1)
    with pytest.raises(ValueError):
        feed.sample(1.0, "g", -1, 3)
