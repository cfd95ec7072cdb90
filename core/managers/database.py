"""DatabaseManager: SQLAlchemy Core engines (SPEC §10).

Minimal first version: ``db.sql`` engine for ``DATABASE_URL``, ``db.metadata`` where managers
and modules declare their tables, ``db.create_all()``. (Extended by the data issue.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import sqlalchemy as sa
from flask import Flask

from core.managers.base import Manager


class DatabaseManager(Manager):
    name: ClassVar[str] = "db"

    def __init__(self, app: Flask | None = None) -> None:
        self.metadata = sa.MetaData()
        self.sql: sa.Engine | None = None
        super().__init__(app)

    def init_app(self, app: Flask) -> None:
        super().init_app(app)
        settings = app.extensions["keel"].settings
        url = sa.make_url(settings["DATABASE_URL"])
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        self.sql = sa.create_engine(url, pool_pre_ping=True)

    def create_all(self) -> None:
        assert self.sql is not None
        self.metadata.create_all(self.sql)

    def health(self) -> dict[str, Any]:
        assert self.sql is not None
        with self.sql.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return {"status": "healthy", "backend": self.sql.dialect.name}

    def dispose(self) -> None:
        if self.sql is not None:
            self.sql.dispose()
