"""Operator schemas: arity, in-place rules, arguments with defaults, doc, shape inference."""

from __future__ import annotations

import sys
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from asyncnet.errors import SchemaError, did_you_mean

if TYPE_CHECKING:
    from asyncnet.opinfo import OpInfo

INF = sys.maxsize


class _Required:
    def __repr__(self) -> str:
        return "<required>"


REQUIRED: Any = _Required()


@dataclass(frozen=True)
class Arg:
    """One operator argument: its name, default (or REQUIRED) and a line of doc."""

    name: str
    default: Any = None
    doc: str = ""


Shape = tuple[int | None, ...]


@dataclass(frozen=True)
class TensorInfo:
    """What shape inference knows about a blob: shape (None = unknown rank) and dtype."""

    shape: Shape | None = None
    dtype: np.dtype[Any] | None = None

    @property
    def known(self) -> bool:
        """True when the rank and every dimension are known."""
        return self.shape is not None and all(d is not None for d in self.shape)

    def with_shape(self, shape: Sequence[int | None] | None) -> TensorInfo:
        return TensorInfo(None if shape is None else tuple(shape), self.dtype)

    def with_dtype(self, dtype: Any) -> TensorInfo:
        return TensorInfo(self.shape, None if dtype is None else np.dtype(dtype))

    def __str__(self) -> str:
        shape = "?" if self.shape is None else "(" + ", ".join("?" if d is None else str(d) for d in self.shape) + ")"
        return f"{shape} {self.dtype if self.dtype is not None else '?'}"


UNKNOWN = TensorInfo()

InferFn = Callable[["OpInfo", list[TensorInfo]], list[TensorInfo]]
ArityFn = Callable[[int, int], bool]


def _pairs(v: bool | Collection[tuple[int, int]] | Callable[[int, int], bool]) -> Callable[[int, int], bool]:
    if callable(v):
        return v
    if v is True:
        return lambda i, o: True
    if v is False:
        return lambda i, o: False
    allowed = frozenset(v)
    return lambda i, o: (i, o) in allowed


@dataclass
class OpSchema:
    """Static description of an operator type.

    Attributes:
        type: Caffe2 op type name.
        inputs / outputs: inclusive (min, max) counts; ``INF`` for unbounded.
        allow_inplace: which (input index, output index) pairs may share a blob
            name: True (any), a set of pairs, or a predicate.
        enforce_inplace: pairs that must share a blob name.
        args: the arguments the op understands.
        arity: an extra predicate on (n_inputs, n_outputs), e.g. "as many outputs as inputs".
        infer: shape/dtype inference from the input infos.
        doc / input_names / output_names: documentation.
        allow_unknown_args: accept any argument name (ops forwarding arguments).
    """

    type: str
    inputs: tuple[int, int] = (1, 1)
    outputs: tuple[int, int] = (1, 1)
    allow_inplace: bool | Collection[tuple[int, int]] | Callable[[int, int], bool] = False
    enforce_inplace: Collection[tuple[int, int]] = ()
    args: Sequence[Arg] = ()
    arity: ArityFn | None = None
    arity_doc: str = ""
    infer: InferFn | None = None
    doc: str = ""
    input_names: Sequence[str] = ()
    output_names: Sequence[str] = ()
    allow_unknown_args: bool = False
    _inplace_ok: Callable[[int, int], bool] = field(init=False, repr=False)
    _args: dict[str, Arg] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._inplace_ok = _pairs(self.allow_inplace)
        self._args = {a.name: a for a in self.args}
        if len(self._args) != len(self.args):
            raise SchemaError(f"schema {self.type}: duplicate argument names")

    @property
    def arg_map(self) -> dict[str, Arg]:
        """Argument name -> Arg."""
        return self._args

    def arg_default(self, name: str) -> Any:
        a = self._args.get(name)
        return None if a is None else a.default

    def inplace_allowed(self, i: int, o: int) -> bool:
        """Whether input ``i`` and output ``o`` may name the same blob."""
        return (i, o) in self.enforce_inplace or self._inplace_ok(i, o)

    @staticmethod
    def _range(r: tuple[int, int]) -> str:
        lo, hi = r
        if lo == hi:
            return str(lo)
        return f"{lo} or more" if hi >= INF else f"{lo} to {hi}"

    def check_arity(self, n_in: int, n_out: int) -> str | None:
        """A message when the counts break the schema, else None."""
        lo, hi = self.inputs
        if not lo <= n_in <= hi:
            return f"takes {self._range(self.inputs)} input(s), got {n_in}"
        lo, hi = self.outputs
        if not lo <= n_out <= hi:
            return f"produces {self._range(self.outputs)} output(s), got {n_out}"
        if self.arity is not None and not self.arity(n_in, n_out):
            return f"cannot take {n_in} input(s) with {n_out} output(s)" + (
                f": {self.arity_doc}" if self.arity_doc else ""
            )
        return None

    def check_inplace(self, inputs: Sequence[str], outputs: Sequence[str]) -> str | None:
        """A message when an input/output name pair breaks the in-place rules, else None."""
        for i, o in self.enforce_inplace:
            if i < len(inputs) and o < len(outputs) and inputs[i] != outputs[o]:
                return f"must run in place: output {o} ('{outputs[o]}') must be input {i} ('{inputs[i]}')"
        for o, out in enumerate(outputs):
            for i, inp in enumerate(inputs):
                if inp == out and not self.inplace_allowed(i, o):
                    return f"cannot write input {i} ('{inp}') in place as output {o}"
        return None

    def check_args(self, names: Collection[str]) -> str | None:
        """A message naming arguments the schema does not know, else None."""
        if self.allow_unknown_args:
            return None
        for n in names:
            if n not in self._args:
                known = ", ".join(sorted(self._args)) or "none"
                return f"has no argument '{n}'{did_you_mean(n, self._args)}; known: {known}"
        return None


# ---------------------------------------------------------------------------
# Reusable inference functions


def same_as_input(index: int = 0, n_outputs: int = 1) -> InferFn:
    """Every output has the shape and dtype of input ``index``."""

    def infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
        return [ins[index]] * max(n_outputs, len(op.outputs))

    return infer


def with_dtype(dtype: Any, base: InferFn) -> InferFn:
    """Wrap ``base`` so that every output gets ``dtype``."""

    def infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
        return [t.with_dtype(dtype) for t in base(op, ins)]

    return infer


def broadcast_shapes(a: Shape | None, b: Shape | None) -> Shape | None:
    """numpy broadcasting of two partially known shapes (None = unknown)."""
    if a is None or b is None:
        return None
    n = max(len(a), len(b))
    a2 = (1,) * (n - len(a)) + tuple(a)
    b2 = (1,) * (n - len(b)) + tuple(b)
    out: list[int | None] = []
    for x, y in zip(a2, b2):
        if x == 1:
            out.append(y)
        elif y == 1 or x == y:
            out.append(x)
        elif x is None or y is None:
            out.append(x if y is None else y)
        else:
            raise SchemaError(f"shapes {a} and {b} do not broadcast")
    return tuple(out)
