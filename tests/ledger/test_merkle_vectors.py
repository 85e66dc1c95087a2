"""Every transparency-dev/merkle test vector, read in place from the shared folder."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from mailveil.ledger import merkle
from testpaths import shared_dir

VECTORS = shared_dir() / "vectors" / "transparency-dev-merkle" / "testdata"
KINDS = ("inclusion", "consistency", "subtreeinclusion", "subtreeconsistency")


def _files() -> list[Path]:
    return sorted(VECTORS.rglob("*.json"))


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value or "")


def _proof(case: dict[str, Any]) -> list[bytes]:
    return [_b64(p) for p in case["proof"] or []]


def _check(kind: str, case: dict[str, Any]) -> None:
    if kind == "inclusion":
        merkle.verify_inclusion(
            case["leafIdx"],
            case["treeSize"],
            _b64(case["leafHash"]),
            _proof(case),
            _b64(case["root"]),
        )
    elif kind == "consistency":
        merkle.verify_consistency(
            case["size1"], case["size2"], _b64(case["root1"]), _b64(case["root2"]), _proof(case)
        )
    elif kind == "subtreeinclusion":
        merkle.verify_subtree_inclusion(
            case["leafIdx"],
            case["start"],
            case["end"],
            _b64(case["leafHash"]),
            _proof(case),
            _b64(case["root"]),
        )
    else:
        merkle.verify_subtree_consistency(
            case["start"],
            case["end"],
            case["size"],
            _b64(case["root1"]),
            _b64(case["root2"]),
            _proof(case),
        )


def test_every_vector_folder_is_covered() -> None:
    files = _files()
    assert len(files) > 400
    tops = {f.relative_to(VECTORS).parts[0] for f in files}
    assert tops == set(KINDS)


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(VECTORS)))
def test_vector(path: Path) -> None:
    case = json.loads(path.read_text(encoding="utf-8"))
    kind = path.relative_to(VECTORS).parts[0]
    if case["wantErr"]:
        with pytest.raises(merkle.ProofError):
            _check(kind, case)
    else:
        _check(kind, case)
