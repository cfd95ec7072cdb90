"""A state machine's graph, checked when it is defined (SPEC §9)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from core.errors import IllegalTransition, KeelError

NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


class StateDefinitionError(KeelError):
    """A state machine definition is invalid, or a kind is used before it is defined."""


@dataclass(frozen=True)
class Machine:
    kind: str
    transitions: Mapping[str, frozenset[str]]
    initial: str

    @property
    def states(self) -> list[str]:
        return list(self.transitions)

    def allows(self, source: str, target: str) -> bool:
        return target in self.transitions.get(source, frozenset())

    def check_target(self, target: str) -> None:
        """:class:`IllegalTransition` unless ``target`` is a state of this machine."""
        if target not in self.transitions:
            raise IllegalTransition(
                f"{self.kind}: {target!r} is not a state (states: {', '.join(self.states)})",
                details={"to": target, "states": self.states},
            )

    def check_edge(self, current: Mapping[str, Any], target: str) -> None:
        """:class:`IllegalTransition` unless the record ``current`` may move to ``target``."""
        source = current["state"]
        if not self.allows(source, target):
            allowed = sorted(self.transitions[source])
            raise IllegalTransition(
                f"{self.kind} {current['record_key']!r}: {source} -> {target} is not allowed"
                f" (allowed from {source}: {', '.join(allowed) or 'none'})",
                details={"from": source, "to": target, "allowed": allowed},
            )


def build_machine(kind: str, transitions: Mapping[str, Iterable[str]], initial: str) -> Machine:
    """The machine ``kind``, its graph checked: every target is a state, so is ``initial``."""
    where = f"state machine {kind!r}"
    if not isinstance(kind, str) or not NAME_RE.match(kind):
        raise StateDefinitionError(f"{where}: the kind must match {NAME_RE.pattern}")
    if not isinstance(transitions, Mapping) or not transitions:
        raise StateDefinitionError(f"{where}: transitions must be a non-empty mapping of state -> [states]")
    graph = {source: _targets(where, source, targets) for source, targets in transitions.items()}
    for source, targets in graph.items():
        unknown = sorted(t for t in targets if t not in graph)
        if unknown:
            raise StateDefinitionError(
                f"{where}: {source!r} -> {', '.join(map(repr, unknown))}: not a state "
                f"(states: {', '.join(graph)}); add it as a key of transitions"
            )
    if initial not in graph:
        raise StateDefinitionError(f"{where}: initial state {initial!r} is not one of {', '.join(graph)}")
    return Machine(kind, graph, initial)


def _targets(where: str, source: Any, targets: Any) -> frozenset[str]:
    if not isinstance(source, str) or not NAME_RE.match(source):
        raise StateDefinitionError(f"{where}: state {source!r} must match {NAME_RE.pattern}")
    if isinstance(targets, str) or not isinstance(targets, Iterable):
        raise StateDefinitionError(f"{where}: transitions[{source!r}] must be a list of states, got {targets!r}")
    return frozenset(targets)
