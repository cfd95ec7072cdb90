"""The hostile-token corpus: every token → 401 with the generic body, never a 5xx."""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

import pytest

from tests.auth.conftest import assert_unauthorized, bearer, create_user, login
from tests.auth.tokens import DROP, b64, claims, raw_token


def build_corpus(app: Any, client: Any) -> tuple[str, dict[str, dict[str, str]]]:
    """``(valid admin token, {name: headers})`` — each entry differs from a valid token by one defect."""
    am = app.extensions["keel"]
    key: bytes = am.jwt.keys.signing_key
    kid: str = am.jwt.keys.signing_kid
    admin = create_user(app, "root", admin=True)
    victim = create_user(app, "victim")
    hdr = {"alg": "HS256", "typ": "JWT", "kid": kid}

    def tok(header: Any = None, **changes: Any) -> str:
        return raw_token(hdr if header is None else header, claims(admin.id, "root", **changes), key)

    good = tok()
    h, p, s = good.split(".")
    now = int(time.time())
    swapped = b64(b'{"sub": "1"}')

    pair = login(client, "root")
    revoked = login(client, "root")
    assert client.post("/auth/logout", headers=bearer(revoked["access_token"])).status_code == 200
    victim_pair = login(client, "victim")
    am.jwt.set_active(victim.id, False)

    tokens: dict[str, str] = {
        # structure
        "one segment": "abcdef",
        "two segments": f"{h}.{p}",
        "four segments": f"{good}.{s}",
        "bad base64": "!!!!.####.$$$$",
        "bad padding": f"{h}==.{p}.{s}",
        "header not JSON": f"{b64(b'not json')}.{p}.{s}",
        "header JSON array": raw_token(b'["alg", "HS256"]', claims(admin.id, "root"), key),
        "header null": raw_token(b"null", claims(admin.id, "root"), key),
        "header deeply nested": raw_token(b'{"a":' + b"[" * 1500 + b"]" * 1500 + b"}", claims(admin.id, "root"), key),
        # algorithm
        "alg missing": tok({"typ": "JWT", "kid": kid}),
        "alg none": raw_token({"alg": "none", "kid": kid}, claims(admin.id, "root"), None),
        "alg None": raw_token({"alg": "None", "kid": kid}, claims(admin.id, "root"), None),
        "alg NONE with signature": tok({"alg": "NONE", "kid": kid}),
        "alg hs256 lowercase": tok({"alg": "hs256", "kid": kid}),
        "RS256 label on HMAC": tok({"alg": "RS256", "kid": kid}),
        "HS512": raw_token({"alg": "HS512", "kid": kid}, claims(admin.id, "root"), key, hashlib.sha512),
        "HS384": raw_token({"alg": "HS384", "kid": kid}, claims(admin.id, "root"), key, hashlib.sha384),
        "alg number": tok({"alg": 256, "kid": kid}),
        "alg list": tok({"alg": ["HS256"], "kid": kid}),
        "alg null": tok({"alg": None, "kid": kid}),
        # signature
        "signature tampered": f"{h}.{p}.{s[:-2]}{'AA' if s[-2:] != 'AA' else 'BB'}",
        "signature empty": f"{h}.{p}.",
        "wrong key": raw_token(hdr, claims(admin.id, "root"), b"x" * 64),
        "payload swapped": f"{h}.{swapped}.{s}",
        # payload
        "payload not JSON": raw_token(hdr, b"not json", key),
        "payload array": raw_token(hdr, b'["sub", "1"]', key),
        "payload string": raw_token(hdr, b'"hello"', key),
        "payload null": raw_token(hdr, b"null", key),
        "payload number": raw_token(hdr, b"42", key),
        # claims
        "expired": tok(iat=now - 4000, nbf=now - 4000, exp=now - 3600),
        "exp as string": tok(exp=str(now + 600)),
        "exp NaN": raw_token(hdr, b'{"sub":"%d","exp":NaN}' % admin.id, key),
        "exp missing": tok(exp=DROP),
        "exp float": tok(exp=now + 600.5),
        "exp bool": tok(exp=True),
        "exp 10^30": tok(exp=10**30),
        "lifetime over maximum": tok(exp=now + 31 * 86400),
        "nbf in the future": tok(nbf=now + 3600, exp=now + 4000),
        "iat in the future": tok(iat=now + 3600, nbf=now, exp=now + 4000),
        "iat as list": tok(iat=[now]),
        "sub as int": tok(sub=admin.id),
        "sub missing": tok(sub=DROP),
        "sub not digits": tok(sub="root"),
        "jti missing": tok(jti=DROP),
        "jti as int": tok(jti=12345),
        "fam not hex": tok(fam="../../etc"),
        "iss wrong": tok(iss="evil"),
        "iss prefix": tok(iss="kee"),
        "iss superstring": tok(iss="keel-evil"),
        "iss missing": tok(iss=DROP),
        "aud wrong": tok(aud="other"),
        "aud object": tok(aud={"keel": True}),
        "aud missing": tok(aud=DROP),
        "type missing": tok(type=DROP),
        "type admin": tok(type="admin"),
        "ver as string": tok(ver="0"),
        "ver from the future": tok(ver=7),
        "roles not a list": tok(roles="admin"),
        "name missing": tok(name=DROP),
        "unknown crit": tok({**hdr, "crit": ["exp"]}),
        "jku header": tok({**hdr, "jku": "https://evil.example/jwks.json"}),
        "x5u header": tok({**hdr, "x5u": "https://evil.example/cert.pem"}),
        "embedded jwk header": tok({**hdr, "jwk": {"kty": "oct", "k": b64(b"x" * 64)}}),
        "typ not JWT": tok({**hdr, "typ": "at+jwt+evil"}),
        # keys
        "kid path traversal": tok({**hdr, "kid": "../../dev/null"}),
        "kid unknown": tok({**hdr, "kid": "nope"}),
        "kid missing": tok({"alg": "HS256", "typ": "JWT"}),
        "kid number": tok({**hdr, "kid": 1}),
        # semantics
        "refresh used as access": pair["refresh_token"],
        "revoked jti (logged out)": revoked["access_token"],
        "disabled user": victim_pair["access_token"],
        # transport
        "1 MB token": good + "A" * (1024 * 1024),
        "just over 8 KiB": f"{h}.{p}.{s}{'A' * 8200}",
        "non-ASCII": good[:-3] + "\u00e9\u00e9\u00e9",
    }
    corpus: dict[str, dict[str, str]] = {name: bearer(t) for name, t in tokens.items()}
    corpus.update(
        {
            "empty bearer": {"Authorization": "Bearer "},
            "bearer alone": {"Authorization": "Bearer"},
            "double space": {"Authorization": f"Bearer  {good}"},
            "tab separator": {"Authorization": f"Bearer\t{good}"},
            "Bearer Bearer x": {"Authorization": f"Bearer Bearer {good}"},
            "Basic scheme": {"Authorization": "Basic cm9vdDpjb3JyZWN0IGhvcnNlIGJhdHRlcnk="},
            "token as scheme": {"Authorization": good},
            "both API key and bearer": {"Authorization": f"Bearer {good}", "X-API-Key": "keel_0123456789abcdef_x"},
        }
    )
    return good, corpus


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_hostile_token_corpus(backend: str, auth_app: Any, request: pytest.FixtureRequest, caplog: Any) -> None:
    overrides = request.getfixturevalue("redis_config") if backend == "redis" else {}
    app = auth_app(RATE_LIMIT_IP="100000/minute", **overrides)  # ~300 requests from one IP
    client = app.test_client()
    good, corpus = build_corpus(app, client)
    assert len(corpus) >= 50

    # The unmodified token is accepted: each entry fails because of its one defect.
    ok = client.get("/probe/admin", headers=bearer(good))
    assert ok.status_code == 200, ok.get_json()
    assert ok.get_json()["user"]["username"] == "root"

    paths = ["/auth/me", "/probe/admin"]
    if "actions" in app.extensions["keel"].managers:
        assert client.get("/actions/actions_status", headers=bearer(good)).status_code == 200
        paths.append("/actions/actions_status")  # a real admin action (auth: user, roles: [admin])

    caplog.set_level(logging.INFO)
    failures = {}
    for name, headers in corpus.items():
        for path in paths:
            resp = client.get(path, headers=headers)
            if resp.status_code != 401:
                failures[f"{name} {path}"] = resp.status_code
                continue
            assert_unauthorized(resp)
        token = headers.get("Authorization", "").partition(" ")[2]
        # As a refresh token too (except the real refresh token, and the 1 MB body which is a 413).
        if token.strip() and name not in ("refresh used as access", "1 MB token"):
            resp = client.post("/auth/refresh", json={"refresh_token": token})
            if resp.status_code != 401:
                failures[f"{name} /auth/refresh"] = resp.status_code
    assert failures == {}
    # Never a 5xx, never a traceback.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_token_in_query_string_is_ignored(auth_app: Any) -> None:
    app = auth_app()
    client = app.test_client()
    create_user(app, "root", admin=True)
    token = login(client, "root")["access_token"]
    for param in ("access_token", "token", "jwt", "api_key"):
        assert_unauthorized(client.get(f"/auth/me?{param}={token}"))
        assert_unauthorized(client.get(f"/probe/admin?{param}={token}"))
    assert client.get("/auth/me", headers=bearer(token)).status_code == 200


