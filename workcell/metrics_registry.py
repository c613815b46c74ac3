"""The registry each service's metrics live on, with what every service exports besides its own.

Every service (controller, manipulator, sensor) keeps its metrics on a
registry of its own, never prometheus_client's process-wide default, so
several controllers in one test process each report only their own numbers.
:func:`service_registry` makes one with, as Prometheus users expect of any
exporter:

- the process collector (``process_cpu_seconds_total``,
  ``process_resident_memory_bytes``, ``process_open_fds``, … read from
  ``/proc`` at scrape time: the README's memory targets can be watched);
- the platform collector (``python_info``);
- ``workcell_build_info{service, version, python_version} 1``, so a rollout
  shows which version each process runs.

It also turns off prometheus_client's ``_created`` series (a second series
per counter and histogram holding its creation time, which no rule or query
uses and which doubles the series count). That switch is process-wide in
prometheus_client 0.26 (``disable_created_metrics()``, read at each scrape),
which suits us: no registry in a workcell process wants them.
"""

from __future__ import annotations

import platform

from prometheus_client import (
    CollectorRegistry,
    Gauge,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

from workcell.version import package_version

__all__ = ["BUILD_INFO", "build_labels", "service_registry"]

BUILD_INFO = "workcell_build_info"


def build_labels(service: str) -> dict[str, str]:
    """The labels of ``workcell_build_info`` for ``service``."""
    return {
        "service": service,
        "version": package_version(),
        "python_version": platform.python_version(),
    }


def service_registry(service: str) -> CollectorRegistry:
    """A new registry for one ``service``: process and platform collectors, build info."""
    disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in 0.26
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    labels = build_labels(service)
    build_info = Gauge(
        BUILD_INFO,
        "Always 1; the labels say which service, package version and Python version this is",
        list(labels),
        registry=registry,
    )
    build_info.labels(**labels).set(1)
    return registry
