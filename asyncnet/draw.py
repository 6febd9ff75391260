"""Drawing a NetDef: operators and blobs as a graph, to DOT, SVG or PNG.

DOT text is always available. SVG uses graphviz's ``dot`` when it is installed and
otherwise a built-in layered layout (pure Python), so it always works; PNG needs ``dot``.
Blobs written in place get one node per version so the drawing stays acyclic.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape

from asyncnet.errors import UnsupportedError
from asyncnet.opinfo import DeviceKey
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.schema import TensorInfo
from asyncnet.serde import atomic_write_bytes

if TYPE_CHECKING:
    from asyncnet.shapes import NetShapes

PALETTE = ("#cfe2f3", "#d9ead3", "#fff2cc", "#f4cccc", "#d9d2e9", "#fce5cd", "#d0e0e3", "#ead1dc")
COLOR_MODES = ("device", "pool")


@dataclass
class Node:
    """One drawn node: an operator (box) or a blob version (ellipse)."""

    id: str
    label: str
    is_op: bool
    op_index: int = -1
    color: str = "#ffffff"
    layer: int = 0
    order: float = 0.0
    x: float = 0.0
    y: float = 0.0
    width: float = 0.0


@dataclass
class Drawing:
    """Nodes, edges and chain groups of a net, before layout."""

    name: str
    nodes: list[Node] = field(default_factory=list)
    edges: list[tuple[str, str]] = field(default_factory=list)
    chains: list[list[str]] = field(default_factory=list)
    legend: dict[str, str] = field(default_factory=dict)


def _device_of(op: pb.OperatorDef, net: pb.NetDef) -> pb.DeviceOption | None:
    if op.HasField("device_option"):
        return op.device_option
    return net.device_option if net.HasField("device_option") else None


def _color_key(op: pb.OperatorDef, net: pb.NetDef, mode: str) -> str:
    key = DeviceKey.of(_device_of(op, net))
    names = {0: "cpu", 1: "cuda", 6: "hip"}
    dev = f"{names.get(key.type, f'type{key.type}')}:{key.id}"
    # The async executor keeps one worker pool per device and NUMA node.
    return dev if mode == "device" else f"pool {dev} numa {key.numa}"


def op_chains(net: pb.NetDef) -> list[list[int]]:
    """Chains of the net: from ``asyncnet.graph`` when available, else single-parent/child runs."""
    try:
        from asyncnet.graph import analyze

        return [list(c) for c in analyze(net).chains]
    except (ImportError, AttributeError, NotImplementedError):
        pass
    producer: dict[str, int] = {}
    parents: list[set[int]] = []
    for i, op in enumerate(net.op):
        parents.append({producer[b] for b in op.input if b in producer})
        for b in op.output:
            producer[b] = i
    children: list[set[int]] = [set() for _ in net.op]
    for i, ps in enumerate(parents):
        for p in ps:
            children[p].add(i)
    chains: list[list[int]] = []
    seen: set[int] = set()
    for i in range(len(net.op)):
        if i in seen:
            continue
        chain = [i]
        seen.add(i)
        while len(children[chain[-1]]) == 1:
            nxt = next(iter(children[chain[-1]]))
            if len(parents[nxt]) != 1 or nxt in seen:
                break
            chain.append(nxt)
            seen.add(nxt)
        chains.append(chain)
    return chains


def build_drawing(
    net: pb.NetDef,
    *,
    collapse_blobs: bool = False,
    color_by: str | None = None,
    mark_chains: bool = False,
    shapes: NetShapes | None = None,
) -> Drawing:
    """The graph to draw: op nodes, blob-version nodes (unless collapsed), edges, chains.

    With ``shapes`` (from :func:`asyncnet.shapes.infer_shapes` of the same net), each blob node
    also shows the shape that version of the blob has.
    """
    if color_by is not None and color_by not in COLOR_MODES:
        raise UnsupportedError(f"--color-by must be one of {', '.join(COLOR_MODES)}, got '{color_by}'")
    d = Drawing(name=net.name or "net")
    version: dict[str, str] = {}
    producer: dict[str, str] = {}
    counter = 0
    colors: dict[str, str] = {}

    def blob_node(name: str, info: TensorInfo | None = None) -> str:
        nonlocal counter
        counter += 1
        nid = f"b{counter}"
        label = name if info is None or info.shape is None else f"{name}\n{_shape_text(info)}"
        d.nodes.append(Node(nid, label, False))
        version[name] = nid
        return nid

    for i, op in enumerate(net.op):
        oid = f"op{i}"
        label = op.type + (f"\n{op.name}" if op.name and op.name != op.type else "")
        node = Node(oid, label, True, op_index=i)
        if color_by:
            key = _color_key(op, net, color_by)
            if key not in colors:
                colors[key] = PALETTE[len(colors) % len(PALETTE)]
            node.color = colors[key]
        else:
            node.color = PALETTE[0]
        d.nodes.append(node)
        ins = shapes.op_inputs[i] if shapes is not None and i < len(shapes.op_inputs) else []
        outs = shapes.op_outputs[i] if shapes is not None and i < len(shapes.op_outputs) else []
        for k, b in enumerate([*op.input, *op.control_input]):
            if collapse_blobs:
                if b in producer and (producer[b], oid) not in d.edges:
                    d.edges.append((producer[b], oid))
            else:
                src = version.get(b) or blob_node(b, ins[k] if k < len(ins) else None)
                if (src, oid) not in d.edges:
                    d.edges.append((src, oid))
        for k, b in enumerate(op.output):
            if collapse_blobs:
                producer[b] = oid
            else:
                d.edges.append((oid, blob_node(b, outs[k] if k < len(outs) else None)))
    d.legend = {v: k for k, v in colors.items()}
    if mark_chains:
        d.chains = [[f"op{i}" for i in c] for c in op_chains(net) if len(c) > 1]
    return d


def _shape_text(info: TensorInfo) -> str:
    return "(" + ", ".join("?" if v is None else str(v) for v in info.shape or ()) + ")"


def _dot_id(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(d: Drawing) -> str:
    """Graphviz DOT text of a drawing."""
    lines = [f"digraph {_dot_id(d.name)} {{", "  rankdir=TB;", '  node [fontname="Helvetica", fontsize=10];']
    in_chain = {n for c in d.chains for n in c}
    for n in d.nodes:
        if n.id in in_chain:
            continue
        lines.append("  " + _dot_node(n))
    for k, chain in enumerate(d.chains):
        lines.append(f"  subgraph cluster_chain{k} {{")
        lines.append(f'    label="chain {k}"; style=dashed; color="#888888";')
        by_id = {n.id: n for n in d.nodes}
        lines.extend("    " + _dot_node(by_id[nid]) for nid in chain)
        lines.append("  }")
    lines.extend(f"  {_dot_id(a)} -> {_dot_id(b)};" for a, b in d.edges)
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_node(n: Node) -> str:
    if n.is_op:
        return f'{_dot_id(n.id)} [label={_dot_id(n.label)}, shape=box, style="rounded,filled", fillcolor="{n.color}"];'
    return f"{_dot_id(n.id)} [label={_dot_id(n.label)}, shape=ellipse];"


# ---------------------------------------------------------------------------
# Built-in layered layout (Sugiyama-style, simplified)

CHAR_W = 7.0
NODE_H = 30.0
GAP_X = 24.0
GAP_Y = 56.0
MARGIN = 20.0


def layout(d: Drawing, sweeps: int = 4) -> tuple[float, float]:
    """Assign x/y to every node; returns the canvas (width, height)."""
    ids = {n.id: n for n in d.nodes}
    preds: dict[str, list[str]] = {n.id: [] for n in d.nodes}
    succs: dict[str, list[str]] = {n.id: [] for n in d.nodes}
    for a, b in d.edges:
        preds[b].append(a)
        succs[a].append(b)
    # Node creation order is topological: layers by longest path from the sources.
    for n in d.nodes:
        n.layer = max((ids[p].layer + 1 for p in preds[n.id]), default=0)
    # Sources (external inputs, weights) sit just above their first consumer, not all at the top.
    for n in d.nodes:
        if not preds[n.id] and succs[n.id]:
            n.layer = max(0, min(ids[s].layer for s in succs[n.id]) - 1)
    layers: dict[int, list[Node]] = {}
    for n in d.nodes:
        layers.setdefault(n.layer, []).append(n)
    for row in layers.values():
        for k, n in enumerate(row):
            n.order = float(k)
    depth = max(layers, default=0)
    for sweep in range(sweeps):
        rng = range(1, depth + 1) if sweep % 2 == 0 else range(depth - 1, -1, -1)
        for li in rng:
            row = layers.get(li, [])
            for n in row:
                nbrs = preds[n.id] if sweep % 2 == 0 else succs[n.id]
                if nbrs:
                    n.order = sum(ids[m].order for m in nbrs) / len(nbrs)
            row.sort(key=lambda n: n.order)
            for k, n in enumerate(row):
                n.order = float(k)
    width = 0.0
    for li, row in layers.items():
        x = MARGIN
        for n in row:
            n.width = max(60.0, CHAR_W * max(len(s) for s in n.label.split("\n")) + 16)
            n.x = x + n.width / 2
            n.y = MARGIN + li * (NODE_H + GAP_Y) + NODE_H / 2
            x += n.width + GAP_X
        width = max(width, x)
    # Center each row on the widest one.
    for row in layers.values():
        if row:
            used = row[-1].x + row[-1].width / 2 + GAP_X - MARGIN
            shift = (width - MARGIN - used) / 2
            for n in row:
                n.x += shift
    height = MARGIN * 2 + (depth + 1) * (NODE_H + GAP_Y)
    return max(width + MARGIN, 200.0), height


def to_svg(d: Drawing) -> str:
    """SVG of a drawing with the built-in layout (no graphviz needed)."""
    w, h = layout(d)
    ids = {n.id: n for n in d.nodes}
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0f}" height="{h:.0f}" viewBox="0 0 {w:.0f} {h:.0f}">',
        f"<title>{escape(d.name)}</title>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>',
        '<rect width="100%" height="100%" fill="white"/>',
    ]
    for k, chain in enumerate(d.chains):
        ns = [ids[c] for c in chain]
        x0 = min(n.x - n.width / 2 for n in ns) - 6
        x1 = max(n.x + n.width / 2 for n in ns) + 6
        y0 = min(n.y for n in ns) - NODE_H / 2 - 6
        y1 = max(n.y for n in ns) + NODE_H / 2 + 6
        out.append(
            f'<rect class="chain" data-chain="{k}" x="{x0:.1f}" y="{y0:.1f}" width="{x1 - x0:.1f}" '
            f'height="{y1 - y0:.1f}" fill="none" stroke="#888" stroke-dasharray="5,3"/>'
        )
    for a, b in d.edges:
        s, t = ids[a], ids[b]
        y0, y1 = s.y + NODE_H / 2, t.y - NODE_H / 2
        mid = (y0 + y1) / 2
        out.append(
            f'<path d="M {s.x:.1f} {y0:.1f} C {s.x:.1f} {mid:.1f} {t.x:.1f} {mid:.1f} {t.x:.1f} {y1:.1f}" '
            'fill="none" stroke="#555" marker-end="url(#arrow)"/>'
        )
    for n in d.nodes:
        # A blob's tooltip is its name alone (its second line, when present, is its shape).
        tip = escape(n.label.replace("\n", " ") if n.is_op else n.label.split("\n")[0])
        if n.is_op:
            out.append(
                f'<g class="op" id="{n.id}"><title>{tip}</title><rect x="{n.x - n.width / 2:.1f}" '
                f'y="{n.y - NODE_H / 2:.1f}" width="{n.width:.1f}" height="{NODE_H:.1f}" rx="5" '
                f'fill="{n.color}" stroke="#333"/>'
            )
        else:
            out.append(
                f'<g class="blob" id="{n.id}"><title>{tip}</title><ellipse cx="{n.x:.1f}" cy="{n.y:.1f}" '
                f'rx="{n.width / 2:.1f}" ry="{NODE_H / 2:.1f}" fill="white" stroke="#333"/>'
            )
        lines = n.label.split("\n")
        for j, line in enumerate(lines):
            dy = (j - (len(lines) - 1) / 2) * 12 + 4
            out.append(
                f'<text x="{n.x:.1f}" y="{n.y + dy:.1f}" text-anchor="middle" font-family="Helvetica" '
                f'font-size="{10 if j else 11}">{escape(line)}</text>'
            )
        out.append("</g>")
    for k, (color, key) in enumerate(d.legend.items()):
        out.append(
            f'<rect x="{MARGIN}" y="{h - 18 * (k + 1):.0f}" width="12" height="12" fill="{color}" stroke="#333"/>'
        )
        out.append(f'<text x="{MARGIN + 18}" y="{h - 18 * (k + 1) + 10:.0f}" font-size="10">{escape(key)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def dot_binary() -> str | None:
    """Path of graphviz's ``dot``, or None."""
    return shutil.which("dot")


