"""Regenerate the parts of ``docs/`` that come from code: ``python docs/generate.py``.

- ``docs/configuration.md``: the settings table, from ``config/schema.py``;
- ``docs/errors.md``: the HTTP error table, from ``core/errors.py``;
- ``docs/operations.md``: the metrics table, from ``core/metrics.py``.

Each file keeps its hand-written text; only the part between ``<!-- generated:start -->``
and ``<!-- generated:end -->`` is replaced. ``python docs/generate.py --check`` exits 1 when a
file is out of date (the test suite runs it).
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config.schema import GENERATED, SETTINGS, Setting  # noqa: E402
from core import errors, metrics  # noqa: E402

START, END = "<!-- generated:start -->", "<!-- generated:end -->"


def _default(setting: Setting) -> str:
    if setting.key in GENERATED:
        return "generated (development)"
    value = setting.default
    if value in (None, "", []):
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(value)
    return str(value)


def _allowed(setting: Setting) -> str:
    if setting.choices:
        return " \\| ".join(setting.choices)
    low, high = setting.minimum, setting.maximum
    if low is not None and high is not None:
        return f"{low:g} – {high:g}"
    if low is not None:
        return f"≥ {low:g}"
    if setting.type == "limit":
        return "`n/period;…`"
    return ""


def settings_table() -> str:
    rows = ["| key | type | default | allowed | secret | what it does |", "|---|---|---|---|---|---|"]
    for s in SETTINGS:
        what = s.help.replace("|", "\\|") + (" (required)" if s.required else "")
        rows.append(f"| `{s.key}` | {s.type} | {_default(s)} | {_allowed(s)} | {'yes' if s.secret else ''} | {what} |")
    return "\n".join(rows)


def errors_table() -> str:
    rows = ["| status | code | default message | raised as |", "|---|---|---|---|"]
    classes = [
        cls
        for name in errors.__all__
        if inspect.isclass(cls := getattr(errors, name))
        and issubclass(cls, errors.HTTPError)
        and cls is not errors.HTTPError
    ]
    for cls in sorted(classes, key=lambda c: (c.status, c.code, c.__name__)):
        rows.append(f"| {cls.status} | `{cls.code}` | {cls.message} | `{cls.__name__}` |")
    return "\n".join(rows)


def metrics_table() -> str:
    rows = ["| metric | type | labels | what it counts |", "|---|---|---|---|"]
    for metric in metrics.ALL:
        kind = type(metric).__name__.lower()
        name = metric._name + ("_total" if kind == "counter" else "")
        labels = ", ".join(f"`{label}`" for label in metric._labelnames)
        rows.append(f"| `{name}` | {kind} | {labels} | {metric._documentation} |")
    return "\n".join(rows)


TARGETS = {"configuration.md": settings_table, "errors.md": errors_table, "operations.md": metrics_table}


def render(path: Path, table: str) -> str:
    text = path.read_text(encoding="utf-8")
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    if not rest:
        raise SystemExit(f"{path}: no {START} marker")
    return f"{head}{START}\n{table}\n{END}{tail}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a file is out of date")
    options = parser.parse_args()
    stale = []
    for name, build in TARGETS.items():
        path = ROOT / "docs" / name
        new = render(path, build())
        if new != path.read_text(encoding="utf-8"):
            stale.append(name)
            if not options.check:
                path.write_text(new, encoding="utf-8")
    if options.check and stale:
        print(f"out of date: {', '.join(stale)} (run: python docs/generate.py)")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
