"""What the command groups share: one clear line for a Keel error."""

from __future__ import annotations

import click

from core.errors import KeelError


def cli_error(exc: KeelError) -> click.ClickException:
    """The error as one line (a validation error lists its ``param: message`` pairs)."""
    details = getattr(exc, "details", None)
    if isinstance(details, list) and details:
        text = "; ".join(f"{d.get('param')}: {d.get('message')}" for d in details if isinstance(d, dict))
        return click.ClickException(text or str(exc))
    return click.ClickException(str(exc))
