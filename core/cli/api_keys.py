"""``flask api-keys create|list|revoke``."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

from core.cli.common import cli_error
from core.errors import KeelError
from core.managers.api_keys import ApiKeyManager

api_keys_cli = AppGroup("api-keys", help="Manage API keys.")


def _manager() -> ApiKeyManager:
    manager: ApiKeyManager = current_app.extensions["keel"].api_keys
    return manager


@api_keys_cli.command("create")
@click.option("--name", required=True)
@click.option("--scope", "scopes", multiple=True, help="A scope the key holds (repeat for several).")
@click.option("--owner", default=None, help="User (id or name) owning the key.")
@click.option("--expires-days", type=int, default=None)
def api_keys_create(name: str, scopes: tuple[str, ...], owner: str | None, expires_days: int | None) -> None:
    """Create a key and print it (shown once)."""
    am = current_app.extensions["keel"]
    try:
        owner_id = am.jwt.users.require(owner).id if owner else None
        created = _manager().create(name, list(scopes), owner_id=owner_id, expires_in_days=expires_days, actor="cli")
    except KeelError as exc:
        raise cli_error(exc) from None
    click.echo(created["key"])
    click.echo(f"id {created['api_key']['id']} — store the key now, it is not shown again", err=True)


@api_keys_cli.command("list")
def api_keys_list() -> None:
    """List keys (id, name, owner, scopes, expiry, revoked); never the key itself."""
    for k in _manager().list(all_owners=True):
        state = "revoked" if k["revoked_at"] else "active"
        click.echo(
            f"{k['id']}  {k['name']:<20} owner={k['owner_id'] or '-'} scopes={','.join(k['scopes']) or '-'} "
            f"expires={k['expires_at'] or 'never'} {state}"
        )


@api_keys_cli.command("revoke")
@click.argument("key_id")
def api_keys_revoke(key_id: str) -> None:
    """Revoke a key by id."""
    try:
        _manager().revoke(key_id, admin=True, actor="cli")
    except KeelError as exc:
        raise cli_error(exc) from None
    click.echo(f"revoked {key_id}")
