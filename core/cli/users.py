"""``flask users create|list|disable|enable|revoke-tokens``."""

from __future__ import annotations

import sys

import click
from flask import current_app
from flask.cli import AppGroup

from core.auth.users import UserStore
from core.cli.common import cli_error
from core.errors import KeelError
from core.logs import audit
from core.managers.jwt import JWTManager

users_cli = AppGroup("users", help="Manage users.")


def _jwt() -> JWTManager:
    manager: JWTManager = current_app.extensions["keel"].jwt
    return manager


def _store() -> UserStore:
    return _jwt().users


@users_cli.command("create")
@click.argument("username")
@click.option("--admin", is_flag=True, help="Give the user the admin role.")
@click.option("--email", default=None)
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
def users_create(username: str, admin: bool, email: str | None, password_stdin: bool) -> None:
    """Create a user (prompts for the password unless --password-stdin)."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    roles = ("admin", "user") if admin else ("user",)
    try:
        user = _store().create(username, password, email=email, roles=roles)
    except KeelError as exc:
        raise cli_error(exc) from None
    audit("user_created", "ok", user_id=user.id, roles=",".join(user.roles), actor="cli")
    click.echo(f"created user {user.username} (id {user.id}, roles {','.join(user.roles)})")


@users_cli.command("list")
def users_list() -> None:
    """List users: id, username, roles, active."""
    for user in _store().all():
        state = "active" if user.active else "disabled"
        click.echo(f"{user.id:<6} {user.username:<24} {','.join(user.roles):<16} {state}")


def _set_active(ref: str, active: bool) -> None:
    try:
        user = _store().require(ref)
        _jwt().set_active(user.id, active, actor="cli")
    except KeelError as exc:
        raise cli_error(exc) from None
    click.echo(f"{'enabled' if active else 'disabled'} user {user.username}")


@users_cli.command("disable")
@click.argument("user")
def users_disable(user: str) -> None:
    """Disable a user (by id or name) and revoke all their tokens."""
    _set_active(user, False)


@users_cli.command("enable")
@click.argument("user")
def users_enable(user: str) -> None:
    """Enable a disabled user."""
    _set_active(user, True)


@users_cli.command("revoke-tokens")
@click.argument("user")
def users_revoke_tokens(user: str) -> None:
    """Revoke every token of a user (by id or name)."""
    try:
        found = _store().require(user)
        _jwt().revoke_user_tokens(found.id, actor="cli", reason="cli")
    except KeelError as exc:
        raise cli_error(exc) from None
    click.echo(f"revoked all tokens of {found.username}")
