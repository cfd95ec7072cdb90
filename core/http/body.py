"""A request's input: the one JSON body parser (SPEC §3) and a call's parameters (SPEC §4.4).

Every JSON body Keel reads goes through :func:`loads` (via :func:`read_body`): a key given twice,
nesting too deep to parse, or a NUL character in a string is a 400 ``bad_request``, as is
anything that is not JSON. :func:`read_body` adds the HTTP rules: no body is :data:`NO_BODY`, a
body that is not ``application/json`` is a 415. (A body over ``MAX_CONTENT_LENGTH`` never gets
here: the pipeline answers 413 first.)

:func:`collect_params` gathers a call's parameters from the path, the query string and the
JSON body (which must be an object) and validates them with the endpoint's compiled
:class:`~core.actions.params.ParamSet`; actions and ``@protect``-ed routes share it. A NUL in
any value of the path or query string, declared or not, is a 400 ``validation_error``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from flask import Request
from flask.json.provider import DefaultJSONProvider
from werkzeug.sansio.request import Request as _SansioRequest

from core.actions.params import CoercionError, ParamSet, nul_details
from core.errors import BadRequest, UnsupportedMediaType

if TYPE_CHECKING:
    from werkzeug.sansio.response import Response

NO_BODY: Any = object()
"""What :func:`read_body` returns when the request has no body."""

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

_ARGS = _SansioRequest.__dict__["args"]  # Werkzeug's parsing of the query string (see query_values)
_NUL_ESCAPE = "\\u0000"  # the only way a NUL can be in valid JSON text (raw control characters are refused)


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """JSON objects with a repeated key are refused (which one would win is a guess)."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return out


# The decoder json.loads(text, object_pairs_hook=_unique_keys) builds on every call, built once
# (a decoder keeps no state between calls; json.loads shares its default one the same way).
_decode = json.JSONDecoder(object_pairs_hook=_unique_keys).decode


