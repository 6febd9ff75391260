"""Test-only operators and net builders for the executor tests.

The ops get names starting with ``ExecTest`` and are registered once in the default
registry (guarded, since registering a name twice raises).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np

from asyncnet.executors.blas import register_blas_op
from asyncnet.executors.pools import timer_future
from asyncnet.opinfo import OpInfo
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import default_registry, register_op
from asyncnet.schema import Arg, TensorInfo
from asyncnet.serde import make_argument
from asyncnet.workspace import Workspace

# op index -> (thread name, start, end); filled by ExecTestSleep / ExecTestRecord when `log` is set.
EVENTS: list[tuple[str, str, float, float]] = []
_lock = threading.Lock()


def _identity_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    return [ins[i] if i < len(ins) else TensorInfo(None, None) for i in range(len(op.outputs))]


def _register() -> None:
    reg = default_registry()
    if reg.has("ExecTestSleep"):
        return

    @register_op(
        "ExecTestSleep",
        inputs=(0, -1),
        outputs=(0, -1),
        allow_inplace=True,
        infer=_identity_infer,
        args=(Arg("ms", 0.0, "sleep (holds the thread)"), Arg("tag", "", "event tag")),
        doc="Test only: sleeps `ms` holding its thread, records (tag, thread, start, end), passes inputs through.",
    )
    def sleep_op(op: OpInfo) -> Callable[..., Any]:
        delay = op.float_arg("ms") / 1000.0
        tag = op.str_arg("tag") or op.name
        n = len(op.outputs)

        def run(*xs: Any) -> tuple[Any, ...]:
            t0 = time.monotonic()
            if delay:
                time.sleep(delay)
            with _lock:
                EVENTS.append((tag, threading.current_thread().name, t0, time.monotonic()))
            return tuple(xs[:n]) + (np.zeros(1),) * max(0, n - len(xs))

        return run

    @register_op(
        "ExecTestFail",
        inputs=(0, -1),
        outputs=(0, -1),
        allow_inplace=True,
        infer=_identity_infer,
        args=(Arg("ms", 0.0, "sleep before raising"), Arg("message", "boom", "error text")),
        doc="Test only: raises ValueError(message) after `ms`.",
    )
    def fail_op(op: OpInfo) -> Callable[..., Any]:
        delay = op.float_arg("ms") / 1000.0
        message = op.str_arg("message")

        def run(*xs: Any) -> tuple[Any, ...]:
            if delay:
                time.sleep(delay)
            raise ValueError(message)

        return run

    @register_op(
        "ExecTestAsyncFail",
        inputs=(0, -1),
        outputs=(0, -1),
        allow_inplace=True,
        infer=_identity_infer,
        is_async=True,
        args=(Arg("ms", 0.0, "delay before failing"), Arg("message", "async boom", "error text")),
        doc="Test only: async; its future fails with ValueError(message) after `ms`.",
    )
    def async_fail_op(op: OpInfo) -> Callable[..., Any]:
        delay = op.float_arg("ms") / 1000.0
        message = op.str_arg("message")

        def run(*xs: Any) -> Future[Any]:
            out: Future[Any] = Future()
            inner = timer_future(delay, None)

            def fire(_f: Future[Any]) -> None:
                if out.set_running_or_notify_cancel():
                    out.set_exception(ValueError(message))

            inner.add_done_callback(fire)
            return out

        return run

    @register_op(
        "ExecTestBlasProbe",
        inputs=(0, -1),
        outputs=(0, -1),
        allow_inplace=True,
        infer=_identity_infer,
        doc="Test only: records the BLAS thread limit seen while it runs.",
    )
    def blas_probe(op: OpInfo) -> Callable[..., Any]:
        from threadpoolctl import threadpool_info

        def run(*xs: Any) -> tuple[Any, ...]:
            blas = [i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"]
            with _lock:
                EVENTS.append(("blas", str(max(blas, default=-1)), 0.0, 0.0))
            return ()

        return run

    @register_op(
        "ExecTestBlasRendezvous",
        inputs=(0, -1),
        outputs=(0, -1),
        allow_inplace=True,
        infer=_identity_infer,
        args=(
            Arg("key", "", "rendezvous name (ops with one key wait for each other)"),
            Arg("parties", 1, "ops that must arrive before any records"),
        ),
        doc="Test only, BLAS-heavy: waits until `parties` ops with its `key` arrived, records the "
        "process-wide BLAS thread count (as threadpoolctl reports it), waits until all recorded, "
        "passes inputs through.",
    )
    def blas_rendezvous(op: OpInfo) -> Callable[..., Any]:
        from threadpoolctl import threadpool_info

        key = op.str_arg("key") or op.name
        parties = op.int_arg("parties")
        tag = op.name or key
        n = len(op.outputs)

        def run(*xs: Any) -> tuple[Any, ...]:
            if parties > 1:
                with _lock:
                    barrier = BARRIERS.setdefault(key, threading.Barrier(parties, timeout=10))
                barrier.wait()
            blas = [i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"]
            with _lock:
                BLAS_SEEN.append((tag, max(blas, default=-1)))
            if parties > 1:
                barrier.wait()  # nobody leaves before all have looked
            return tuple(xs[:n]) + (np.zeros(1),) * max(0, n - len(xs))

        return run

    register_blas_op("ExecTestBlasRendezvous")


# ExecTestBlasRendezvous state: barriers by key, and (op name, BLAS threads seen) per op run.
BARRIERS: dict[str, threading.Barrier] = {}
BLAS_SEEN: list[tuple[str, int]] = []

_register()


def op(
    type_: str,
    inputs: Sequence[str] = (),
    outputs: Sequence[str] = (),
    *,
    name: str = "",
    control: Iterable[str] = (),
    device: tuple[int, int] | None = None,
    **args: Any,
) -> pb.OperatorDef:
    o = pb.OperatorDef(type=type_, input=list(inputs), output=list(outputs), name=name)
    o.control_input.extend(control)
    for k, v in args.items():
        o.arg.append(make_argument(k, v))
    if device is not None:
        o.device_option.device_type, o.device_option.device_id = device
    return o


def net(ops: Sequence[pb.OperatorDef], *, name: str = "t", type_: str = "async_scheduling", **kw: Any) -> pb.NetDef:
    n = pb.NetDef(name=name, type=type_, **kw)
    n.op.extend(ops)
    return n


def run_in_thread(fn: Callable[[], None]) -> tuple[threading.Thread, list[BaseException]]:
    """Start ``fn`` on a thread; exceptions land in the returned list."""
    errors: list[BaseException] = []

    def body() -> None:
        try:
            fn()
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=body, name="exec-test-runner")
    t.start()
    return t, errors


def wait_running(net_: Any, timeout: float = 5.0) -> None:
    """Block until ``net_`` is inside a run (test helper; polls a private lock)."""
    deadline = time.monotonic() + timeout
    while not net_.executor._busy.locked():
        if time.monotonic() > deadline:
            raise AssertionError("net did not start running")
        time.sleep(0.002)


def blobs_of(ws: Workspace) -> dict[str, Any]:
    return {n: ws.fetch(n) for n in ws.blobs()}


def assert_same_blobs(a: dict[str, Any], b: dict[str, Any], what: str = "") -> None:
    assert sorted(a) == sorted(b), f"{what}: blob sets differ: {sorted(set(a) ^ set(b))}"
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, np.ndarray):
            assert isinstance(y, np.ndarray) and x.dtype == y.dtype and x.shape == y.shape, f"{what}: blob {k}"
            assert np.array_equal(x, y, equal_nan=x.dtype.kind in "fc"), f"{what}: blob {k} differs"
        else:
            assert type(x) is type(y), f"{what}: blob {k} type"
