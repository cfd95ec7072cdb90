"""Refresh-token families (SPEC §6): rotation with reuse detection.

Every login starts a family: one row in ``auth_refresh_families`` holding the family's
current refresh ``jti``. A refresh is a compare-and-set on that row, so of N concurrent
refreshes with one token exactly one wins; a token that loses (spent, or unknown) while its
family is live is a reuse, and the caller revokes the whole family. Times are Unix epoch
seconds (``Float``: a double everywhere, ``FLOAT(126)`` on Oracle).
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING

import sqlalchemy as sa

if TYPE_CHECKING:
    from core.managers.database import DatabaseManager


def families_table(metadata: sa.MetaData) -> sa.Table:
    """Declare (once per metadata) ``auth_refresh_families``."""
    if "auth_refresh_families" in metadata.tables:
        return metadata.tables["auth_refresh_families"]
    return sa.Table(
        "auth_refresh_families",
        metadata,
        sa.Column("fam", sa.String(32), primary_key=True),
        sa.Column("user_id", sa.Integer, nullable=False, index=True),
        sa.Column("current_jti", sa.String(32), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("rotated_at", sa.Float, nullable=False),
        sa.Column("revoked_at", sa.Float, nullable=True),
    )


class RefreshFamilies:
    """The ``auth_refresh_families`` rows, through the database manager's helpers."""

    def __init__(self, db: DatabaseManager) -> None:
        self.db = db
        self.table = families_table(db.metadata)  # declared only; `db.create_all()` creates it

    def start(self, user_id: int) -> tuple[str, str]:
        """A new family for ``user_id``: ``(fam, first refresh jti)``."""
        fam, jti = uuid.uuid4().hex, uuid.uuid4().hex
        now = time.time()
        with self.db.transaction() as conn:
            conn.execute(
                sa.insert(self.table).values(
                    fam=fam, user_id=user_id, current_jti=jti, created_at=now, rotated_at=now, revoked_at=None
                )
            )
        return fam, jti

    def rotate(self, fam: str, jti: str, user_id: int) -> str | None:
        """Spend ``jti`` (compare-and-set): the family's next refresh jti, or ``None`` when
        ``jti`` is not the live family's current one (spent, unknown or revoked)."""
        f, new_jti = self.table, uuid.uuid4().hex
        with self.db.transaction() as conn:
            won = conn.execute(
                sa.update(f)
                .where(f.c.fam == fam, f.c.current_jti == jti, f.c.revoked_at.is_(None), f.c.user_id == user_id)
                .values(current_jti=new_jti, rotated_at=time.time())
            ).rowcount
        return new_jti if won == 1 else None

    def is_live(self, fam: str) -> bool:
        """The family exists and is not revoked."""
        f = self.table
        row = self.db.read(lambda conn: conn.execute(sa.select(f.c.revoked_at).where(f.c.fam == fam)).first())
        return row is not None and row.revoked_at is None

    def live_of(self, user_id: int) -> list[str]:
        """The families of ``user_id`` that are not revoked."""
        f = self.table
        query = sa.select(f.c.fam).where(f.c.user_id == user_id, f.c.revoked_at.is_(None))
        return list(self.db.read(lambda conn: conn.execute(query).scalars().all()))

    def revoke(self, fam: str) -> None:
        f = self.table
        with self.db.transaction() as conn:
            conn.execute(sa.update(f).where(f.c.fam == fam, f.c.revoked_at.is_(None)).values(revoked_at=time.time()))
