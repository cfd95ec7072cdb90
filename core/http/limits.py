"""The limiter's part of the request pipeline (SPEC §7); the limiter itself is ``am.limiter``.

- before every non-action route (module blueprints, ``/auth/*``, the ``/actions`` listing,
  ``/openapi.json``, ``/docs``; not the probes): the IP's ban check and limit;
- for the guard (:mod:`core.http.guard`): :func:`check_request`, the limiter's one call for an
  action or a protected route, given what this request already counted;
- after every response that a limit applied to: ``X-RateLimit-*``, ``RateLimit-Policy`` and
  ``RateLimit`` for the tightest tier.

What a request's limits answered travels on its :class:`~core.http.state.RequestState`
(``ip_limited``, ``rate_states``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Flask, Request, Response
from flask.ctx import _AppCtxGlobals

from core.http.client import request_ip
from core.http.health import EXEMPT_ENDPOINTS
from core.http.pipeline import pipeline
from core.http.state import RequestState, add_headers, get_state
from core.limits.plan import ADMITTED, Outcome, TierState, tightest, to_seconds

if TYPE_CHECKING:
    from core.auth.identity import Principal, Requirement
    from core.managers.rate_limit import RateLimiterManager

MAX_POLICIES = 1024  # cached RateLimit-Policy texts (one per combination of applied tiers)


def install(app: Flask, limiter: RateLimiterManager) -> None:
    """Add the limiter's steps to the app's pipeline (after CORS, before the metrics)."""
    steps = LimitSteps(limiter)
    pipe = pipeline(app)
    pipe.add_before(steps._protect_route)
    pipe.add_after(steps._add_headers)


def check_request(
    limiter: RateLimiterManager,
    ctx_g: _AppCtxGlobals,
    ip: str,
    principal: Principal | None,
    requirement: Requirement,
    *,
    identity_limits: bool = True,
    revocation_keys: list[str] | None = None,
) -> Outcome:
    """:meth:`RateLimiterManager.check_request` for the current request: skips the IP limit
    the route step already counted, and keeps the tier states for the headers."""
    state = get_state(ctx_g)
    outcome = limiter.check_request(
        ip,
        principal,
        requirement,
        identity_limits=identity_limits,
        revocation_keys=revocation_keys,
        ip_limited=state.ip_limited,
    )
    _remember(state, outcome)
    return outcome


def _remember(state: RequestState, outcome: Outcome) -> None:
    if outcome.states:
        earlier = state.rate_states
        state.rate_states = [*earlier, *outcome.states] if earlier else outcome.states


class LimitSteps:
    """The two pipeline steps of one app, and the cache of its ``RateLimit-Policy`` texts."""

    def __init__(self, limiter: RateLimiterManager) -> None:
        self.limiter = limiter
        # RateLimit-Policy by the identity of the applied tiers (see _add_headers)
        self._policies: dict[tuple[Any, ...], tuple[str, list[Any]]] = {}

    def _protect_route(self, req: Request, ctx_g: _AppCtxGlobals) -> None:
        """Ban check and IP limit for every non-action endpoint except the probes."""
        rule = req.url_rule
        if rule is None or rule.endpoint in EXEMPT_ENDPOINTS or req.path.startswith("/actions/"):
            return
        limiter = self.limiter
        outcome = limiter.check_ip(request_ip(req, ctx_g, limiter.trusted_proxies))
        state = get_state(ctx_g)
        state.ip_limited = True
        _remember(state, outcome)
        if outcome.status != ADMITTED:
            error = limiter.banned_error(outcome) or limiter.limited_error(outcome)
            if error is not None:
                raise error

    def _add_headers(self, req: Request, ctx_g: _AppCtxGlobals, response: Response) -> None:
        """The rate-limit headers of the tightest limit applied to this request."""
        states: list[TierState] | None = get_state(ctx_g).rate_states
        if not states:
            return
        tight = tightest(states)
        limit, remaining, reset = str(tight.tier.limit), str(max(0, tight.remaining)), str(to_seconds(tight.reset_ms))
        # Tiers are shared objects (parse_limit is cached), so the policy text is looked up by
        # their identity: hashing the Tier dataclasses costs more than building these headers.
        # The entry keeps the tiers alive, so an id in a key is never reused by another object.
        key = tuple([(st.check.level, id(st.check.tiers), id(st.tier)) for st in states])
        entry = self._policies.get(key)
        if entry is None:
            policy = ", ".join(f'"{_policy_name(st)}";q={st.tier.limit};w={st.tier.window_s}' for st in states)
            entry = (policy, [(st.check.tiers, st.tier) for st in states])
            if len(self._policies) < MAX_POLICIES:
                self._policies[key] = entry
        # added, not set: these headers are set nowhere else, and adding skips a scan. The values
        # are numbers and the policy names (level names and numbers from the configuration).
        add_headers(
            response.headers,
            (
                ("X-RateLimit-Limit", limit),
                ("X-RateLimit-Remaining", remaining),
                ("X-RateLimit-Reset", reset),
                ("RateLimit-Policy", entry[0]),
                ("RateLimit", f'"{_policy_name(tight)}";r={remaining};t={reset}'),
            ),
        )


def _policy_name(state: TierState) -> str:
    if len(state.check.tiers) == 1:
        return state.check.level
    return f"{state.check.level}-{state.tier.window_s}s"
