"""AIP-158 page sizes and page tokens bound to their query."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.api.paging import (
    DEFAULT_PAGE_SIZE,
    MAX_COMMAND_ID,
    MAX_PAGE_SIZE,
    PageSizeError,
    PageTokenError,
    QueryFilter,
    decode_page_token,
    effective_page_size,
    encode_page_token,
)

QUERY = QueryFilter(from_us=1_700_000_000_000_000, to_us=1_700_000_060_000_000, merge_runs=False)


@pytest.mark.parametrize(
    ("requested", "served"),
    [
        (0, DEFAULT_PAGE_SIZE),
        (1, 1),
        (100, 100),
        (1000, 1000),
        (1001, MAX_PAGE_SIZE),
        (2**31 - 1, 1000),
    ],
)
def test_effective_page_size(requested: int, served: int) -> None:
    assert effective_page_size(requested) == served


def test_page_size_constants() -> None:
    assert (DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE) == (100, 1000)


@pytest.mark.parametrize("requested", [-1, -(2**31)])
def test_negative_page_size_is_refused_naming_the_field(requested: int) -> None:
    with pytest.raises(PageSizeError, match="page_size") as caught:
        effective_page_size(requested)
    assert isinstance(caught.value, ValueError)


@given(
    st.integers(min_value=0, max_value=MAX_COMMAND_ID),
    st.none() | st.integers(min_value=-(2**62), max_value=2**62),
    st.none() | st.integers(min_value=-(2**62), max_value=2**62),
    st.booleans(),
)
def test_round_trip(after_id: int, from_us: int | None, to_us: int | None, merge: bool) -> None:
    query = QueryFilter(from_us, to_us, merge)

    token = encode_page_token(after_id, query)

    assert decode_page_token(token, query) == after_id


def test_token_is_url_safe_and_opaque() -> None:
    token = encode_page_token(12345, QUERY)

    assert token
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert "12345" not in token


def test_token_does_not_depend_on_page_size() -> None:
    # AIP-158: the client may change page_size between pages, so nothing about the size is in
    # the token; the same token serves any page size with the same filters.
    token = encode_page_token(42, QUERY)

    for page_size in (1, 100, 1000):
        assert effective_page_size(page_size) == page_size
        assert decode_page_token(token, QUERY) == 42


@pytest.mark.parametrize("position", [0, 5, 12, 20, 30, -1])
def test_flipped_character_is_detected(position: int) -> None:
    token = encode_page_token(7, QUERY)
    at = position % len(token)
    flipped = "B" if token[at] == "A" else "A"
    tampered = token[:at] + flipped + token[at + 1 :]

    with pytest.raises(PageTokenError, match="page_token is invalid"):
        decode_page_token(tampered, QUERY)


def test_forged_id_with_the_old_mac_is_detected() -> None:
    raw = bytearray(base64.urlsafe_b64decode(encode_page_token(7, QUERY) + "="))
    raw[8] ^= 0x01  # the id's last byte: 7 -> 6

    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()

    with pytest.raises(PageTokenError, match="page_token is invalid"):
        decode_page_token(forged, QUERY)


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "not a token",
        "abc",
        "====",
        "ünïcödé",
        "A" * 10_000,
        base64.urlsafe_b64encode(b"x" * 33).decode(),
        encode_page_token(7, QUERY)[:-4],
        encode_page_token(7, QUERY) + "AAAA",
    ],
)
def test_garbage_token_is_refused_naming_the_field(garbage: str) -> None:
    with pytest.raises(PageTokenError, match="page_token") as caught:
        decode_page_token(garbage, QUERY)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    "other",
    [
        QueryFilter(QUERY.from_us, QUERY.to_us, merge_runs=True),
        QueryFilter(1_700_000_000_000_001, QUERY.to_us, merge_runs=False),
        QueryFilter(None, QUERY.to_us, merge_runs=False),
        QueryFilter(QUERY.from_us, None, merge_runs=False),
        QueryFilter(None, None, merge_runs=False),
    ],
)
def test_token_reused_with_another_filter_is_refused(other: QueryFilter) -> None:
    token = encode_page_token(7, QUERY)

    with pytest.raises(PageTokenError, match=r"^page_token was issued for a different query$"):
        decode_page_token(token, other)


def test_unset_bound_differs_from_zero() -> None:
    token = encode_page_token(7, QueryFilter(None, None, merge_runs=False))

    with pytest.raises(PageTokenError, match="different query"):
        decode_page_token(token, QueryFilter(0, 0, merge_runs=False))


def test_a_token_past_the_largest_command_id_is_refused() -> None:
    # The token format holds any uint64, but no database id is above 2**63 - 1:
    # such a token is forged, and once overflowed the query (UNKNOWN).
    token = encode_page_token(MAX_COMMAND_ID + 1, QUERY)

    with pytest.raises(PageTokenError, match="page_token is invalid"):
        decode_page_token(token, QUERY)


@pytest.mark.parametrize("after_id", [-1, 2**64])
def test_encode_refuses_ids_outside_uint64(after_id: int) -> None:
    with pytest.raises(ValueError, match="after_id"):
        encode_page_token(after_id, QUERY)
