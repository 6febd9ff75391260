"""Gradient makers and the backward pass (Caffe2's GradientRegistry and IR, dense gradients only).

A *gradient maker* turns a forward OperatorDef plus the names of its output
gradients into the gradient operators and the names of its input gradients::

    @register_gradient("Relu")
    def _relu(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
        g = GradientContext(op, g_out)
        return g.spec([g.op_def("ReluGradient", [g.O(0), g.GO(0)], [g.GI(0)])])

:func:`add_gradient_ops` walks a net backwards (versioning blobs the way
Caffe2's ``IR`` does, so in-place ops work), seeds each loss with
``ConstantFill(value=1.0)`` named ``<loss>_autogen_grad``, and sums the partial
gradients of blobs read by several ops (later partials renamed
``_<grad>_autosplit_<k>``). Like Caffe2 it refuses a net where a gradient op
would read a forward blob that a later op overwrote. Only dense gradients are
supported (no GradientSlice / sparse updates).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from asyncnet.errors import GradientError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import make_argument

__all__ = [
    "GradientContext",
    "GradientMaker",
    "GradientSpec",
    "add_gradient_ops",
    "backward_pass",
    "gradient_for_op",
    "gradient_maker",
    "has_gradient",
    "no_gradient",
    "register_gradient",
    "register_output_renamer",
]


@dataclass
class GradientSpec:
    """What a gradient maker returns.

    Attributes:
        ops: the gradient operators, in run order.
        grad_inputs: per forward input, the name of its gradient blob, or None
            when the input gets no gradient (labels, shapes, integer inputs).
    """

    ops: list[pb.OperatorDef]
    grad_inputs: list[str | None]


GradientMaker = Callable[[pb.OperatorDef, list["str | None"]], GradientSpec]


@dataclass(frozen=True)
class _MakerEntry:
    maker: GradientMaker
    copy_arguments: bool
    copy_device_option: bool
    copy_engine: bool


_MAKERS: dict[str, _MakerEntry] = {}
_lock = threading.Lock()


def register_gradient(
    op_type: str,
    *,
    copy_arguments: bool = True,
    copy_device_option: bool = True,
    copy_engine: bool = True,
    aliases: Sequence[str] = (),
) -> Callable[[GradientMaker], GradientMaker]:
    """Register the gradient maker of ``op_type`` (decorator).

    As in Caffe2, the forward op's arguments are appended to every gradient op
    after the maker's own (``copy_arguments=False`` for makers that write their
    own, e.g. Reshape, Transpose); its device option and engine are copied too.
    """

    def deco(maker: GradientMaker) -> GradientMaker:
        entry = _MakerEntry(maker, copy_arguments, copy_device_option, copy_engine)
        with _lock:
            for name in (op_type, *aliases):
                if name in _MAKERS:
                    raise GradientError(f"gradient maker for '{name}' is registered twice")
                _MAKERS[name] = entry
        return maker

    return deco


def no_gradient(*op_types: str) -> None:
    """Declare ops whose inputs never get gradients (Caffe2's NO_GRADIENT)."""

    def maker(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
        return GradientSpec([], [None] * len(op.input))

    for t in op_types:
        register_gradient(t)(maker)


OutputRenamer = Callable[[pb.OperatorDef, int, str], None]
_RENAMERS: dict[str, OutputRenamer] = {}


def register_output_renamer(op_type: str, renamer: OutputRenamer) -> None:
    """How to rename output ``idx`` of a gradient op of ``op_type`` everywhere it is written.

    The backward pass renames a gradient op's output when several ops contribute to one
    gradient (``_<grad>_autosplit_<k>``). An op whose sub-nets write that blob by name (a
    gradient ``If``) must rename it inside them too (Caffe2's disambiguate_grad_if_op_output).
    """
    with _lock:
        _RENAMERS[op_type] = renamer


def _rename_output(op: pb.OperatorDef, idx: int, new_name: str) -> None:
    renamer = _RENAMERS.get(op.type)
    if renamer is None:
        op.output[idx] = new_name
    else:
        renamer(op, idx, new_name)


def _ensure_loaded() -> None:
    # Makers live next to the gradient kernels in asyncnet.ops; loading the
    # default registry imports them all.
    from asyncnet.registry import default_registry

    default_registry()


def has_gradient(op_type: str) -> bool:
    """Whether a gradient maker is registered for ``op_type``."""
    _ensure_loaded()
    return op_type in _MAKERS


def gradient_maker(op_type: str) -> GradientMaker | None:
    """The registered maker of ``op_type``, or None."""
    _ensure_loaded()
    entry = _MAKERS.get(op_type)
    return None if entry is None else entry.maker


def gradient_types() -> list[str]:
    """Every op type with a gradient maker, sorted."""
    _ensure_loaded()
    return sorted(_MAKERS)


class GradientContext:
    """Caffe2's GradientMakerBase helpers: I/O/GI/GO names and op construction.

    ``GI(i)`` both names input i's gradient (``<input>_grad``) and records that
    the input gets one; ``set_dense(i, name)`` passes a gradient through.
    """

    def __init__(self, op: pb.OperatorDef, grad_outputs: Sequence[str | None]) -> None:
        self.op = op
        self.grad_outputs = list(grad_outputs)
        self.grad_inputs: list[str | None] = [None] * len(op.input)

    def I(self, i: int) -> str:  # noqa: E743 - Caffe2's spelling
        return str(self.op.input[i])

    def O(self, i: int) -> str:  # noqa: E743 - Caffe2's spelling
        return str(self.op.output[i])

    def GO(self, i: int) -> str:
        """The gradient of output i; raises when nobody provided it."""
        g = self.grad_outputs[i] if i < len(self.grad_outputs) else None
        if not g:
            raise GradientError(
                f"{self.op.type} op '{self.op.name or self.op.output[0]}': the gradient of output {i} "
                f"('{self.op.output[i]}') is needed but not provided"
            )
        return g

    def has_go(self, i: int) -> bool:
        return i < len(self.grad_outputs) and bool(self.grad_outputs[i])

    def GI(self, i: int) -> str:
        name = f"{self.op.input[i]}_grad"
        self.grad_inputs[i] = name
        return name

    def set_dense(self, i: int, name: str) -> None:
        """Input i's gradient is the existing blob ``name`` (no op computes it)."""
        self.grad_inputs[i] = name

    def arg(self, name: str, default: Any = None) -> Any:
        """A forward argument's Python value (``default`` when absent)."""
        from asyncnet.serde import argument_value

        for a in self.op.arg:
            if a.name == name:
                return argument_value(a)
        return default

    def has_arg(self, name: str) -> bool:
        return any(a.name == name for a in self.op.arg)

    @staticmethod
    def op_def(
        op_type: str, inputs: Iterable[str], outputs: Iterable[str], args: dict[str, Any] | None = None
    ) -> pb.OperatorDef:
        """A new OperatorDef (the maker's own arguments come first, as in Caffe2)."""
        d = pb.OperatorDef()
        d.type = op_type
        d.input.extend(inputs)
        d.output.extend(outputs)
        for k, v in (args or {}).items():
            d.arg.append(make_argument(k, v))
        return d

    def spec(self, ops: Sequence[pb.OperatorDef]) -> GradientSpec:
        return GradientSpec(list(ops), list(self.grad_inputs))


def _describe(op: pb.OperatorDef, index: int | None) -> str:
    where = f"op #{index} {op.type}" if index is not None else f"op {op.type}"
    return where + (f" '{op.name}'" if op.name else "")


def gradient_for_op(
    op: pb.OperatorDef, grad_outputs: Sequence[str | None], *, index: int | None = None
) -> GradientSpec:
    """The gradient ops of ``op`` given its output gradient names (Caffe2's GetGradientForOp).

    Arguments, device option and engine are copied as registered; every op is
    marked ``is_gradient_op``.
    """
    _ensure_loaded()
    entry = _MAKERS.get(op.type)
    if entry is None:
        raise GradientError(
            f"{_describe(op, index)}: no gradient is registered for operator type '{op.type}' "
            f"(it reads {list(op.input)}; its outputs {list(op.output)} need gradients)"
        )
    try:
        spec = entry.maker(op, list(grad_outputs))
    except GradientError as e:
        raise GradientError(f"{_describe(op, index)}: {e}") from e
    if len(spec.grad_inputs) != len(op.input):
        raise GradientError(
            f"{_describe(op, index)}: gradient maker returned {len(spec.grad_inputs)} input gradients, "
            f"expected {len(op.input)}"
        )
    for g in spec.ops:
        if entry.copy_device_option and op.HasField("device_option"):
            g.device_option.CopyFrom(op.device_option)
        if entry.copy_engine and op.HasField("engine"):
            # Copied with its presence (even when empty) and gradient defs always carry a name:
            # Caffe2's serialized goldens compare the messages field by field.
            g.engine = op.engine
        if entry.copy_arguments:
            g.arg.extend(op.arg)
        if not g.HasField("name"):
            g.name = ""
        g.is_gradient_op = True
    return spec


# ---------------------------------------------------------------------------
# The backward pass


@dataclass
class _SSA:
    op: pb.OperatorDef
    in_versions: dict[str, int]
    out_versions: dict[str, int]


@dataclass
class _Generator:
    """One contribution to a blob version's gradient: made by grad_op.output[idx], or passed through (op None)."""

    grad_op: pb.OperatorDef | None
    idx: int
    gradient: str


@dataclass
class _IR:
    ssa: list[_SSA] = field(default_factory=list)
    frontier: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    gradient_frontier: dict[str, int] = field(default_factory=dict)
    input_usages: dict[str, dict[int, list[int]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )
    generators: dict[str, dict[int, list[_Generator]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )

    def play(self, op: pb.OperatorDef) -> None:
        in_versions: dict[str, int] = {}
        for s in op.input:
            in_versions[s] = self.frontier[s]
            self.input_usages[s][self.frontier[s]].append(len(self.ssa))
        out_versions: dict[str, int] = {}
        for s in op.output:
            if s in self.frontier:
                self.frontier[s] += 1
            out_versions[s] = self.frontier[s]
        self.ssa.append(_SSA(op, in_versions, out_versions))

    def check_inputs(self, fwd: int, spec: GradientSpec, g_out: Sequence[str | None], where: str) -> None:
        """Gradient ops must read forward blobs at the version the forward op saw (Caffe2's version check)."""
        s = self.ssa[fwd]
        grads = {g for g in g_out if g}
        local: set[str] = set()
        for gop in spec.ops:
            for name in gop.input:
                if name in grads or name in local:
                    continue
                if name in s.out_versions:
                    want, what = s.out_versions[name], "output"
                elif name in s.in_versions:
                    want, what = s.in_versions[name], "input"
                else:
                    continue
                if self.frontier[name] != want:
                    raise GradientError(
                        f"{where}: its gradient op {gop.type} needs {what} '{name}' as this op saw it (version "
                        f"{want}), but a later op overwrites it (last version {self.frontier[name]}); "
                        "write that later op's output to a new blob"
                    )
            local.update(gop.output)

    def check_output_gradients(self, fwd: int, spec: GradientSpec, g_out: Sequence[str | None], where: str) -> None:
        """A gradient op may only read the gradient of the output version this op made (Caffe2's check)."""
        s = self.ssa[fwd]
        read = {name for gop in spec.ops for name in gop.input}
        for name, g in zip(s.op.output, g_out):
            have = self.gradient_frontier.get(name)
            if g and g in read and have is not None and have != s.out_versions[name]:
                raise GradientError(
                    f"{where}: gradient '{g}' is of version {have} of '{name}', but this op makes version "
                    f"{s.out_versions[name]}, which no later op reads"
                )

    def record(self, fwd: int, spec: GradientSpec) -> None:
        """Note which gradient op makes which input gradient (Caffe2's BuildGradientGenerators)."""
        s = self.ssa[fwd]
        local: set[str] = set()
        for gop in spec.ops:
            local.update(gop.output)
            for i, out in enumerate(gop.output):
                for k, g in enumerate(spec.grad_inputs):
                    if g is not None and g == out:
                        name = s.op.input[k]
                        self.generators[name][s.in_versions[name]].append(_Generator(gop, i, g))
                        break
        for k, g in enumerate(spec.grad_inputs):
            if g and g not in local:
                name = s.op.input[k]
                self.generators[name][s.in_versions[name]].append(_Generator(None, 0, g))
        for k, g in enumerate(spec.grad_inputs):
            if g is not None:
                name = s.op.input[k]
                self.gradient_frontier[name] = s.in_versions[name]

    def accumulate(self, fwd: int) -> tuple[list[pb.OperatorDef], dict[str, str]]:
        """Sum ops for inputs of op ``fwd`` read by several ops, when ``fwd`` is their first reader."""
        s = self.ssa[fwd]
        sum_ops: list[pb.OperatorDef] = []
        grad_map: dict[str, str] = {}
        for name in dict.fromkeys(s.op.input):
            version = s.in_versions[name]
            usage = self.input_usages[name][version]
            if len(usage) <= 1 or fwd != usage[0]:
                continue
            gens = self.generators[name][version]
            if len(gens) < 2:
                continue
            out_name = next((g.grad_op.output[g.idx] for g in gens if g.grad_op is not None), f"{name}_grad")
            inputs: list[str] = []
            cnt = 0
            first = True
            for g in gens:
                if g.grad_op is not None:
                    if first:
                        first = False
                        inputs.append(g.grad_op.output[g.idx])
                    else:
                        renamed = f"_{g.grad_op.output[g.idx]}_autosplit_{cnt}"
                        _rename_output(g.grad_op, g.idx, renamed)
                        cnt += 1
                        inputs.append(renamed)
                else:
                    if g.gradient == out_name:
                        raise GradientError(
                            f"gradient of '{name}' is passed through as '{g.gradient}', which is also the name "
                            "its accumulated gradient needs"
                        )
                    inputs.append(g.gradient)
            if out_name in inputs:
                # Sum may only run in place on its first input.
                j = inputs.index(out_name)
                inputs[0], inputs[j] = inputs[j], inputs[0]
            sum_op = GradientContext.op_def("Sum", inputs, [out_name])
            sum_op.is_gradient_op = True
            for g in gens:
                if g.grad_op is not None and g.grad_op.HasField("device_option"):
                    sum_op.device_option.CopyFrom(g.grad_op.device_option)
                    break
            sum_ops.append(sum_op)
            grad_map[name] = out_name
        return sum_ops, grad_map


def add_gradient_ops(
    net_def: pb.NetDef, losses: Sequence[str], *, skip: int = 0, given: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Append the backward pass of ``net_def`` for ``losses`` to it, in place.

    Each loss is seeded with ``ConstantFill(loss) -> <loss>_autogen_grad`` (value
    1.0, shaped like the loss), as Caffe2's ``AddGradientOperators`` does, unless
    ``given`` names its gradient blob (then that blob is read and nothing is
    seeded). Ops whose outputs get no gradient are skipped; an op whose outputs
    do get one but that has no registered gradient raises :class:`GradientError`
    naming it.

    Args:
        net_def: the forward net; gradient ops are appended to ``net_def.op``.
        losses: the blobs to differentiate (usually one scalar loss).
        skip: leave the first ``skip`` ops (e.g. data loading) out of the pass.
        given: loss -> the blob already holding its gradient (Caffe2's dict form).

    Returns:
        blob name -> its gradient blob name, for every blob that got a gradient.
    """
    if not losses:
        raise GradientError(f"net '{net_def.name}': add_gradient_ops needs at least one loss blob")
    fwd_ops = list(net_def.op)[skip:]
    produced = {o for op in fwd_ops for o in op.output}
    for y in losses:
        if y not in produced:
            raise GradientError(f"net '{net_def.name}': loss blob '{y}' is produced by no operator of the net")
    given = dict(given or {})
    seeds: dict[str, str | pb.OperatorDef] = {}
    for y in dict.fromkeys(losses):
        if y in given:
            seeds[y] = given[y]
        else:
            seed = GradientContext.op_def("ConstantFill", [y], [f"{y}_autogen_grad"], {"value": 1.0})
            seed.is_gradient_op = True
            seeds[y] = seed
    new_ops, grads = _backward(fwd_ops, seeds, skip)
    net_def.op.extend(new_ops)
    return grads


def backward_pass(
    ops: Sequence[pb.OperatorDef], initial_grads: Mapping[str, str]
) -> tuple[list[pb.OperatorDef], dict[str, str]]:
    """The gradient ops of ``ops`` given the gradient blob of some of their outputs (Caffe2's IR.GetBackwardPass).

    Nothing is seeded: ``initial_grads`` maps each differentiated blob to the blob
    already holding its gradient. Control-flow gradients build their sub-nets with it.

    Returns:
        (gradient ops in run order, blob name -> gradient blob name incl. the initial ones)
    """
    if not initial_grads:
        raise GradientError("backward_pass needs at least one initial gradient")
    return _backward(list(ops), dict(initial_grads), 0)


def _backward(
    fwd_ops: list[pb.OperatorDef], seeds: Mapping[str, str | pb.OperatorDef], skip: int
) -> tuple[list[pb.OperatorDef], dict[str, str]]:
    ir = _IR()
    for op in fwd_ops:
        ir.play(op)
    all_grads: dict[str, str | None] = {}
    new_ops: list[pb.OperatorDef] = []
    for y, seed in seeds.items():
        ir.gradient_frontier[y] = ir.frontier[y]
        ir.input_usages[y][ir.frontier[y]].append(len(ir.ssa))
        if isinstance(seed, pb.OperatorDef):
            new_ops.append(seed)
            all_grads[y] = seed.output[0]
            ir.generators[y][ir.frontier[y]].append(_Generator(seed, 0, seed.output[0]))
        else:
            all_grads[y] = seed
            ir.generators[y][ir.frontier[y]].append(_Generator(None, 0, seed))

    for fwd in reversed(range(len(ir.ssa))):
        s = ir.ssa[fwd]
        g_out = [all_grads.get(name) for name in s.op.output]
        if any(g is not None for g in g_out):
            spec = gradient_for_op(s.op, g_out, index=fwd + skip)
            ir.check_output_gradients(fwd, spec, g_out, _describe(s.op, fwd + skip))
            ir.check_inputs(fwd, spec, g_out, _describe(s.op, fwd + skip))
            ir.record(fwd, spec)
            updates: dict[str, str | None] = {}
            for name, g in zip(s.op.input, spec.grad_inputs):
                # Keep an existing gradient unless this op produced a new version of the blob.
                if g is not None or name not in all_grads or name in s.op.output:
                    updates[name] = g
            all_grads.update(updates)
            new_ops.extend(spec.ops)
        sum_ops, grad_map = ir.accumulate(fwd)
        all_grads.update(grad_map)
        new_ops.extend(sum_ops)

    return new_ops, {k: v for k, v in all_grads.items() if v is not None}
