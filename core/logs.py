"""Logging, configured once at startup (SPEC §11).

One JSON object per line (``LOG_FORMAT=json``) or readable text; every record of a request
carries its request id, identity, action, status and duration when known; a redaction filter
removes tokens, API keys and passwords from every message before any handler sees it.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import re
import sys
import time
from typing import Any

import click
from flask import g, has_request_context

# Keel's own handlers carry this attribute so that reconfiguring replaces only them.
_KEEL_HANDLER = "_keel_handler"

_REDACTIONS = (
    # JWTs (three base64url segments, header starts with eyJ)
    (re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*"), "[REDACTED-JWT]"),
    # Keel API keys
    (re.compile(r"keel_[A-Za-z0-9]+_[A-Za-z0-9_-]{8,}"), "[REDACTED-API-KEY]"),
    # Authorization headers and key=value / "key": "value" pairs of sensitive names
    (re.compile(r"(?i)\b((?:bearer|basic)\s+)[^\s\"',]+"), r"\1[REDACTED]"),
    (
        re.compile(
            r"(?i)([\"']?[\w-]*(?:password|passwd|secret|token|api[_-]?key|authorization|pepper|credential)[\w-]*"
            r"[\"']?\s*[:=]\s*[\"']?)(?!\[REDACTED)([^\s\"',}]+)"
        ),
        r"\1[REDACTED]",
    ),
    # passwords inside URLs: scheme://user:password@host
    (re.compile(r"(://[^:/@\s]+:)([^@\s]+)(@)"), r"\1[REDACTED]\3"),
)


# Every redaction above needs one of these substrings (case-insensitively: a superset of what
# each pattern requires), so a message without any of them is returned as is after ONE search
# instead of five substitutions (an access log line: ~0.6 µs instead of ~12 µs).
_TRIGGERS = re.compile(r"(?i)eyJ|keel_|bearer|basic|passw|secret|token|api[_-]?key|authorization|pepper|credential|://")


# The same test on ASCII text, lower-cased (exact there: ASCII letters have ASCII cases only),
# ten times faster than the case-insensitive alternation.
_TRIGGER_WORDS = tuple(
    "eyj keel_ bearer basic passw secret token apikey api_key api-key authorization pepper credential ://".split()
)


def _may_hold_secret(text: str) -> bool:
    if text.isascii():
        low = text.lower()
        for word in _TRIGGER_WORDS:
            if word in low:
                return True
        return False
    return _TRIGGERS.search(text) is not None


def redact(text: str) -> str:
    if not _may_hold_secret(text):
        return text
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


def _redacting_factory(base: Any) -> Any:
    """Wrap a LogRecord factory so every record is redacted when it is created.

    Done at creation rather than in a handler filter so that *every* handler (pytest's caplog,
    a handler a module adds) sees the redacted text. The factory runs only for records whose
    level is enabled.
    """

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = base(*args, **kwargs)
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a broken format string must not lose the record
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return record

    factory._keel_redacting = True  # type: ignore[attr-defined]
    return factory


def install_redaction() -> None:
    base = logging.getLogRecordFactory()
    if not getattr(base, "_keel_redacting", False):
        factory = _redacting_factory(base)
        factory._keel_base = base
        logging.setLogRecordFactory(factory)


class RequestContextFilter(logging.Filter):
    """Adds request_id, identity and action from the current request, if any."""

    def filter(self, record: logging.LogRecord) -> bool:
        if has_request_context():
            state = g.get("keel")  # core.http.state.RequestState (read by name: logs sit below http)
            for name in ("request_id", "identity", "action", "client_ip"):
                if not hasattr(record, name):
                    setattr(record, name, getattr(state, name, None))
        return True


_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}

AUDIT = logging.getLogger("keel.audit")


def audit(event: str, outcome: str = "ok", message: str | None = None, **fields: Any) -> None:
    """One security event on the ``keel.audit`` logger (SPEC §11): ``event`` (``login``,
    ``ban``, ``actions_reloaded``...), ``outcome`` (``ok``, ``failed``, ``refused``...) and
    ``fields`` (ids, reasons, the actor — never a secret: a password, token or key is never
    passed here). Inside a request the request id, identity and client IP are added by the
    handlers' filter; outside one (the CLI, a reload thread) ``actor`` says who."""
    level = logging.INFO if outcome == "ok" else logging.WARNING
    if AUDIT.isEnabledFor(level):
        AUDIT.log(level, message or f"{event} {outcome}", extra={"event": event, "outcome": outcome, **fields})


