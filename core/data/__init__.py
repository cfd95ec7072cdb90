"""The data layer behind ``am.db`` and ``am.redis`` (SPEC §10).

- :mod:`core.data.sql` — SQLAlchemy engines wired to a circuit breaker, the errors a database
  outage becomes (503s), portable column types (:func:`~core.data.sql.utc_timestamp`).
- :mod:`core.data.redis_backends` — the two backends of the Redis manager: redis-py, and the
  in-process stand-in used when ``REDIS_URL`` is unset.
"""
