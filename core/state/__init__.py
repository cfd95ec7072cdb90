"""The state machines behind ``am.state`` (SPEC §9); :mod:`core.managers.state` is the facade.

- :mod:`core.state.machine` — a machine's graph, checked when it is defined.
- :mod:`core.state.tables` — ``keel_state`` / ``keel_state_history``, their queries, rows → records.
- :mod:`core.state.cache` — the Redis write-through cache and the in-process cache
  invalidated over pub/sub.
"""
