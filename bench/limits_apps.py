"""The apps the gunicorn benchmarks serve (``bench/limits_pipeline.py``, ``bench/shapes.py``),
chosen by ``BENCH_APP``:

- ``bare``: bare Flask routes that echo their parameters (no auth, no limits, no validation):
  ``GET /bare?n=..&verbose=..`` and ``POST /bare`` (JSON body ``{title, priority}``);
- ``keel``: ``create_app()``, configured from the environment by the driver;
- ``minimal``: the smallest usual Flask stack for the same endpoints: flask-jwt-extended (no
  deny-list), Flask-Limiter with ONE limit (per IP, its default fixed window; on Redis when
  ``PEER_REDIS_URL`` is set, else in memory) and pydantic for the parameters;
- ``peer`` (the *equivalent* stack): flask-jwt-extended with a Redis deny-list, Flask-Limiter
  on Redis with a moving window and three limits (IP, user, per-route user) and pydantic.

The peers serve ``/task`` (``auth: user``: a JWT is required) and ``/pub/task`` (public), each
as ``GET`` (query parameters ``n``, ``verbose``) and ``POST`` (JSON body ``title``,
``priority``); 400 with pydantic's errors for invalid parameters.
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

    @app.get("/bare")
    def bare_get() -> Any:
        args = request.args
        return jsonify({"success": True, "result": {"n": int(args["n"]), "verbose": args.get("verbose") == "true"}})

    return app


def _peer(name: str, *, equivalent: bool) -> Any:
    from flask import Flask, jsonify, request
    from flask_jwt_extended import JWTManager, get_jwt_identity, jwt_required, verify_jwt_in_request
    from flask_limiter import Limiter
    from flask_limiter.util import get_remote_address
    from pydantic import BaseModel, Field
    from pydantic import ValidationError as PydanticError

    redis_url = os.environ.get("PEER_REDIS_URL", "")
    app = Flask(name)
    app.config["JWT_SECRET_KEY"] = os.environ["PEER_JWT_SECRET"]
    jwt = JWTManager(app)
    if equivalent:
        import redis

        deny = redis.Redis.from_url(redis_url)

        @jwt.token_in_blocklist_loader
        def revoked(header: dict[str, Any], payload: dict[str, Any]) -> bool:
            return deny.get("peer:deny:" + payload["jti"]) is not None

    limiter = Limiter(
        get_remote_address,
        app=app,
        storage_uri=redis_url or "memory://",
        strategy="moving-window" if equivalent else "fixed-window",
        default_limits=[LIMIT],
        key_prefix=name,
    )

    class TaskParams(BaseModel):
        title: str = Field(min_length=1, max_length=200)
        priority: int = Field(3, ge=1, le=5)

    class QueryParams(BaseModel):
        n: int = Field(ge=0, le=1000)
        verbose: bool = False

    def serve(user: Any) -> Any:
        try:
            if request.method == "GET":
                q = QueryParams.model_validate(request.args.to_dict())
                result: dict[str, Any] = {"n": q.n, "verbose": q.verbose}
            else:
                p = TaskParams.model_validate(request.get_json())
                result = {"title": p.title, "priority": p.priority}
        except PydanticError as exc:
            return jsonify({"success": False, "error": exc.errors(include_url=False)}), 400
        result["user"] = user
        return jsonify({"success": True, "action": "task", "result": result})

    def user_key() -> str:
        verify_jwt_in_request(optional=True)
        return f"user:{get_jwt_identity() or get_remote_address()}"

    def task() -> Any:
        return serve(get_jwt_identity())

    protected = jwt_required()(task)
    if equivalent:  # two more limits per user, as Keel's user and per-action limits
        protected = limiter.limit(LIMIT, key_func=user_key, scope="task")(protected)
        protected = limiter.limit(LIMIT, key_func=user_key, scope="user")(protected)
    app.add_url_rule("/task", "task", protected, methods=["GET", "POST"])
    app.add_url_rule("/pub/task", "public_task", lambda: serve(None), methods=["GET", "POST"])
    return app


def peer_app() -> Any:
    return _peer("peer", equivalent=True)


def minimal_app() -> Any:
    return _peer("minimal", equivalent=False)


def keel_app() -> Any:
    from core import create_app

    return create_app()


APPS = {"bare": bare_app, "peer": peer_app, "minimal": minimal_app, "keel": keel_app}
app = APPS[os.environ.get("BENCH_APP", "bare")]()
