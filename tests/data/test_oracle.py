"""Oracle: the framework's SQL compiled with SQLAlchemy's oracle dialect (no server needed).

The DDL of every framework table (users, refresh families, revocations, API keys, bans, state,
tasks) and the main queries of the users store, the API keys, the bans and the token
revocation/rotation, and of the state manager, are compared with ``snapshots/oracle.sql``
(regenerate with ``UPDATE_SNAPSHOTS=1`` after a deliberate change and review the diff). Every
table declared in ``am.db.metadata`` must compile for Oracle (also a pre-23ai server: no
BOOLEAN), use IDENTITY for autoincrement ids, timezone-aware timestamps, sized strings and no
Oracle reserved word as a column name.
A live Oracle database is exercised by ``tests/state`` when ``TEST_ORACLE_DSN`` is set.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import oracle, postgresql, sqlite
from sqlalchemy.schema import CreateIndex, CreateTable

from core.state.tables import cas_update, history_query, list_records, select_record

SNAPSHOT = Path(__file__).parent / "snapshots" / "oracle.sql"
MINE = (
    "users",
    "auth_refresh_families",
    "auth_revocations",
    "api_keys",
    "keel_bans",
    "keel_state",
    "keel_state_history",
    "tasks",
    "task_comments",
)
# Oracle's reserved words (V$RESERVED_WORDS, reserved = 'Y') that SQLAlchemy would quote, plus
# the ones SQLAlchemy's list lacks: a quoted column name is case-sensitive on Oracle.
ORACLE_RESERVED = set(oracle.dialect().identifier_preparer.reserved_words) | {
    "access", "add", "audit", "column", "file", "immediate", "increment", "initial", "maxextents",
    "modify", "noaudit", "offline", "online", "row", "rowid", "rownum", "rows", "session",
    "successful", "sysdate", "validate", "whenever",
}  # fmt: skip
NOW = 1_700_000_000.5


def _ddl(table: sa.Table, dialect: Any) -> list[str]:
    out = [str(CreateTable(table).compile(dialect=dialect)).strip()]
    out += [
        str(CreateIndex(index).compile(dialect=dialect)).strip()
        for index in sorted(table.indexes, key=lambda i: str(i.name))
    ]
    return out


def _queries(am: Any) -> dict[str, Any]:
    records, history = am.state.records, am.state.history_table
    users, keys = am.jwt.users.table, am.api_keys.table
    revocations, families, bans = am.jwt.revocations, am.jwt.families, am.limiter.records.table
    denied = (
        sa.select(sa.func.count())
        .select_from(revocations)
        .where(
            sa.or_(
                sa.and_(revocations.c.kind == "jti", revocations.c.value == "j1"),
                sa.and_(revocations.c.kind == "fam", revocations.c.value == "f1"),
            ),
            revocations.c.expires_at > NOW,
        )
        .scalar_subquery()
    )
    return {
        "select_record": select_record(records, "task", "1"),
        "cas_update": cas_update(records, "task", "1", 3, state="doing", data="{}", version=4),
        "list_records": list_records(records, "task", "todo", 20, 40),
        "count": sa.select(sa.func.count()).select_from(records).where(records.c.kind == "task"),
        "history": history_query(history, "task", "1", 100),
        "insert_history": sa.insert(history).values(
            kind="task", record_key="1", version=2, from_state="todo", to_state="doing", actor="user:1", changed_at=None
        ),
        "ping": sa.select(sa.literal(1)),
        # users (core/auth/users.py)
        "user_insert": sa.insert(users).values(
            username="alice",
            email=None,
            password_hash="h",
            roles="user",
            active=True,
            token_version=0,
            created_at=NOW,
            updated_at=NOW,
        ),
        "user_by_username": sa.select(users).where(users.c.username == "alice"),
        "user_list": sa.select(users).order_by(users.c.id).limit(1000),
        "user_bump_version": sa.update(users)
        .where(users.c.id == 1)
        .values(token_version=users.c.token_version + 1, updated_at=NOW, active=False),
        "user_versions": sa.select(users.c.id, users.c.token_version).where(users.c.token_version != 0),
        # token revocation and refresh rotation (core/auth/revocation.py, core/auth/families.py)
        "family_insert": sa.insert(families).values(
            fam="f1", user_id=1, current_jti="j1", created_at=NOW, rotated_at=NOW, revoked_at=None
        ),
        "family_rotate": sa.update(families)
        .where(
            families.c.fam == "f1",
            families.c.current_jti == "j1",
            families.c.revoked_at.is_(None),
            families.c.user_id == 1,
        )
        .values(current_jti="j2", rotated_at=NOW),
        "revocation_insert": sa.insert(revocations).values(
            kind="jti", value="j1", user_id=1, expires_at=NOW, created_at=NOW
        ),
        "revocation_purge": sa.delete(revocations).where(revocations.c.expires_at < NOW - 60),
        "revocation_check": sa.select(users.c.token_version, users.c.active, denied.label("denied")).where(
            users.c.id == 1
        ),
        # API keys (core/auth/api_keys.py)
        "api_key_load": sa.select(keys, users.c.active.label("owner_active"))
        .select_from(keys.outerjoin(users, users.c.id == keys.c.owner_id))
        .where(keys.c.id == "0123456789abcdef"),
        "api_key_list": sa.select(keys.c.id).where(keys.c.owner_id == 1).order_by(keys.c.created_at),
        "api_key_revoke": sa.update(keys).where(keys.c.id == "0123456789abcdef").values(revoked_at=NOW),
        # bans (core/limits/bans.py)
        "ban_insert": sa.insert(bans).values(
            kind="ip", identifier="203.0.113.9", until_ms=1, strikes=0, reason="", actor="", created_ms=1
        ),
        "ban_active": bans.select().where(bans.c.until_ms > 1).order_by(bans.c.until_ms),
        "ban_delete": bans.delete().where(bans.c.kind == "ip", bans.c.identifier == "203.0.113.9"),
    }


def _render(am: Any) -> str:
    dialect = oracle.dialect()
    parts = []
    for name in MINE:
        parts += _ddl(am.db.metadata.tables[name], dialect)
    for name, query in _queries(am).items():
        parts.append(f"-- {name}\n" + str(query.compile(dialect=dialect)).strip())
    return "\n\n".join(parts) + "\n"


def test_framework_sql_matches_the_oracle_snapshot(am: Any) -> None:
    rendered = _render(am)
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(rendered)
    assert SNAPSHOT.is_file(), "no snapshot yet: run with UPDATE_SNAPSHOTS=1 and review snapshots/oracle.sql"
    assert rendered == SNAPSHOT.read_text()


def test_oracle_specifics_in_the_compiled_sql(am: Any) -> None:
    rendered = _render(am)
    assert "GENERATED BY DEFAULT AS IDENTITY" in rendered  # autoincrement ids
    assert "FETCH FIRST" in rendered or "ROWNUM" in rendered  # LIMIT/OFFSET translated
    assert "FROM DUAL" in rendered  # the pool ping / health query
    assert "VARCHAR2(191 CHAR)" in rendered and "CLOB" in rendered and "JSON" not in rendered
    assert (
        "WHERE keel_state.kind = :kind_1 AND keel_state.record_key = :record_key_1 AND keel_state.version" in rendered
    )


def _oracle_19c() -> Any:
    """The oracle dialect as it configures itself for a 19c server (no native BOOLEAN)."""
    dialect = oracle.dialect()
    dialect.server_version_info = (19, 0)
    dialect.supports_native_boolean = False
    dialect._supports_oracle_json = False
    return dialect


@pytest.mark.parametrize(
    "dialect",
    [oracle.dialect(), _oracle_19c(), postgresql.dialect(), sqlite.dialect()],
    ids=["oracle", "oracle-19c", "postgresql", "sqlite"],
)
def test_every_declared_table_compiles(am: Any, dialect: Any) -> None:
    tables = list(am.db.metadata.sorted_tables)
    assert set(MINE) <= {t.name for t in tables}
    for table in tables:
        for statement in _ddl(table, dialect):
            assert statement.startswith(("CREATE TABLE", "CREATE INDEX", "CREATE UNIQUE INDEX")), table.name
            if dialect.name == "oracle":
                assert "BOOLEAN" not in statement or dialect.supports_native_boolean, table.name
                assert " DATE" not in statement and '"' not in statement, (table.name, statement)
        names = [table.name, *(c.name for c in table.columns), *(str(i.name) for i in table.indexes)]
        assert all(len(n) <= 128 for n in names), table.name  # Oracle 12.2+ identifier limit


def test_framework_tables_are_portable(am: Any) -> None:
    """Every declared table: identity ids, sized strings, zone-aware timestamps, no reserved words."""
    for table in am.db.metadata.sorted_tables:
        for column in table.columns:
            assert column.name.lower() not in ORACLE_RESERVED, f"{table.name}.{column.name}: reserved on Oracle"
            assert table.name.lower() not in ORACLE_RESERVED, table.name
            ctype = column.type
            if isinstance(ctype, sa.String) and not isinstance(ctype, sa.Text):
                assert ctype.length, f"{table.name}.{column.name}: a string needs a length (VARCHAR2)"
            if isinstance(ctype, sa.DateTime):
                ora = ctype.dialect_impl(oracle.dialect())
                compiled = oracle.dialect().type_compiler_instance.process(ora)
                assert compiled == "TIMESTAMP WITH TIME ZONE", f"{table.name}.{column.name}: {compiled}"
        auto = table.autoincrement_column
        if auto is not None:
            assert auto.identity is not None, f"{table.name}.{auto.name}: sa.Identity() (Oracle gets none otherwise)"
            ddl = str(CreateTable(table).compile(dialect=oracle.dialect()))
            assert f"{auto.name} " in ddl and "GENERATED BY DEFAULT AS IDENTITY" in ddl, table.name


def test_oracle_engine_has_the_keel_pool(make_app: Any) -> None:
    from core.data.sql import create_engine

    app = make_app()
    am = app.extensions["keel"]
    engine = create_engine("oracle+oracledb://keel:pw@127.0.0.1:1/?service_name=FREEPDB1", am.settings, am.db.breaker)
    try:
        assert engine.dialect.name == "oracle" and engine.dialect.driver == "oracledb"
        assert type(engine.pool).__name__ == "_KeelQueuePool" and engine.pool._pre_ping
    finally:
        engine.dispose()
