"""The application object for gunicorn and ``flask --app app``; ``python app.py`` runs it."""

from __future__ import annotations

from core import create_app

app = create_app()

if __name__ == "__main__":
    settings = app.extensions["keel"].settings
    app.run(host=settings["HOST"], port=settings["PORT"], debug=settings["DEBUG"], use_reloader=False)
