"""Every Cedar input production decides on is built by ``mailveil.policy.facts`` (issue 13):
no other module of ``src/`` constructs a ``PolicyInput`` itself."""

from __future__ import annotations

import re
from pathlib import Path

import mailveil

SRC = Path(mailveil.__file__).resolve().parent
BUILDER = SRC / "policy" / "facts.py"
DEFINITION = SRC / "policy" / "engine.py"


def test_policy_input_is_built_in_one_place() -> None:
    constructs = re.compile(r"\bPolicyInput\(")
    found = sorted(
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if path not in (BUILDER, DEFINITION) and constructs.search(path.read_text("utf-8"))
    )
    assert found == []
    assert constructs.search(BUILDER.read_text("utf-8"))  # the check looks at real files


def test_no_module_rebuilds_an_input_with_another_action() -> None:
    """A ``PolicyInput._replace(..., action=...)`` is building an input too (the relay's
    ``message`` input used to be made that way in ``relay.content_rules``)."""
    rebuilds = re.compile(r"\._replace\((?:[^()]|\([^()]*\))*\baction=")  # one nesting level
    found = sorted(
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if path != BUILDER and rebuilds.search(path.read_text("utf-8"))
    )
    assert found == []
    assert rebuilds.search(BUILDER.read_text("utf-8"))
