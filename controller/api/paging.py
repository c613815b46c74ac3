"""AIP-158 paging for History.Query: page sizes and opaque page tokens bound to their query.

A token carries the id of the last command on the page it follows (keyset paging: stable while
new commands are appended) and a fingerprint of the query's filters, so a token reused with
other filters is refused. It is not bound to ``page_size``: AIP-158 lets a client change the page
size between pages.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from dataclasses import dataclass

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_COMMAND_ID",
    "MAX_PAGE_SIZE",
    "PageSizeError",
    "PageTokenError",
    "QueryFilter",
    "decode_page_token",
    "effective_page_size",
    "encode_page_token",
]

DEFAULT_PAGE_SIZE = 100
# Command ids are BIGINT (signed 64-bit) in the database.
MAX_COMMAND_ID = 2**63 - 1
MAX_PAGE_SIZE = 1000

# The MAC only detects tampering and accidental corruption; it is not secrecy. The key is in the
# source and anyone can decode the id, which is harmless: a token only says where the next page
# starts in history the caller may query anyway.
_TOKEN_KEY = b"workcell.v1.History.Query page_token"
_TOKEN_VERSION = 1
# version (u8) | after_id (u64) | filter fingerprint (8 bytes), then the truncated MAC.
_BODY = struct.Struct(">BQ8s")
_MAC_BYTES = 16
_TOKEN_BYTES = _BODY.size + _MAC_BYTES
# Generous bound so garbage of any size is refused before decoding it.
_MAX_TOKEN_CHARS = 4 * _TOKEN_BYTES


class PageTokenError(ValueError):
    """The page_token cannot be used; the message says why, for the caller."""


class PageSizeError(ValueError):
    """The page_size is invalid; the message says why, for the caller."""


@dataclass(frozen=True, slots=True)
class QueryFilter:
    """The filters a page token is bound to (``None`` = open end)."""

    from_us: int | None
    to_us: int | None
    merge_runs: bool


def effective_page_size(requested: int) -> int:
    """The page size to serve: 0 means the default, above the maximum is coerced down."""
    if requested < 0:
        raise PageSizeError(f"page_size must not be negative, got {requested}")
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    return min(requested, MAX_PAGE_SIZE)


def encode_page_token(after_id: int, query: QueryFilter) -> str:
    """An opaque token for the page after command ``after_id`` of ``query``."""
    if not 0 <= after_id < 2**64:
        raise ValueError(f"after_id must fit in an unsigned 64-bit integer, got {after_id}")
    body = _BODY.pack(_TOKEN_VERSION, after_id, _fingerprint(query))
    token = base64.urlsafe_b64encode(body + _mac(body))
    return token.rstrip(b"=").decode("ascii")


def decode_page_token(token: str, query: QueryFilter) -> int:
    """The ``after_id`` a token carries; PageTokenError if it is not a token for ``query``."""
    raw = _unbase64(token)
    if len(raw) != _TOKEN_BYTES:
        raise PageTokenError("page_token is malformed (not a token from a previous response)")
    body, mac = raw[: _BODY.size], raw[_BODY.size :]
    if not hmac.compare_digest(mac, _mac(body)):
        raise PageTokenError("page_token is invalid (corrupted or modified)")
    version, after_id, fingerprint = _BODY.unpack(body)
    if version != _TOKEN_VERSION:
        raise PageTokenError(f"page_token has an unsupported version ({version})")
    if not hmac.compare_digest(fingerprint, _fingerprint(query)):
        raise PageTokenError("page_token was issued for a different query")
    if after_id > MAX_COMMAND_ID:
        # Only a forged token can carry it: ids are signed 64-bit in the database.
        raise PageTokenError("page_token is invalid (its position is out of range)")
    return int(after_id)


def _unbase64(token: str) -> bytes:
    if not token:
        raise PageTokenError("page_token is empty")
    if len(token) > _MAX_TOKEN_CHARS or not token.isascii():
        raise PageTokenError("page_token is malformed (not a token from a previous response)")
    padded = token + "=" * (-len(token) % 4)
    try:
        return base64.b64decode(padded, altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise PageTokenError(
            "page_token is malformed (not a token from a previous response)"
        ) from None


def _fingerprint(query: QueryFilter) -> bytes:
    # Text keeps "unset" (None) distinct from every timestamp, 0 included, at any magnitude.
    encoded = f"{query.from_us!r}|{query.to_us!r}|{query.merge_runs!r}".encode("ascii")
    return hashlib.sha256(encoded).digest()[:8]


def _mac(body: bytes) -> bytes:
    return hmac.new(_TOKEN_KEY, body, hashlib.sha256).digest()[:_MAC_BYTES]
