"""Seeded random values for the inputs of a net whose parameters are not available.

Model-zoo predict nets often come without their init nets. To run them anyway, the
shape of every parameter is derived from how it is used: shape inference walks the
net with the known data shapes, and before each op a per-op-type rule turns the
shape flowing into the op plus its arguments into the shapes of its still-unknown
parameters (a Conv weight is ``[C_out, C_in / group, kh, kw]``, a SpatialBN scale
is ``[C]``, ...). Channel counts that nothing fixes (a Conv's ``C_out``) get one
common ``width``; counts that a detection op fixes (anchors, classes) are found by
a backward pass first, so that heads agree with GenerateProposals / BBoxTransform /
BoxWithNMSLimit.

Values are scaled so activations stay finite: weights He-style by fan-in, biases
near 0, batch-norm scales near 1 and variances positive, integer inputs zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from asyncnet.errors import NetDefinitionError
from asyncnet.opinfo import OpInfo
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.qtensor import Int8Tensor
from asyncnet.randinit_rules import (
    ANCHOR_RATIOS,
    ANCHOR_SIZES,
    F32,
    RULES,
    ParamSpec,
    RuleContext,
    channel_demands,
    flat_ops,
    known_shape,
)
from asyncnet.registry import OpRegistry
from asyncnet.schema import TensorInfo
from asyncnet.shapes import NetShapes, infer_shapes

if TYPE_CHECKING:
    from asyncnet.workspace import Workspace

__all__ = [
    "InitPlan",
    "ParamSpec",
    "channel_demands",
    "describe_guesses",
    "fill_workspace",
    "plan_random_init",
    "random_init",
    "sample",
]


@dataclass
class InitPlan:
    """What :func:`plan_random_init` decided: a spec per blob to fill, and the shapes.

    ``guessed`` maps each parameter with an assumed dimension (nothing in the net, its inputs or
    the given parameter shapes fixes it) to what was assumed, e.g. ``"16 output channels of
    op #0 Conv (assumed)"``; see :func:`describe_guesses`.
    """

    specs: dict[str, ParamSpec]
    shapes: NetShapes
    guessed: dict[str, str] = field(default_factory=dict)


def describe_guesses(guessed: Mapping[str, str]) -> str:
    """One line listing every guessed parameter dimension and how to supply the real shapes."""
    items = "; ".join(f"{name}: {why}" for name, why in guessed.items())
    return (
        f"random init guessed {len(guessed)} parameter dimension(s) that no weights fix: {items}; "
        "give the real shapes with --param-shape NAME=D0,D1,... or --param-shapes FILE.json (or the init net)"
    )


# ---------------------------------------------------------------------------
# Planning and sampling


def _produced_anywhere(net: pb.NetDef) -> set[str]:
    return {o for op in flat_ops(net) for o in op.output}


def plan_random_init(
    net_def: pb.NetDef,
    known: Mapping[str, TensorInfo],
    *,
    width: int = 16,
    num_classes: int = 5,
    registry: OpRegistry | None = None,
    param_shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> InitPlan:
    """Decide the shape and kind of every input of ``net_def`` that ``known`` lacks.

    Args:
        net_def: the (predict) net.
        known: infos of blobs that will exist before it runs (fed data, init-net
            outputs, ``--input-shape`` data).
        width: channel count given to Conv / FC outputs that nothing else fixes.
        num_classes: classes (with background) of detection heads.
        registry: schema source.
        param_shapes: shapes the user gives for parameters to generate; they win over
            derived shapes and fix the dimensions that would otherwise be guessed.

    Raises:
        NetDefinitionError: an input's shape cannot be derived (no rule for the op
            reading it, or the data flowing into that op has an unknown shape).
    """
    demand_guesses: dict[str, str] = {}
    demands = channel_demands(
        net_def, num_anchors=len(ANCHOR_SIZES) * len(ANCHOR_RATIOS), num_classes=num_classes, guessed=demand_guesses
    )
    ctx = RuleContext(width, demands, len(ANCHOR_SIZES) * len(ANCHOR_RATIOS), demand_guesses)
    given = {k: tuple(v) for k, v in (param_shapes or {}).items()}
    produced = _produced_anywhere(net_def)
    specs: dict[str, ParamSpec] = {}
    unresolved: dict[str, str] = {}

    def resolve(op: OpInfo, ins: list[TensorInfo]) -> dict[str, TensorInfo] | None:
        free = [
            i
            for i, name in enumerate(op.inputs)
            if ins[i].shape is None and name not in produced and name not in known and name not in specs
        ]
        if not free:
            return None
        rule = RULES.get(op.type)
        # Given parameter shapes are visible to the rule, so they fix what would be guessed.
        seen = [
            TensorInfo(given[n], F32) if i in free and n in given else t for i, (n, t) in enumerate(zip(op.inputs, ins))
        ]
        got = rule(ctx, op, seen, free) if rule is not None else {}
        out: dict[str, TensorInfo] = {}
        for i in free:
            name = op.inputs[i]
            spec = got.get(i)
            if name in given:
                base = spec or ParamSpec(TensorInfo(given[name], F32), "data")
                spec = ParamSpec(
                    TensorInfo(given[name], base.info.dtype or F32), base.kind, base.fan_in, base.stride, base.image_hw
                )
            if spec is None:
                why = "no random-init rule for this op type" if rule is None else "the data flowing in is unknown"
                unresolved.setdefault(name, f"{op.label()} reads it ({why})")
                continue
            specs[name] = spec
            unresolved.pop(name, None)
            out[name] = spec.info
        return out

    shapes = infer_shapes(net_def, known, registry=registry, resolve=resolve)
    read = {n for op in flat_ops(net_def) for n in op.input}
    for name in net_def.external_input:
        # Declared but never read (e.g. a training-queue blob): any value will do.
        if name not in read and name not in known and name not in specs:
            specs[name] = ParamSpec(TensorInfo((0,), F32), "zeros")
    if unresolved:
        raise NetDefinitionError(_unresolved_message(net_def, unresolved, {**known, **specs}))
    guessed = {n: why for n, why in ctx.guessed.items() if n in specs and n not in given}
    return InitPlan(specs, shapes, guessed)


def _unresolved_message(net_def: pb.NetDef, unresolved: Mapping[str, str], known: Mapping[str, object]) -> str:
    from asyncnet.modelinputs import classify_inputs

    data, _ = classify_inputs(net_def)
    # A data input without a shape leaves every parameter after it unknown: name the cause, not the symptoms.
    missing_data = [n for n in data if n not in known and n in unresolved]
    if not missing_data:
        missing_data = [n for n in data if n not in known and n in {o for op in flat_ops(net_def) for o in op.input}]
    head = f"net '{net_def.name}': cannot derive the shape of {len(unresolved)} input(s) for random init"
    items = list(unresolved.items())
    detail = "; ".join(f"'{n}': {why}" for n, why in items[:8]) + (
        f"; ... ({len(items) - 8} more)" if len(items) > 8 else ""
    )
    if missing_data:
        return (
            f"{head}: data input(s) {', '.join(missing_data)} have no shape; give --input-shape "
            f"{missing_data[0]}=D0,D1,... or --value-info FILE (or feed them with --inputs). Unresolved: {detail}"
        )
    return f"{head}: {detail}. Feed them (--inputs) or give their shape (--input-shape / --param-shape NAME=D0,D1,...)"


def _anchors(count: int, stride: float) -> np.ndarray:
    # Boxes centred on the first cell, Detectron-style (x1, y1, x2, y2), legacy +1 widths.
    boxes: list[list[float]] = []
    ctr = (stride - 1.0) / 2.0
    for size in ANCHOR_SIZES:
        for ratio in ANCHOR_RATIOS:
            w = round(math.sqrt(size * size / ratio))
            h = round(w * ratio)
            boxes.append([ctr - (w - 1) / 2, ctr - (h - 1) / 2, ctr + (w - 1) / 2, ctr + (h - 1) / 2])
    while len(boxes) < count:
        boxes.extend(boxes)
    return np.asarray(boxes[:count], dtype=np.float32)


def sample(spec: ParamSpec, rng: np.random.Generator) -> Any:
    """Random values for one spec (see :class:`ParamSpec` for the kinds); an array, or an
    ``Int8Tensor`` for the int8_* kinds."""
    shape = known_shape(spec.info)
    if shape is None:
        raise NetDefinitionError(f"random init: cannot sample a tensor of partly unknown shape {spec.info}")
    dtype = spec.info.dtype or F32
    if spec.kind == "int8_weight":
        wf = rng.normal(0.0, math.sqrt(2.0 / max(spec.fan_in, 1)), size=shape).astype(np.float32)
        top = float(np.abs(wf).max()) if wf.size else 0.0
        return Int8Tensor.quantize(wf, top / 127.0 if top > 0 else 1.0, 128)
    if spec.kind == "int8_bias":
        return Int8Tensor(np.zeros(shape, dtype=np.int32), 1.0, 0)
    if dtype.kind in "iub" or spec.kind == "zeros":
        return np.zeros(shape, dtype=dtype)
    kind = spec.kind
    if kind == "weight":
        values: Any = rng.normal(0.0, math.sqrt(2.0 / max(spec.fan_in, 1)), size=shape)
    elif kind == "bias":
        values = rng.normal(0.0, 0.01, size=shape)
    elif kind == "scale":
        values = rng.uniform(0.8, 1.2, size=shape)
    elif kind == "shift":
        values = rng.normal(0.0, 0.1, size=shape)
    elif kind == "variance":
        values = rng.uniform(0.5, 1.5, size=shape)
    elif kind == "slope":
        values = np.full(shape, 0.25)
    elif kind == "anchors":
        values = _anchors(shape[0], spec.stride)
    elif kind == "im_info":
        h, w = spec.image_hw
        values = np.tile(np.asarray([[h, w, 1.0]]), (shape[0], 1))
    else:
        values = rng.standard_normal(size=shape)
    return np.asarray(values, dtype=dtype).reshape(shape)


def random_init(
    net_def: pb.NetDef,
    known: Mapping[str, TensorInfo],
    data: Mapping[str, TensorInfo],
    *,
    seed: int = 0,
    width: int = 16,
    registry: OpRegistry | None = None,
    param_shapes: Mapping[str, tuple[int, ...]] | None = None,
    guessed: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Seeded values for ``data`` (standard normal) and for every derived parameter.

    Args:
        net_def: the net to run.
        known: infos of blobs already present (fed, or made by an init net); they
            are not generated.
        data: infos of data inputs to generate (e.g. from ``--input-shape``).
        seed: the random seed; equal seeds give equal values.
        width: see :func:`plan_random_init`.
        registry: schema source.
        param_shapes: see :func:`plan_random_init`.
        guessed: when given, receives the plan's guessed dimensions (see :class:`InitPlan`).

    Returns:
        blob name -> array (Int8Tensor for int8 parameters), for every blob of ``data`` and every input the net
        reads that neither ``known`` nor ``data`` has.
    """
    plan = plan_random_init(net_def, {**known, **data}, width=width, registry=registry, param_shapes=param_shapes)
    if guessed is not None:
        guessed.update(plan.guessed)
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    for name, ti in data.items():
        out[name] = sample(ParamSpec(ti if ti.dtype is not None else ti.with_dtype(F32), "data"), rng)
    for name, spec in plan.specs.items():
        out[name] = sample(spec, rng)
    return out


