#!/usr/bin/env python3
"""Regenerate the module map in docs/architecture.md from each module's docstring (first line).

The map is the part of the architecture notes most likely to go stale, so it is generated: run this
after adding or renaming a module. ``tests/unit/test_docs.py`` fails when the committed map differs.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
BEGIN, END = "<!-- module-map:begin -->", "<!-- module-map:end -->"


def module_map() -> str:
    lines = ["| module | role |", "|---|---|"]
    for path in sorted((ROOT / "orchestrator").rglob("*.py")):
        if path.name == "__init__.py" and path.stat().st_size == 0:
            continue
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        first = " ".join(doc.split("\n\n")[0].split()).replace("|", "\\|")
        lines.append(f"| `{path.relative_to(ROOT)}` | {first} |")
    return "\n".join(lines)


def render(text: str) -> str:
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{module_map()}\n{END}{tail}"


if __name__ == "__main__":
    current = DOC.read_text()
    new = render(current)
    if "--check" in sys.argv:
        sys.exit(0 if new == current else 1)
    DOC.write_text(new)
