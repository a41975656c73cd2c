"""Bearer tokens for the supplier feed API: created once, stored hashed, scoped to one supplier, revocable.

A token reads ``ssf_<id>_<secret>`` (the scheme, hashing and constant-time check are
``safestats.bearer_tokens``, shared with the personal API tokens); only its sha256 is stored
(``supplier_tokens.token_hash``). The token itself is shown once, by ``safestats tokens create``, and never
again.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.engine import Engine

from safestats import bearer_tokens
from safestats.bearer_tokens import token_hash  # noqa: F401  (re-exported: tests hash tokens with it)

TOKEN_PREFIX = "ssf"


@dataclass(frozen=True)
class SupplierToken:
    """A row of ``supplier_tokens`` (never the token itself)."""

    id: int
    supplier: str
    label: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class TokenError(Exception):
    """A token-management request that cannot be done (unknown supplier or token id)."""


def create_token(engine: Engine, supplier: str, label: str = "") -> tuple[SupplierToken, str]:
    """A new token for ``supplier``: its row and the token (shown once, stored only hashed)."""
    secret = bearer_tokens.new_secret()
    with engine.begin() as conn:
        if conn.execute(text("SELECT 1 FROM suppliers WHERE code = :s"), {"s": supplier}).first() is None:
            known = ", ".join(r[0] for r in conn.execute(text("SELECT code FROM suppliers ORDER BY code")))
            raise TokenError(f"no supplier {supplier!r}; known suppliers: {known}")
        # The id is part of the token, so the row is made first with a placeholder hash (unique, random) and
        # given the real one in the same transaction.
        row = conn.execute(text("""INSERT INTO supplier_tokens (supplier, label, token_hash)
                                   VALUES (:s, :label, :placeholder) RETURNING id"""),
                           {"s": supplier, "label": label or "", "placeholder": bearer_tokens.placeholder_hash()}).one()
        token = bearer_tokens.compose(TOKEN_PREFIX, row.id, secret)
        saved = conn.execute(text(f"""UPDATE supplier_tokens SET token_hash = :h WHERE id = :id
                                      RETURNING {_COLUMNS}"""), {"h": token_hash(token), "id": row.id}).one()
    return _token(saved), token


_COLUMNS = "id, supplier, label, created_at, revoked_at, last_used_at"


def _token(row) -> SupplierToken:
    return SupplierToken(id=row.id, supplier=row.supplier, label=row.label, created_at=row.created_at,
                         revoked_at=row.revoked_at, last_used_at=row.last_used_at)


def revoke_token(engine: Engine, token_id: int) -> SupplierToken:
    """Revoke the token (at once, for every later request); revoking it again changes nothing."""
    with engine.begin() as conn:
        row = conn.execute(text(f"""UPDATE supplier_tokens SET revoked_at = coalesce(revoked_at, now())
                                    WHERE id = :id RETURNING {_COLUMNS}"""), {"id": token_id}).one_or_none()
    if row is None:
        raise TokenError(f"no token with id {token_id}; `safestats tokens list` shows them")
    return _token(row)


def list_tokens(engine: Engine, supplier: str | None = None) -> list[SupplierToken]:
    with engine.connect() as conn:
        rows = conn.execute(text(f"""SELECT {_COLUMNS} FROM supplier_tokens
                                     WHERE :s IS NULL OR supplier = :s ORDER BY id"""), {"s": supplier})
        return [_token(r) for r in rows]


def verify_token(engine: Engine, presented: str) -> SupplierToken | None:
    """The active token row ``presented`` matches, or None (malformed, unknown, wrong or revoked).

    Marks it used. Which supplier it may act for is the caller's check (``SupplierToken.supplier``).
    """
    token_id = bearer_tokens.token_id(TOKEN_PREFIX, presented)
    if token_id is None:
        return None
    with engine.begin() as conn:
        row = conn.execute(text(f"SELECT {_COLUMNS}, token_hash FROM supplier_tokens WHERE id = :id"),
                           {"id": token_id}).one_or_none()
        if not bearer_tokens.matches(presented, row.token_hash if row is not None else None):
            return None
        if row.revoked_at is not None:
            return None
        conn.execute(text("UPDATE supplier_tokens SET last_used_at = now() WHERE id = :id"), {"id": row.id})
    return _token(row)
