"""Net benchmarks in the manner of Caffe2's ``speed_benchmark``: timed iterations, a per-op-type
profile and an optional onnxruntime comparison.

Iterations are timed with profiling off, because recording one event per op costs time of its
own; the per-op-type table comes from a separate profiled pass and its shares are fractions of
the time spent inside ops. The onnxruntime comparison exports the net (its parameters taken from
the workspace) and times an ``InferenceSession`` the same way, in the same process, so the ratio
is not skewed by machine load that changes between processes.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from asyncnet.errors import ArgumentError
from asyncnet.executors import ExecutorOptions
from asyncnet.net import Net, net_inputs
from asyncnet.opinfo import OpInfo
from asyncnet.profiling import Profiler, profiler_of
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.shapes import info_of

if TYPE_CHECKING:
    from asyncnet.workspace import Workspace

log = logging.getLogger(__name__)

Progress = Callable[[int], None]
"""Called with the number of iterations just finished (for a progress bar)."""


@dataclass(frozen=True)
class Timing:
    """Per-iteration wall times (seconds) and their summary."""

    samples: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.samples:
            raise ArgumentError("a timing needs at least one sample, got none")

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (linear interpolation, as numpy's default)."""
        return float(np.percentile(np.asarray(self.samples), q))

    @property
    def median(self) -> float:
        return self.percentile(50)

    @property
    def p10(self) -> float:
        return self.percentile(10)

    @property
    def p90(self) -> float:
        return self.percentile(90)

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def max(self) -> float:
        return max(self.samples)

    @property
    def mean(self) -> float:
        return math.fsum(self.samples) / len(self.samples)

    def as_dict(self) -> dict[str, Any]:
        """Milliseconds, for JSON."""
        ms = {k: getattr(self, k) * 1e3 for k in ("median", "p10", "p90", "min", "mean", "max")}
        return {"iters": len(self.samples), **ms, "samples": [s * 1e3 for s in self.samples]}


# Pause before a contender's runs: OpenBLAS keeps a worker spinning ~0.1 s after its last call
# and onnxruntime its pool ~0.05 s (measured as CPU time while the caller slept), which would
# otherwise be charged to the next contender (onnxruntime right after numpy contenders ran up
# to 1.5x slower than with the pause).
COOLDOWN_S = 0.15


def pause(seconds: float) -> None:
    """Wait ``seconds`` busy, so that other threads' spinning runs out while this vCPU stays awake.

    Sleeping instead made the next runs slower on the 2-vCPU machine (CHAIN's bare numpy loop
    1.27x right after 0.15 s asleep), a cost that would fall on whoever runs first.
    """
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def time_iterations(step: Callable[[], object], *, warmup: int, iters: int, progress: Progress | None = None) -> Timing:
    """After a :func:`pause`, call ``step`` ``warmup`` times untimed, then ``iters`` times timed.

    Raises:
        ArgumentError: ``iters`` < 1 or ``warmup`` < 0.
    """
    if iters < 1:
        raise ArgumentError(f"iterations must be at least 1, got {iters}")
    if warmup < 0:
        raise ArgumentError(f"warmup iterations must be 0 or more, got {warmup}")
    pause(COOLDOWN_S)
    for _ in range(warmup):
        step()
        if progress is not None:
            progress(1)
    samples = []
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        samples.append(time.perf_counter() - t0)
        if progress is not None:
            progress(1)
    return Timing(tuple(samples))


@dataclass(frozen=True)
class OpTypeStat:
    """Profiled time of all ops of one type.

    Attributes:
        type: the op type.
        calls: op runs over all profiled iterations.
        total: seconds inside those runs.
        share: ``total`` as a fraction of the time inside all ops.
    """

    type: str
    calls: int
    total: float
    share: float


@dataclass(frozen=True)
class OpProfile:
    """The per-op-type table of a profiled pass.

    Attributes:
        executor: the executor that ran the pass.
        iters: profiled iterations.
        wall: summed wall time of those iterations (seconds).
        busy: summed time inside ops (above ``wall`` when ops overlap).
        types: slowest type first.
    """

    executor: str
    iters: int
    wall: float
    busy: float
    types: list[OpTypeStat]

    def as_dict(self) -> dict[str, Any]:
        return {
            "executor": self.executor,
            "iters": self.iters,
            "wall_ms": self.wall * 1e3,
            "busy_ms": self.busy * 1e3,
            "types": [
                {
                    "type": t.type,
                    "calls": t.calls,
                    "total_ms": t.total * 1e3,
                    "ms_per_iter": t.total * 1e3 / max(self.iters, 1),
                    "share": t.share,
                }
                for t in self.types
            ],
        }


