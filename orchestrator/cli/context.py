"""What every CLI handler gets: the settings and the chosen output format, plus output helpers.

All output written here is scrubbed by the process-wide secret Redactor (``secrets.redact``).
"""

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
        """Print ``data`` as json/yaml, or for humans as ``text`` or a table of ``rows``.

        Whatever the format, the text is scrubbed of every secret value this process resolved
        (``secrets.redact``) before it is written: values show as ``<redacted sha256:abcd1234…>``."""
        from orchestrator.secrets.redact import scrub
        if self.output == "json":
            out = json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"
        elif self.output == "yaml":
            out = yaml.safe_dump(data, sort_keys=True, default_flow_style=False)
        elif text is not None:
            out = text if text.endswith("\n") or not text else text + "\n"
        else:
            out = format_table(headers, rows)
        sys.stdout.write(scrub(out))


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h).upper() for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "".join("   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n"
                   for row in cells)
