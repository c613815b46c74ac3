"""Reading a service's Prometheus ``/metrics`` in tests: one scraper for every test file."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Awaitable, Callable
from typing import TypeVar

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Samples", "metric_families", "poll_until", "scrape", "scrape_until"]

Samples = dict[str, float]
T = TypeVar("T")


def metric_families(port: int) -> list[Metric]:
    """The metric families served at ``http://127.0.0.1:PORT/metrics`` (blocking)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return list(text_string_to_metric_families(text))


async def scrape(port: int) -> Samples:
    """Every sample of ``/metrics``, keyed like ``name{label="value"}``."""
    samples: Samples = {}
    for family in await asyncio.to_thread(metric_families, port):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


async def poll_until(
    read: Callable[[], Awaitable[T]], ready: Callable[[T], bool], within: float = 20.0
) -> T:
    """``read()`` every 50 ms until ``ready`` holds for what it read (values that settle a
    moment after an event); that value. AssertionError with the last one after ``within`` s."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = await read()
        if ready(value):
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"the metrics never got there; last scrape: {value}")
        await asyncio.sleep(0.05)


async def scrape_until(
    port: int, ready: Callable[[Samples], bool], within: float = 15.0
) -> Samples:
    """Scrape until ``ready`` holds."""
    return await poll_until(lambda: scrape(port), ready, within)