def op_type_profile(profiler: Profiler, infos: Sequence[OpInfo], *, executor: str = "") -> OpProfile:
    """Aggregate a profiler's op events by op type."""
    acc: dict[str, list[float]] = {}
    for ev in profiler.events:
        t = infos[ev.index].type if 0 <= ev.index < len(infos) else f"op #{ev.index}"
        cell = acc.setdefault(t, [0, 0.0])
        cell[0] += 1
        cell[1] += ev.end - ev.start
    busy = math.fsum(total for _, total in acc.values())
    types = [OpTypeStat(t, int(calls), total, total / busy if busy > 0 else 0.0) for t, (calls, total) in acc.items()]
    types.sort(key=lambda s: (-s.total, s.type))
    wall = math.fsum(e - s for s, e in profiler.runs)
    return OpProfile(executor, len(profiler.runs), wall, busy, types)


@dataclass(frozen=True)
class NetTiming:
    """Timed iterations of a net under one executor."""

    executor: str
    threads: int | None
    timing: Timing
    blas_threads: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "executor": self.executor,
            "threads": self.threads,
            "blas_threads": self.blas_threads,
            **self.timing.as_dict(),
        }


def bench_net(
    workspace: Workspace,
    net_def: pb.NetDef,
    *,
    executor: str | None = None,
    options: ExecutorOptions | None = None,
    warmup: int = 1,
    iters: int = 10,
    progress: Progress | None = None,
) -> NetTiming:
    """Time ``iters`` runs of ``net_def`` (profiling off) after ``warmup`` untimed ones.

    The workspace must already hold the net's inputs. The net is prepared once, outside the timing.
    """
    opts = _options(options, profile=False)
    with Net(net_def, workspace, executor=executor, options=opts) as net:
        settle_blas_policy(net)
        timing = time_iterations(net.run, warmup=warmup, iters=iters, progress=progress)
        return NetTiming(net.executor.name, opts.threads, timing, opts.blas_threads)


# The measured BLAS policy (executors/mode_choice.py) needs 1 + 3 runs per way before it chooses.
SETTLE_RUNS = 40


def settle_blas_policy(net: Net) -> int:
    """Run ``net`` untimed until its measured BLAS policy has chosen (at most SETTLE_RUNS runs; none
    for nets without one), so that timings show the steady state a long-running user gets. Returns
    the number of runs."""
    runs = 0
    while not getattr(net.executor, "blas_policy_settled", True) and runs < SETTLE_RUNS:
        net.run()
        runs += 1
    return runs


def profile_net(
    workspace: Workspace,
    net_def: pb.NetDef,
    *,
    executor: str | None = None,
    options: ExecutorOptions | None = None,
    warmup: int = 1,
    iters: int = 10,
    progress: Progress | None = None,
) -> OpProfile:
    """Run ``net_def`` with profiling on and aggregate the op times of ``iters`` runs by op type."""
    opts = _options(options, profile=True)
    with Net(net_def, workspace, executor=executor, options=opts) as net:
        prof = profiler_of(net)
        if prof is None:
            raise ArgumentError(
                f"executor '{net.executor.name}' does not support profiling; cannot make a per-op table"
            )
        if iters < 1:
            raise ArgumentError(f"profiled iterations must be at least 1, got {iters}")
        for _ in range(warmup):
            net.run()
            if progress is not None:
                progress(1)
        prof.clear()
        for _ in range(iters):
            net.run()
            if progress is not None:
                progress(1)
        return op_type_profile(prof, net.infos, executor=net.executor.name)


def _options(options: ExecutorOptions | None, *, profile: bool) -> ExecutorOptions:
    base = options or ExecutorOptions()
    return ExecutorOptions(
        threads=base.threads, shared_pools=base.shared_pools, profile=profile, blas_threads=base.blas_threads
    )


