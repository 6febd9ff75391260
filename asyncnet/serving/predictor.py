"""Predictor: one set of parameters, many concurrent predictions (Caffe2's Predictor shape).

The init net runs once in a parent workspace; every in-flight request borrows a child workspace
from a pool, each with the predict net prepared once. Children see the parameters through their
parent (the same arrays, never copied) and keep request inputs and every blob the net writes to
themselves, so concurrent requests never share a mutable blob and never hit a "net is already
running" refusal.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from asyncnet.errors import DeadlineError, InputError, NetDefinitionError, RunTimeoutError, ServingError
from asyncnet.executors import ExecutorOptions
from asyncnet.iopolicy import IOPolicy
from asyncnet.net import Net, net_inputs
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serving.batching import Batcher, BatchingOptions, batch_blockers
from asyncnet.serving.model import ModelFiles, TensorSpec, check_value_info
from asyncnet.workspace import Workspace

log = logging.getLogger(__name__)

# A hook for inference rewrites (e.g. asyncnet.transforms, when present): (init_net, predict_net)
# -> (init_net, predict_net), applied once before anything is prepared.
Rewrite = Callable[[pb.NetDef | None, pb.NetDef], tuple[pb.NetDef | None, pb.NetDef]]

Outputs = dict[str, np.ndarray] | list[np.ndarray]


class _Child:
    __slots__ = ("net", "workspace")

    def __init__(self, workspace: Workspace, net: Net) -> None:
        self.workspace = workspace
        self.net = net


class Predictor:
    """Run a predict net on parameters loaded once, from many threads at once.

    Args:
        init_net: run once in the shared parent workspace (parameters); None when
            ``parameters`` or a parent already hold them.
        predict_net: run for every request, in a child workspace of its own.
        name: the model's name (shown in messages; default: the predict net's name).
        value_info: input specs (dtype, shape); the zoo's ``value_info.json``.
        parameters: arrays fed into the parent before the init net runs.
        executor: executor name overriding ``predict_net.type``.
        options: executor options of the predict net (threads, pools).
        max_concurrency: most requests computed at once (children in the pool); more wait.
            Default: the usable CPUs.
        io_policy: files the nets may read and write; default: reads anywhere, writes nowhere
            (a served model must not write files unless the caller allows it).
        batching: dynamic batching options (off by default).
        rewrite: a custom rewrite applied to the nets before anything is prepared.
        optimize: rewrite the predict net for inference once the parameters are loaded
            (:func:`asyncnet.transforms.optimize_for_inference`: fold BN/affine into Conv/FC, fuse
            Relu, drop identities); the new parameters go into the parent workspace.
        input_names: the request inputs (default: value_info's names plus every net input the
            parameters do not provide); names the init net filled (placeholders) stay per request.

    Example:
        >>> p = Predictor.from_dir("squeezenet")
        >>> out = p.predict({"data": x})["prob"]
    """

    def __init__(
        self,
        init_net: pb.NetDef | None,
        predict_net: pb.NetDef,
        *,
        name: str = "",
        value_info: Mapping[str, TensorSpec] | None = None,
        parameters: Mapping[str, Any] | None = None,
        executor: str | None = None,
        options: ExecutorOptions | None = None,
        max_concurrency: int | None = None,
        io_policy: IOPolicy | None = None,
        batching: BatchingOptions | None = None,
        rewrite: Rewrite | None = None,
        input_names: Sequence[str] | None = None,
        optimize: bool = False,
    ) -> None:
        from asyncnet.executors.pools import default_threads

        if rewrite is not None:
            init_net, predict_net = rewrite(init_net, predict_net)
        self.predict_net = pb.NetDef()
        self.predict_net.CopyFrom(predict_net)
        self.name = name or predict_net.name or "model"
        self._executor = executor
        self._options = options
        self.max_concurrency = max_concurrency if max_concurrency is not None else default_threads()
        if self.max_concurrency < 1:
            raise ServingError(f"model '{self.name}': max_concurrency must be at least 1, got {self.max_concurrency}")
        policy = io_policy or IOPolicy(read_roots=None, write_roots=(), hint="allow writes explicitly (--allow-write)")
        self.parent = Workspace(f"{self.name}/params", io_policy=policy)
        for k, v in (parameters or {}).items():
            self.parent.feed(k, v)
        if init_net is not None:
            self.parent.run_net_once(init_net)

        accepted = net_inputs(self.predict_net)
        self.value_info = dict(value_info or {})
        check_value_info(self.value_info, accepted, self.predict_net.name)
        # Data inputs: what the parameters do not provide, plus whatever value_info declares
        # (zoo init nets often fill a placeholder for "data"; requests must still give it).
        if input_names is not None:
            bad = [n for n in input_names if n not in accepted]
            if bad:
                raise NetDefinitionError(
                    f"model '{self.name}': input_names {bad} are not inputs of net '{self.predict_net.name}'; "
                    f"its inputs: {', '.join(accepted) or 'none'}"
                )
            self.input_names = list(dict.fromkeys([*input_names, *self.value_info]))
        else:
            self.input_names = [n for n in accepted if n in self.value_info or not self.parent.has(n)]
            unprovided = [n for n in self.input_names if n not in self.value_info]
            if self.value_info and unprovided:
                shown = ", ".join(unprovided[:8]) + (" ..." if len(unprovided) > 8 else "")
                raise NetDefinitionError(
                    f"model '{self.name}': net '{self.predict_net.name}' reads {len(unprovided)} blob(s) that neither "
                    f"the parameters (init net) nor value_info provide: {shown}"
                    + ("" if init_net is not None else "; there is no init net (init_net.pb)")
                )
        self.optimize_report: list[str] = []
        if optimize:
            self._optimize()
        written = {o for op in self.predict_net.op for o in op.output}
        self._check_no_parameter_writes(written)
        self._private = frozenset(self.input_names) | written
        outs = list(self.predict_net.external_output)
        if not outs and self.predict_net.op:
            outs = list(self.predict_net.op[-1].output)
        self.output_names = outs

        self.blockers = batch_blockers(self.predict_net, batching.extra_ops if batching is not None else ())
        self.batch_independent = not self.blockers
        self.input_specs = {n: self._spec(n) for n in self.input_names}
        self.output_specs = self._infer_outputs()

        self.batching = batching
        self._batcher: Batcher | None = None
        if batching is not None and batching.enabled:
            if self.blockers:
                raise ServingError(
                    f"model '{self.name}': dynamic batching needs batch-independent ops; "
                    f"not known to be: {'; '.join(self.blockers)}"
                )
            self._batcher = Batcher(self._run_arrays, batching, self.name)

        self._lock = threading.Condition()
        self._free: list[_Child] = []
        self._all: list[_Child] = []
        self._creating = 0
        self._closed = False
        # Prepare one child now: a net that cannot be prepared (unknown op, refused file path)
        # fails here, at load time, not on the first request.
        first = self._new_child()
        self._all.append(first)
        self._free.append(first)

    @classmethod
    def from_dir(cls, folder: str | Path, *, name: str | None = None, **kwargs: Any) -> Predictor:
        """A Predictor from a model directory (init_net.pb, predict_net.pb, value_info.json)."""
        files = ModelFiles.read(folder, name)
        if "io_policy" not in kwargs:
            kwargs["io_policy"] = IOPolicy.restricted(
                read=[files.folder], write=[], hint="allow writes explicitly (--allow-write DIR)"
            )
        return cls(files.init_net, files.predict_net, name=files.name, value_info=files.value_info, **kwargs)

    # -- specs -----------------------------------------------------------------------------

    def _spec(self, name: str) -> TensorSpec:
        spec = self.value_info.get(name)
        if spec is None or spec.shape is None or not spec.shape:
            return spec or TensorSpec(name)
        # The first dimension is the batch: free when every op is batch-independent.
        if self.batch_independent:
            return TensorSpec(name, spec.dtype, (None, *spec.shape[1:]))
        return spec

    def _optimize(self) -> None:
        from asyncnet.transforms import optimize_for_inference

        result = optimize_for_inference(self.predict_net, workspace=self.parent, data_inputs=self.input_names)
        result.apply(self.parent)
        self.predict_net = result.predict_net
        self.optimize_report = result.summary_lines()
        log.info("model '%s': %s", self.name, self.optimize_report[0] if self.optimize_report else "no rewrites")

    def _infer_outputs(self) -> dict[str, TensorSpec]:
        """Output dtypes and shapes by shape inference from the input specs (unknown where it stops)."""
        from asyncnet.errors import AsyncNetError
        from asyncnet.schema import TensorInfo
        from asyncnet.shapes import infer_shapes, infos_of

        unknown = {n: TensorSpec(n) for n in self.output_names}
        if any(s.shape is None for s in self.input_specs.values()):
            return unknown
        params = infos_of({n: self.parent.fetch(n) for n in self.parent.blobs() if n not in self.input_specs})
        inputs = {n: TensorInfo(s.shape, s.dtype) for n, s in self.input_specs.items()}
        try:
            blobs = infer_shapes(self.predict_net, {**params, **inputs}).blobs
        except AsyncNetError as e:
            log.info("model '%s': output shapes unknown (%s)", self.name, e)
            return unknown
        out: dict[str, TensorSpec] = {}
        for n in self.output_names:
            info = blobs.get(n)
            shape = None if info is None or info.shape is None else tuple(info.shape)
            out[n] = TensorSpec(n, None if info is None else info.dtype, shape)
        return out

    def _check_no_parameter_writes(self, written: set[str]) -> None:
        done: set[str] = set()
        for op in self.predict_net.op:
            for n in op.input:
                if n in written and n not in done and self.parent.has(n):
                    raise NetDefinitionError(
                        f"model '{self.name}': operator {op.type} ('{op.name or n}') overwrites parameter '{n}' "
                        f"that it reads; served parameters are shared read-only between requests"
                    )
            done.update(op.output)

    @property
    def batching_enabled(self) -> bool:
        """Whether requests are dynamically batched."""
        return self._batcher is not None

    def describe_inputs(self) -> str:
        return ", ".join(self.input_specs[n].describe() for n in self.input_names) or "none"

    # -- children --------------------------------------------------------------------------

    def _new_child(self) -> _Child:
        ws = Workspace(f"{self.name}/request", parent=self.parent, private=self._private)
        net = ws.create_net(self.predict_net, executor=self._executor, options=self._options)
        return _Child(ws, net)

    def _acquire(self, deadline: float | None) -> _Child:
        with self._lock:
            while True:
                if self._closed:
                    raise ServingError(f"model '{self.name}': the predictor is closed")
                if self._free:
                    return self._free.pop()
                if len(self._all) + self._creating < self.max_concurrency:
                    self._creating += 1
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise DeadlineError(
                        f"model '{self.name}': deadline passed while waiting for a free slot "
                        f"({self.max_concurrency} request(s) computing); not computed"
                    )
                self._lock.wait(remaining)
        try:
            child = self._new_child()
        except BaseException:
            with self._lock:
                self._creating -= 1
                self._lock.notify()
            raise
        with self._lock:
            self._creating -= 1
            self._all.append(child)
        return child

    def _release(self, child: _Child) -> None:
        ws = child.workspace
        # Drop the request's inputs and outputs: the caller owns its outputs, and no request's data
        # outlives it. Intermediates stay (they are replaced by the next run): freeing them
        # returns the memory to the OS and the next run pays the page faults again (~40% slower).
        for n in (*self.input_names, *self.output_names):
            if n in ws.private and ws.has(n):
                ws.remove(n)
        with self._lock:
            if self._closed:
                child.net.close()
                return
            self._free.append(child)
            self._lock.notify()

    # -- predicting ------------------------------------------------------------------------

    def check_inputs(self, inputs: Mapping[str, Any] | Sequence[Any]) -> dict[str, np.ndarray]:
        """Validate request inputs against the model; return them as arrays by name.

        Raises:
            InputError: unknown or missing names, wrong dtype or shape (the message lists what
                the model accepts).
        """
        if isinstance(inputs, Mapping):
            given = dict(inputs)
        else:
            seq = list(inputs)
            if len(seq) != len(self.input_names):
                raise InputError(
                    f"model '{self.name}': got {len(seq)} positional input(s), expected {len(self.input_names)}: "
                    f"{self.describe_inputs()}"
                )
            given = dict(zip(self.input_names, seq))
        unknown = sorted(set(given) - set(self.input_names))
        if unknown:
            raise InputError(
                f"model '{self.name}': input(s) {unknown} are not inputs of the model; its inputs: "
                f"{self.describe_inputs()}"
            )
        missing = [n for n in self.input_names if n not in given]
        if missing:
            raise InputError(f"model '{self.name}': missing input(s) {missing}; its inputs: {self.describe_inputs()}")
        out: dict[str, np.ndarray] = {}
        for n in self.input_names:
            arr = np.asarray(given[n])
            spec = self.input_specs[n]
            if arr.dtype.hasobject:
                raise InputError(f"model '{self.name}': input '{n}' holds Python objects; expected {spec.describe()}")
            if spec.dtype is not None and arr.dtype != spec.dtype:
                raise InputError(
                    f"model '{self.name}': input '{n}' has dtype {arr.dtype}, expected {spec.dtype} ({spec.describe()})"
                )
            if not spec.matches_shape(tuple(arr.shape)):
                raise InputError(
                    f"model '{self.name}': input '{n}' has shape {list(arr.shape)}, expected {spec.describe()}"
                )
            if self.batch_independent and spec.shape and arr.shape[0] == 0:
                raise InputError(f"model '{self.name}': input '{n}' has an empty batch (shape {list(arr.shape)})")
            out[n] = np.ascontiguousarray(arr)
        return out

    def predict(
        self,
        inputs: Mapping[str, Any] | Sequence[Any],
        *,
        outputs: Sequence[str] | None = None,
        timeout: float | None = None,
    ) -> Outputs:
        """Run the model on ``inputs`` (by name, or positionally in ``input_names`` order).

        Args:
            inputs: a mapping name -> array, or a sequence in ``input_names`` order.
            outputs: blobs to return (default ``output_names``).
            timeout: seconds; past it the request is not computed (or its run is stopped) and
                DeadlineError is raised.

        Returns:
            A dict name -> array for mapping inputs, a list in output order for sequence inputs.
        """
        deadline = time.monotonic() + timeout if timeout is not None else None
        arrays = self.check_inputs(inputs)
        names = list(outputs) if outputs is not None else self.output_names
        if self._batcher is not None and outputs is None:
            result = self._batcher.submit(arrays, deadline)
        else:
            result = self._run_arrays(arrays, names, deadline)
        return result if isinstance(inputs, Mapping) else [result[n] for n in names]

    def _run_arrays(
        self, arrays: Mapping[str, np.ndarray], names: Sequence[str] | None, deadline: float | None
    ) -> dict[str, np.ndarray]:
        child = self._acquire(deadline)
        try:
            ws = child.workspace
            for n, a in arrays.items():
                ws.feed(n, a)
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise DeadlineError(f"model '{self.name}': deadline passed before the run started; not computed")
            try:
                child.net.run(timeout=remaining)
            except RunTimeoutError as e:
                raise DeadlineError(f"model '{self.name}': deadline passed during the run; stopped ({e})") from e
            want = names if names is not None else self.output_names
            missing = [n for n in want if not ws.has(n)]
            if missing:
                raise InputError(
                    f"model '{self.name}': requested output(s) {missing} were not produced; "
                    f"outputs: {', '.join(self.output_names)}"
                )
            return {n: ws.fetch(n) for n in want}
        finally:
            self._release(child)

    # -- lifetime --------------------------------------------------------------------------

    def close(self) -> None:
        """Stop taking requests and release the prepared nets (running ones finish first)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            free = list(self._free)
            self._free.clear()
            self._lock.notify_all()
        if self._batcher is not None:
            self._batcher.close()
        for c in free:
            c.net.close()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Predictor({self.name!r}, inputs: {self.describe_inputs()}, outputs: {', '.join(self.output_names)})"
