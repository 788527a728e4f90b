"""The graph drawn as SVG on the server, with the path a run took highlighted.

Nodes and edges come from ``graph.get_graph()``. Layout: nodes are ranked by their longest
path from ``__start__`` (back edges such as retry loops ignored), one row per rank; back
edges are drawn as curves along the right side. No script, no external renderer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

NODE_W, NODE_H, GAP_X, GAP_Y, PAD = 150, 34, 28, 40, 20


@dataclass(frozen=True)
class _Edge:
    source: str
    target: str
    conditional: bool


def _structure(graph: object) -> tuple[list[str], list[_Edge]]:
    drawable = graph.get_graph()  # type: ignore[attr-defined]
    nodes = [str(n) for n in drawable.nodes]
    edges = [_Edge(str(e.source), str(e.target), bool(e.conditional)) for e in drawable.edges]
    return nodes, edges


def _back_edges(nodes: list[str], edges: list[_Edge]) -> set[tuple[str, str]]:
    out: dict[str, list[str]] = {n: [] for n in nodes}
    for e in edges:
        out.setdefault(e.source, []).append(e.target)
    back: set[tuple[str, str]] = set()
    state: dict[str, int] = {}

    def visit(start: str) -> None:
        stack = [(start, iter(out.get(start, [])))]
        state[start] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                back.add((node, nxt))
            elif nxt not in state:
                state[nxt] = 1
                stack.append((nxt, iter(out.get(nxt, []))))

    for n in ["__start__", *nodes]:
        if n in out and n not in state:
            visit(n)
    return back


def _ranks(nodes: list[str], edges: list[_Edge]) -> dict[str, int]:
    """Rows by shortest distance from ``__start__``: fallbacks sit beside the main line."""
    out: dict[str, list[str]] = {}
    for e in edges:
        out.setdefault(e.source, []).append(e.target)
    rank: dict[str, int] = {}
    frontier = ["__start__"] if "__start__" in nodes else nodes[:1]
    for n in frontier:
        rank[n] = 0
    while frontier:
        nxt = []
        for n in frontier:
            for t in out.get(n, []):
                if t not in rank:
                    rank[t] = rank[n] + 1
                    nxt.append(t)
        frontier = nxt
    deepest = max(rank.values(), default=0)
    for n in nodes:  # unreachable nodes go at the bottom
        if n not in rank:
            deepest += 1
            rank[n] = deepest
    others = [r for n, r in rank.items() if n != "__end__"]
    if "__end__" in rank and others:
        rank["__end__"] = max(others) + 1  # the end at the bottom, on a row of its own
    return rank


def _columns(nodes: list[str], edges: list[_Edge], rank: dict[str, int]) -> dict[str, float]:
    """x of each node: under the mean of its parents, pushed apart so none overlap."""
    parents: dict[str, list[str]] = {}
    for e in edges:
        parents.setdefault(e.target, []).append(e.source)
    rows: dict[int, list[str]] = {}
    for n in nodes:
        rows.setdefault(rank[n], []).append(n)
    xs: dict[str, float] = {}
    for r in sorted(rows):
        desired = {}
        for n in rows[r]:
            above = [xs[p] for p in parents.get(n, []) if p in xs and rank[p] < r]
            desired[n] = sum(above) / len(above) if above else 0.0
        order = sorted(rows[r], key=lambda n: (desired[n], nodes.index(n)))
        placed: list[float] = []
        for n in order:
            x = desired[n] if not placed else max(desired[n], placed[-1] + NODE_W + GAP_X)
            placed.append(x)
        shift = (sum(placed) - sum(desired[n] for n in order)) / len(order)
        for n, x in zip(order, placed, strict=True):
            xs[n] = x - shift
    low = min(xs.values(), default=0.0)
    return {n: x - low + PAD for n, x in xs.items()}


def graph_svg(graph: object, path: Sequence[str], current: Sequence[str] = ()) -> Markup:
    """An SVG drawing of ``graph`` with ``path`` (node names in run order) highlighted.

    Args:
        graph: a compiled graph.
        path: the nodes the run went through, in order (repeats allowed).
        current: nodes the run waits at (drawn with an outline).
    """
    nodes, edges = _structure(graph)
    back = _back_edges(nodes, edges)
    rank = _ranks(nodes, edges)
    xs = _columns(nodes, edges, rank)
    rows = max(rank.values(), default=0) + 1
    pos = {n: (xs[n], PAD + rank[n] * (NODE_H + GAP_Y)) for n in nodes}
    right = max(xs.values(), default=0.0) + NODE_W
    width = right + PAD + 70
    height = PAD * 2 + rows * NODE_H + (rows - 1) * GAP_Y
    visited = set(path)
    taken = {(a, b) for a, b in zip(path, path[1:], strict=False)}
    waiting = set(current)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="graph" role="img" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" width="{width:.0f}" height="{height:.0f}" '
        f'aria-label="graph with the path taken highlighted">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'class="arrow"/></marker><marker id="arrow-on" viewBox="0 0 10 10" refX="9" refY="5" '
        'markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path '
        'd="M0,0 L10,5 L0,10 z" class="arrow on"/></marker></defs>',
    ]
    drawn = sorted(edges, key=lambda e: (e.source, e.target) in taken)  # taken ones on top
    for e in drawn:
        if e.source not in pos or e.target not in pos:
            continue
        sx, sy = pos[e.source]
        tx, ty = pos[e.target]
        on = (e.source, e.target) in taken
        cls = "edge" + (" on" if on else "") + (" cond" if e.conditional else "")
        marker = "url(#arrow-on)" if on else "url(#arrow)"
        if ty < sy or ((e.source, e.target) in back and ty <= sy and tx == sx):
            # back up (a retry loop): around the right side of the drawing
            x1, y1 = sx + NODE_W, sy + NODE_H / 2
            x2, y2 = tx + NODE_W, ty + NODE_H / 2
            bend = right + 20 + 12 * abs(rank[e.source] - rank[e.target])
            d = (f"M{x1:.0f},{y1:.0f} C{bend:.0f},{y1:.0f} {bend:.0f},{y2:.0f} "
                 f"{x2 + 2:.0f},{y2:.0f}")
        elif ty == sy:
            # same row: side to side
            ltr = tx > sx
            x1 = sx + NODE_W if ltr else sx
            x2 = tx - 2 if ltr else tx + NODE_W + 2
            y1 = y2 = sy + NODE_H / 2
            d = f"M{x1:.0f},{y1:.0f} L{x2:.0f},{y2:.0f}"
        else:
            x1, y1 = sx + NODE_W / 2, sy + NODE_H
            x2, y2 = tx + NODE_W / 2, ty
            mid = (y1 + y2) / 2
            d = (f"M{x1:.0f},{y1:.0f} C{x1:.0f},{mid:.0f} {x2:.0f},{mid:.0f} "
                 f"{x2:.0f},{y2 - 2:.0f}")
        parts.append(f'<path d="{d}" class="{cls}" marker-end="{marker}">'
                     f"<title>{escape(e.source)} → {escape(e.target)}"
                     f"{' (taken)' if on else ''}</title></path>")
    for n in nodes:
        x, y = pos[n]
        cls = "node"
        if n in ("__start__", "__end__"):
            cls += " terminal"
        if n in visited:
            cls += " on"
        if n in waiting:
            cls += " waiting"
        label = {"__start__": "start", "__end__": "end"}.get(n, n)
        shown = label if len(label) <= 20 else label[:19] + "…"
        parts.append(
            f'<g class="{cls}" data-node="{escape(n)}"><title>{escape(n)}'
            f"{' (ran)' if n in visited else ''}{' (waiting here)' if n in waiting else ''}"
            f'</title><rect x="{x:.0f}" y="{y:.0f}" width="{NODE_W}" height="{NODE_H}" '
            f'rx="8"/><text x="{x + NODE_W / 2:.0f}" y="{y + NODE_H / 2 + 4:.0f}" '
            f'text-anchor="middle">{escape(shown)}</text></g>')
    parts.append("</svg>")
    return Markup("".join(parts))
