"""What a layer translator sees (``LayerCtx``) and returns (``Emitted``), plus the registry."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from asyncnet.errors import TensorError, UnsupportedError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.proto import caffe_pb2 as cpb
from asyncnet.serde import make_argument

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Filler:
    """How to generate a parameter when no caffemodel provides it (a Caffe2 fill op)."""

    op_type: str
    args: tuple[tuple[str, Any], ...] = ()


ZEROS = Filler("ConstantFill", (("value", 0.0),))
ONES = Filler("ConstantFill", (("value", 1.0),))
XAVIER = Filler("XavierFill")


def filler_of(fp: cpb.FillerParameter | None, default: Filler) -> Filler:
    """The Caffe2 fill op for a Caffe ``FillerParameter`` (``default`` when unset/unknown)."""
    if fp is None or not fp.ListFields():
        return default
    kind = fp.type
    if kind == "constant":
        return Filler("ConstantFill", (("value", float(fp.value)),))
    if kind == "gaussian":
        return Filler("GaussianFill", (("mean", float(fp.mean)), ("std", float(fp.std))))
    if kind == "uniform":
        return Filler("UniformFill", (("min", float(fp.min)), ("max", float(fp.max))))
    if kind == "xavier":
        return XAVIER
    if kind == "msra":
        return Filler("MSRAFill")
    return default


@dataclass
class Param:
    """One learned (or derived) tensor of the translated net."""

    name: str
    shape: Shape
    value: np.ndarray | None = None
    filler: Filler = ZEROS


@dataclass
class Emitted:
    """A translator's result: Caffe2 ops, parameters, and the shape of each top."""

    ops: list[pb.OperatorDef] = field(default_factory=list)
    params: list[Param] = field(default_factory=list)
    shapes: list[Shape] = field(default_factory=list)


class Names:
    """Hands out parameter/intermediate blob names that clash with nothing already used."""

    def __init__(self, taken: Sequence[str] = ()) -> None:
        self.taken: set[str] = set(taken)

    def fresh(self, *candidates: str) -> str:
        for c in candidates:
            if c not in self.taken:
                self.taken.add(c)
                return c
        base = candidates[-1]
        i = 1
        while f"{base}_{i}" in self.taken:
            i += 1
        self.taken.add(f"{base}_{i}")
        return f"{base}_{i}"


@dataclass
class LayerCtx:
    """One Caffe layer being translated, with its input shapes and pretrained blobs."""

    layer: cpb.LayerParameter
    index: int
    where: str
    in_shapes: list[Shape]
    blobs: list[np.ndarray]
    names: Names
    emitted: Emitted = field(default_factory=Emitted)
    remove_legacy_pad: bool = False

    @property
    def label(self) -> str:
        return f"layer '{self.layer.name}' (type {self.layer.type}) at {self.where}"

    def unsupported(self, why: str) -> UnsupportedError:
        return UnsupportedError(f"{self.label}: {why}")

    def need_bottoms(self, lo: int, hi: int | None = None) -> None:
        n = len(self.layer.bottom)
        hi = lo if hi is None else hi
        if n < lo or (hi >= 0 and n > hi):
            want = str(lo) if lo == hi else (f"at least {lo}" if hi < 0 else f"{lo} to {hi}")
            raise self.unsupported(f"expects {want} bottom blob(s), found {n}")

    def need_tops(self, k: int) -> None:
        if len(self.layer.top) != k:
            raise self.unsupported(f"expects {k} top blob(s), found {len(self.layer.top)}")

    def op(self, op_type: str, inputs: Sequence[str], outputs: Sequence[str], **args: Any) -> pb.OperatorDef:
        """Append a Caffe2 op (named after the layer; debug_info says where it came from)."""
        o = pb.OperatorDef(type=op_type, name=self.layer.name)
        o.input.extend(inputs)
        o.output.extend(outputs)
        for k, v in args.items():
            if v is not None:
                o.arg.append(make_argument(k, v))
        o.debug_info = self.label
        self.emitted.ops.append(o)
        return o

    def pretrained(self, i: int, shape: Shape) -> np.ndarray | None:
        """Pretrained blob ``i`` reshaped to ``shape``; None without a caffemodel entry."""
        if i >= len(self.blobs):
            return None
        blob = self.blobs[i]
        if blob.size != math.prod(shape):
            raise TensorError(
                f"{self.label}: caffemodel blob {i} has shape {list(blob.shape)} ({blob.size} values) "
                f"but the prototxt implies {list(shape)} ({math.prod(shape)} values)"
            )
        return np.ascontiguousarray(blob.reshape(shape), dtype=np.float32)

    def param(
        self, suffix: str, shape: Shape, value: np.ndarray | None = None, filler: Filler = ZEROS, top: str = ""
    ) -> str:
        """Add a parameter named ``<top>_<suffix>`` (or a clash-free variant); return its name."""
        base = top or self.layer.top[0]
        name = self.names.fresh(f"{base}_{suffix}", f"{self.layer.name}_{suffix}")
        self.emitted.params.append(Param(name, tuple(int(d) for d in shape), value, filler))
        return name

    def temp(self, suffix: str) -> str:
        """A fresh intermediate blob name."""
        return self.names.fresh(f"{self.layer.top[0]}_{suffix}")

    def done(self, *shapes: Shape) -> Emitted:
        self.emitted.shapes = [tuple(int(d) for d in s) for s in shapes]
        return self.emitted


Translator = Callable[[LayerCtx], Emitted]
TRANSLATORS: dict[str, Translator] = {}


def translator(*layer_types: str) -> Callable[[Translator], Translator]:
    """Register a translator for one or more Caffe layer types."""

    def deco(fn: Translator) -> Translator:
        for t in layer_types:
            TRANSLATORS[t] = fn
        return fn

    return deco


def canonical_axis(ctx: LayerCtx, axis: int, ndim: int, what: str = "axis") -> int:
    if not -ndim <= axis < ndim:
        raise ctx.unsupported(f"{what} {axis} is out of range for a {ndim}-D input")
    return axis % ndim
