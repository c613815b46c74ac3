"""The trailing metadata naming a refused reading (workcell/refusals.py): pure, no server."""

from __future__ import annotations

import pytest

from workcell.refusals import INVALID_SEQ_KEY, LATEST_TIMESTAMP_KEY, Refusal, parse_refusal


@pytest.mark.parametrize("refusal", [Refusal(7), Refusal(2**63 - 1, -5), Refusal(0, 10**17)])
def test_a_refusal_survives_the_round_trip(refusal: Refusal) -> None:
    assert parse_refusal([("other", "x"), *refusal.metadata()]) == refusal


@pytest.mark.parametrize(
    "metadata",
    [
        None,
        [],
        [(LATEST_TIMESTAMP_KEY, "5")],  # no reading named
        [(INVALID_SEQ_KEY, "seven")],
        [(INVALID_SEQ_KEY, "7"), (LATEST_TIMESTAMP_KEY, "")],
        [(INVALID_SEQ_KEY, b"7")],  # binary values are never ours
    ],
)
def test_anything_else_names_no_reading(metadata: list[tuple[str, str | bytes]] | None) -> None:
    assert parse_refusal(metadata) is None
