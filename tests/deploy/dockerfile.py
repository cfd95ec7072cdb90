"""A small reader of the repository's Dockerfile, so that tests replay what the image does
(which files it copies, its environment, its health check and entry point) without a Docker
engine. Only the instruction forms the Dockerfile uses are understood."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Stage:
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, arguments)

    def all(self, instruction: str) -> list[str]:
        return [args for ins, args in self.instructions if ins == instruction]

    def env(self) -> dict[str, str]:
        """``ENV A=1 B=2`` lines (``$VAR`` references left as they are)."""
        values: dict[str, str] = {}
        for args in self.all("ENV"):
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                values[key] = value
        return values

    def copies(self) -> list[tuple[list[str], str]]:
        """``COPY src... dest`` from the build context (``--from`` copies left out)."""
        result = []
        for args in self.all("COPY"):
            words = shlex.split(args)
            if any(w.startswith("--from") for w in words):
                continue
            words = [w for w in words if not w.startswith("--")]
            result.append((words[:-1], words[-1]))
        return result

    def exec_form(self, instruction: str) -> list[str]:
        """The JSON (exec) form of ENTRYPOINT/CMD, or of HEALTHCHECK's CMD."""
        args = self.all(instruction)[-1]
        if instruction == "HEALTHCHECK":
            args = args.split(" CMD ", 1)[1]
        return list(json.loads(args))


def stages(path: Path) -> list[Stage]:
    """The stages of a Dockerfile, with continuation lines joined and comments dropped."""
    result: list[Stage] = []
    logical = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not logical and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        instruction, _, args = logical.partition(" ")
        instruction, args = instruction.upper(), " ".join(args.split())
        logical = ""
        if instruction == "FROM":
            words = args.split()
            result.append(Stage(words[-1] if len(words) >= 3 and words[-2].upper() == "AS" else words[0]))
        elif result:
            result[-1].instructions.append((instruction, args))
    return result
