"""``/admin``: a small page for operators, rendered on the server (issue 11; SPEC §3, §7, §11).

Panels: the modules and their health (``am.modules.module_health()``), the actions with the
current errors of their YAML files (``am.actions.status()``), the active bans, each with a
button that lifts it (``am.limiter``), and the WebSocket rooms with their members across the
cluster (``am.websocket``). No build step and nothing from another origin: Jinja templates in
``core/http/templates/admin/``, styles inline, and one small script of this origin
(``static/admin/presence.js``, served at ``/admin/presence.js``: the HTML CSP of
:mod:`core.http.pipeline` admits inline styles and this origin's scripts, no inline script).

Presence: the page is rendered with the rooms as they are (it works without JavaScript); the
script then asks ``GET /admin/presence.json`` every :data:`PRESENCE_POLL_S` seconds and
redraws the table. That endpoint is the page's data as JSON, for the same signed-in admin
session (401 otherwise: a script cannot fill in a form), ``no-store`` like every ``/admin``
response; a GET, so it needs no CSRF token and changes nothing.

Signing in: a username/password form checked the way ``POST /auth/login`` checks it — the
limiter counts the attempt per IP and per username, or per device token (``RATE_LIMIT_LOGIN``;
over it 429, banned 403), the user store verifies the password, a failure is a violation of the
IP toward its ban, a banned user is refused. Only an admin gets a session; anyone else is
refused with 403.

The session is a cookie signed with ``ADMIN_SESSION_KEY`` (its own key: never the JWT key) that
expires after ``ADMIN_SESSION_TTL`` seconds: HttpOnly, ``SameSite=Strict``, ``Secure`` over
HTTPS, path ``/admin``. It names the user and the token version it was issued for, and every
request reads the user again: a user disabled, demoted or whose tokens were revoked (``flask
users revoke``, ``revoke_user_tokens``, logout-all) is signed out at once. Without
``ADMIN_SESSION_KEY`` (production with no key set) every ``/admin`` URL answers 404.

CSRF: every session (an anonymous one too, for the sign-in form) holds a random token; every
form carries it and every POST is refused (403) unless it matches. ``SameSite=Strict`` is the
second line, not the only one.

Everything goes through the request pipeline like any route: request id, security headers, the
IP's ban and limit; a signed-in admin's requests also count toward the user's limit and are
refused while the user is banned. Errors are the SPEC §3 JSON; a wrong password is not an
error of the page, which shows the form again (200) with one generic message. Every POST
writes one line on the ``keel.audit`` logger: event, outcome, identity, IP, request id. The
page is for people, not an API: it is left out of ``/openapi.json``.
"""

from __future__ import annotations

