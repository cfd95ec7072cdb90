"""``flask actions list|validate [PATH...]|show NAME`` and ``flask openapi`` (SPEC §4.2, §13)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
from flask import current_app
from flask.cli import AppGroup, with_appcontext

from core.actions.loader import SUFFIXES

if TYPE_CHECKING:
    from core.managers.actions import ActionManager

actions_cli = AppGroup("actions", help="List, check and show YAML-declared actions.")


def _manager() -> ActionManager:
    manager: ActionManager = current_app.extensions["keel.actions"]
    return manager


@actions_cli.command("list")
def list_command() -> None:
    """One line per served action: name, methods, auth, module, file."""
    registry = _manager().registry
    for action in registry.actions.values():
        spec = action.spec
        url = f"/actions/{spec.name}" + (f"/{spec.path}" if spec.path else "")
        click.echo(
            f"{spec.name:<28} {','.join(spec.methods):<16} {spec.auth:<8} {spec.module:<10} {url}  ({action.file})"
        )
    errors = registry.errors
    click.echo(
        f"{len(registry.actions)} actions from {len(registry.files)} files"
        + (f", {len(errors)} errors" if errors else "")
    )
    for line in errors:
        click.echo(line, err=True)


@actions_cli.command("validate")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
def validate_command(paths: tuple[Path, ...]) -> None:
    """Check action files (default: every file the app loads), each against every file the app
    loads (names are unique across all files). Exit 1 with the errors, each printed once."""
    manager = _manager()
    if paths:
        files: list[Path] = []
        for path in paths:
            if path.is_dir():
                files.extend(sorted(p for p in path.iterdir() if p.suffix in SUFFIXES))
            else:
                files.append(path)
        sources = [manager.source_for(p) for p in files]
    else:
        sources = manager.sources()
    errors, count = manager.validate_files(sources)
    if errors:
        for line in errors:
            click.echo(line, err=True)
        click.echo(f"{len(errors)} error(s) in {len(sources)} file(s)", err=True)
        sys.exit(1)
    click.echo(f"OK: {len(sources)} file(s), {count} action(s)")


@actions_cli.command("show")
@click.argument("name")
def show_command(name: str) -> None:
    """Everything about one action, as JSON (exact name; no fuzzy matching)."""
    action = _manager().get(name)
    if action is None:
        click.echo(f"Error: no action named {name!r} (see 'flask actions list')", err=True)
        sys.exit(1)
    info = dict(action.metadata)
    info["handler"] = f"{action.spec.module}.{action.spec.method}"
    info["defined_at"] = f"{action.file}:{action.spec.line}:{action.spec.col}"
    click.echo(json.dumps(info, indent=2, default=str))


@click.command("openapi")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="write to FILE instead of stdout")
@with_appcontext
def openapi_command(output: Path | None) -> None:
    """Print (or write) the OpenAPI 3.1 document."""
    text = json.dumps(_manager().openapi(), indent=2)
    if output is None:
        click.echo(text)
    else:
        output.write_text(text + "\n", encoding="utf-8")
        click.echo(f"wrote {output}")
