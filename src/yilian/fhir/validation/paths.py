"""Element paths: cheap to build while walking a resource, rendered only for a problem.

A path is the resource type name at the root (``"Patient"``) and then nested
``(parent, name, index)`` tuples, ``index`` being ``NO_INDEX`` for an element that does
not repeat. Building one is a single tuple allocation; turning it into FHIRPath text
(``Patient.name[0].given[1]``) happens only when an issue is reported.
"""

from __future__ import annotations

from typing import TypeAlias

Path: TypeAlias = "str | tuple[Path, str, int]"

NO_INDEX = -1


def render(path: Path) -> str:
    """FHIRPath text for a path: ``(("Patient", "name", 0), "given", 1)`` -> ``Patient.name[0].given[1]``."""
    parts: list[str] = []
    node = path
    while isinstance(node, tuple):
        parent, name, index = node
        parts.append(name if index == NO_INDEX else f"{name}[{index}]")
        node = parent
    if node:
        parts.append(node)
    return ".".join(reversed(parts))
