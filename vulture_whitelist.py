"""Names vulture reports as unused that are used all the same (``make lint`` passes this file).

Grouped by why: read by a framework or another tool, public API of a manager (SPEC), or a
parameter that a signature needs. Anything else vulture reports is dead code: remove it.
"""
# ruff: noqa
# type: ignore
_ = object()

# Read by frameworks and tools, not by Keel's code
help  # Setting.help: docs/generate.py writes it into docs/configuration.md
_.call_timeout  # python-oracledb reads it (statement timeout)
_.merge_slashes  # Werkzeug's URL map
_.strict_slashes  # Werkzeug's URL map
sort_keys  # Flask's JSON provider
ensure_ascii  # Flask's JSON provider
_.ignore_aliases  # PyYAML's Dumper hook
_.__path__  # the import system (a package of module directories)
reset_metrics  # the autouse fixture in tests/conftest.py
Admin  # modules are found by ModuleManager.discover
Auth
System
Tasks

# Public API for modules and operators (documented in README / docs)
crypto  # am.crypto
_.crypto
_.reload  # am.actions.reload()
_.unregister  # am.hooks.unregister()
_.revocations  # am.jwt.revocations / .families: the tables, for module queries and tests
_.families
reset_s  # HitDecision.reset_s of am.limiter.hit()
_.ban_remaining  # am.limiter.ban_remaining(): Socket.IO connect refuses banned identities
_.cache_set  # am.redis.cache_set()
_.on_transition  # am.state.on_transition()

# Parameters a signature requires
blueprint  # BaseModule.register_routes(self, blueprint): the default does nothing with it

# WebSocket: the server API for modules (am.websocket.room_members/disconnect_identity), the
# event handlers Flask-SocketIO calls by event name, and what python-socketio reads off a refusal
_.room_members
_.disconnect_identity
_.error_args  # socketio.exceptions.ConnectionRefusedError payload
_.create_room
_.join_room
_.room_message
_.list_rooms