import functools
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flask import (
    Blueprint,
    Flask,
    Request,
    Response,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from itsdangerous import BadSignature, URLSafeTimedSerializer
from werkzeug.wrappers import Response as BaseResponse

from config import Settings
from core.auth.identity import Principal, Requirement
from core.auth.policy import has_role
from core.errors import (
    ConfigError,
    Forbidden,
    HTTPError,
    InvalidCredentials,
    NotFound,
    ServiceUnavailable,
    Unauthorized,
)
from core.http import limits
from core.http.client import request_ip
from core.http.state import current_request_id, get_state
from core.logs import audit

if TYPE_CHECKING:
    from core.app_manager import AppManager
    from core.auth.users import User

EXTENSION = "keel.admin"
COOKIE = "keel_admin"
_SALT = "keel.admin.session"
_MIN_KEY_BYTES = 32
# What a signed-in admin's requests count toward (the user's ban and RATE_LIMIT_USER).
_REQUIREMENT = Requirement(auth="user", roles=("admin",), name="admin_page")

_now = time.time  # the sessions' clock (tests move it)
STATIC = Path(__file__).resolve().parent / "static" / "admin"
PRESENCE_POLL_S = 3  # how often the page's script asks /admin/presence.json
PRESENCE_ROOMS = 100  # rooms listed with their members; more are only counted

bp = Blueprint("keel_admin", __name__, template_folder="templates")


@dataclass(frozen=True)
class Session:
    """What the cookie says: the CSRF token, and for a signed-in admin who and until when."""

    csrf: str
    expires: float
    user_id: int | None = None
    token_version: int | None = None


class AdminSessions:
    """Issuing and reading the session cookie of one app (``app.extensions["keel.admin"]``)."""

    def __init__(self, key: str | None, ttl: int, *, always_secure: bool, trusted_proxies: int) -> None:
        self.serializer = URLSafeTimedSerializer(key, salt=_SALT) if key else None
        self.ttl = ttl
        self.always_secure = always_secure  # HSTS is on: the site is served over HTTPS only
        self.trusted_proxies = trusted_proxies

    def new(self, user: User | None = None) -> Session:
        """A fresh session (a new CSRF token): anonymous, or ``user``'s at sign-in."""
        token, expires = secrets.token_urlsafe(32), _now() + self.ttl
        if user is None:
            return Session(token, expires)
        return Session(token, expires, user.id, user.token_version)

    def read(self, req: Request) -> Session | None:
        """The request's session; ``None`` when there is none, or it is forged or expired."""
        raw = req.cookies.get(COOKIE)
        if not raw or self.serializer is None:
            return None
        try:
            data = self.serializer.loads(raw, max_age=self.ttl)
        except BadSignature:  # also SignatureExpired
            return None
        if not isinstance(data, dict):
            return None
        csrf, expires, uid, version = data.get("c"), data.get("e"), data.get("u"), data.get("v")
        if not isinstance(csrf, str) or not isinstance(expires, int | float) or expires <= _now():
            return None
        if uid is None:
            return Session(csrf, float(expires))
        if type(uid) is not int or type(version) is not int:
            return None
        return Session(csrf, float(expires), uid, version)

    def write(self, response: BaseResponse, session: Session, req: Request) -> None:
        assert self.serializer is not None
        data: dict[str, Any] = {"c": session.csrf, "e": session.expires}
        if session.user_id is not None:
            data.update(u=session.user_id, v=session.token_version)
        response.set_cookie(
            COOKIE,
            self.serializer.dumps(data),
            max_age=max(1, int(session.expires - _now())),
            path=req.script_root + "/admin",
            secure=self._secure(req),
            httponly=True,
            samesite="Strict",
        )

    def clear(self, response: BaseResponse, req: Request) -> None:
        response.delete_cookie(
            COOKIE, path=req.script_root + "/admin", secure=self._secure(req), httponly=True, samesite="Strict"
        )

    def _secure(self, req: Request) -> bool:
        if req.is_secure or self.always_secure:
            return True
        # TLS ended at a trusted proxy (nginx sets X-Forwarded-Proto); an untrusted client's
        # header could only make the cookie stricter, but it is ignored all the same.
        proto = req.headers.get("X-Forwarded-Proto", "")
        return self.trusted_proxies > 0 and proto.rpartition(",")[2].strip().lower() == "https"


def install(app: Flask, settings: Settings) -> None:
    """Register ``/admin`` (called by :func:`core.http.install`)."""
    key = settings["ADMIN_SESSION_KEY"]
    if key is not None and len(key.encode()) < _MIN_KEY_BYTES:
        raise ConfigError(
            f"ADMIN_SESSION_KEY from {settings.source('ADMIN_SESSION_KEY')} is shorter than {_MIN_KEY_BYTES} "
            "bytes; write a longer random value (python -c 'import secrets; print(secrets.token_urlsafe(48))')"
        )
    app.extensions[EXTENSION] = AdminSessions(
        key,
        settings["ADMIN_SESSION_TTL"],
        always_secure=settings["HSTS_SECONDS"] > 0,
        trusted_proxies=settings["TRUSTED_PROXY_COUNT"],
    )
    app.register_blueprint(bp)


def _sessions() -> AdminSessions:
    sessions: AdminSessions = current_app.extensions[EXTENSION]
    return sessions


def _am() -> AppManager:
    am: AppManager = current_app.extensions["keel"]
    return am


def _ip() -> str:
    return request_ip(request._get_current_object(), g._get_current_object())  # type: ignore[attr-defined]


@bp.before_request
def _every_request() -> None:
    if _sessions().serializer is None:
        raise NotFound("The admin page is off: set ADMIN_SESSION_KEY (a secret of at least 32 bytes).")
    state = get_state()
    state.no_store = True  # pages carry the CSRF token and operational data
    state.identity = f"ip:{_ip()}"  # until a signed-in admin is known (as the guard names callers)


def _page(view: Callable[..., BaseResponse]) -> Callable[..., BaseResponse]:
    """Leave a view out of ``/openapi.json`` (see :mod:`core.actions.openapi`)."""
    view.__keel_openapi__ = False  # type: ignore[attr-defined]
    return view


# -- who is asking ---------------------------------------------------------------------------


def _signed_in(session: Session | None) -> User | None:
    """The admin of ``session``, still active, still an admin, tokens not revoked since; else
    ``None``. Their requests count toward the user's limit and are refused while banned."""
    if session is None or session.user_id is None:
        return None
    am = _am()
    user = am.jwt.users.get(session.user_id)
    if user is None or not user.active or user.token_version != session.token_version:
        return None
    if not has_role(user.roles, _REQUIREMENT.roles):
        return None
    principal = Principal(kind="user", id=str(user.id), name=user.username, roles=user.roles)
    limiter = am.limiter
    outcome = limits.check_request(limiter, g._get_current_object(), _ip(), principal, _REQUIREMENT)
    error = limiter.banned_error(outcome) or limiter.limited_error(outcome)
    if error is not None:
        raise error
    get_state().identity = f"user:{user.id}"
    return user


def _check_csrf(session: Session | None) -> None:
    sent = request.form.get("csrf_token", "")
    if session is None or not sent or not hmac.compare_digest(sent.encode(), session.csrf.encode()):
        raise Forbidden("This form is out of date or was not sent by this page; reload the page and try again.")


def _audit(event: str, outcome: str, **fields: Any) -> None:
    """One ``keel.audit`` line: ``admin_<event>`` and its outcome (the log handlers add the
    request id, the identity and the client IP)."""
    audit(f"admin_{event}", outcome, **fields)


def _audited(event: str) -> Callable[[Callable[..., BaseResponse]], Callable[..., BaseResponse]]:
    """A POST that ends in an error (CSRF, limits, bans, a bad value) is audited here; the view
    audits its own outcomes."""

    def decorate(view: Callable[..., BaseResponse]) -> Callable[..., BaseResponse]:
        @functools.wraps(view)
        def wrapper(**kwargs: Any) -> BaseResponse:
            try:
                return view(**kwargs)
            except HTTPError as exc:
                _audit(event, exc.code, reason=exc.message)
                raise

        return wrapper

    return decorate


def _home() -> BaseResponse:
    return redirect(url_for("keel_admin.page"), 303)  # a path: no Host is ever written back


def _render(template: str, session: Session, **context: Any) -> str:
    return render_template(template, csrf_token=session.csrf, **context)


def _sign_in_form(session: Session | None, message: str | None = None, username: str = "") -> Response:
    sessions = _sessions()
    fresh = session is None or session.user_id is not None
    if fresh:
        session = sessions.new()
    assert session is not None
    html = _render("admin/sign_in.html", session, message=message, username=username)
    response = Response(html, mimetype="text/html")
    if fresh:
        sessions.write(response, session, request)
    return response


# -- pages -----------------------------------------------------------------------------------


@bp.get("/admin")
@_page
def page() -> BaseResponse:
    """The panels for a signed-in admin, the sign-in form for anyone else."""
    session = _sessions().read(request)
    user = _signed_in(session)
    if user is None or session is None:
        return _sign_in_form(session)
    am = _am()
    html = _render(
        "admin/dashboard.html", session, user=user, presence=_presence(am), poll_s=PRESENCE_POLL_S, **_panels(am)
    )
    return Response(html, mimetype="text/html")


@bp.get("/admin/presence.json")
@_page
def presence() -> BaseResponse:
    """The rooms and their members, as the page shows them (its script asks every few
    seconds). 401 without a signed-in admin's session: a script cannot use the sign-in form."""
    if _signed_in(_sessions().read(request)) is None:
        raise Unauthorized("Sign in at /admin first.")
    body = {"success": True, **_presence(_am()), "request_id": current_request_id()}
    return jsonify(body)


@bp.get("/admin/presence.js")
@_page
def presence_script() -> BaseResponse:
    """The page's one script (the CSP admits scripts of this origin only, none inline)."""
    return Response(_script(), mimetype="text/javascript")


@functools.cache
def _script() -> str:
    return (STATIC / "presence.js").read_text(encoding="utf-8")


def _presence(am: AppManager) -> dict[str, Any]:
    """The rooms across the cluster, by name, with their members (``user_id``, ``username``:
    what ``room_members`` gives, never a credential). With Redis down, ``error`` says so."""
    if "websocket" not in am.managers:
        return {"websocket": False, "rooms": [], "total_rooms": 0, "error": None}
    ws = am.websocket
    try:
        listed = ws.list_rooms()
        rooms = []
        for info in listed[:PRESENCE_ROOMS]:
            members = ws.room_members(info["room"])  # [] when the room went away meanwhile
            rooms.append({**info, "count": len(members), "members": members})
    except ServiceUnavailable as exc:
        return {"websocket": True, "rooms": [], "total_rooms": 0, "error": exc.message}
    return {"websocket": True, "rooms": rooms, "total_rooms": len(listed), "error": None}


def _panels(am: AppManager) -> dict[str, Any]:
    versions = {m["name"]: m["version"] for m in am.modules.info()}
    modules = [
        {
            "name": name,
            "version": versions.get(name, ""),
            "status": report.get("status", ""),
            "state": report.get("state", ""),
            "details": {k: v for k, v in report.items() if k not in ("status", "state")},
        }
        for name, report in am.modules.module_health().items()
    ]
    actions = [
        {
            "name": a.name,
            "module": a.module,
            "methods": " ".join(sorted(a.methods)),
            "auth": a.spec.auth,
            "unavailable": am.actions.unavailable(a.module),
        }
        for a in am.actions.registry.actions.values()
    ]
    return {"modules": modules, "actions": actions, "status": am.actions.status(), "bans": am.limiter.list_bans()}


@bp.post("/admin/login")
@_page
@_audited("sign_in")
def sign_in() -> BaseResponse:
    """Sign in with an admin's username and password (the checks of ``POST /auth/login``)."""
    session = _sessions().read(request)
    _check_csrf(session)
    username, password = request.form.get("username", ""), request.form.get("password", "")
    if not username or not password:
        return _sign_in_form(session, "Enter a username and a password.", username)
    am, ip = _am(), _ip()
    try:  # the same check as POST /auth/login (limits, device tokens, bans; audits a failure)
        user = am.jwt.check_login(username, password, ip, (request.cookies.get(am.jwt.devices.cookie),))
    except InvalidCredentials:
        return _sign_in_form(session, "Invalid username or password.", username)
    get_state().identity = f"user:{user.id}"
    if not has_role(user.roles, _REQUIREMENT.roles):
        raise Forbidden("The admin page is for admins only.")  # audited by @_audited, as this user
    _audit("sign_in", "ok", user_id=user.id)
    am.hooks.trigger("user_logged_in", user=user.public(), client_ip=ip)
    response = _home()
    sessions = _sessions()
    sessions.write(response, sessions.new(user), request)  # a new CSRF token with the new session
    _set_device_cookie(response, am, user)
    return response


def _set_device_cookie(response: BaseResponse, am: AppManager, user: User) -> None:
    """A device token of ``user``, sent back only to this sign-in form (as ``POST /auth/login``
    sets one for its own path): strangers' wrong passwords for this name then do not lock this
    browser out."""
    devices = am.jwt.devices
    token = devices.issue(user)
    if token is not None:
        response.set_cookie(
            devices.cookie, token, max_age=devices.ttl, path=request.path, secure=True, httponly=True, samesite="Strict"
        )


@bp.post("/admin/logout")
@_page
@_audited("sign_out")
def sign_out() -> BaseResponse:
    """Sign out: the cookie is removed."""
    session = _sessions().read(request)
    user = _signed_in(session)
    if user is None:
        return _home()
    _check_csrf(session)
    _audit("sign_out", "ok", user_id=user.id)
    response = _home()
    _sessions().clear(response, request)
    return response


@bp.post("/admin/bans/lift")
@_page
@_audited("lift_ban")
def lift_ban() -> BaseResponse:
    """Lift one ban now (``kind``, ``identifier``), then show the page again."""
    session = _sessions().read(request)
    user = _signed_in(session)
    if user is None:
        return _home()  # anonymous: the sign-in form
    _check_csrf(session)
    kind, identifier = request.form.get("kind", ""), request.form.get("identifier", "")
    try:
        _am().limiter.lift_ban(kind, identifier, actor=f"user:{user.id}")
    except NotFound:  # lifted meanwhile (another tab, the CLI) or expired: the page shows it gone
        _audit("lift_ban", "not_found", ban_kind=kind, ban_identifier=identifier)
    else:
        _audit("lift_ban", "ok", ban_kind=kind, ban_identifier=identifier)
    return _home()
