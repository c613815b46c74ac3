"""The sensor's Prometheus metrics, read from its live counters at scrape time.

A sensor already keeps every count the metrics need (in :class:`~sensor.delivery.Delivery`
and the progress reporter), so the metrics are a custom collector that reads
them when Prometheus scrapes: nothing is added to the per-reading path. The
collector sits on a registry of its own (never the process-wide default), so
only these metrics and those every service exports are served. Pure: no
sockets, no asyncio.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from sensor.progress import Counters
from workcell.metrics_registry import service_registry

__all__ = ["PREFIX", "SensorCollector", "sensor_registry"]

PREFIX = "workcell_sensor_"
_LABELS = ["sensor_id"]


class SensorCollector(Collector):
    """Exports one sensor's counters; ``counters`` is read on every scrape.

    No rate is exported: ``rate(workcell_sensor_created_total[1m])`` is the
    rate over whatever range a query asks for, where a pre-computed gauge
    would fix one interval and lose what happened between scrapes.
    """

    def __init__(self, sensor_id: str, counters: Callable[[], Counters]) -> None:
        self._sensor_id = sensor_id
        self._counters = counters

    def collect(self) -> Iterator[Metric]:
        """The metric families of one scrape."""
        # Read from the HTTP server's thread: each value is one attribute read
        # under the GIL, so a scrape may mix instants a few readings apart, never torn values.
        counters = self._counters()
        labels = [self._sensor_id]
        # created = acknowledged + rejected + dropped + undelivered
        for name, doc, value in (
            ("created", "Readings made", counters.created),
            (
                "sent",
                "Distinct readings written to an open stream at least once",
                counters.sent,
            ),
            (
                "acknowledged",
                "Readings a controller response covered (stored, or already stored)",
                counters.acked,
            ),
            (
                "rejected",
                "Readings dropped because the controller refuses them as invalid",
                counters.rejected,
            ),
            (
                "dropped",
                "Readings given up unacknowledged because the buffer was full",
                counters.dropped,
            ),
            (
                "reconnects",
                "Times delivery failed and the sensor reconnected (after a backoff) to resend",
                counters.reconnects,
            ),
        ):
            counter = CounterMetricFamily(PREFIX + name, doc, labels=_LABELS)
            counter.add_metric(labels, value)
            yield counter
        buffered = GaugeMetricFamily(
            PREFIX + "buffered",
            "Readings held until acknowledged (unsent or awaiting their stream's response)",
            labels=_LABELS,
        )
        buffered.add_metric(labels, counters.buffered)
        yield buffered
        undelivered = GaugeMetricFamily(
            PREFIX + "undelivered",
            "Readings not yet acknowledged, rejected or dropped (held, or evicted from "
            "the full buffer while their stream awaits its response)",
            labels=_LABELS,
        )
        undelivered.add_metric(labels, counters.undelivered)
        yield undelivered


def sensor_registry(collector: SensorCollector) -> CollectorRegistry:
    """A new registry holding ``collector`` and what every service exports
    (:func:`~workcell.metrics_registry.service_registry`)."""
    registry = service_registry("sensor")
    registry.register(collector)
    return registry
