"""The settings reference (docs/settings.md), written from the code so it cannot drift.

Groups are the ``# -- <area>`` headings in ``Settings``; a setting's documentation is the
comment block above it (a block above several settings documents them together) and any
comment on its own line. ``python -m mailveil.config.reference`` prints the page;
``--write`` rewrites docs/settings.md, ``--check`` fails when it differs from the code.
"""

from __future__ import annotations

import ast
import io
import re
import sys
import tokenize
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

from mailveil.config import settings as settings_module
from mailveil.config.settings import ENV_PREFIX, Settings

_HEADING = re.compile(r"^--\s*(?P<title>.*?)\s*-*$")
DOC_PATH = Path("docs") / "settings.md"


@dataclass
class Block:
    """Settings documented by one comment block (possibly none)."""

    text: str
    names: list[str] = field(default_factory=list)


@dataclass
class Group:
    title: str
    blocks: list[Block] = field(default_factory=list)


def groups() -> list[Group]:
    """The ``Settings`` fields as the source groups and documents them."""
    source = Path(settings_module.__file__).read_text(encoding="utf-8")
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    lines = source.splitlines()
    cls = next(
        node
        for node in ast.parse(source).body
        if isinstance(node, ast.ClassDef) and node.name == "Settings"
    )
    out: list[Group] = []
    previous_end = cls.body[0].end_lineno or cls.lineno  # the docstring
    for node in cls.body[1:]:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            break  # the properties and methods after the fields
        pending: list[str] = []
        for number in range(previous_end + 1, node.lineno):
            if number not in comments or not lines[number - 1].lstrip().startswith("#"):
                continue
            heading = _HEADING.match(comments[number])
            if heading:
                out.append(Group(heading["title"]))
                pending = []
            else:
                pending.append(comments[number])
        if not out:
            raise ValueError(f"setting {node.target.id} stands before the first '# --' heading")
        group = out[-1]
        if pending or not group.blocks:
            group.blocks.append(Block(" ".join(pending)))
        block = group.blocks[-1]
        block.names.append(node.target.id)
        inline = [comments[n] for n in range(node.lineno, (node.end_lineno or 0) + 1)
                  if n in comments]  # fmt: skip
        if inline:
            block.text = " ".join(filter(None, [block.text, f"`{node.target.id}`: {inline[0]}"]))
        previous_end = node.end_lineno or node.lineno
    return out


def _default(value: Any) -> str:
    if isinstance(value, Path):
        return f"`{value.as_posix()}`"
    if isinstance(value, str):
        return f'`"{value}"`' if value else "empty"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    return f"`{value}`"


def render() -> str:
    """The whole page, Markdown."""
    hints = get_type_hints(Settings)
    defaults = {f.name: f.default for f in fields(Settings) if f.default is not MISSING}
    documented: list[str] = []
    parts = [
        "# Settings reference",
        "",
        "<!-- Generated from src/mailveil/config/settings.py by "
        "`python -m mailveil.config.reference --write`; do not edit by hand. -->",
        "",
        "Each setting comes from, in order of precedence: an explicit override, the environment "
        f"variable `{ENV_PREFIX}<NAME>` (the name in capitals), the `[mailveil]` table of the "
        "TOML file named by `MAILVEIL_CONFIG` (or `./mailveil.toml`), its default. Every "
        "setting is checked when the settings load; a bad one stops the command with an "
        "error that names it.",
        "",
    ]
    for group in groups():
        parts += [f"## {group.title[0].upper()}{group.title[1:]}", ""]
        for block in group.blocks:
            if block.text:
                parts += [block.text, ""]
            for name in block.names:
                documented.append(name)
                kind = getattr(hints[name], "__name__", str(hints[name]))
                parts.append(
                    f"- `{name}` (`{ENV_PREFIX}{name.upper()}`, {kind}): "
                    f"default {_default(defaults[name])}"
                )
            parts.append("")
    missing = set(defaults) - set(documented)
    if missing:  # a field the parser did not see would silently drop out of the page
        raise ValueError(f"settings missing from the reference: {sorted(missing)}")
    return "\n".join(parts).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    page = render()
    if "--write" in args:
        DOC_PATH.write_text(page, encoding="utf-8")
        return 0
    if "--check" in args:
        current = DOC_PATH.read_text(encoding="utf-8") if DOC_PATH.is_file() else ""
        if current != page:
            print(f"{DOC_PATH} is out of date: python -m mailveil.config.reference --write")
            return 1
        return 0
    sys.stdout.write(page)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

__all__ = ["DOC_PATH", "Block", "Group", "groups", "main", "render"]
