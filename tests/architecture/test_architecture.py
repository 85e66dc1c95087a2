"""docs/architecture.md against the code: every module it names exists, and no area
imports from a higher layer than its own except the exceptions the page lists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "mailveil"
PAGE = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")


def _layers() -> dict[str, int]:
    """Area -> layer, from the page's table of areas."""
    out: dict[str, int] = {}
    for line in PAGE.splitlines():
        row = re.match(r"\|\s*(\d+)\s*\|(.*?)\|", line)
        if row:
            for area in re.findall(r"`mailveil\.(\w+)`", row.group(2)):
                out[area] = int(row.group(1))
    return out


def _exceptions() -> set[tuple[str, str]]:
    """(from, to) arrows the page allows to run back up; ``*`` is every area."""
    section = PAGE.split("## Exceptions", 1)[1]
    out = set()
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`mailveil."):
            continue
        source = cells[0].strip("`").split(".")[1]
        targets = re.findall(r"`mailveil\.(\w+)`", cells[1]) or ["*"]
        out.update((source, t) for t in targets)
    return out


def _area(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _imports() -> dict[tuple[str, str], str]:
    """(from area, to area) -> one file that makes the arrow."""
    arrows: dict[tuple[str, str], str] = {}
    for path in PACKAGE.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        source = _area(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                parts = name.split(".")
                if parts[0] == "mailveil" and len(parts) > 1 and parts[1] != source:
                    arrows.setdefault((source, parts[1]), str(path.relative_to(ROOT)))
    return arrows


def test_every_area_has_a_layer() -> None:
    areas = {
        p.name.removesuffix(".py")
        for p in PACKAGE.iterdir()
        if (p.is_dir() and (p / "__init__.py").exists())
        or (p.suffix == ".py" and p.stem not in ("__init__", "__main__"))
    }
    missing = areas - set(_layers())
    assert not missing, f"areas docs/architecture.md does not place: {sorted(missing)}"


def test_no_area_imports_from_above_except_the_listed_exceptions() -> None:
    layers, allowed = _layers(), _exceptions()
    upward = {
        (source, target): where
        for (source, target), where in _imports().items()
        if source in layers and target in layers and layers[target] > layers[source]
    }
    unexplained = {
        arrow: where
        for arrow, where in upward.items()
        if arrow not in allowed and (arrow[0], "*") not in allowed
    }
    assert not unexplained, f"imports that run back up, not in the page: {unexplained}"
    stale = {a for a in allowed if a[1] != "*" and a not in upward}
    assert not stale, f"exceptions the code no longer needs: {sorted(stale)}"


MODULE_PATH = re.compile(r"`((?:[a-z_]+/)+[a-z_]+(?:\.py)?)`")
DOTTED = re.compile(r"`(mailveil(?:\.\w+)+)`")


@pytest.mark.parametrize("name", sorted(set(MODULE_PATH.findall(PAGE))))
def test_each_module_path_named_exists(name: str) -> None:
    candidates = [ROOT / name, PACKAGE / name, ROOT / "src" / name]
    assert any(c.exists() for c in candidates), f"docs/architecture.md names {name}"


@pytest.mark.parametrize("name", sorted(set(DOTTED.findall(PAGE))))
def test_each_dotted_name_exists(name: str) -> None:
    parts = name.split(".")[1:]
    module = PACKAGE.joinpath(*parts)
    if module.is_dir() or module.with_suffix(".py").exists():
        return
    # A name inside a module: mailveil.area.module.name
    owner = PACKAGE.joinpath(*parts[:-1]).with_suffix(".py")
    assert owner.exists(), f"docs/architecture.md names {name}"
    tree = ast.parse(owner.read_text(encoding="utf-8"))
    defined = {
        getattr(n, "name", None)
        for n in ast.walk(tree)
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    }
    assert parts[-1] in defined, f"docs/architecture.md names {name}"