def fill_workspace(
    net_def: pb.NetDef,
    workspace: Workspace,
    data_shapes: Mapping[str, tuple[int, ...] | TensorInfo],
    *,
    params: bool,
    seed: int = 0,
    width: int = 16,
    param_shapes: Mapping[str, tuple[int, ...]] | None = None,
    guessed: dict[str, str] | None = None,
) -> list[str]:
    """Feed seeded random data of ``data_shapes`` and, when ``params``, every other input of
    ``net_def`` that the workspace lacks. Returns the names fed.

    ``data_shapes`` values are shapes (float32) or TensorInfos (their dtype is used). Blobs
    already in the workspace (fed or made by an init net) are never replaced. ``param_shapes``
    and ``guessed`` are as for :func:`random_init`.
    """
    from asyncnet.shapes import info_of

    known = {n: info_of(workspace.fetch(n)) for n in workspace.blobs()}
    data = {
        n: s.with_dtype(s.dtype or F32) if isinstance(s, TensorInfo) else TensorInfo(tuple(s), F32)
        for n, s in data_shapes.items()
        if n not in known
    }
    if params:
        values = random_init(net_def, known, data, seed=seed, width=width, param_shapes=param_shapes, guessed=guessed)
    else:
        rng = np.random.default_rng(seed)
        values = {n: sample(ParamSpec(ti, "data"), rng) for n, ti in data.items()}
    for name, value in values.items():
        workspace.feed(name, value)
    return list(values)
