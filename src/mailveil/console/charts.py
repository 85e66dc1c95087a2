"""Server-drawn SVG: bar charts, gate measures against thresholds, the 72-hour clock, access
volume against peers and the attribution graph. Every text is escaped here; colours and
sizes are presentation attributes and classes (the page's CSP allows no inline style).
Each chart is an image with a title; the page shows its numbers in a table too."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import count

from markupsafe import Markup, escape

_ids = count(1)


def _svg(text: str) -> Markup:
    # Every text in a chart went through escape() where it was placed; the rest is numbers
    # and fixed class names.
    return Markup(text)  # noqa: S704


def _open(width: int, height: int, title: str) -> tuple[str, str]:
    ident = f"chart-{next(_ids)}"
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" class="chart" role="img" '
        f'aria-labelledby="{ident}">'
        f'<title id="{ident}">{escape(title)}</title>'
    )
    return head, "</svg>"


def _text(x: float, y: float, text: object, cls: str = "lbl", anchor: str = "start") -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" class="{cls}" text-anchor="{anchor}">{escape(text)}</text>'
    )


def bars(items: Sequence[tuple[str, int]], title: str, *, width: int = 560) -> Markup:
    """Horizontal bars, largest first as given."""
    row, label_w = 22, 150
    height = max(1, len(items)) * row + 8
    head, tail = _open(width, height, title)
    top = max((v for _, v in items), default=0) or 1
    parts = [head]
    for i, (label, value) in enumerate(items):
        y = 4 + i * row
        w = (width - label_w - 70) * value / top
        parts.append(_text(0, y + 15, label))
        parts.append(
            f'<rect x="{label_w}" y="{y + 3}" width="{max(w, 1):.1f}" height="14" class="bar"/>'
        )
        parts.append(_text(label_w + w + 6, y + 15, f"{value:,}", "num"))
    parts.append(tail)
    return _svg("".join(parts))


def clock(hours_left: float, total: float = 72.0, *, width: int = 160) -> Markup:
    """The notification clock: how much of the 72 hours is gone."""
    used = min(max(total - hours_left, 0.0), total) / total
    cls = "late" if hours_left <= 0 else ("warn" if hours_left < 24 else "ok")
    head, tail = _open(width, 14, f"{max(hours_left, 0):.1f} of {total:g} hours left")
    return _svg(
        head
        + f'<rect x="0" y="2" width="{width}" height="10" class="track"/>'
        + f'<rect x="0" y="2" width="{width * used:.1f}" height="10" class="fill {cls}"/>'
        + tail
    )


@dataclass(frozen=True)
class GateRow:
    name: str
    threshold: float
    rates: tuple[float | None, ...]  # one per stage (None: not reached)


def gates(rows: Sequence[GateRow], stage_names: Sequence[str], title: str) -> Markup:
    """One small chart per gate: each stage's measured rate as a bar, the threshold as a
    line; a bar over its line is drawn as failing."""
    panel_w, panel_h, gap = 250, 120, 20
    width = 2 * panel_w + gap
    rows_n = (len(rows) + 1) // 2
    height = rows_n * (panel_h + gap)
    head, tail = _open(width, height, title)
    parts = [head]
    for i, row in enumerate(rows):
        x0 = (i % 2) * (panel_w + gap)
        y0 = (i // 2) * (panel_h + gap)
        measured = [r for r in row.rates if r is not None]
        top = max([row.threshold * 2, *measured, 1e-9])
        plot_h = panel_h - 52
        parts.append(_text(x0, y0 + 12, f"{row.name} (threshold {row.threshold * 100:g} %)"))
        base = y0 + 34 + plot_h
        step = (panel_w - 10) / max(1, len(stage_names))
        for j, name in enumerate(stage_names):
            rate = row.rates[j] if j < len(row.rates) else None
            x = x0 + j * step + 4
            parts.append(_text(x + step / 2 - 4, base + 14, name, "tick", "middle"))
            if rate is None:
                continue
            h = plot_h * rate / top
            cls = "bar fail" if rate > row.threshold else "bar"
            parts.append(
                f'<rect x="{x:.1f}" y="{base - max(h, 1):.1f}" width="{step - 10:.1f}" '
                f'height="{max(h, 1):.1f}" class="{cls}"/>'
            )
            parts.append(
                _text(x + step / 2 - 4, base - h - 3, f"{rate * 100:.2f}%", "num", "middle")
            )
        ty = base - plot_h * row.threshold / top
        parts.append(
            f'<line x1="{x0}" x2="{x0 + panel_w - 6}" y1="{ty:.1f}" y2="{ty:.1f}" class="limit"/>'
        )
    parts.append(tail)
    return _svg("".join(parts))


def volume(
    days: Sequence[str], own: Sequence[int], peers: Sequence[float], title: str, width: int = 560
) -> Markup:
    """Daily rows one employee received (bars) against the peers' median (the line)."""
    height, pad = 150, 30
    head, tail = _open(width, height, title)
    top = max([*own, *peers, 1])
    step = (width - pad) / max(1, len(days))
    parts = [head]
    plot_h = height - 40
    for i, day in enumerate(days):
        x = pad + i * step
        h = plot_h * own[i] / top
        parts.append(
            f'<rect x="{x + 2:.1f}" y="{10 + plot_h - h:.1f}" width="{max(step - 4, 1):.1f}" '
            f'height="{max(h, 0.5):.1f}" class="bar"/>'
        )
        if i % max(1, len(days) // 7) == 0:
            parts.append(_text(x + step / 2, height - 12, day[5:], "tick", "middle"))
    points = " ".join(
        f"{pad + i * step + step / 2:.1f},{10 + plot_h - plot_h * p / top:.1f}"
        for i, p in enumerate(peers)
    )
    if points:
        parts.append(f'<polyline points="{points}" class="peer"/>')
    parts.append(_text(0, 18, f"{top:,.0f}", "tick"))
    parts.append(tail)
    return _svg("".join(parts))


@dataclass(frozen=True)
class Node:
    key: str
    label: str
    column: int  # 0 principals given aliases, 1 aliases, 2 who used them
    kind: str  # css class: culprit, principal, alias, stranger


@dataclass(frozen=True)
class Edge:
    start: str
    end: str
    strength: str  # authenticated | claimed | statistical | ledger


def graph(nodes: Sequence[Node], edges: Sequence[Edge], title: str, width: int = 760) -> Markup:
    """Three columns: who was given the aliases, the aliases, who used them. An edge is
    solid when authenticated or proven by the ledger, dashed when only claimed."""
    columns: list[list[Node]] = [[], [], []]
    for node in nodes:
        columns[node.column].append(node)
    row = 30
    height = max(60, max(len(c) for c in columns) * row + 40)
    xs = (10, width // 2 - 110, width - 230)
    box_w = 220
    where: dict[str, tuple[float, float]] = {}
    head, tail = _open(width, height, title)
    parts = [head]
    for c, heading in enumerate(("given the aliases", "aliases", "who used them")):
        parts.append(_text(xs[c], 14, heading, "head"))
        offset = (height - 30 - len(columns[c]) * row) / 2
        for i, node in enumerate(columns[c]):
            y = 24 + offset + i * row
            where[node.key] = (xs[c], y + 11)
            parts.append(
                f'<rect x="{xs[c]}" y="{y:.1f}" width="{box_w}" height="22" rx="4" '
                f'class="node {escape(node.kind)}"/>'
            )
            label = node.label if len(node.label) <= 32 else node.label[:31] + "…"
            parts.append(_text(xs[c] + 6, y + 15, label, "nodelbl"))
    for edge in edges:
        if edge.start not in where or edge.end not in where:
            continue
        (x1, y1), (x2, y2) = where[edge.start], where[edge.end]
        parts.append(
            f'<line x1="{x1 + box_w:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
            f'class="edge {escape(edge.strength)}"/>'
        )
    parts.append(tail)
    return _svg("".join(parts))


__all__ = ["Edge", "GateRow", "Node", "bars", "clock", "gates", "graph", "volume"]
