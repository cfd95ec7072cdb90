"""``flask --app app ...`` command groups (SPEC §13). Errors exit non-zero with one line."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import click
from flask import Flask, current_app
from flask.cli import AppGroup

if TYPE_CHECKING:
    from core.app_manager import AppManager

config_cli = AppGroup("config", help="Show the resolved settings.")
modules_cli = AppGroup("modules", help="Inspect plugin modules.")


def _am() -> AppManager:
    return cast("AppManager", current_app.extensions["keel"])


@config_cli.command("show")
def config_show() -> None:
    """Print every setting: key, source, value (secrets redacted)."""
    rows = _am().settings.redacted()
    width = max(len(k) for k, _, _ in rows)
    swidth = max(len(s) for _, s, _ in rows)
    for key, source, value in rows:
        click.echo(f"{key:<{width}}  {source:<{swidth}}  {value}")


@modules_cli.command("list")
def modules_list() -> None:
    """List modules with version, state and dependencies."""
    for info in _am().modules.info():
        deps = ",".join(info["dependencies"]) or "-"
        line = f"{info['name']:<16} {info['version']:<10} {info['state']:<9} deps={deps}"
        if info["error"]:
            line += f"  ({info['error']})"
        click.echo(line)
    for name in _am().modules.disabled:
        click.echo(f"{name:<16} {'-':<10} disabled")


def register_cli(app: Flask) -> None:
    """Add every command group of ``flask --app app``."""
    from core.cli.actions import actions_cli, openapi_command
    from core.cli.api_keys import api_keys_cli
    from core.cli.bans import bans_cli
    from core.cli.db import db_cli
    from core.cli.users import users_cli

    for group in (config_cli, modules_cli, actions_cli, openapi_command, users_cli, api_keys_cli, bans_cli, db_cli):
        if not any(p.name == "verbose" for p in group.params):
            # Read by core.logs.cli_verbose() when the app loads; declared so click accepts it.
            group.params.append(
                click.Option(["-v", "--verbose"], is_flag=True, expose_value=False, help="Show INFO log lines too.")
            )
        app.cli.add_command(group)
