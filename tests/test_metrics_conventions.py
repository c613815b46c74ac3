"""What every service's ``/metrics`` holds besides its own series (issue 13, item 4).

Each service is started as a real process with ``--metrics-listen 127.0.0.1:0``
and scraped over HTTP: process and platform collectors (``process_*``,
``python_info``), ``workcell_build_info`` naming the service, the package's
version and the Python version, and no ``_created`` series (the timestamp
prometheus_client adds beside each counter and histogram by default: a
second series per counter that no query of ours uses).
"""

from __future__ import annotations

import importlib.metadata
import platform
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.processes import (
    NO_MANIPULATOR,
    Service,
    running,
    sqlite_url,
    start_controller,
    start_manipulator,
    start_sensor,
)

METRICS_ON = r"metrics on 127\.0\.0\.1:(\d+)"
# The process collector's series on Linux (read from /proc at scrape time).
PROCESS_SERIES = (
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
)


def _controller(tmp_path: Path) -> Service:
    return start_controller(sqlite_url(tmp_path / "w.db"), "--metrics-listen=127.0.0.1:0")


def _manipulator(tmp_path: Path) -> Service:
    return start_manipulator(tmp_path / "journal.jsonl", "--metrics-listen=127.0.0.1:0")


def _sensor(tmp_path: Path) -> Service:
    # Nothing listens on the controller's port: the sensor keeps retrying, and serves metrics.
    return start_sensor(NO_MANIPULATOR, "--metrics-listen=127.0.0.1:0", sensor_id="conventions")


STARTERS: dict[str, Callable[[Path], Service]] = {
    "controller": _controller,
    "manipulator": _manipulator,
    "sensor": _sensor,
}


@pytest.fixture(params=sorted(STARTERS), scope="module")
def exposition(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """(service, the text of one scrape of its ``/metrics``), from a real process."""
    name: str = request.param
    service = STARTERS[name](tmp_path_factory.mktemp(name))
    with running(service):
        port = int(service.wait_for_line(METRICS_ON).group(1))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text: str = response.read().decode()
        yield name, text
        assert service.stop() == 0, service.output()


def _samples(text: str) -> dict[str, list[dict[str, str]]]:
    """Sample name -> the label sets it was exported with."""
    samples: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(dict(sample.labels))
    return samples


def test_no_created_series(exposition: tuple[str, str]) -> None:
    _, text = exposition
    created = sorted(name for name in _samples(text) if name.endswith("_created"))
    assert created == []


def test_process_and_platform_collectors(exposition: tuple[str, str]) -> None:
    _, text = exposition
    samples = _samples(text)
    missing = [name for name in PROCESS_SERIES if name not in samples]
    assert missing == []
    [python_info] = samples["python_info"]
    assert python_info["version"] == platform.python_version()


def test_build_info_names_the_service_version_and_python(exposition: tuple[str, str]) -> None:
    service, text = exposition
    families = {f.name: f for f in text_string_to_metric_families(text)}
    build_info = families["workcell_build_info"]
    assert build_info.type == "gauge"
    [sample] = build_info.samples
    assert sample.value == 1
    assert sample.labels == {
        "service": service,
        "version": importlib.metadata.version("workcell"),
        "python_version": platform.python_version(),
    }
