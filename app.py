"""The application object for gunicorn and ``flask --app app``; ``python app.py`` runs it."""

from __future__ import annotations

from core import create_app
from core.errors import KeelError

try:
    app = create_app()
except KeelError as exc:
    # A bad setting or module stops the start with one clear line and exit status 1 (no traceback).
    raise SystemExit(f"keel: cannot start: {exc}") from None

if __name__ == "__main__":
    settings = app.extensions["keel"].settings
    app.run(host=settings["HOST"], port=settings["PORT"], debug=settings["DEBUG"], use_reloader=False)
