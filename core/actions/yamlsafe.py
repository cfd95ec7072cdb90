"""Reading an action file without trusting it (SPEC §4.2).

The file is read as bytes (size-capped, UTF-8 checked, symlinks kept inside their directory),
then turned into a tree of :class:`Node` straight from PyYAML's *event* stream (the C parser
when available). Building the tree ourselves, instead of letting a constructor do it, is what
makes the guarantees cheap: every node keeps its line and column, no tag is ever honoured (so
nothing is executed or instantiated), duplicate keys are seen, aliases are counted and their
expansion bounded, and nesting depth is capped before anything recursive runs.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml import events as ev
from yaml.constructor import SafeConstructor
from yaml.nodes import ScalarNode
from yaml.resolver import Resolver

_Parser: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

MAX_FILE_BYTES = 256 * 1024
MAX_ALIASES = 100
MAX_DEPTH = 50
MAX_EXPANDED_NODES = 100_000


@dataclass(frozen=True, slots=True)
class Problem:
    """One error in a file: 1-based line and column, the key path, the message."""

    line: int
    col: int
    key: str
    message: str

    def format(self, display: str) -> str:
        """``path:line:col: key.path: message`` (SPEC §4.2). Inside an action the key path is
        relative to it (``params.priority.type``): the line already says which action."""
        key = self.key
        if key.startswith("actions."):
            parts = key.split(".", 2)
            if len(parts) == 3:
                key = parts[2]
        return f"{display}:{self.line}:{self.col}: {key}: {self.message}"


class Node:
    """A YAML node with its position. ``kind`` is ``map``, ``seq`` or ``scalar``.

    For a map, ``value`` is ``{key: (key_node, value_node)}``; for a seq, a list of nodes; for a
    scalar, the plain Python value (str, int, float, bool or None).
    """

    __slots__ = ("col", "kind", "line", "size", "value")

    def __init__(self, kind: str, value: Any, line: int, col: int) -> None:
        self.kind = kind
        self.value = value
        self.line = line
        self.col = col
        self.size = 1  # nodes in this subtree, aliases expanded

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"Node({self.kind}, {self.line}:{self.col})"


class FileRejected(Exception):
    """Raised inside this module when reading must stop; carries the problem."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def _line_col(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    col = index - (text.rfind("\n", 0, index) + 1) + 1
    return line, col


