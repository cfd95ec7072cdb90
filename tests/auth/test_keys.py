"""Signing keys: RS256/ES256/EdDSA key sets, kid rotation with a grace period, config checks."""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from core.errors import ConfigError
from tests.auth.conftest import assert_unauthorized, bearer, create_user, login
from tests.auth.tokens import b64, claims, raw_token


def private_jwk(algorithm: str, kid: str, **extra: Any) -> tuple[dict[str, Any], Any]:
    if algorithm == "RS256":
        key: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        data = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key))
    elif algorithm == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
        data = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key))
    else:
        key = ed25519.Ed25519PrivateKey.generate()
        data = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(key))
    return {**data, "kid": kid, **extra}, key


@pytest.mark.parametrize("algorithm", ["RS256", "ES256", "EdDSA"])
def test_asymmetric_key_set_and_rotation(algorithm: str, auth_app: Any) -> None:
    old_jwk, old_key = private_jwk(algorithm, "old")
    new_jwk, _ = private_jwk(algorithm, "new")
    gone_jwk, gone_key = private_jwk(algorithm, "gone")
    app1 = auth_app(JWT_ALGORITHM=algorithm, JWT_KEYS=json.dumps({"keys": [old_jwk]}), API_KEY_PEPPER="p" * 40)
    client1 = app1.test_client()
    user = create_user(app1, "olga", admin=True)
    issued_with_old = login(client1, "olga")["access_token"]
    assert jwt.get_unverified_header(issued_with_old)["kid"] == "old"
    assert jwt.get_unverified_header(issued_with_old)["alg"] == algorithm

    # Rotate: "new" signs; "old" retired now (inside the grace period); "gone" retired long ago.
    now = time.time()
    keys = {"keys": [new_jwk, {**old_jwk, "retired_at": now}, {**gone_jwk, "retired_at": now - 10 * 86400}]}
    app2 = auth_app(
        JWT_ALGORITHM=algorithm,
        JWT_KEYS=json.dumps(keys),
        JWT_KEY_GRACE=86400,
        API_KEY_PEPPER="p" * 40,
        DATABASE_URL=app1.extensions["keel"].settings["DATABASE_URL"],
    )
    client2 = app2.test_client()
    assert client2.get("/auth/me", headers=bearer(issued_with_old)).status_code == 200
    fresh = login(client2, "olga")["access_token"]
    assert jwt.get_unverified_header(fresh)["kid"] == "new"
    assert client2.get("/probe/admin", headers=bearer(fresh)).status_code == 200

    payload = claims(user.id, "olga")
    rotated_out = jwt.encode(payload, gone_key, algorithm=algorithm, headers={"kid": "gone"})
    assert_unauthorized(client2.get("/auth/me", headers=bearer(rotated_out)))
    # Signed with a retired-in-grace key but claiming another kid: the signature fails.
    mislabeled = jwt.encode(payload, old_key, algorithm=algorithm, headers={"kid": "new"})
    assert_unauthorized(client2.get("/auth/me", headers=bearer(mislabeled)))

    # Algorithm confusion: HS256 "signed" with our public key as PEM and as JWK text.
    public_pem = old_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    public_jwk = json.dumps({k: v for k, v in old_jwk.items() if k != "d"}).encode()
    for secret in (public_pem, public_jwk):
        forged = raw_token({"alg": "HS256", "typ": "JWT", "kid": "old"}, payload, secret)
        assert_unauthorized(client2.get("/auth/me", headers=bearer(forged)))
    unsigned = f"{b64(json.dumps({'alg': 'none', 'kid': 'new'}).encode())}.{b64(json.dumps(payload).encode())}."
    assert_unauthorized(client2.get("/auth/me", headers=bearer(unsigned)))


def test_ephemeral_asymmetric_key_in_test_env(auth_app: Any) -> None:
    app = auth_app(JWT_ALGORITHM="ES256")
    client = app.test_client()
    create_user(app, "pete")
    token = login(client, "pete")["access_token"]
    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    assert client.get("/auth/me", headers=bearer(token)).status_code == 200


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"JWT_LEEWAY": 31}, "JWT_LEEWAY"),
        ({"JWT_SECRET_KEY": "short"}, "at least 32 bytes"),
        ({"JWT_REFRESH_TTL": 100 * 86400}, "JWT_MAX_TTL"),
        ({"JWT_KEYS": '{"keys": []}'}, "JWK set"),
        ({"JWT_KEYS": '{"keys": [{"kty": "oct", "k": "c2hvcnQ"}]}'}, "kid"),
        ({"JWT_KEYS": '{"keys": [{"kty": "oct", "kid": "a", "k": "c2hvcnQ"}]}'}, "shorter than 32 bytes"),
        ({"API_KEY_PEPPER": "short"}, "API_KEY_PEPPER"),
    ],
)
def test_bad_key_settings_stop_the_start(make_app: Any, overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_app(**overrides)


def test_hs256_jwks_rotation(auth_app: Any) -> None:
    old = {"kty": "oct", "kid": "k1", "k": b64(b"1" * 32)}
    new = {"kty": "oct", "kid": "k2", "k": b64(b"2" * 32)}
    app = auth_app(JWT_KEYS=json.dumps({"keys": [new, {**old, "retired_at": time.time()}]}))
    client = app.test_client()
    user = create_user(app, "quinn")
    assert jwt.get_unverified_header(login(client, "quinn")["access_token"])["kid"] == "k2"
    old_token = raw_token({"alg": "HS256", "typ": "JWT", "kid": "k1"}, claims(user.id, "quinn"), b"1" * 32)
    assert client.get("/auth/me", headers=bearer(old_token)).status_code == 200


def test_production_accepts_a_key_set_instead_of_a_secret(make_app: Any) -> None:
    jwk, _ = private_jwk("EdDSA", "prod-1")
    app = make_app(APP_ENV="production", JWT_ALGORITHM="EdDSA", JWT_KEYS=json.dumps({"keys": [jwk]}),
                   API_KEY_PEPPER="p" * 40, ENCRYPTION_KEYS=None, TRUSTED_HOSTS="api.example.com")
    assert app.extensions["keel"].jwt.keys.signing_kid == "prod-1"
    with pytest.raises(ConfigError, match="JWT_SECRET_KEY is not set"):
        make_app(APP_ENV="production", JWT_ALGORITHM="EdDSA", API_KEY_PEPPER="p" * 40)
