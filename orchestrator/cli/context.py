"""What every CLI handler gets: the settings and the chosen output format, plus output helpers."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from orchestrator.settings import Settings


@dataclass(frozen=True)
class Context:
    settings: Settings
    output: str = "table"

    def emit(self, data: Any, *, headers: Sequence[str] = (), rows: Sequence[Sequence[Any]] = (),
             text: str | None = None) -> None:
        """Print ``data`` as json/yaml, or for humans as ``text`` or a table of ``rows``."""
        if self.output == "json":
            json.dump(data, sys.stdout, indent=2, sort_keys=True, default=str)
            sys.stdout.write("\n")
        elif self.output == "yaml":
            yaml.safe_dump(data, sys.stdout, sort_keys=True, default_flow_style=False)
        elif text is not None:
            sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")
        else:
            print_table(headers, rows)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h).upper() for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        sys.stdout.write("   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")
