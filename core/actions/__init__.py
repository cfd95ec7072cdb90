"""Actions declared in YAML: schema, loader, parameters, registry, OpenAPI (SPEC §4)."""

from __future__ import annotations

from core.actions.registry import CompiledAction, Registry, Source, display_path
from core.actions.yamlsafe import MAX_ALIASES, MAX_DEPTH, MAX_FILE_BYTES, Problem

__all__ = [
    "MAX_ALIASES",
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "CompiledAction",
    "Problem",
    "Registry",
    "Source",
    "display_path",
]
