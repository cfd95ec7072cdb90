"""The bans table: the database copy of every ban, so bans survive restarts of the app and of
Redis. Redis (or the in-process store) answers requests; this table is the record that restores
them, lists them and feeds ``flask bans``. It is declared on ``am.db.metadata`` and created
with the other tables by ``am.db.create_all()``; times are epoch milliseconds (``BigInteger``:
``NUMBER(19)`` on Oracle)."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

KINDS = ("ip", "user", "api_key")


def bans_table(metadata: sa.MetaData) -> sa.Table:
    """Declare (once per metadata) the ``keel_bans`` table."""
    if "keel_bans" in metadata.tables:
        return metadata.tables["keel_bans"]
    return sa.Table(
        "keel_bans",
        metadata,
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("identifier", sa.String(255), primary_key=True),
        sa.Column("until_ms", sa.BigInteger, nullable=False, index=True),
        sa.Column("strikes", sa.Integer, nullable=False, default=0),
        sa.Column("reason", sa.String(255), nullable=False, default=""),
        sa.Column("actor", sa.String(255), nullable=False, default=""),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
    )


class BanRecords:
    """Reads and writes ``keel_bans`` (SQLAlchemy Core, any dialect)."""

    def __init__(self, engine: sa.Engine, table: sa.Table) -> None:
        self.engine = engine
        self.table = table

    def upsert(self, kind: str, identifier: str, until_ms: int, strikes: int, reason: str, actor: str) -> None:
        t = self.table
        row = {
            "kind": kind,
            "identifier": identifier,
            "until_ms": until_ms,
            "strikes": strikes,
            "reason": reason[:255],
            "actor": actor[:255],
            "created_ms": int(time.time() * 1000),
        }
        with self.engine.begin() as conn:
            conn.execute(t.delete().where(t.c.kind == kind, t.c.identifier == identifier))
            conn.execute(t.insert().values(**row))

    def delete(self, kind: str, identifier: str) -> bool:
        t = self.table
        with self.engine.begin() as conn:
            result = conn.execute(
                t.delete().where(t.c.kind == kind, t.c.identifier == identifier, t.c.until_ms > _now_ms())
            )
            conn.execute(t.delete().where(t.c.kind == kind, t.c.identifier == identifier))
        return bool(result.rowcount)

    def active(self) -> list[dict[str, Any]]:
        t = self.table
        with self.engine.connect() as conn:
            rows = conn.execute(t.select().where(t.c.until_ms > _now_ms()).order_by(t.c.until_ms)).mappings().all()
        return [dict(r) for r in rows]

    def get(self, kind: str, identifier: str) -> dict[str, Any] | None:
        t = self.table
        with self.engine.connect() as conn:
            row = (
                conn.execute(t.select().where(t.c.kind == kind, t.c.identifier == identifier, t.c.until_ms > _now_ms()))
                .mappings()
                .first()
            )
        return dict(row) if row is not None else None

    def purge_expired(self) -> None:
        t = self.table
        with self.engine.begin() as conn:
            conn.execute(t.delete().where(t.c.until_ms <= _now_ms() - 86_400_000))


def _now_ms() -> int:
    return int(time.time() * 1000)
