"""Prometheus metrics of the fleet from one custom collector (layer ``fleet``).

DESIGN.md "Per-device Prometheus labels: use a custom collector with
aggregates". :class:`FleetCollector` builds every family at scrape time from
the fleet's counters and one pass over its devices; no label ever names a
device. Register it on a registry of your choice::

    registry = CollectorRegistry()
    registry.register(fleet.metrics_collector())
    registry.get_sample_value("meshfleet_fleet_devices", {"state": "online"})

Families (prefix ``meshfleet_fleet_``): ``devices{state}`` (registered,
online, booting, offline; each device counted once, in the first that
applies), ``devices_by_version{version}``, ``uploads{state}``,
``registrations_total{result}`` (sent, ok, refused, failed, deferred: a
trickle firing while the previous registration was still in flight),
``reports_total``, ``async_answers_total``, ``coap_requests_total{method,
class}``, ``multicast_total{what}``, ``blocks_received_total``,
``duplicates_total{kind}`` (coap: dropped by the exchange layer, block: an
ImageBlock already held), ``faults_injected_total{kind}``,
``uploads_completed_total``, ``reloads_total``, ``reboots_total``.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from emulator.fleet.runtime import Fleet

logger = logging.getLogger(__name__)

PREFIX = "meshfleet_fleet_"


def device_states(
    fleet: Fleet, now: float
) -> tuple[Counter[str], Counter[str], Counter[str]]:
    """(devices by state, by running version, by upload state) at ``now``."""
    states: Counter[str] = Counter()
    versions: Counter[str] = Counter()
    uploads: Counter[str] = Counter()
    for device in fleet.devices.values():
        if device.registered:
            states["registered"] += 1
        elif device.online(now):
            states["online"] += 1
        elif device.next_deadline() is not None:
            states["booting"] += 1
        else:
            states["offline"] += 1
        versions[device.running_version or "none"] += 1
        uploads[device.upload_state.value] += 1
    return states, versions, uploads


class FleetCollector(Collector):
    """Aggregated fleet metrics, computed when scraped."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    def collect(self) -> Iterator[Metric]:
        yield from self._gauges()
        yield from self._counters()

    def _gauges(self) -> Iterator[Metric]:
        states, versions, uploads = device_states(self.fleet, time.time())
        g = GaugeMetricFamily(PREFIX + "devices", "Devices by state", labels=["state"])
        for state in ("registered", "online", "booting", "offline"):
            g.add_metric([state], states[state])
        yield g
        g = GaugeMetricFamily(
            PREFIX + "devices_by_version",
            "Devices by running firmware version",
            labels=["version"],
        )
        for version, n in sorted(versions.items()):
            g.add_metric([version], n)
        yield g
        g = GaugeMetricFamily(
            PREFIX + "uploads", "Devices by UPLOAD slot state", labels=["state"]
        )
        for state, n in sorted(uploads.items()):
            g.add_metric([state], n)
        yield g

    def _counter(self, name: str, doc: str, value: float) -> CounterMetricFamily:
        return CounterMetricFamily(PREFIX + name, doc, value=value)

    def _counters(self) -> Iterator[Metric]:
        s = self.fleet.stats
        c = CounterMetricFamily(
            PREFIX + "registrations", "Registrations by result", labels=["result"]
        )
        for result in ("sent", "ok", "refused", "failed", "deferred"):
            c.add_metric([result], s[f"registrations_{result}"])
        yield c
        yield self._counter("reports", "Periodic reports sent", s["reports_sent"])
        yield self._counter("async_answers", "Async answers sent", s["async_sent"])
        c = CounterMetricFamily(
            PREFIX + "coap_requests",
            "CoAP requests handled by devices",
            labels=["method", "class"],
        )
        for (method, cls), n in sorted(self.fleet.requests.items()):
            c.add_metric([method, cls], n)
        yield c
        c = CounterMetricFamily(
            PREFIX + "multicast", "Multicast datagrams", labels=["what"]
        )
        c.add_metric(["received"], s["multicast_received"])
        c.add_metric(["delivered"], s["multicast_delivered"])
        yield c
        yield self._counter(
            "blocks_received", "Image blocks stored", s["blocks_received"]
        )
        c = CounterMetricFamily(PREFIX + "duplicates", "Duplicates", labels=["kind"])
        c.add_metric(["coap"], self.fleet.exchange.stats["duplicates"])
        c.add_metric(["block"], s["duplicate_blocks"])
        yield c
        c = CounterMetricFamily(
            PREFIX + "faults_injected", "Faults injected", labels=["kind"]
        )
        faults = Counter(self.fleet.link.counts) + self.fleet.fault_counts
        for kind, n in sorted(faults.items()):
            c.add_metric([kind], n)
        yield c
        yield self._counter(
            "uploads_completed", "Uploads completed", s["uploads_completed"]
        )
        yield self._counter("reloads", "Reloads into a new image", s["reloads"])
        yield self._counter("reboots", "Device reboots", s["reboots"])
