"""``flask bans list|lift KIND IDENTIFIER``."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

from core.errors import NotFound
from core.limits.bans import KINDS
from core.managers.rate_limit import RateLimiterManager

bans_cli = AppGroup("bans", help="List and lift bans.")


def _limiter() -> RateLimiterManager:
    manager: RateLimiterManager = current_app.extensions["keel"].limiter
    return manager


@bans_cli.command("list")
def bans_list() -> None:
    """Active bans: kind, identifier, seconds left, strikes, reason."""
    rows = _limiter().list_bans()
    if not rows:
        click.echo("no active bans")
        return
    for r in rows:
        click.echo(
            f"{r['kind']:<8} {r['identifier']:<40} {r['remaining_s']:>7}s  strikes={r['strikes']}  "
            f"until={r['until']}  reason={r['reason']}  by={r['actor']}"
        )


@bans_cli.command("lift")
@click.argument("kind", type=click.Choice(KINDS))
@click.argument("identifier")
def bans_lift(kind: str, identifier: str) -> None:
    """Lift the ban on KIND (ip, user, api_key) IDENTIFIER now."""
    try:
        _limiter().lift_ban(kind, identifier, actor="cli")
    except NotFound as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"lifted the ban on {kind} {identifier}")