@dataclass
class OrtTiming:
    """The onnxruntime side of a comparison: its timing, or why there is none.

    Attributes:
        version: onnxruntime's version.
        timing: per-iteration times, None when export or session creation failed.
        error: why there is no timing.
        max_abs_diff: largest absolute difference between onnxruntime's outputs and the workspace's
            values of the net outputs (None when not comparable).
    """

    version: str = ""
    timing: Timing | None = None
    error: str | None = None
    max_abs_diff: float | None = None
    outputs: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "provider": "CPUExecutionProvider",
            "error": self.error,
            "max_abs_diff": self.max_abs_diff,
            "timing": self.timing.as_dict() if self.timing is not None else None,
        }


def bench_onnxruntime(
    workspace: Workspace,
    net_def: pb.NetDef,
    data_inputs: Sequence[str],
    *,
    warmup: int = 1,
    iters: int = 10,
    progress: Progress | None = None,
) -> OrtTiming:
    """Export ``net_def`` to ONNX and time it in onnxruntime (CPU provider, default session options).

    Every net input in the workspace that is not in ``data_inputs`` becomes an initializer; data inputs
    are fed from the workspace. Export or session failures are returned in ``error``, not raised: the
    comparison is an optional extra to the asyncnet numbers. If the workspace holds the net's outputs
    (the net ran before), they are compared with onnxruntime's.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        return OrtTiming(error="onnxruntime is not installed (pip install 'asyncnet[onnx]')")
    from asyncnet.onnx import export_onnx

    result = OrtTiming(version=str(ort.__version__))
    data = set(data_inputs)
    names = [n for n in net_inputs(net_def) if workspace.has(n)]
    params = {n: workspace.fetch(n) for n in names if n not in data}
    infos = {n: info_of(workspace.fetch(n)) for n in names if n in data}
    try:
        model = export_onnx(net_def, None, input_infos=infos, params=params)
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - exporter, onnx checker and onnxruntime each raise their own types
        log.debug("onnxruntime comparison failed", exc_info=True)
        result.error = f"{type(e).__name__}: {e}"
        return result
    feeds = {i.name: np.asarray(workspace.fetch(i.name)) for i in session.get_inputs()}
    out_names = [o.name for o in session.get_outputs()]
    outs: list[Any] = []

    def step() -> None:
        outs[:] = session.run(out_names, feeds)

    try:
        result.timing = time_iterations(step, warmup=warmup, iters=iters, progress=progress)
    except Exception as e:  # noqa: BLE001 - onnxruntime's run errors have no common base class
        log.debug("onnxruntime run failed", exc_info=True)
        result.error = f"{type(e).__name__}: {e}"
        return result
    expected = list(net_def.external_output) or (list(net_def.op[-1].output) if net_def.op else [])
    result.outputs = expected
    result.max_abs_diff = _max_abs_diff(workspace, expected, outs)
    return result


def _max_abs_diff(workspace: Workspace, names: Sequence[str], values: Sequence[Any]) -> float | None:
    if len(names) != len(values):
        return None
    worst = 0.0
    for name, got in zip(names, values):
        if not workspace.has(name):
            return None
        want = workspace.fetch(name)
        if not isinstance(want, np.ndarray) or np.shape(got) != want.shape:
            return None
        if want.size:
            worst = max(worst, float(np.max(np.abs(np.asarray(got, np.float64) - want.astype(np.float64)))))
    return worst


@contextlib.contextmanager
def progress_bar(desc: str, total: int, *, enabled: bool) -> Iterator[Progress | None]:
    """A tqdm bar on stderr when ``enabled``, stderr is a terminal and tqdm is installed; else None."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional
        yield None
        return
    bar = tqdm(total=total, desc=desc, unit="it", file=sys.stderr, leave=False, dynamic_ncols=True)
    try:
        yield bar.update
    finally:
        bar.close()


