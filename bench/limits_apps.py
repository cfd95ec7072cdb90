"""The three apps of ``bench/limits_pipeline.py``, chosen by ``BENCH_APP`` (for gunicorn):

- ``bare``: a bare Flask route that echoes the JSON body (no auth, no limits, no validation);
- ``keel``: the Keel action ``bench_task`` — JWT, deny-list, ban, IP/user/action limits,
  parameter validation — configured from the environment by the driver;
- ``peer``: the same endpoint built the way a Flask user would: flask-jwt-extended (with a
  Redis deny-list), Flask-Limiter on Redis (moving window: IP, user and per-route user limits)
  and pydantic for the parameters.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

LIMIT = "100000/minute"


def bare_app() -> Any:
    from flask import Flask, jsonify, request

    app = Flask("bare")

    @app.post("/bare")
    def bare() -> Any:
        data = request.get_json()
        return jsonify({"success": True, "result": {"title": data["title"], "priority": data.get("priority", 3)}})

    return app


def peer_app() -> Any:
    import redis
    from flask import Flask, jsonify, request
    from flask_jwt_extended import JWTManager, get_jwt_identity, jwt_required, verify_jwt_in_request
    from flask_limiter import Limiter
    from flask_limiter.util import get_remote_address
    from pydantic import BaseModel, Field
    from pydantic import ValidationError as PydanticError

    redis_url = os.environ["PEER_REDIS_URL"]
    app = Flask("peer")
    app.config["JWT_SECRET_KEY"] = os.environ["PEER_JWT_SECRET"]
    jwt = JWTManager(app)
    deny = redis.Redis.from_url(redis_url)

    @jwt.token_in_blocklist_loader
    def revoked(header: dict[str, Any], payload: dict[str, Any]) -> bool:
        return deny.get("peer:deny:" + payload["jti"]) is not None

    def user_key() -> str:
        verify_jwt_in_request(optional=True)
        return f"user:{get_jwt_identity() or get_remote_address()}"

    limiter = Limiter(
        get_remote_address,
        app=app,
        storage_uri=redis_url,
        strategy="moving-window",
        default_limits=[LIMIT],
        key_prefix="peer",
    )

    class TaskParams(BaseModel):
        title: str = Field(min_length=1, max_length=200)
        priority: int = Field(3, ge=1, le=5)

    @app.post("/task")
    @limiter.limit(LIMIT, key_func=user_key, scope="user")
    @limiter.limit(LIMIT, key_func=user_key, scope="task")
    @jwt_required()
    def task() -> Any:
        try:
            params = TaskParams.model_validate(request.get_json())
        except PydanticError as exc:
            return jsonify({"success": False, "error": exc.errors()}), 400
        result = {"title": params.title, "priority": params.priority, "user": get_jwt_identity()}
        return jsonify({"success": True, "action": "task", "result": result})

    return app


def keel_app() -> Any:
    from core import create_app

    return create_app()


app = {"bare": bare_app, "peer": peer_app, "keel": keel_app}[os.environ.get("BENCH_APP", "bare")]()
