"""docs/manifest-reference.md is generated from the schema and must be up to date."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_reference_is_up_to_date() -> None:
    gen = runpy.run_path(str(ROOT / "scripts" / "gen_reference.py"))
    expected = gen["render"](json.loads((ROOT / "schemas" / "stack.schema.json").read_text()))
    committed = (ROOT / "docs" / "manifest-reference.md").read_text()
    assert committed == expected, "docs/manifest-reference.md is stale: run python3 scripts/gen_reference.py"


def test_reference_covers_every_service_field() -> None:
    schema = json.loads((ROOT / "schemas" / "stack.schema.json").read_text())
    text = (ROOT / "docs" / "manifest-reference.md").read_text()
    for name in schema["$defs"]["service"]["properties"]:
        assert f"| `{name}` |" in text