def _run_dot(dot_text: str, fmt: str) -> bytes:
    exe = dot_binary()
    assert exe is not None
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "net.dot")
        Path(src).write_text(dot_text, encoding="utf-8")
        res = subprocess.run([exe, f"-T{fmt}", src], capture_output=True, timeout=600, check=False)
    if res.returncode != 0:
        raise UnsupportedError(f"graphviz dot failed ({res.returncode}): {res.stderr.decode(errors='replace')[:500]}")
    return res.stdout


def draw(
    net: pb.NetDef,
    path: str | os.PathLike[str],
    *,
    collapse_blobs: bool = False,
    color_by: str | None = None,
    mark_chains: bool = False,
    use_dot: bool | None = None,
    shapes: NetShapes | None = None,
) -> str:
    """Draw ``net`` to ``path`` (.dot, .svg or .png); returns how ("dot text", "graphviz", "built-in").

    Raises:
        UnsupportedError: unknown extension, or .png without graphviz installed.
    """
    p = Path(path)
    ext = p.suffix.lower()
    d = build_drawing(net, collapse_blobs=collapse_blobs, color_by=color_by, mark_chains=mark_chains, shapes=shapes)
    have_dot = dot_binary() is not None if use_dot is None else use_dot and dot_binary() is not None
    if ext in (".dot", ".gv"):
        atomic_write_bytes(p, to_dot(d).encode("utf-8"))
        return "dot text"
    if ext == ".svg":
        if have_dot:
            atomic_write_bytes(p, _run_dot(to_dot(d), "svg"))
            return "graphviz"
        atomic_write_bytes(p, to_svg(d).encode("utf-8"))
        return "built-in"
    if ext == ".png":
        if not have_dot:
            raise UnsupportedError(
                f"{p}: PNG output needs graphviz's 'dot' program, which is not installed; "
                "install graphviz, or write .svg (built-in layout) or .dot instead"
            )
        atomic_write_bytes(p, _run_dot(to_dot(d), "png"))
        return "graphviz"
    raise UnsupportedError(f"{p}: unknown output type '{ext or '(none)'}'; use .svg, .png or .dot")


__all__: Sequence[str] = ("Drawing", "build_drawing", "draw", "layout", "op_chains", "to_dot", "to_svg")
