"""Hardening (issue 12) item 21: the database URL forms users and platforms write."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+psycopg2"])
def test_item_21_postgres_urls_use_the_installed_driver(make_app: Any, postgres_url: str, scheme: str) -> None:
    rest = sa.make_url(postgres_url).render_as_string(hide_password=False).split("://", 1)[1]
    app = make_app(DATABASE_URL=f"{scheme}://{rest}")
    am = app.extensions["keel"]
    assert am.db.engine.dialect.driver == "psycopg2"
    client = app.test_client()
    assert client.get("/ready").status_code == 200
    username = "url_" + uuid.uuid4().hex[:12]
    response = client.post("/auth/register", json={"username": username, "password": "url-form-pass"})
    assert response.status_code == 201
