"""Users and their administration (SPEC §6): argon2id hashes, roles, active flag, token version.

The ``users`` table is declared on ``am.db.metadata`` (SQLAlchemy Core; SQLite, PostgreSQL and
Oracle) and created with the other tables by ``am.db.create_all()``; times are Unix epoch
seconds (``Float``: a double on every backend, ``FLOAT(126)`` on Oracle). :class:`UserStore`
writes it (the deny-list in :mod:`core.auth.revocation` reads its token versions); the JWT
manager owns one (``am.jwt.users``) and registers it as the ``users`` service.

The token version (``token_version``) is part of every token (claim ``ver``): bumping it
revokes every token of the user at once (logout-all, disable, role change, admin revoke), so
every administrative change (:meth:`UserStore.set_active`, :meth:`UserStore.set_roles`) bumps
it in the same statement. Every committed change is told to the store's watchers
(:meth:`UserStore.watch`: the deny-list's Redis copy, the API key cache), whoever made it.

Usernames are unique after Unicode normalisation and case folding (SPEC §6): ``username``
keeps the display form as registered (``USERNAME_RE``, the pattern the register route
documents: ``Alice`` stays ``Alice``), ``username_key`` (:func:`username_key`, NFKC of the
case-folded NFKC form) carries a unique index and is what lookups use, so ``alice`` and
``ALICE`` are one account and login accepts ``ALICE``, ``Alice`` or the fullwidth
``ａｌｉｃｅ``. A database created before the column existed gets it at start
(:meth:`UserStore.ensure_schema`).

User ids are never reused (``AUTOINCREMENT`` on SQLite; identities elsewhere): a token or an
API key of a deleted user must never become another user's.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from core.errors import Conflict, NotFound, ValidationError

if TYPE_CHECKING:
    from core.managers.database import DatabaseManager

logger = logging.getLogger(__name__)

USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{2,63}$")
USERNAME_MAX = 64
ROLE_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,190}\.[^@\s]{1,60}$")
PASSWORD_MIN, PASSWORD_MAX = 8, 256
USERNAME_KEY_INDEX = "uq_users_username_key"
MAX_USER_ID = 2**63 - 1  # beyond it no row exists; the database driver would overflow
_SCHEMA_ATTEMPTS = 5


def users_table(metadata: sa.MetaData) -> sa.Table:
    """Declare (once per metadata) the ``users`` table."""
    if "users" in metadata.tables:
        return metadata.tables["users"]
    return sa.Table(
        "users",
        metadata,
        sa.Column("id", sa.Integer, sa.Identity(), primary_key=True),
        sa.Column("username", sa.String(USERNAME_MAX), nullable=False, unique=True),
        # Nullable only because a database created before it gets it by ALTER TABLE (see
        # UserStore.ensure_schema); every row written by this code has one.
        sa.Column("username_key", sa.String(USERNAME_MAX), nullable=True),
        sa.Column("email", sa.String(254), nullable=True),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("roles", sa.String(512), nullable=False, default="user"),
        sa.Column("active", sa.Boolean, nullable=False, default=True),
        sa.Column("token_version", sa.Integer, nullable=False, default=0),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Index(USERNAME_KEY_INDEX, "username_key", unique=True),
        # SQLite would otherwise hand the id of a deleted newest row to the next user.
        sqlite_autoincrement=True,
    )


def add_username_key_ddl(table: sa.Table, dialect: sa.Dialect) -> str:
    """``ALTER TABLE users ADD ...`` for ``username_key`` in ``dialect``'s words."""
    column, preparer = table.c.username_key, dialect.identifier_preparer
    ddl = f"{preparer.format_column(column)} {column.type.compile(dialect=dialect)}"
    add = f"ADD ({ddl})" if dialect.name == "oracle" else f"ADD COLUMN {ddl}"
    return f"ALTER TABLE {preparer.format_table(table)} {add}"


def by_username_query(table: sa.Table, username: str) -> sa.Select[Any]:
    """The row whose ``username_key`` is ``username``'s, an exact display-form match first. A
    name that normalises to no valid username is matched exactly only (so ``~<id>``, the key
    of a legacy duplicate, is no name of it)."""
    exact = table.c.username == username
    key = username_key(username)
    where = sa.or_(table.c.username_key == key, exact) if USERNAME_RE.fullmatch(key) else exact
    return sa.select(table).where(where).order_by(sa.case((exact, 0), else_=1)).limit(1)


