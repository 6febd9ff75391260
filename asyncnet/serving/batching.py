"""Dynamic batching: concurrent requests of the same per-item shape run as one batch.

Only for nets whose every operator is batch-independent (row ``i`` of each output depends only
on row ``i`` of the inputs), decided from the op types and their arguments; anything not known
to be is refused with the list of offending ops. Off by default.

There is no batching thread: the first request of a batch leads it — it waits up to
``max_delay_ms`` (or until ``max_batch`` rows have joined), runs the stacked inputs once and
hands each request its rows. Several batches may run at once, each on its own child workspace.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from asyncnet.errors import DeadlineError, ServingError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import arguments_to_dict

# Per-sample ops: every output row is computed from the same input row only.
_ROWWISE = frozenset(
    """Relu Sigmoid Tanh Exp Log Sqrt Abs Negative Sign Floor Ceil Elu LeakyRelu Selu Softplus Softsign Swish
    HardSigmoid Clip Scale Copy Alias Identity StopGradient Cast PRelu Erf Pow Sqr Relu6 Mish
    Conv ConvRelu ConvTranspose Conv1D Conv2D Conv3D MaxPool AveragePool MaxPool1D MaxPool2D MaxPool3D AveragePool1D
    AveragePool2D AveragePool3D LpPool LRN ChannelShuffle InstanceNorm ResizeNearest Upsample
    AsyncNetBarrier""".split()
)
# Ops that are per-sample unless their `axis` argument is the batch axis (0).
_AXIS_OPS: dict[str, int] = {
    "FC": 1,
    "FCRelu": 1,
    "SumRelu": 1,
    "FCTransposed": 1,
    "Softmax": 1,
    "Concat": 1,
    "Split": 1,
    "Flatten": 1,
    "LayerNorm": 1,
    "Add": -1,
    "Sub": -1,
    "Mul": -1,
    "Div": -1,
    "Sum": 1,
    "Max": 1,
    "Min": 1,
}
# Ops that are per-sample only in test mode (training mode uses batch statistics or draws masks).
_TEST_MODE_OPS = frozenset({"Dropout", "SpatialBN"})


def _blocker(op: pb.OperatorDef, extra: frozenset[str]) -> str | None:
    """Why ``op`` is not known to be batch-independent, or None when it is."""
    label = f"{op.type} '{op.name or (op.output[0] if op.output else '?')}'"
    if op.type in _ROWWISE or op.type in extra:
        return None
    args = arguments_to_dict(op.arg, owner=label)
    if op.type in _AXIS_OPS:
        axis = args.get("axis", _AXIS_OPS[op.type])
        if op.type == "Concat" and "order" in args and "axis" not in args:
            return None
        return None if axis != 0 else f"{label} works along axis 0 (the batch)"
    if op.type in _TEST_MODE_OPS:
        return None if args.get("is_test", 0) else f"{label} is not in test mode (is_test=0)"
    if op.type == "Reshape":
        shape = args.get("shape")
        ok = isinstance(shape, list) and len(shape) > 0 and shape[0] == 0
        return None if ok else f"{label} does not keep the batch dimension (shape[0] must be 0)"
    if op.type == "Transpose":
        axes = args.get("axes")
        ok = isinstance(axes, list) and len(axes) > 0 and axes[0] == 0
        return None if ok else f"{label} moves the batch dimension"
    if op.type in ("Squeeze", "ExpandDims"):
        dims = args.get("dims", [])
        return None if isinstance(dims, list) and 0 not in dims else f"{label} changes dimension 0"
    return f"{label} (op type not known to be batch-independent)"


def batch_blockers(net: pb.NetDef, extra_ops: Iterable[str] = ()) -> list[str]:
    """Ops of ``net`` that stop it from being batched (empty: every op is batch-independent).

    ``extra_ops`` are further op types the caller vouches for (custom row-wise ops).
    """
    extra = frozenset(extra_ops)
    out: list[str] = []
    for op in net.op:
        why = _blocker(op, extra)
        if why is not None:
            out.append(why)
    return out


@dataclass(frozen=True)
class BatchingOptions:
    """Dynamic batching of one model.

    Attributes:
        max_batch: most rows (summed first dimensions) in one batch.
        max_delay_ms: longest a request waits for others to join its batch.
        enabled: False turns batching off (the default for a model is no options at all).
        extra_ops: op types (custom ones) the caller vouches are batch-independent.
    """

    max_batch: int = 8
    max_delay_ms: float = 2.0
    enabled: bool = True
    extra_ops: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ServingError(f"batching max_batch must be at least 1, got {self.max_batch}")
        if self.max_delay_ms < 0:
            raise ServingError(f"batching max_delay_ms must be >= 0, got {self.max_delay_ms}")


RunFn = Callable[[Mapping[str, np.ndarray], Sequence[str] | None, float | None], dict[str, np.ndarray]]


class _Batch:
    def __init__(self, key: tuple[Any, ...]) -> None:
        self.key = key
        self.items: list[tuple[dict[str, np.ndarray], int]] = []
        self.rows = 0
        self.full = threading.Event()
        self.done = threading.Event()
        self.results: list[dict[str, np.ndarray]] = []
        self.error: BaseException | None = None


class Batcher:
    """Groups concurrent requests with the same per-item shapes and dtypes into batches."""

    def __init__(self, run: RunFn, options: BatchingOptions, model: str) -> None:
        self._run = run
        self.options = options
        self.model = model
        self._lock = threading.Lock()
        self._open: dict[tuple[Any, ...], _Batch] = {}
        self.batches_run = 0
        self.rows_run = 0

    @staticmethod
    def _key(arrays: Mapping[str, np.ndarray]) -> tuple[Any, ...] | None:
        rows = {a.shape[0] if a.ndim else -1 for a in arrays.values()}
        if len(rows) != 1 or -1 in rows:
            return None
        return tuple((n, a.dtype.str, a.shape[1:]) for n, a in sorted(arrays.items()))

    def submit(self, arrays: Mapping[str, np.ndarray], deadline: float | None) -> dict[str, np.ndarray]:
        """Run ``arrays`` as part of a batch and return this request's rows of every output."""
        key = self._key(arrays)
        n = next(iter(arrays.values())).shape[0] if arrays else 0
        if key is None or n >= self.options.max_batch:
            return self._run(arrays, None, deadline)
        item = (dict(arrays), n)
        with self._lock:
            batch = self._open.get(key)
            if batch is not None and batch.rows + n <= self.options.max_batch:
                index = len(batch.items)
                batch.items.append(item)
                batch.rows += n
                if batch.rows >= self.options.max_batch:
                    del self._open[key]
                    batch.full.set()
                leader = False
            else:
                batch = _Batch(key)
                batch.items.append(item)
                batch.rows = n
                index = 0
                self._open[key] = batch
                leader = True
        if leader:
            self._lead(batch, deadline)
        else:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not batch.done.wait(remaining):
                raise DeadlineError(f"model '{self.model}': deadline passed while its batch was running")
        if batch.error is not None:
            raise batch.error
        return batch.results[index]

    def _lead(self, batch: _Batch, deadline: float | None) -> None:
        wait = self.options.max_delay_ms / 1000.0
        if deadline is not None:
            wait = min(wait, max(0.0, deadline - time.monotonic()))
        batch.full.wait(wait)
        with self._lock:
            if self._open.get(batch.key) is batch:
                del self._open[batch.key]
        try:
            names = list(batch.items[0][0])
            stacked = {k: np.concatenate([it[0][k] for it in batch.items], axis=0) for k in names}
            out = self._run(stacked, None, deadline)
            bounds = np.cumsum([0] + [rows for _, rows in batch.items])
            for name, value in out.items():
                if not isinstance(value, np.ndarray) or value.ndim == 0 or value.shape[0] != batch.rows:
                    shape = list(getattr(value, "shape", []))
                    raise ServingError(
                        f"model '{self.model}': output '{name}' has shape {shape} for a batch of {batch.rows} rows; "
                        "the net is not batch-independent (turn batching off)"
                    )
            batch.results = [{k: v[bounds[i] : bounds[i + 1]] for k, v in out.items()} for i in range(len(batch.items))]
            self.batches_run += 1
            self.rows_run += batch.rows
        except BaseException as e:
            batch.error = e
        finally:
            batch.done.set()

    def close(self) -> None:
        """Nothing to stop (no thread of its own); open batches finish with their leaders."""
