"""Property: no Compose input, however malformed, makes convert raise anything but our errors."""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.errors import ManifestError
from orchestrator.interop.compose import convert_text
from orchestrator.interop.compose_service import HANDLERS

KEYS = [*sorted(HANDLERS), "condition", "test", "target", "source", "type", "published", "limits",
                           "resources", "replicas", "update_config", "soft", "hard", "path", "rate",
                           "file", "content", "environment", "subnet", "ipam", "config", "profiles"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 70000), st.floats(allow_nan=False),
                    st.sampled_from(["", "a", "80:80", "1m", "-1", "${X:-1}", "${X:?e}", "$$", "${", "/x",
                                     "CMD", "no", "on-failure:x", "seccomp=u", "1g", "0440", "a=b"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.sampled_from(KEYS), inner, max_size=4), max_leaves=12)
services = st.dictionaries(st.sampled_from(["web", "db", "Bad_Name", "x"]),
                           st.dictionaries(st.sampled_from(KEYS), values, max_size=6), max_size=3)
documents = st.fixed_dictionaries({"services": services},
                                  optional={"volumes": values, "networks": values, "configs": values,
                                            "secrets": values, "name": scalars})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_convert_raises_only_manifest_errors(doc: dict[str, object]) -> None:
    text = yaml.safe_dump(doc)
    try:
        result = convert_text(text, "fuzz.yaml", Path("/nonexistent"), {"X": "1"})
    except ManifestError as exc:
        assert exc.problems
        return
    assert result.manifest["kind"] == "Stack"
