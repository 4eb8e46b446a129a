"""Prometheus metrics of the head-end: one custom collector (layer ``headend``).

STYLE.md "Metrics": aggregates computed at scrape time, no per-device labels.
Families (all prefixed ``meshfleet_headend_``):

- ``devices{state}``: up / down;
- ``upload_devices{state}``: members per upload state of their group's
  latest upload (the getFirmwareUploadStatus names);
- ``operations{kind,status}``: running and finished operations;
- ``blocks_sent_total{mode}``: multicast / unicast ImageBlocks;
- ``bytes_sent_total``: CSMP payload bytes sent;
- ``retransmissions_total``: CoAP CON retransmissions;
- ``registrations_total``, ``reports_total``, ``async_responses_total``,
  ``bad_input_total``, ``requests_failed_total``, ``group_assigns_total``,
  ``ignored_tlvs_total``, ``unknown_device_total``;
- ``groups``, ``images``: sizes of the tables.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from emulator.headend.core import HeadEndCore
from emulator.headend.engine import UploadStatus
from emulator.headend.images import ImageStore

logger = logging.getLogger(__name__)

PREFIX = "meshfleet_headend_"
_COUNTERS = (
    ("registrations", "Device registrations answered"),
    ("reports", "Reports and async responses received on /c"),
    ("async_responses", "Reports carrying firmware response TLVs"),
    ("bad_input", "Malformed payloads from devices"),
    ("requests_failed", "CON requests to devices without a good answer"),
    ("group_assigns", "GroupAssign POSTs pushed to devices"),
    ("ignored_tlvs", "TLVs received that the head-end does not use"),
    ("unknown_device", "Reports from addresses not in the inventory"),
)


class HeadEndCollector(Collector):
    """Reads the core at scrape time (see the module doc)."""

    def __init__(
        self,
        core: HeadEndCore,
        images: ImageStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.core = core
        self.images = images
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        yield from self._devices()
        yield self._operations()
        yield from self._traffic()
        groups = GaugeMetricFamily(PREFIX + "groups", "Firmware groups")
        groups.add_metric([], len(self.core.groups))
        yield groups
        images = GaugeMetricFamily(PREFIX + "images", "Images in the store")
        images.add_metric([], len(self.images))
        yield images

    def _devices(self) -> Iterator[Metric]:
        core = self.core
        now = self.clock()
        inventory = core.inventory
        up = inventory.count_up_all(now)
        devices = GaugeMetricFamily(
            PREFIX + "devices", "Devices by state", labels=["state"]
        )
        devices.add_metric(["up"], up)
        devices.add_metric(["down"], len(core.inventory) - up)
        yield devices
        # Per group from the campaigns' running tallies (O(states) a group,
        # not a visit of every device at every scrape).
        states: Counter[UploadStatus] = Counter()
        for group in inventory.group_keys():
            in_group = inventory.member_euis(group)
            campaign = core.uploads.get(group)
            if campaign is None:
                states[UploadStatus.NOT_STARTED] += len(in_group)
                continue
            counts, _ = campaign.tally_for(in_group)
            states.update(counts)
        family = GaugeMetricFamily(
            PREFIX + "upload_devices",
            "Devices per state of their group's latest upload",
            labels=["state"],
        )
        for state in UploadStatus:
            family.add_metric([state.value], states[state])
        yield family

    def _operations(self) -> Metric:
        family = GaugeMetricFamily(
            PREFIX + "operations",
            "Group operations by status",
            labels=["kind", "status"],
        )
        counts: Counter[tuple[str, str]] = Counter(self.core.finished_ops)
        for campaign in self.core.active_campaigns:
            counts[(str(campaign.kind), "running")] += 1
        for (kind, status), n in sorted(counts.items()):
            family.add_metric([kind, status], n)
        return family

    def _traffic(self) -> Iterator[Metric]:
        stats = self.core.stats
        blocks = CounterMetricFamily(
            PREFIX + "blocks_sent", "ImageBlocks sent", labels=["mode"]
        )
        blocks.add_metric(["multicast"], stats["blocks_multicast"])
        blocks.add_metric(["unicast"], stats["blocks_unicast"])
        yield blocks
        sent = CounterMetricFamily(PREFIX + "bytes_sent", "CSMP payload bytes sent")
        sent.add_metric([], stats["bytes_sent"])
        yield sent
        retries = CounterMetricFamily(
            PREFIX + "retransmissions", "CoAP CON retransmissions"
        )
        retries.add_metric([], self.core.exchange.stats["retransmits"])
        yield retries
        for name, text in _COUNTERS:
            family = CounterMetricFamily(PREFIX + name, text)
            family.add_metric([], stats[name])
            yield family
