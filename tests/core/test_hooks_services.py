"""HooksManager and ServicesManager (SPEC §5)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from core.errors import KeelError


def test_hooks_run_by_priority_then_registration_order(am: Any) -> None:
    calls: list[str] = []

    def make(tag: str) -> Any:
        def callback(**data: Any) -> str:
            calls.append(tag)
            return f"{tag}:{data['n']}"

        return callback

    am.hooks.register("custom", make("default-1"))
    am.hooks.register("custom", make("late"), priority=50)
    am.hooks.register("custom", make("early"), priority=1)
    am.hooks.register("custom", make("default-2"))
    assert am.hooks.trigger("custom", n=7) == ["early:7", "default-1:7", "default-2:7", "late:7"]
    assert calls == ["early", "default-1", "default-2", "late"]


def test_a_raising_callback_is_logged_and_the_others_run(am: Any, caplog: pytest.LogCaptureFixture) -> None:
    def broken(**data: Any) -> None:
        raise ValueError("listener bug")

    am.hooks.register("user_registered", lambda **d: "first", priority=1)
    am.hooks.register("user_registered", broken, priority=2)
    am.hooks.register("user_registered", lambda **d: "third", priority=3)
    with caplog.at_level(logging.ERROR, logger="core.managers.hooks"):
        results = am.hooks.trigger("user_registered", user_id=1)
    assert results == ["first", None, "third"]
    record = next(r for r in caplog.records if r.name == "core.managers.hooks")
    assert "user_registered" in record.getMessage() and "broken" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[0] is ValueError


def test_trigger_accepts_a_name_keyword_and_unknown_hooks(am: Any) -> None:
    am.hooks.register("module_started", lambda **d: d["name"])
    assert am.hooks.trigger("module_started", name="tasks") == ["tasks"]
    assert am.hooks.trigger("nobody_listens", x=1) == []


def test_unregister_and_non_callables(am: Any) -> None:
    def callback(**_: Any) -> int:
        return 1

    am.hooks.register("h", callback)
    am.hooks.unregister("h", callback)
    assert am.hooks.trigger("h") == []
    with pytest.raises(TypeError, match="must be callable"):
        am.hooks.register("h", "not callable")


def test_services_registry(am: Any) -> None:
    mailer = object()
    am.services.register("mailer", mailer)
    assert am.services.get("mailer") is mailer
    assert "mailer" in am.services and "mailer" in am.services.names()
    with pytest.raises(KeelError, match="already registered; pass replace=True"):
        am.services.register("mailer", object())
    other = object()
    am.services.register("mailer", other, replace=True)
    assert am.services.get("mailer") is other
    with pytest.raises(KeelError, match=r"no service named 'sms' \(registered: .*mailer"):
        am.services.get("sms")
    assert am.services.get("sms", None) is None