def test_access_token_is_not_a_refresh_token(auth_app: Any) -> None:
    app = auth_app()
    client = app.test_client()
    create_user(app, "root")
    pair = login(client, "root")
    assert_unauthorized(client.post("/auth/refresh", json={"refresh_token": pair["access_token"]}))
    assert client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]}).status_code == 200


def test_actions_enforce_auth_through_the_guard(auth_app: Any) -> None:
    """An `auth: user, roles: [admin]` action: 401 without credentials, 403 non-admin, 200 admin."""
    app = auth_app()
    am = app.extensions["keel"]
    if "actions" not in am.managers:
        pytest.skip("the action manager is not part of this build yet")
    client = app.test_client()
    create_user(app, "root", admin=True)
    create_user(app, "bob")
    admin_token = login(client, "root")["access_token"]
    user_token = login(client, "bob")["access_token"]
    url = "/actions/actions_status"
    assert_unauthorized(client.get(url))
    assert_unauthorized(client.get(url, headers=bearer(admin_token + "x")))
    forbidden = client.get(url, headers=bearer(user_token))
    assert forbidden.status_code == 403 and forbidden.get_json()["error"]["code"] == "forbidden"
    ok = client.get(url, headers=bearer(admin_token))
    assert ok.status_code == 200, ok.get_json()


