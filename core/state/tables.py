"""The state tables, their queries and the row → record mapping (SPEC §9).

Records live in ``keel_state`` (primary key ``kind, record_key``; ``data`` is JSON text, which
every backend stores); every transition is appended to ``keel_state_history``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from core.data.sql import utc_timestamp

MAX_KEY_LENGTH = 191


def state_tables(metadata: sa.MetaData) -> tuple[sa.Table, sa.Table]:
    """Declare (or return) the two state tables in ``metadata``."""
    if "keel_state" in metadata.tables:
        return metadata.tables["keel_state"], metadata.tables["keel_state_history"]
    records = sa.Table(
        "keel_state",
        metadata,
        sa.Column("kind", sa.String(64), primary_key=True),
        sa.Column("record_key", sa.String(MAX_KEY_LENGTH), primary_key=True),
        sa.Column("state", sa.String(64), nullable=False),
        sa.Column("data", sa.Text, nullable=False),  # JSON; portable (Oracle has no JSON type in SQLAlchemy Core)
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", utc_timestamp(), nullable=False),
        sa.Column("updated_at", utc_timestamp(), nullable=False),
        sa.Index("ix_keel_state_kind_state", "kind", "state"),
        sa.Index("ix_keel_state_kind_created", "kind", "created_at"),
    )
    history = sa.Table(
        "keel_state_history",
        metadata,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), sa.Identity(), primary_key=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("record_key", sa.String(MAX_KEY_LENGTH), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("from_state", sa.String(64), nullable=True),
        sa.Column("to_state", sa.String(64), nullable=False),
        sa.Column("actor", sa.String(191), nullable=True),
        sa.Column("changed_at", utc_timestamp(), nullable=False),
        sa.Index("ix_keel_state_history_record", "kind", "record_key", "id"),
    )
    return records, history


def select_record(records: sa.Table, kind: str, key: str) -> sa.Select[Any]:
    return sa.select(records).where(records.c.kind == kind, records.c.record_key == key)


def cas_update(records: sa.Table, kind: str, key: str, expected: int, **values: Any) -> sa.Update:
    """``UPDATE keel_state SET ... WHERE kind = :k AND record_key = :key AND version = :expected``."""
    return (
        sa.update(records)
        .where(records.c.kind == kind, records.c.record_key == key, records.c.version == expected)
        .values(**values)
    )


def list_records(records: sa.Table, kind: str, state: str | None, limit: int, offset: int) -> sa.Select[Any]:
    query = sa.select(records).where(records.c.kind == kind)
    if state is not None:
        query = query.where(records.c.state == state)
    return query.order_by(records.c.created_at, records.c.record_key).limit(max(0, limit)).offset(max(0, offset))


def count_records(records: sa.Table, kind: str, state: str | None) -> sa.Select[Any]:
    query = sa.select(sa.func.count()).select_from(records).where(records.c.kind == kind)
    if state is not None:
        query = query.where(records.c.state == state)
    return query


def history_query(history: sa.Table, kind: str, key: str, limit: int) -> sa.Select[Any]:
    return (
        sa.select(history)
        .where(history.c.kind == kind, history.c.record_key == key)
        .order_by(history.c.id.desc())
        .limit(max(0, limit))
    )


def history_entry(row: Any) -> dict[str, Any]:
    """A history row as the API shows it: ``{"from", "to", "actor", "at", "version"}``."""
    return {
        "from": row["from_state"],
        "to": row["to_state"],
        "actor": row["actor"],
        "at": iso(row["changed_at"]),
        "version": row["version"],
    }


def to_record(row: Any) -> dict[str, Any]:
    """A ``keel_state`` row (or the values written) as the record the API returns."""
    data = row["data"]
    return {
        "kind": row["kind"],
        "key": row["record_key"],
        "state": row["state"],
        "data": json.loads(data) if isinstance(data, str) else dict(data),
        "version": row["version"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


def dump_data(data: Mapping[str, Any] | None) -> str:
    """Record data as the JSON text stored in ``keel_state.data`` (TypeError unless a mapping)."""
    if data is None:
        return "{}"
    if not isinstance(data, Mapping):
        raise TypeError(f"state data must be a mapping, got {type(data).__name__}")
    return json.dumps(dict(data), separators=(",", ":"), sort_keys=True)


def iso(value: datetime) -> str:
    if value.tzinfo is None:  # SQLite returns naive datetimes; we only ever store UTC
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat()
