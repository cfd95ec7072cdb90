"""Users and their administration (SPEC §6): argon2id hashes, roles, active flag, token version.

The ``users`` table is declared on ``am.db.metadata`` (SQLAlchemy Core; SQLite, PostgreSQL and
Oracle) and created with the other tables by ``am.db.create_all()``; times are Unix epoch
seconds (``Float``: a double on every backend, ``FLOAT(126)`` on Oracle). :class:`UserStore`
writes it (the deny-list in :mod:`core.auth.revocation` reads its token versions); the JWT
manager owns one (``am.jwt.users``) and registers it as the ``users`` service.

The token version (``token_version``) is part of every token (claim ``ver``): bumping it
revokes every token of the user at once (logout-all, disable, role change, admin revoke), so
every administrative change (:meth:`UserStore.set_active`, :meth:`UserStore.set_roles`) bumps
it in the same statement.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from core.errors import Conflict, NotFound, ValidationError

if TYPE_CHECKING:
    from core.managers.database import DatabaseManager

USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{2,63}$")
ROLE_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,190}\.[^@\s]{1,60}$")
PASSWORD_MIN, PASSWORD_MAX = 8, 256


def users_table(metadata: sa.MetaData) -> sa.Table:
    """Declare (once per metadata) the ``users`` table."""
    if "users" in metadata.tables:
        return metadata.tables["users"]
    return sa.Table(
        "users",
        metadata,
        sa.Column("id", sa.Integer, sa.Identity(), primary_key=True),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("email", sa.String(254), nullable=True),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("roles", sa.String(512), nullable=False, default="user"),
        sa.Column("active", sa.Boolean, nullable=False, default=True),
        sa.Column("token_version", sa.Integer, nullable=False, default=0),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


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

    def _one(self, where: Any) -> User | None:
        query = sa.select(self.table).where(where)
        row = self.db.read(lambda conn: conn.execute(query).first())
        return self._row(row) if row is not None else None

    def get(self, user_id: int) -> User | None:
        user_id = int(user_id)
        if not -(2**63) <= user_id < 2**63:  # no such row; the database driver would overflow
            return None
        return self._one(self.table.c.id == user_id)

    def by_username(self, username: str) -> User | None:
        return self._one(self.table.c.username == username)

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
        query = sa.select(self.table).order_by(self.table.c.id).limit(limit)
        rows = self.db.read(lambda conn: conn.execute(query).all())
        return [self._row(r) for r in rows]

    def versions(self) -> dict[int, int]:
        """``{user_id: token_version}`` for every user whose version is not 0 (Redis resync)."""
        t = self.table
        query = sa.select(t.c.id, t.c.token_version).where(t.c.token_version != 0)
        rows = self.db.read(lambda conn: conn.execute(query).all())
        return {int(r.id): int(r.token_version) for r in rows}

    # -- writes -------------------------------------------------------------------------------
    def create(
        self, username: str, password: str, *, email: str | None = None, roles: tuple[str, ...] = ("user",)
    ) -> User:
        problems = check_username(username) + check_password(password)
        if email is not None and (not isinstance(email, str) or not EMAIL_RE.fullmatch(email)):
            problems.append({"param": "email", "message": "must be an email address"})
        if problems:
            raise ValidationError(details=problems)
        now = time.time()
        values = {
            "username": username,
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
        created = self.get(user_id)
        assert created is not None
        return created

    def verify_password(self, username: Any, password: Any) -> User | None:
        """The active user if ``password`` is right, else ``None`` — same work either way."""
        user = self.by_username(username) if isinstance(username, str) and len(username) <= 64 else None
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
        t = self.table
        with self.db.transaction() as conn:
            result = conn.execute(
                sa.update(t)
                .where(t.c.id == int(user_id))
                .values(token_version=t.c.token_version + 1, updated_at=time.time(), **changes)
            )
            if result.rowcount == 0:
                raise NotFound(f"no user {user_id!r}")
            value = conn.execute(sa.select(t.c.token_version).where(t.c.id == int(user_id))).scalar_one()
        return int(value)

    def set_active(self, user_id: int, active: bool) -> int:
        """Enable or disable a user; the new token version (every token is revoked)."""
        return self.bump_version(user_id, active=active)

    def set_roles(self, user_id: int, roles: list[str] | tuple[str, ...]) -> int:
        """Replace a user's roles; the new token version (tokens with the old roles are revoked)."""
        return self.bump_version(user_id, roles=_roles_text(roles))