def read_source(path: Path, within: Path | None) -> tuple[str | None, bytes, Problem | None]:
    """Read ``path`` as UTF-8 text. Returns ``(text, raw_bytes, problem)``.

    ``within``: the directory the file must stay inside once symlinks are resolved.
    """
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        return None, b"", Problem(1, 1, "file", f"cannot be read: {getattr(exc, 'strerror', None) or exc}")
    if within is not None:
        root = within.resolve()
        if real != root and root not in real.parents:
            return None, b"", Problem(1, 1, "file", f"is a symlink that leaves {within} (it points to {real})")
    try:
        with open(real, "rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        return None, b"", Problem(1, 1, "file", f"cannot be read: {exc.strerror or exc}")
    if len(raw) > MAX_FILE_BYTES:
        size = os.stat(real).st_size
        return None, raw, Problem(1, 1, "file", f"is {size} bytes; action files are limited to {MAX_FILE_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        good = raw[: exc.start].decode("utf-8")
        line, col = _line_col(good, len(good))
        message = f"byte 0x{raw[exc.start]:02x} is not valid UTF-8 (save the file as UTF-8)"
        return None, raw, Problem(line, col, "file", message)
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        return None, raw, Problem(1, 1, "file", "is empty (expected a mapping with 'version' and 'actions')")
    return text, raw, None


_resolver = Resolver()
_constructor = SafeConstructor()
_SCALAR_TAGS = {
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
}


def _scalar_value(event: ev.ScalarEvent) -> Any:
    if event.style is not None and event.style != "":
        return event.value  # quoted or block scalar: always a string
    return _plain_scalar(event.value)


@functools.lru_cache(maxsize=4096)
def _plain_scalar(value: str) -> Any:
    """YAML 1.1 implicit typing of a plain scalar (cached: results are immutable)."""
    tag = _resolver.resolve(ScalarNode, value, (True, False))
    if tag in _SCALAR_TAGS:
        # The tag's own constructor, not construct_object(): that one memoizes every node.
        return _constructor.yaml_constructors[tag](_constructor, ScalarNode(tag, value))
    return value  # str, and timestamps stay strings (JSON has no dates)


def _pos(event: Any) -> tuple[int, int]:
    return event.start_mark.line + 1, event.start_mark.column + 1


def parse_tree(text: str) -> tuple[Node | None, list[Problem]]:
    """Build the node tree of a single-document YAML text.

    Problems that stop parsing (syntax, tags, aliases, depth) are returned alone; duplicate
    keys are collected and parsing goes on, so that a file reports them all at once.
    """
    problems: list[Problem] = []
    try:
        root = _build(text, problems)
    except FileRejected as exc:
        return None, [exc.problem]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        message = exc.problem or "invalid YAML"
        if exc.context:
            message = f"{message} ({exc.context})"
        return None, [Problem(line, col, "yaml", f"syntax error: {message}")]
    except yaml.YAMLError as exc:  # ReaderError: a character YAML does not allow
        position = getattr(exc, "position", 0)
        line, col = _line_col(text, min(int(position), len(text)))
        reason = getattr(exc, "reason", None) or str(exc)
        return None, [Problem(line, col, "yaml", f"syntax error: {reason}")]
    return root, problems


def _build(text: str, problems: list[Problem]) -> Node | None:
    loader = _Parser(text)
    try:
        builder = _TreeBuilder(problems)
        handlers = builder.handlers
        while loader.check_event():
            event = loader.get_event()
            handlers[type(event)](event)
        return builder.root
    finally:
        loader.dispose()


class _TreeBuilder:
    """Turns parser events into :class:`Node` trees, one handler per event type, enforcing the
    limits (one document, no tags, aliases counted and expanded size bounded, nesting depth)."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        self.anchors: dict[str, Node] = {}
        self.aliases = 0
        self.expanded = 0
        self.documents = 0
        self.root: Node | None = None
        self.stack: list[list[Any]] = []  # [container node, pending key node] of open containers
        self.handlers: dict[type, Callable[[Any], None]] = {
            ev.ScalarEvent: self._scalar,
            ev.MappingStartEvent: self._start,
            ev.SequenceStartEvent: self._start,
            ev.MappingEndEvent: self._end,
            ev.SequenceEndEvent: self._end,
            ev.AliasEvent: self._alias,
            ev.DocumentStartEvent: self._document,
            ev.StreamStartEvent: self._skip,
            ev.StreamEndEvent: self._skip,
            ev.DocumentEndEvent: self._skip,
        }

    def _skip(self, event: Any) -> None:
        pass

    def _document(self, event: Any) -> None:
        self.documents += 1
        if self.documents > 1:
            line, col = _pos(event)
            raise FileRejected(Problem(line, col, "yaml", "only one YAML document per file is allowed"))

    @staticmethod
    def _no_tag(event: Any) -> None:
        tag = event.tag
        if tag is not None:
            line, col = _pos(event)
            raise FileRejected(
                Problem(line, col, "yaml", f"YAML tags are not allowed ({tag}); write plain values only")
            )

    def _scalar(self, event: Any) -> None:
        if event.tag is not None:
            self._no_tag(event)
        node = Node("scalar", _scalar_value(event), event.start_mark.line + 1, event.start_mark.column + 1)
        self.expanded += 1
        if self.stack:
            self.stack[-1][0].size += 1
        if event.anchor:
            self.anchors[event.anchor] = node
        self._attach(node)

    def _alias(self, event: Any) -> None:
        line, col = _pos(event)
        self.aliases += 1
        if self.aliases > MAX_ALIASES:
            raise FileRejected(Problem(line, col, "yaml", f"more than {MAX_ALIASES} aliases in one file"))
        target = self.anchors.get(event.anchor or "")
        if target is None:
            raise FileRejected(Problem(line, col, "yaml", f"alias *{event.anchor} has no anchor before it"))
        if any(frame[0] is target for frame in self.stack):
            raise FileRejected(Problem(line, col, "yaml", f"alias *{event.anchor} refers to its own parent"))
        self.expanded += target.size
        if self.expanded > MAX_EXPANDED_NODES:
            raise FileRejected(Problem(line, col, "yaml", f"aliases expand to more than {MAX_EXPANDED_NODES} nodes"))
        if self.stack:
            self.stack[-1][0].size += target.size
        self._attach(target)

    def _start(self, event: Any) -> None:
        self._no_tag(event)
        line, col = _pos(event)
        if len(self.stack) >= MAX_DEPTH:
            raise FileRejected(Problem(line, col, "yaml", f"nesting deeper than {MAX_DEPTH} levels"))
        is_map = type(event) is ev.MappingStartEvent
        node = Node("map" if is_map else "seq", {} if is_map else [], line, col)
        self.expanded += 1
        if event.anchor:
            self.anchors[event.anchor] = node
        self._attach(node)
        self.stack.append([node, None])

    def _end(self, event: Any) -> None:
        done = self.stack.pop()[0]
        if self.stack:
            self.stack[-1][0].size += done.size

    def _attach(self, node: Node) -> None:
        """Put a finished node where it belongs: the root, a list item, a key, or a key's value."""
        stack = self.stack
        if not stack:
            self.root = node
            return
        frame = stack[-1]
        parent: Node = frame[0]
        if parent.kind == "seq":
            parent.value.append(node)
            return
        if frame[1] is None:  # this node is a key
            if node.kind != "scalar":
                raise FileRejected(Problem(node.line, node.col, "yaml", "mapping keys must be plain strings"))
            frame[1] = node
            return
        key_node: Node = frame[1]
        frame[1] = None
        self._set_value(parent, key_node, node)

    def _set_value(self, parent: Node, key_node: Node, node: Node) -> None:
        """``key: node`` in a mapping; a key that is not a string or repeats is a problem."""
        key = key_node.value
        if not isinstance(key, str):
            shown = "null" if key is None else str(key).lower() if isinstance(key, bool) else str(key)
            self.problems.append(
                Problem(key_node.line, key_node.col, "yaml", f'key {shown} is not a string (quote it: "{shown}")')
            )
            key = str(key)
        if key in parent.value:
            first = parent.value[key][0]
            self.problems.append(
                Problem(
                    key_node.line,
                    key_node.col,
                    "yaml",
                    f"duplicate key {key!r} (first defined at line {first.line}); remove one of them",
                )
            )
            return
        parent.value[key] = (key_node, node)


def plain(node: Node) -> Any:
    """The plain Python value of a node (maps → dict, seqs → list)."""
    if node.kind == "map":
        return {k: plain(v) for k, (_, v) in node.value.items()}
    if node.kind == "seq":
        return [plain(v) for v in node.value]
    return node.value