def fingerprint_query(table: sa.Table) -> sa.Select[Any]:
    """One row of sums over every user's id, token version and active flag (see
    :meth:`UserStore.fingerprint`)."""
    big_id = sa.cast(table.c.id, sa.BigInteger)
    return sa.select(
        sa.func.count(),
        sa.func.coalesce(sa.func.sum(big_id), 0),
        sa.func.coalesce(sa.func.sum(table.c.token_version), 0),
        sa.func.coalesce(sa.func.sum(sa.case((table.c.active == sa.true(), big_id), else_=0)), 0),
        sa.func.coalesce(sa.func.sum(big_id * table.c.token_version), 0),
    )


def username_key(username: str) -> str:
    """The form usernames are compared in: NFKC of the case-folded NFKC form (Unicode's
    compatibility caseless match), so ``alice``, ``ALICE`` and ``ａｌｉｃｅ`` are equal."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", username).casefold())


@dataclass(frozen=True)
class User:
    id: int
    username: str
    email: str | None
    roles: tuple[str, ...]
    active: bool
    token_version: int
    created_at: float
    updated_at: float

    def public(self) -> dict[str, Any]:
        """What the API shows about a user (never the hash)."""
        return {
            "id": self.id,
            "username": self.username,
            "email": self.email,
            "roles": list(self.roles),
            "active": self.active,
            "created_at": _iso(self.created_at),
        }


@dataclass(frozen=True)
class UserChange:
    """A committed change of a user's token state, told to :meth:`UserStore.watch` callbacks."""

    user_id: int
    token_version: int
    active: bool
    created: bool = False


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def make_hasher(env: str) -> PasswordHasher:
    """argon2id; OWASP parameters in production, cheap ones under APP_ENV=test (speed only)."""
    if env == "test":
        return PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)
    return PasswordHasher(time_cost=3, memory_cost=65536, parallelism=4)


def check_password(password: Any) -> list[dict[str, str]]:
    if not isinstance(password, str):
        return [{"param": "password", "message": "must be a string"}]
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        return [{"param": "password", "message": f"must be {PASSWORD_MIN} to {PASSWORD_MAX} characters"}]
    return []


def check_username(username: Any) -> list[dict[str, str]]:
    """The display form: 3 to 64 letters, digits, ``_.-``; uniqueness is decided on its
    :func:`username_key`, so ``ALICE`` is refused (409) once ``alice`` exists."""
    if not isinstance(username, str) or not USERNAME_RE.fullmatch(username):
        return [
            {
                "param": "username",
                "message": "3 to 64 characters: letters, digits, '_', '.', '-' (starting with a letter or digit)",
            }
        ]
    return []


def _roles_text(roles: list[str] | tuple[str, ...]) -> str:
    cleaned = sorted({r.strip() for r in roles if r.strip()})
    bad = [r for r in cleaned if not ROLE_RE.match(r)]
    if bad:
        raise ValidationError(details=[{"param": "roles", "message": f"invalid role name(s): {', '.join(bad)}"}])
    return ",".join(cleaned)


def _user_id(user_id: Any) -> int | None:
    """``user_id`` as an id a row could have, else ``None``."""
    try:
        value = int(user_id)
    except (TypeError, ValueError):
        return None
    return value if -MAX_USER_ID - 1 <= value <= MAX_USER_ID else None


