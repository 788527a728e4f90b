"""Drawing a graph offline: SVG and text, no network.

LangGraph's ``draw_mermaid_png`` calls a web service. `draw_graph` lays the graph out
locally with grandalf (the layout LangChain's ``draw_ascii`` uses; ``pip install
'relaygraph[notebooks]'``) and returns a `GraphDrawing`, which a notebook shows as SVG, with
the Mermaid source (``text/vnd.mermaid``, rendered natively by JupyterLab) and the ASCII
drawing as alternatives.

Example:
    >>> draw_graph(graph)            # in a notebook: the SVG          # doctest: +SKIP
    >>> print(draw_graph(graph).ascii)                                  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Any

from relaygraph._errors import ConfigurationError

_CHAR_W = 7.2  # px per character of the 12 px monospace label font
_BOX_H = 30.0
_PAD = 16.0


@dataclass(frozen=True)
class GraphDrawing:
    """A graph drawn offline: ``svg``, ``mermaid`` source and ``ascii`` text."""

    svg: str
    mermaid: str
    ascii: str

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"image/svg+xml": self.svg, "text/vnd.mermaid": self.mermaid,
                "text/plain": self.ascii}

    def save(self, path: str) -> None:
        """Write the SVG to ``path``."""
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.svg)


def _layout(nodes: list[str], edges: list[tuple[str, str, bool]]) -> tuple[
        dict[str, tuple[float, float, float]], list[tuple[list[tuple[float, float]], bool]]]:
    try:
        from grandalf.graphs import Edge, Graph, Vertex
        from grandalf.layouts import SugiyamaLayout
        from grandalf.routing import route_with_lines
    except ImportError as exc:
        raise ConfigurationError(
            "drawing a graph offline needs grandalf; install it with: "
            "pip install 'relaygraph[notebooks]'") from exc

    class _View:
        def __init__(self, w: float, h: float) -> None:
            self.w, self.h = w, h
            self.xy = (0.0, 0.0)

    class _EdgeView:
        def __init__(self) -> None:
            self.pts: list[tuple[float, float]] = []

        def setpath(self, pts: list[tuple[float, float]]) -> None:
            self.pts = pts

    vertices = {n: Vertex(n) for n in nodes}
    gedges = []
    for s, t, dashed in edges:
        e = Edge(vertices[s], vertices[t], data=dashed)
        e.view = _EdgeView()
        gedges.append(e)
    for n, v in vertices.items():
        v.view = _View(len(n) * _CHAR_W + 2 * _PAD, _BOX_H)
    graph = Graph(list(vertices.values()), gedges)
    boxes: dict[str, tuple[float, float, float]] = {}
    lines: list[tuple[list[tuple[float, float]], bool]] = []
    x_offset = 0.0
    for comp in graph.C:
        sug = SugiyamaLayout(comp)
        roots = [v for v in comp.sV if not v.e_in()]
        sug.init_all(roots=roots or None, optimize=True)
        sug.xspace, sug.yspace = 24.0, 36.0
        sug.route_edge = route_with_lines
        sug.draw()
        xs = [v.view.xy[0] - v.view.w / 2 for v in comp.sV]
        shift = x_offset - min(xs)
        for v in comp.sV:
            boxes[v.data] = (v.view.xy[0] + shift, v.view.xy[1], v.view.w)
        for e in comp.sE:
            lines.append(([(x + shift, y) for x, y in e.view.pts], bool(e.data)))
        x_offset = max(v.view.xy[0] + shift + v.view.w / 2 for v in comp.sV) + 40
    return boxes, lines


def _clip(p: tuple[float, float], q: tuple[float, float], box: tuple[float, float, float]
          ) -> tuple[float, float]:
    """Where the segment from ``p`` (outside) to the centre ``q`` of ``box`` meets the box."""
    cx, cy, w = box
    dx, dy = p[0] - cx, p[1] - cy
    if dx == 0 and dy == 0:
        return q
    scale = min(abs((w / 2) / dx) if dx else float("inf"),
                abs((_BOX_H / 2) / dy) if dy else float("inf"))
    return cx + dx * scale, cy + dy * scale


def draw_graph(graph: Any, *, xray: bool = False) -> GraphDrawing:
    """Draw a compiled graph (or anything with ``get_graph()``) offline.

    Conditional routes (guards, handoffs, reviews, ``Command`` destinations) are dashed,
    fixed edges solid, as in LangGraph's own drawings.

    Raises:
        ConfigurationError: grandalf is not installed.
    """
    drawable = graph.get_graph(xray=xray) if hasattr(graph, "get_graph") else graph
    nodes = list(drawable.nodes)
    edges = [(e.source, e.target, bool(e.conditional)) for e in drawable.edges]
    boxes, lines = _layout(nodes, edges)
    mermaid = drawable.draw_mermaid()
    try:
        ascii_art = drawable.draw_ascii()
    except Exception:  # noqa: BLE001 - the SVG is the drawing; text is a fallback
        ascii_art = mermaid
    # edges that skip layers bend through points outside the boxes: keep them in view
    points = [p for pts, _ in lines for p in pts]
    min_x = min([x - w / 2 for x, _, w in boxes.values()] + [x for x, _ in points]) - 10
    max_x = max([x + w / 2 for x, _, w in boxes.values()] + [x for x, _ in points]) + 10
    min_y = min([y - _BOX_H / 2 for _, y, _ in boxes.values()] + [y for _, y in points]) - 10
    max_y = max([y + _BOX_H / 2 for _, y, _ in boxes.values()] + [y for _, y in points]) + 10
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="{min_x:.0f} {min_y:.0f} '
        f'{max_x - min_x:.0f} {max_y - min_y:.0f}" width="{max_x - min_x:.0f}" '
        f'height="{max_y - min_y:.0f}" font-family="monospace" font-size="12">',
        '<defs><marker id="rg-arrow" viewBox="0 0 10 10" refX="10" refY="5" '
        'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
        '<path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>',
        f'<rect x="{min_x:.0f}" y="{min_y:.0f}" width="{max_x - min_x:.0f}" '
        f'height="{max_y - min_y:.0f}" fill="white"/>',
    ]
    by_pos = {(round(x, 3), round(y, 3)): n for n, (x, y, _) in boxes.items()}
    for pts, dashed in lines:
        if len(pts) < 2:
            continue
        pts = list(pts)
        start = by_pos.get((round(pts[0][0], 3), round(pts[0][1], 3)))
        end = by_pos.get((round(pts[-1][0], 3), round(pts[-1][1], 3)))
        if start is not None:
            pts[0] = _clip(pts[1], pts[0], boxes[start])
        if end is not None:
            pts[-1] = _clip(pts[-2], pts[-1], boxes[end])
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
        dash = ' stroke-dasharray="5,4"' if dashed else ""
        out.append(f'<polyline points="{path}" fill="none" stroke="#555" stroke-width="1.3"'
                   f'{dash} marker-end="url(#rg-arrow)"/>')
    for name, (x, y, w) in boxes.items():
        terminal = name in ("__start__", "__end__")
        fill = "#eeeeee" if terminal else "#e8f0fe"
        rx = _BOX_H / 2 if terminal else 5
        out.append(f'<rect x="{x - w / 2:.1f}" y="{y - _BOX_H / 2:.1f}" width="{w:.1f}" '
                   f'height="{_BOX_H:.0f}" rx="{rx:.0f}" fill="{fill}" stroke="#3c5a99"/>')
        out.append(f'<text x="{x:.1f}" y="{y + 4:.1f}" text-anchor="middle">'
                   f"{escape(name)}</text>")
    out.append("</svg>")
    return GraphDrawing(svg="\n".join(out), mermaid=mermaid, ascii=ascii_art)