def test_revoke_user_tokens_action(auth_app: Any) -> None:
    app = auth_app()
    am = app.extensions["keel"]
    if "actions" not in am.managers:
        pytest.skip("the action manager is not part of this build yet")
    client = app.test_client()
    create_user(app, "root", admin=True)
    bob = create_user(app, "bob")
    admin_token = login(client, "root")["access_token"]
    bob_token = login(client, "bob")["access_token"]
    resp = client.post("/actions/revoke_user_tokens", json={"user_id": bob.id}, headers=bearer(admin_token))
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["result"]["revoked"] is True
    assert_unauthorized(client.get("/auth/me", headers=bearer(bob_token)))
    # bob cannot do it to root
    bob_token = login(client, "bob")["access_token"]
    denied = client.post("/actions/revoke_user_tokens", json={"user_id": 1}, headers=bearer(bob_token))
    assert denied.status_code == 403
    missing = client.post("/actions/revoke_user_tokens", json={"user_id": 9999}, headers=bearer(admin_token))
    assert missing.status_code == 404


def test_a_verified_token_still_expires(auth_app: Any) -> None:
    """The verified-token cache never extends a token's life."""
    # 3 s, not 1: on a loaded machine the first call must still land inside the lifetime
    app = auth_app(JWT_ACCESS_TTL=3, JWT_LEEWAY=0)
    client = app.test_client()
    create_user(app, "root")
    token = login(client, "root")["access_token"]
    assert client.get("/auth/me", headers=bearer(token)).status_code == 200  # verified and cached
    time.sleep(3.05)
    assert_unauthorized(client.get("/auth/me", headers=bearer(token)))
