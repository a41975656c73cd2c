"""The bearer-token scheme shared by the supplier feed tokens and the personal API tokens: format, hash, check.

A token reads ``<prefix>_<id>_<secret>``: the id finds its row (so checking a token is one indexed lookup)
and the secret is 32 random bytes (``secrets.token_urlsafe``). Only the sha256 of the whole token is stored:
with that much entropy a plain sha256 cannot be reversed, and a slow password hash would only slow every
call. Stored and presented hashes are compared with ``hmac.compare_digest``, also when the id is unknown,
so timing says nothing about the secret. ``safestats.feed_tokens`` (prefix ``ssf``, a supplier's upload
token) and ``safestats.api_tokens`` (prefix ``ssa``, a user's read token) keep their own tables.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets

_SECRET_PATTERN = r"[A-Za-z0-9_-]{43}"


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def placeholder_hash() -> str:
    """A unique random stand-in for a row's hash until its id (part of the token) is known."""
    return secrets.token_hex(32)


def compose(prefix: str, token_id: int, secret: str) -> str:
    return f"{prefix}_{token_id}_{secret}"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_id(prefix: str, presented: str | None) -> int | None:
    """The row id a well-formed token of this prefix names, or None for anything malformed."""
    match = re.fullmatch(rf"{prefix}_(\d{{1,18}})_{_SECRET_PATTERN}", presented or "")
    return int(match.group(1)) if match else None


def matches(presented: str, stored_hash: str | None) -> bool:
    """Whether ``presented`` hashes to ``stored_hash`` (None: no such row), in constant time either way."""
    expected = stored_hash if stored_hash is not None else "0" * 64
    return hmac.compare_digest(token_hash(presented).encode(), expected.encode()) and stored_hash is not None
