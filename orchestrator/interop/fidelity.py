"""The fidelity report of an export: for every field of every object, how it reached the target format.

Each entry says whether a field mapped ``exact``, was ``approximated`` (and how), or is ``not-mappable``
(and why), with the target field it went to. The report is a value: exporters add entries, the CLI prints
it as text for people or as JSON for tools; entries are kept in a stable order so that the report diffs
as well as the exported files do.

Neighbours: ``interop.kubernetes`` and ``interop.kubernetes_pod`` fill it; ``cli.interop_cmds`` prints it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Fidelity = Literal["exact", "approximated", "not-mappable"]
LEVELS: tuple[Fidelity, ...] = ("exact", "approximated", "not-mappable")


@dataclass(frozen=True, order=True)
class FieldMapping:
    stack: str
    object: str                 # "service/api", "volume/data", "network/back", "secret/token", "stack"
    field: str                  # our manifest's field, dotted: "resources.blkio.readBps"
    fidelity: Fidelity
    target: str = ""            # where it went in the target format ("" when nowhere)
    detail: str = ""            # how it was approximated, or why it cannot be mapped


@dataclass
class FidelityReport:
    entries: list[FieldMapping] = field(default_factory=list)

    def add(self, stack: str, obj: str, field_: str, fidelity: Fidelity, target: str = "",
            detail: str = "") -> None:
        self.entries.append(FieldMapping(stack, obj, field_, fidelity, target, detail))

    def sorted_entries(self) -> list[FieldMapping]:
        """Entries in report order: by stack, object, then field (insertion order is not stable input)."""
        return sorted(self.entries, key=lambda e: (e.stack, e.object, e.field, e.target))

    def counts(self) -> dict[str, int]:
        return {level: sum(1 for e in self.entries if e.fidelity == level) for level in LEVELS}

    def to_json(self) -> dict[str, Any]:
        return {"summary": self.counts(), "fields": [asdict(e) for e in self.sorted_entries()]}

    def to_text(self) -> str:
        """A table grouped by object, then a one-line summary; not-mappable and approximated stand out."""
        lines: list[str] = []
        current = ("", "")
        for e in self.sorted_entries():
            if (e.stack, e.object) != current:
                current = (e.stack, e.object)
                lines.append(f"{e.stack} {e.object}:")
            target = f" -> {e.target}" if e.target else ""
            detail = f" ({e.detail})" if e.detail else ""
            lines.append(f"  {e.fidelity:<13} {e.field}{target}{detail}")
        c = self.counts()
        lines.append(f"{c['exact']} exact, {c['approximated']} approximated, "
                     f"{c['not-mappable']} not mappable")
        return "\n".join(lines) + "\n"