@dataclass
class BenchReport:
    """Everything ``asyncnet bench`` measured."""

    net: str
    ops: int
    inputs: Mapping[str, str]
    warmup: int
    iters: int
    runs: list[NetTiming]
    profile: OpProfile | None = None
    ort: OrtTiming | None = None
    transforms: list[str] = field(default_factory=list)  # which inference rewrites / offload ran

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "net": self.net,
            "ops": self.ops,
            "inputs": dict(self.inputs),
            "warmup": self.warmup,
            "iters": self.iters,
            "asyncnet": [r.as_dict() for r in self.runs],
            "op_types": self.profile.as_dict() if self.profile is not None else None,
            "onnxruntime": self.ort.as_dict() if self.ort is not None else None,
            "transforms": list(self.transforms),
        }
        if self.ort is not None and self.ort.timing is not None:
            ort_median = self.ort.timing.median
            out["ratio_vs_onnxruntime"] = {
                r.executor: r.timing.median / ort_median if ort_median > 0 else None for r in self.runs
            }
        return out

    def lines(self) -> list[str]:
        """The human-readable report."""
        ins = ", ".join(f"{k} {v}" for k, v in self.inputs.items()) or "none"
        lines = [f"bench net '{self.net}': {self.ops} ops; data inputs: {ins}"]
        lines.extend(self.transforms)
        lines.append(
            f"{self.warmup} warmup + {self.iters} timed iteration(s), profiling off; wall time per iteration in ms:"
        )
        header = f"  {'':36s} {'median':>10s} {'p10':>10s} {'p90':>10s} {'min':>10s} {'mean':>10s}"
        lines.append(header)
        rows: list[tuple[str, Timing]] = [(_run_label(r), r.timing) for r in self.runs]
        if self.ort is not None and self.ort.timing is not None:
            rows.append((f"onnxruntime {self.ort.version}", self.ort.timing))
        for label, t in rows:
            lines.append(
                f"  {label:36s} {t.median * 1e3:10.3f} {t.p10 * 1e3:10.3f} {t.p90 * 1e3:10.3f} "
                f"{t.min * 1e3:10.3f} {t.mean * 1e3:10.3f}"
            )
        first = self.runs[0]
        for r in self.runs[1:]:
            lines.append(f"  ratio {r.executor}/{first.executor} (median): {r.timing.median / first.timing.median:.3f}")
        if self.ort is not None:
            lines.extend(self._ort_lines(self.ort))
        if self.profile is not None:
            lines.extend(self._profile_lines(self.profile))
        return lines

    def _ort_lines(self, o: OrtTiming) -> list[str]:
        if o.timing is None:
            return [f"  onnxruntime: no comparison ({o.error})"]
        ort = o.timing.median
        lines = [
            f"  ratio asyncnet {r.executor}/onnxruntime (median): {r.timing.median / ort:.3f}"
            for r in self.runs
            if ort > 0
        ]
        if o.max_abs_diff is not None:
            lines.append(f"  onnxruntime outputs vs asyncnet: max |diff| {o.max_abs_diff:.3g}")
        return lines

    def _profile_lines(self, p: OpProfile) -> list[str]:
        n = max(p.iters, 1)
        lines = [
            f"per op type: separate profiled pass, executor {p.executor}, {p.iters} iteration(s); profiling adds "
            "overhead, so these times differ from the timed ones; share = of the time inside ops:",
            f"  {'type':28s} {'ms/iter':>10s} {'share':>7s} {'calls/iter':>10s} {'us/call':>10s}",
        ]
        for t in p.types:
            lines.append(
                f"  {t.type[:28]:28s} {t.total * 1e3 / n:10.3f} {t.share:7.1%} {t.calls / n:10.4g} "
                f"{t.total * 1e6 / max(t.calls, 1):10.1f}"
            )
        total_calls = sum(t.calls for t in p.types)
        lines.append(
            f"  {'total':28s} {p.busy * 1e3 / n:10.3f} {1.0 if p.busy > 0 else 0.0:7.1%} {total_calls / n:10.4g}"
        )
        if p.wall > 0:
            lines.append(
                f"  ops busy {p.busy / p.wall:.1%} of the profiled wall time ({p.wall * 1e3 / n:.3f} ms/iter); "
                "under 100%: executor overhead, over 100%: ops ran in parallel"
            )
        return lines


def _run_label(r: NetTiming) -> str:
    label = f"asyncnet {r.executor}" + (f" x{r.threads}" if r.threads else "")
    return label + (f" blas{r.blas_threads}" if r.blas_threads else "")


def describe_inputs(workspace: Workspace, names: Sequence[str]) -> dict[str, str]:
    """``name -> "(1, 3, 224, 224) float32"`` for the data inputs, for the report header."""
    out: dict[str, str] = {}
    for n in names:
        if workspace.has(n):
            ti = info_of(workspace.fetch(n))
            out[n] = f"{ti.shape} {ti.dtype}"
    return out
