"""``am.crypto``: Fernet encryption with rotation (SPEC §10)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from cryptography.fernet import Fernet

from core.errors import ConfigError
from core.managers.crypto import DecryptionError


def test_round_trip_with_generated_test_key(am: Any) -> None:
    token = am.crypto.encrypt("4111 1111 1111 1111")
    assert "4111" not in token
    assert am.crypto.decrypt(token) == "4111 1111 1111 1111"
    assert am.crypto.decrypt_bytes(am.crypto.encrypt(b"\x00\xff")) == b"\x00\xff"
    assert am.crypto.encrypt("same") != am.crypto.encrypt("same")  # random IV
    assert am.health()["managers"]["crypto"]["enabled"] is True


def test_rotation_decrypts_old_and_encrypts_with_newest(make_app: Callable[..., Any]) -> None:
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    before = make_app(ENCRYPTION_KEYS=[old_key]).extensions["keel"].crypto
    legacy = before.encrypt("secret")

    after = make_app(ENCRYPTION_KEYS=f"{new_key},{old_key}").extensions["keel"].crypto  # newest first
    assert after.decrypt(legacy) == "secret"
    rotated = after.rotate(legacy)
    assert Fernet(new_key.encode()).decrypt(rotated.encode()) == b"secret"
    with pytest.raises(Exception):  # noqa: B017 - the old key alone cannot read the rotated token
        Fernet(old_key.encode()).decrypt(rotated.encode())
    assert Fernet(new_key.encode()).decrypt(after.encrypt("x").encode()) == b"x"

    only_new = make_app(ENCRYPTION_KEYS=[new_key]).extensions["keel"].crypto
    assert only_new.decrypt(rotated) == "secret"
    with pytest.raises(DecryptionError):
        only_new.decrypt(legacy)  # retired key: no longer readable


def test_tampered_token_is_rejected(am: Any) -> None:
    token = am.crypto.encrypt("x")
    tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    with pytest.raises(DecryptionError):
        am.crypto.decrypt(tampered)


def test_bad_key_stops_the_start_naming_its_position(make_app: Callable[..., Any]) -> None:
    good = Fernet.generate_key().decode()
    with pytest.raises(ConfigError, match=r"ENCRYPTION_KEYS from override: key #2 is not a Fernet key"):
        make_app(ENCRYPTION_KEYS=[good, "not-a-key"])