# json.dumps(out, default=str) builds this encoder on every call; built once, the same output.
_JSON_ENCODE = json.JSONEncoder(default=str).encode


def _extras(record: logging.LogRecord) -> Any:
    """The record's own fields (``extra=``, the request context filter's), in their order."""
    return ((k, v) for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_"))


class _LineFormatter(logging.Formatter):
    """A formatter whose text is :meth:`line` of the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        return self.line(
            record.created,
            record.msecs,
            record.levelname,
            record.name,
            record.getMessage(),
            _extras(record),
            record.exc_text,
        )

    def line(
        self, created: float, msecs: float, level: str, name: str, message: str, extras: Any, exc_text: str | None
    ) -> str:
        raise NotImplementedError


class JsonFormatter(_LineFormatter):
    _second: tuple[int, str] = (-1, "")  # (a record time's whole second, its text)

    def line(
        self, created: float, msecs: float, level: str, name: str, message: str, extras: Any, exc_text: str | None
    ) -> str:
        """The line of a record with these fields (``extras``: (name, value) pairs; ``None``
        values are left out). :func:`format` and the access log's direct path both use it."""
        second = int(created)
        cached = self._second
        if cached[0] != second:  # the seconds' text, made once per second
            cached = self._second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        out: dict[str, Any] = {
            "time": cached[1] + f".{int(msecs):03d}Z",
            "level": level,
            "logger": name,
            "message": message,
        }
        for key, value in extras:
            if value is not None:
                out[key] = value
        if exc_text:
            out["exc_info"] = exc_text
        return _JSON_ENCODE(out)


# Control characters (C0, DEL, C1, and the Unicode line/paragraph separators) written as escapes,
# so that a value from a request (a path with %0a, a NUL) cannot forge or split a text log line.
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
_CONTROL.update({0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x2028: "\\u2028", 0x2029: "\\u2029"})


def escape_control(text: str) -> str:
    """``text`` with every control character escaped (printable text is returned as is)."""
    return text if text.isprintable() else text.translate(_CONTROL)


class TextFormatter(_LineFormatter):
    """One line per record; every field escaped (:func:`escape_control`). A traceback follows on
    lines that start with ``"  | "``, so none of its lines can pass for a record."""

    def line(
        self, created: float, msecs: float, level: str, name: str, message: str, extras: Any, exc_text: str | None
    ) -> str:
        """As :meth:`JsonFormatter.line`."""
        # formatTime(record, "%H:%M:%S"): the converter of the record's time, then strftime
        line = (
            f"{time.strftime('%H:%M:%S', self.converter(created))} {level:<7} {escape_control(name)}: "
            f"{escape_control(message)}"
        )
        fields = [f"{escape_control(k)}={escape_control(str(v))}" for k, v in extras if v is not None]
        if fields:
            line += "  [" + " ".join(fields) + "]"
        if exc_text:
            line += "".join("\n  | " + escape_control(t) for t in exc_text.splitlines())
        return line


class ConsoleHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` (or ``sys.stderr``) is at emit time, not the one seen at
    configuration, so that a replaced stream (a test's capture, a reopened stream) gets every line."""

    def __init__(self, to_stderr: bool = False) -> None:
        self.to_stderr = to_stderr
        super().__init__(sys.stderr if to_stderr else sys.stdout)

    @property
    def stream(self) -> Any:
        return sys.stderr if self.to_stderr else sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def cli_verbose() -> bool:
    """True when the running ``flask`` command was given ``-v``/``--verbose``. Read from the
    command line: Flask loads the app before the command's own options are parsed."""
    return any(arg in ("-v", "--verbose") for arg in sys.argv[1:])


def configure_logging(level: str = "INFO", fmt: str = "text", log_file: str | None = None) -> None:
    """Install Keel's handlers on the root logger, replacing ones installed before."""
    install_redaction()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _KEEL_HANDLER, False):
            root.removeHandler(handler)
            handler.close()  # a LOG_FILE handler holds an open file
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    # Under the flask CLI (a click context is active while the app loads) stdout belongs to the
    # command's output (`flask openapi`, `config show`): logs go to stderr there, and only
    # warnings and errors unless the command was given -v/--verbose (start-up INFO lines are
    # noise before a command's output).
    cli = click.get_current_context(silent=True) is not None
    if cli and not cli_verbose() and logging.getLevelName(level) < logging.WARNING:
        level = "WARNING"
    handlers: list[logging.Handler] = [ConsoleHandler(to_stderr=cli)]
    if log_file:
        handlers.append(logging.handlers.RotatingFileHandler(log_file, maxBytes=10 * 1024 * 1024, backupCount=5))
    for handler in handlers:
        setattr(handler, _KEEL_HANDLER, True)
        handler.setFormatter(formatter)
        handler.addFilter(RequestContextFilter())
        root.addHandler(handler)
    root.setLevel(level)
    keel = logging.getLogger("keel")
    keel.setLevel(level)
    global _OWN
    factory = logging.getLogRecordFactory()
    own = root.handlers == handlers and all(type(h) is ConsoleHandler for h in handlers)
    if own and getattr(factory, "_keel_base", None) is logging.LogRecord:
        _OWN = (handlers[:], [h.filters[:] for h in handlers], formatter, factory)
    else:
        _OWN = None


# -- the access log's direct path ------------------------------------------------------------------
# Keel's configuration as configure_logging() left it: (root's handlers — all Keel's console
# handlers —, each one's filters, the formatter, the record factory). None when it is not
# Keel's own (a user's handler on the root logger at configuration, a LOG_FILE handler, a
# record factory of their own).
_OWN: tuple[list[logging.Handler], list[list[Any]], logging.Formatter, Any] | None = None
_ROOT = logging.getLogger()


def own_handlers(logger: logging.Logger) -> list[logging.Handler] | None:
    """The handlers a record of ``logger`` at INFO reaches when they are exactly Keel's own as
    ``configure_logging`` installed them and nothing was added since (no handler or filter on
    ``logger`` or its parents, no other handler on the root logger, no handler level above
    INFO, the same filters, formatter and record factory); otherwise None.

    With Keel's own configuration, what ``logger.handle(record)`` writes is known in advance:
    :func:`write_own` writes the same line without building the ``LogRecord``."""
    own = _OWN
    if own is None:
        return None
    handlers, filters, formatter, factory = own
    if logger.filters or logger.disabled or logging.getLogRecordFactory() is not factory:
        return None
    c: Any = logger
    while c is not _ROOT:
        if c.handlers or not c.propagate:
            return None
        c = c.parent
        if c is None:
            return None
    if c.handlers != handlers:
        return None
    for handler, its_filters in zip(handlers, filters, strict=True):
        if handler.filters != its_filters or handler.formatter is not formatter or handler.level > logging.INFO:
            return None
    return handlers


if sys.version_info >= (3, 13):

    def record_time() -> tuple[float, float]:
        """(created, msecs) as ``LogRecord.__init__`` computes them."""
        ns = time.time_ns()
        return ns / 1e9, (ns % 1_000_000_000) // 1_000_000 + 0.0

else:

    def record_time() -> tuple[float, float]:
        """(created, msecs) as ``LogRecord.__init__`` computes them."""
        ct = time.time()
        return ct, int((ct - int(ct)) * 1000) + 0.0


def write_own(handlers: list[logging.Handler], name: str, message: str, extras: Any, make_record: Any) -> None:
    """Write one INFO line of logger ``name`` (``message``: the redacted message; ``extras``:
    (field, value) pairs in the record's order, the request context filter's included) to
    ``handlers`` (from :func:`own_handlers`), as ``StreamHandler.emit`` does: under the
    handler's lock, then flushed. A failed write goes to ``handleError`` with the record
    ``make_record()`` builds, as it would."""
    created, msecs = record_time()
    line = None
    for handler in handlers:
        if line is None:
            line = handler.formatter.line(created, msecs, "INFO", name, message, extras, None)  # type: ignore[union-attr]
        with handler.lock:  # type: ignore[union-attr]
            try:
                handler.stream.write(line + handler.terminator)  # type: ignore[attr-defined]
                handler.flush()
            except RecursionError:
                raise
            except Exception:  # noqa: BLE001 - StreamHandler.emit's own catch
                handler.handleError(make_record())
