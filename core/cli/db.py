"""``flask db init``."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

from core.errors import ServiceUnavailable
from core.managers.database import DatabaseManager

db_cli = AppGroup("db", help="Database tables.")


@db_cli.command("init")
def db_init() -> None:
    """Create the framework's and the modules' tables that do not exist yet."""
    db: DatabaseManager = current_app.extensions["keel"].db
    try:
        created = db.create_all()
    except ServiceUnavailable as exc:
        raise click.ClickException(f"database unavailable: {exc}") from None
    total = len(db.metadata.tables)
    if created:
        click.echo(f"created {len(created)} table(s): {', '.join(created)}")
    click.echo(f"{total} table(s) declared, all present ({db.engine.dialect.name})")
