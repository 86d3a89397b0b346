"""docs/api.md lists exactly the public API (`agentflow.__all__`), and each name resolves."""

from __future__ import annotations

import re
from pathlib import Path

import agentflow

API_DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def test_the_api_page_lists_exactly_what_agentflow_exports() -> None:
    listed = re.findall(r"^- `([A-Za-z_]+)` \(", API_DOC.read_text(), flags=re.M)
    assert len(listed) == len(set(listed)), "a name is listed twice"
    assert sorted(listed) == sorted(n for n in agentflow.__all__ if n != "__version__")


def test_every_exported_name_resolves_and_has_a_docstring() -> None:
    for name in agentflow.__all__:
        value = getattr(agentflow, name)
        if name != "__version__":
            assert (getattr(value, "__doc__", None) or "").strip(), name
