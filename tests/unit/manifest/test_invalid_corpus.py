"""The invalid-manifest corpus: every ``tests/fixtures/invalid/NAME.yaml`` must produce exactly the lines of
``NAME.expected`` (``file:line:col: path: message``, file relative to the corpus directory).

To record the output after an intended change of wording: ``UPDATE_EXPECTED=1 pytest <this file>``, then
review the diff of the .expected files like any other change.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator.errors import ManifestError
from orchestrator.manifest import load
from orchestrator.manifest.checks import Host

CORPUS = Path(__file__).resolve().parents[2] / "fixtures" / "invalid"
CASES = sorted(p.stem for p in CORPUS.glob("*.yaml"))


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 40
    assert sorted(p.stem for p in CORPUS.glob("*.expected")) == CASES


@pytest.mark.parametrize("case", CASES)
def test_invalid_manifest(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(CORPUS)
    with pytest.raises(ManifestError) as info:
        load([f"{case}.yaml"], host=Host(cpus=2))
    got = [str(p) for p in info.value.problems]
    expected_file = CORPUS / f"{case}.expected"
    if os.environ.get("UPDATE_EXPECTED"):
        expected_file.write_text("\n".join(got) + "\n")
    assert got == expected_file.read_text().splitlines()