def loads(data: bytes | str) -> Any:
    """Parse a JSON body; :class:`BadRequest` when it is not valid JSON, repeats a key in an
    object, is nested too deeply to parse, or holds a NUL character in a string."""
    try:
        # What json.loads does with bytes (UTF-8, or UTF-16/32 by their byte pattern); done here
        # so that the NUL test below searches the text once.
        text = data.decode(json.detect_encoding(data), "surrogatepass") if isinstance(data, bytes) else data
        value = _decode(text)  # a BOM in text is refused, as json.loads refuses it
    except _DuplicateKey as exc:
        raise BadRequest(f"The JSON body has the key {exc.key!r} more than once.") from None
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        reason = "it is nested too deeply" if isinstance(exc, RecursionError) else "it is not valid JSON"
        raise BadRequest(f"The request body could not be read: {reason}.") from None
    if _NUL_ESCAPE in text and _holds_nul(value):  # the search is C speed; the walk only runs on a hit
        raise BadRequest("The request body could not be read: a string in it holds a NUL character (\\u0000).")
    return value


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON provider with Keel's parser, so that ``request.get_json()`` in any route
    (a module's plain Flask view included) refuses what :func:`loads` refuses. Answers keep
    their key order and non-ASCII text as is."""

    sort_keys = False
    ensure_ascii = False

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return loads(s)

    def response(self, *args: Any, **kwargs: Any) -> Response:
        """What :meth:`DefaultJSONProvider.response` answers (the same body and headers), with
        the encoder ``json.dumps`` would build for these settings built once and reused (an
        encoder keeps no state between calls). A subclass's own ``dumps`` is still called."""
        if type(self).dumps is not DefaultJSONProvider.dumps:
            return super().response(*args, **kwargs)
        obj = self._prepare_response_obj(args, kwargs)
        indent = (self.compact is None and self._app.debug) or self.compact is False
        key = (indent, self.default, self.ensure_ascii, self.sort_keys)
        cached = self._encoder
        if cached is None or cached[0] != key:
            layout: dict[str, Any] = {"indent": 2} if indent else {"separators": (",", ":")}
            encoder = json.JSONEncoder(
                default=self.default, ensure_ascii=self.ensure_ascii, sort_keys=self.sort_keys, **layout
            )
            cached = self._encoder = (key, encoder.encode)
        return self._app.response_class(f"{cached[1](obj)}\n", mimetype=self.mimetype)

    _encoder: tuple[tuple[Any, ...], Callable[[Any], str]] | None = None


def _holds_nul(value: Any) -> bool:
    """Whether any string (object keys included) in the parsed ``value`` holds ``"\\x00"``.
    Iterative: the value may be nested as deeply as the parser allows."""
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is str:
            if "\x00" in item:
                return True
        elif type(item) is dict:
            stack.extend(item)
            stack.extend(item.values())
        elif type(item) is list:
            stack.extend(item)
    return False


def read_body(req: Request) -> Any:
    """The request's JSON body, or :data:`NO_BODY` when there is none. 415 when the body is not
    JSON, 400 when :func:`loads` refuses it."""
    environ = req.environ
    # No Content-Length (or an invalid/zero one, which reads as empty below) and no
    # Transfer-Encoding: no body. Read from the environ: request.content_length re-parses.
    if not environ.get("CONTENT_LENGTH") and environ.get("HTTP_TRANSFER_ENCODING") is None:
        return NO_BODY
    data = req.get_data(cache=True)
    if not data:
        return NO_BODY
    if environ.get("CONTENT_TYPE") != "application/json" and not req.is_json:  # fast path first
        raise UnsupportedMediaType()
    return loads(data)


def collect_params(
    req: Request, params: ParamSet, values: dict[str, Any], passthrough: Collection[str] = ()
) -> dict[str, Any]:
    """The call's parameters, validated: ``values`` (the path's, already typed) plus the query
    string's (converted to the declared types) plus the JSON body's (POST, PUT, PATCH; it must be
    an object). A name given in two places is a 400; every violation is reported at once.

    ``passthrough``: names in ``values`` that are not declared parameters and are returned
    as they are (a route's own path variables, already converted by Flask).
    """
    details: list[dict[str, str]] = []
    failed: set[str] = set()
    if req.query_string:
        grouped = query_values(req)
        if grouped:
            _query(grouped, params, values, details, failed)
    if req.method in BODY_METHODS:
        body = read_body(req)
        if body is not NO_BODY:
            _body(body, values, details, failed)
    elif req.environ.get("CONTENT_LENGTH") and req.content_length and req.mimetype and not req.is_json:
        raise UnsupportedMediaType()
    if not passthrough:
        return params.validate(values, details or None, failed)
    held = {name: values.pop(name) for name in passthrough if name in values}
    for name, value in held.items():  # a route's own path variable: no schema, but no NUL either
        details.extend(nul_details(name, value))
    validated = params.validate(values, details or None, failed)
    validated.update(held)
    return validated


def query_values(req: Request) -> dict[str, list[str]]:
    """The query string's values by name, names in first-appearance order: what iterating
    ``req.args`` and its ``getlist`` give, parsed as Werkzeug parses ``args`` but without
    building the MultiDict (``req.args`` itself when something already read it)."""
    args = req.__dict__.get("args")  # cached_property: set once read
    if args is not None or type(req).args is not _ARGS:
        args = req.args
        return {key: args.getlist(key) for key in args}
    grouped: dict[str, list[str]] = {}
    for key, value in parse_qsl(req.query_string.decode(), keep_blank_values=True, errors="werkzeug.url_quote"):
        raws = grouped.get(key)
        if raws is None:
            grouped[key] = [value]
        else:
            raws.append(value)
    return grouped


def _query(
    grouped: dict[str, list[str]],
    params: ParamSet,
    values: dict[str, Any],
    details: list[dict[str, str]],
    failed: set[str],
) -> None:
    by_name = params.by_name
    for key, raws in grouped.items():
        if key in values:
            details.append({"param": key, "message": "given in two places (path and query string); give it once"})
            failed.add(key)
            continue
        param = by_name.get(key)
        if param is None:
            values[key] = raws[0] if len(raws) == 1 else raws
            continue
        try:
            values[key] = param.coerce(raws)
        except CoercionError as exc:
            details.append({"param": key, "message": str(exc)})
            failed.add(key)


def _body(body: Any, values: dict[str, Any], details: list[dict[str, str]], failed: set[str]) -> None:
    if type(body) is not dict:
        raise BadRequest("The JSON body must be an object whose keys are the parameters.")
    for key, value in body.items():
        if key in values or key in failed:
            details.append({"param": key, "message": "given in two places (path, query, body); give it once"})
            failed.add(key)
            continue
        values[key] = value
