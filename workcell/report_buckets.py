"""A fixed number of equal time buckets that coarsen as later times arrive.

This is what keeps ``workcell report`` bounded: whatever the number of commands, the picture
is drawn from at most ``size`` buckets per series, a few more than the panels are pixels wide,
so nothing a reader could see is lost. Times arrive roughly in order (the History is oldest
first); when one falls past the last bucket, neighbouring buckets are merged in pairs and the
width doubles, until it fits. The grid therefore always holds between half and all of
``size`` buckets of data, and each bucket merge costs O(size), done at most log2(range/width)
times in all.

Pure numpy, no protobuf and no drawing: :mod:`workcell.report_data` feeds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

__all__ = ["BucketGrid"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

Reduce = Literal["sum", "min", "max", "first"]

_EMPTY: dict[Reduce, float] = {"sum": 0.0, "min": np.inf, "max": -np.inf, "first": 0.0}


@dataclass(slots=True)
class _Field:
    values: npt.NDArray[Any]
    reduce: Reduce
    # For "first": the count whose non-zero bucket supplies the merged value.
    count: str | None = None


class BucketGrid:
    """Buckets ``[origin + i·width, origin + (i+1)·width)`` for ``i`` in ``range(size)``.

    Fields are arrays whose last axis is the bucket index, each with how two
    neighbouring buckets merge: ``sum``, ``min``, ``max``, or ``first`` (the
    value of the earlier bucket that holds anything by a given count field).
    """

    def __init__(self, *, origin_us: int, width_us: int, size: int) -> None:
        if size < 2 or size % 2:
            raise ValueError(f"size must be an even number >= 2, got {size}")
        self.origin_us = origin_us
        self.width_us = max(1, width_us)
        self.size = size
        self._fields: dict[str, _Field] = {}

    def add_field(
        self,
        name: str,
        reduce: Reduce,
        *,
        rows: int | None = None,
        dtype: type[np.generic] = np.float64,
        count: str | None = None,
    ) -> None:
        """A new field, empty (0, +inf or -inf by ``reduce``); ``rows`` makes it 2-D."""
        shape = (self.size,) if rows is None else (rows, self.size)
        if reduce == "first" and count not in self._fields:
            raise ValueError(f"field {name!r}: 'first' needs an existing count field")
        values = np.full(shape, _EMPTY[reduce], dtype=dtype)
        self._fields[name] = _Field(values, reduce, count)

    def __getitem__(self, name: str) -> npt.NDArray[Any]:
        return self._fields[name].values

    def fit(self, latest_us: int) -> None:
        """Coarsen until ``latest_us`` falls in the last bucket or before it."""
        while (latest_us - self.origin_us) // self.width_us >= self.size:
            self._coarsen()

    def index(self, times_us: IntArray) -> IntArray:
        """Each time's bucket; times before the origin go to the first, past the end to the last.

        Call :meth:`fit` with the latest time first, or late times pile up in the last bucket.
        """
        return np.clip((times_us - self.origin_us) // self.width_us, 0, self.size - 1)

    def bucket_end_us(self, index: IntArray) -> IntArray:
        """Where each bucket ends (exclusive); the last one never ends."""
        ends = self.origin_us + (index + 1) * self.width_us
        return np.where(index >= self.size - 1, np.iinfo(np.int64).max, ends)

    def _coarsen(self) -> None:
        half = self.size // 2
        # "first" fields read their count before the counts are merged.
        merged: dict[str, npt.NDArray[Any]] = {}
        for name, field in self._fields.items():
            pairs = field.values.reshape(*field.values.shape[:-1], half, 2)
            if field.reduce == "sum":
                merged[name] = pairs.sum(axis=-1)
            elif field.reduce == "min":
                merged[name] = pairs.min(axis=-1)
            elif field.reduce == "max":
                merged[name] = pairs.max(axis=-1)
            else:
                assert field.count is not None
                count = self._fields[field.count].values
                earlier_holds = count.reshape(*count.shape[:-1], half, 2)[..., 0] > 0
                merged[name] = np.where(earlier_holds, pairs[..., 0], pairs[..., 1])
        for name, field in self._fields.items():
            field.values[..., :half] = merged[name]
            field.values[..., half:] = _EMPTY[field.reduce]
        self.width_us *= 2
