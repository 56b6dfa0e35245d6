"""The module map in docs/architecture.md is generated; it must match the code's docstrings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_module_map_is_current() -> None:
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_module_map.py"), "--check"],
                         check=False)
    assert res.returncode == 0, "docs/architecture.md is stale: run python3 scripts/gen_module_map.py"


def test_every_module_has_a_docstring() -> None:
    import ast
    missing = [str(p) for p in (ROOT / "orchestrator").rglob("*.py")
               if p.stat().st_size and not ast.get_docstring(ast.parse(p.read_text()))]
    assert not missing, missing
