"""The ``tasks`` module: the example that uses every part of Keel (SPEC §5).

- a SQL table (``tasks``: the id sequence and who created each task) declared in
  ``am.db.metadata``;
- a state machine ``todo → doing → done`` (``doing → todo`` allowed) in ``am.state``: the task's
  fields live in the state record's data, so one version number guards both its fields and its
  state, and every transition is in the persisted history;
- YAML actions (``modules/tasks/actions.yaml``) with roles, scopes and rate limits;
- comments in MongoDB when ``MONGODB_URL`` is set, else in the SQL table ``task_comments``;
- hooks: a ``state_changed`` listener broadcasts every change to the Socket.IO room ``tasks``
  through ``am.websocket.emit_to_room`` (every instance's members of the room get it).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from core import ActionContext, BaseModule, NotFound, ValidationError, action, utc_timestamp

logger = logging.getLogger(__name__)

KIND = "task"
TRANSITIONS = {"todo": ["doing"], "doing": ["todo", "done"], "done": []}
FIELDS = ("title", "description", "priority", "tags")
ROOM = "tasks"


def actor_of(ctx: ActionContext) -> str | None:
    """Who is calling: ``user:<id>``, ``api_key:<id>`` or None (an internal call)."""
    if ctx.user is not None:
        return f"user:{ctx.user['id']}"
    if ctx.api_key is not None:
        return f"api_key:{ctx.api_key['id']}"
    return None


def as_task(record: dict[str, Any]) -> dict[str, Any]:
    """A state record → the task shape of SPEC §5."""
    data = record["data"]
    return {
        "id": int(record["key"]),
        "title": data.get("title"),
        "description": data.get("description", ""),
        "priority": data.get("priority", 3),
        "tags": data.get("tags", []),
        "state": record["state"],
        "version": record["version"],
        "created_by": data.get("created_by"),
        "updated_at": record["updated_at"],
    }


class Tasks(BaseModule):
    name = "tasks"
    version = "1.0.0"

    def initialize(self, app_manager: Any) -> None:
        am = app_manager
        self.state = am.state
        self.db = am.db
        self.machine = am.state.define(KIND, TRANSITIONS, initial="todo")
        md = am.db.metadata
        self.tasks = sa.Table(
            "tasks",
            md,
            sa.Column("id", sa.Integer, sa.Identity(), primary_key=True),
            sa.Column("created_by", sa.String(191), nullable=True),
            sa.Column("created_at", utc_timestamp(), nullable=False),
        )
        self.comments = sa.Table(
            "task_comments",
            md,
            sa.Column("id", sa.Integer, sa.Identity(), primary_key=True),
            sa.Column("task_id", sa.Integer, sa.ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
            sa.Column("author", sa.String(191), nullable=True),
            sa.Column("text", sa.Text, nullable=False),
            sa.Column("created_at", utc_timestamp(), nullable=False),
            sa.Index("ix_task_comments_task", "task_id", "id"),
        )
        # MongoDB when configured; the collection is created on first insert.
        self.mongo_comments = am.db.mongo["task_comments"] if am.db.mongo is not None else None
        am.hooks.register("state_changed", self._broadcast)

    # -- hooks -------------------------------------------------------------------------------
    def _broadcast(self, kind: str, change: str, record: dict[str, Any], actor: str | None = None, **_: Any) -> bool:
        """Send every task change to the members of the Socket.IO room ``tasks``, on every
        instance: event ``task_changed`` ``{change, actor, task}``."""
        if kind != KIND or self.app_manager is None:
            return False
        self.app_manager.websocket.emit_to_room(
            ROOM, "task_changed", {"change": change, "actor": actor, "task": as_task(record)}
        )
        return True

    # -- actions -----------------------------------------------------------------------------
    @action
    def create_task(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        actor = actor_of(ctx)
        with self.db.transaction() as conn:
            result = conn.execute(sa.insert(self.tasks).values(created_by=actor, created_at=datetime.now(UTC)))
            task_id = int(result.inserted_primary_key[0])
        data = {
            "title": params["title"],
            "description": params.get("description", ""),
            "priority": params.get("priority", 3),
            "tags": list(params.get("tags", [])),
            "created_by": actor,
        }
        record = self.state.create(KIND, task_id, data, actor=actor)
        ctx.status = 201
        return as_task(record)

    @action
    def get_task(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        return as_task(self._get(params["id"]))

    @action
    def list_tasks(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        state, limit, offset = params.get("state"), params.get("limit", 20), params.get("offset", 0)
        records = self.state.list(KIND, state=state, limit=limit, offset=offset)
        return {
            "tasks": [as_task(r) for r in records],
            "total": self.state.count(KIND, state=state),
            "limit": limit,
            "offset": offset,
        }

    @action
    def update_task(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        changes = {f: params[f] for f in FIELDS if params.get(f) is not None}
        if not changes:
            raise ValidationError(
                details=[{"param": "title", "message": "give at least one of title, description, priority, tags"}]
            )
        record = self._call(
            self.state.update, KIND, params["id"], changes, params.get("expected_version"), actor=actor_of(ctx)
        )
        return as_task(record)

    @action
    def transition_task(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        record = self._call(
            self.state.transition,
            KIND,
            params["id"],
            params["to"],
            expected_version=params.get("expected_version"),
            actor=actor_of(ctx),
        )
        return as_task(record)

    @action
    def task_history(self, params: dict[str, Any], ctx: ActionContext) -> list[dict[str, Any]]:
        return self._call(self.state.history, KIND, params["id"])  # type: ignore[no-any-return]

    @action
    def comment_task(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        task_id = int(params["id"])
        self._get(task_id)  # 404 for an unknown task
        comment = {"task_id": task_id, "author": actor_of(ctx), "text": params["text"], "created_at": datetime.now(UTC)}
        if self.mongo_comments is not None:
            result = self.db.mongo_call(self.mongo_comments.insert_one, dict(comment))
            comment_id: Any = str(result.inserted_id)
        else:
            with self.db.transaction() as conn:
                comment_id = int(conn.execute(sa.insert(self.comments).values(**comment)).inserted_primary_key[0])
        ctx.status = 201
        return {**comment, "id": comment_id, "created_at": comment["created_at"].isoformat()}

    @action
    def list_comments(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        task_id, limit = int(params["id"]), params.get("limit", 50)
        self._get(task_id)
        if self.mongo_comments is not None:
            cursor = self.mongo_comments.find({"task_id": task_id}).sort("_id", 1).limit(limit)
            docs = self.db.mongo_call(list, cursor)
            comments = [
                {
                    "id": str(d["_id"]),
                    "task_id": d["task_id"],
                    "author": d.get("author"),
                    "text": d["text"],
                    "created_at": _iso(d["created_at"]),
                }
                for d in docs
            ]
        else:
            c = self.comments
            query = sa.select(c).where(c.c.task_id == task_id).order_by(c.c.id).limit(limit)
            rows = self.db.read(lambda conn: conn.execute(query).mappings().all())
            comments = [{**dict(r), "created_at": _iso(r["created_at"])} for r in rows]
        return {
            "task_id": task_id,
            "comments": comments,
            "storage": "mongodb" if self.mongo_comments is not None else "sql",
        }

    # -- helpers -----------------------------------------------------------------------------
    def _get(self, task_id: Any) -> dict[str, Any]:
        return self._call(self.state.get, KIND, task_id)  # type: ignore[no-any-return]

    @staticmethod
    def _call(fn: Any, kind: str, task_id: Any, *args: Any, **kwargs: Any) -> Any:
        """Call the state manager, naming the task (not the state record) in a 404."""
        try:
            return fn(kind, task_id, *args, **kwargs)
        except NotFound:
            raise NotFound(f"task {task_id} not found") from None


def _iso(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat()