class UserStore:
    """CRUD on ``users`` and password verification with a constant-work path for unknown users.

    Reads go through ``db.read`` (retried after a transient error), writes through
    ``db.transaction()``; a database that is down is a 503 raised there.
    """

    def __init__(self, db: DatabaseManager, env: str) -> None:
        self.db = db
        self.table = users_table(db.metadata)
        self.hasher = make_hasher(env)
        # Verifying against this when the user does not exist makes "unknown user" cost the
        # same as "wrong password" (SPEC §6: similar timing).
        self._dummy_hash = self.hasher.hash("keel-dummy-password-for-timing")
        self._watchers: list[Callable[[UserChange], None]] = []
        self._schema_ready = False
        self._schema_lock = threading.Lock()

    def watch(self, callback: Callable[[UserChange], None]) -> None:
        """Call ``callback(change)`` after every committed change of a user's token state
        (creation, token version bump, enable/disable). Declared in ``init_app``."""
        self._watchers.append(callback)

    def _changed(self, change: UserChange) -> None:
        for callback in self._watchers:
            callback(change)

    # -- schema: the username key of databases created before it ---------------------------------
    def ensure_schema(self) -> None:
        """Give a ``users`` table created before ``username_key`` existed the column, its
        values and its unique index. Idempotent; safe when several workers start at once (an
        advisory lock on PostgreSQL; elsewhere a lost race — the column or index created by
        another worker in between — is retried and then finds the work done). Run by the JWT
        manager's ``start()``; if the database was down then, by the first use of the store."""
        with self._schema_lock:
            if self._schema_ready:
                return
            for attempt in range(1, _SCHEMA_ATTEMPTS + 1):
                try:
                    with self.db.transaction() as conn:
                        self._migrate(conn)
                    break
                except (sa.exc.OperationalError, sa.exc.ProgrammingError, sa.exc.IntegrityError):
                    # Another worker altered the table between our look and our change.
                    if attempt == _SCHEMA_ATTEMPTS:
                        raise
                    time.sleep(0.05 * attempt)
            self._schema_ready = True

    def _migrate(self, conn: sa.Connection) -> None:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(7314151)"))
        inspector = sa.inspect(conn)
        if not inspector.has_table(self.table.name):
            return  # db.create_all() creates it whole
        if "username_key" not in {c["name"] for c in inspector.get_columns(self.table.name)}:
            conn.execute(sa.text(add_username_key_ddl(self.table, conn.dialect)))
            logger.warning("users: added the column username_key (usernames unique after NFKC and case folding)")
        self._backfill_keys(conn)
        for index in self.table.indexes:
            if index.name == USERNAME_KEY_INDEX:
                index.create(conn, checkfirst=True)

    def _backfill_keys(self, conn: sa.Connection) -> None:
        """Fill the missing keys. Of legacy accounts whose names are equal after normalisation
        (``alice`` and ``ALICE``), the oldest gets the key; the others get ``~<id>``, which no
        name normalises to, so only their exact name reaches them (logged, to be renamed)."""
        t = self.table
        if conn.execute(sa.select(t.c.id).where(t.c.username_key.is_(None)).limit(1)).first() is None:
            return
        rows = conn.execute(sa.select(t.c.id, t.c.username, t.c.username_key).order_by(t.c.id)).all()
        taken = {r.username_key for r in rows if r.username_key is not None}
        clashes = []
        for row in rows:
            if row.username_key is not None:
                continue
            key = username_key(row.username)
            if key in taken:
                key = f"~{row.id}"
                clashes.append(row.username)
            taken.add(key)
            conn.execute(sa.update(t).where(t.c.id == row.id, t.c.username_key.is_(None)).values(username_key=key))
        if clashes:
            logger.warning(
                "users: %d username(s) equal to an older one after normalisation, reachable by their exact "
                "name only until renamed: %s",
                len(clashes),
                ", ".join(sorted(clashes)),
            )

    def _ready(self) -> None:
        if not self._schema_ready:
            self.ensure_schema()

    # -- reads --------------------------------------------------------------------------------
    def _row(self, row: Any) -> User:
        return User(
            id=int(row.id),
            username=row.username,
            email=row.email,
            roles=tuple(r for r in (row.roles or "").split(",") if r),
            active=bool(row.active),
            token_version=int(row.token_version),
            created_at=float(row.created_at),
            updated_at=float(row.updated_at),
        )

    def _one(self, query: sa.Select[Any]) -> User | None:
        self._ready()
        row = self.db.read(lambda conn: conn.execute(query).first())
        return self._row(row) if row is not None else None

    def get(self, user_id: int) -> User | None:
        uid = _user_id(user_id)
        if uid is None:
            return None
        return self._one(sa.select(self.table).where(self.table.c.id == uid))

    def by_username(self, username: Any) -> User | None:
        """The user whose name equals ``username`` after normalisation (any case, any
        compatibility form); an exact display-form match first (a legacy duplicate, see
        :meth:`_backfill_keys`, or a row a previous version wrote without a key)."""
        if not isinstance(username, str) or not username or len(username) > USERNAME_MAX or "\x00" in username:
            return None
        return self._one(by_username_query(self.table, username))

    def require(self, ref: int | str) -> User:
        """A user by id (int or digits) or username; NotFound otherwise."""
        user = None
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            user = self.get(int(ref))
        if user is None and isinstance(ref, str):
            user = self.by_username(ref)
        if user is None:
            raise NotFound(f"no user {ref!r}")
        return user

    def all(self, limit: int = 1000) -> list[User]:
        self._ready()
        query = sa.select(self.table).order_by(self.table.c.id).limit(limit)
        rows = self.db.read(lambda conn: conn.execute(query).all())
        return [self._row(r) for r in rows]

    def states(self) -> list[tuple[int, int, bool]]:
        """``(id, token_version, active)`` of every user (the deny-list's Redis copy)."""
        t = self.table
        query = sa.select(t.c.id, t.c.token_version, t.c.active)
        rows = self.db.read(lambda conn: conn.execute(query).all())
        return [(int(r.id), int(r.token_version), bool(r.active)) for r in rows]

    def fingerprint(self) -> str:
        """A digest of every user's id, token version and active flag, computed by the
        database (one row): it changes when a user is added, deleted, disabled or enabled, or
        has its version changed — by Keel or by hand."""
        query = fingerprint_query(self.table)
        row = self.db.read(lambda conn: conn.execute(query).one())
        return ":".join(str(int(value)) for value in row)

    # -- writes -------------------------------------------------------------------------------
    def create(
        self, username: str, password: str, *, email: str | None = None, roles: tuple[str, ...] = ("user",)
    ) -> User:
        """A new user; :class:`Conflict` when the name is taken after normalisation."""
        problems = check_username(username) + check_password(password)
        if email is not None and (not isinstance(email, str) or not EMAIL_RE.fullmatch(email)):
            problems.append({"param": "email", "message": "must be an email address"})
        if problems:
            raise ValidationError(details=problems)
        self._ready()
        now = time.time()
        values = {
            "username": username,
            "username_key": username_key(username),
            "email": email,
            "password_hash": self.hasher.hash(password),
            "roles": _roles_text(roles),
            "active": True,
            "token_version": 0,
            "created_at": now,
            "updated_at": now,
        }
        try:
            with self.db.transaction() as conn:
                result = conn.execute(sa.insert(self.table).values(**values))
                user_id = int(result.inserted_primary_key[0])  # type: ignore[index]
        except sa.exc.IntegrityError:
            raise Conflict("This username is already taken.") from None
        self._changed(UserChange(user_id, 0, True, created=True))
        created = self.get(user_id)
        assert created is not None
        return created

    def verify_password(self, username: Any, password: Any) -> User | None:
        """The active user if ``password`` is right, else ``None`` — same work either way."""
        user = self.by_username(username)
        stored = self._password_hash(user.id) if user is not None else None
        candidate = password if isinstance(password, str) and len(password) <= PASSWORD_MAX else ""
        try:
            self.hasher.verify(stored or self._dummy_hash, candidate)
            ok = stored is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            ok = False
        if not ok or user is None or not user.active:
            return None
        if stored is not None and self.hasher.check_needs_rehash(stored):
            self._set_hash(user.id, self.hasher.hash(candidate))
        return user

    def _password_hash(self, user_id: int) -> str | None:
        query = sa.select(self.table.c.password_hash).where(self.table.c.id == user_id)
        value = self.db.read(lambda conn: conn.execute(query).scalar())
        return str(value) if value is not None else None

    def _set_hash(self, user_id: int, new_hash: str) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                sa.update(self.table)
                .where(self.table.c.id == user_id)
                .values(password_hash=new_hash, updated_at=time.time())
            )

    # -- administration: every change revokes the user's tokens ----------------------------------
    def bump_version(self, user_id: int, **changes: Any) -> int:
        """Increment the token version atomically (with optional column changes); the new value."""
        t, uid = self.table, _user_id(user_id)
        if uid is None:
            raise NotFound(f"no user {user_id!r}")
        with self.db.transaction() as conn:
            result = conn.execute(
                sa.update(t)
                .where(t.c.id == uid)
                .values(token_version=t.c.token_version + 1, updated_at=time.time(), **changes)
            )
            if result.rowcount == 0:
                raise NotFound(f"no user {user_id!r}")
            row = conn.execute(sa.select(t.c.token_version, t.c.active).where(t.c.id == uid)).one()
        self._changed(UserChange(uid, int(row.token_version), bool(row.active)))
        return int(row.token_version)

    def set_active(self, user_id: int, active: bool) -> int:
        """Enable or disable a user; the new token version (every token is revoked)."""
        return self.bump_version(user_id, active=active)

    def set_roles(self, user_id: int, roles: list[str] | tuple[str, ...]) -> int:
        """Replace a user's roles; the new token version (tokens with the old roles are revoked)."""
        return self.bump_version(user_id, roles=_roles_text(roles))
