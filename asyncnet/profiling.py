"""Per-operator timings of net runs: statistics tables and Chrome trace-event JSON.

Executors given ``ExecutorOptions(profile=True)`` record one event per operator run
(start, end, thread) into their :class:`Profiler`; ``asyncnet run --profile`` prints
:func:`format_stats` and ``--trace FILE`` writes :func:`chrome_trace`, which
Perfetto and chrome://tracing open (one lane per thread).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asyncnet.opinfo import OpInfo
from asyncnet.serde import atomic_write_bytes

if TYPE_CHECKING:
    from asyncnet.net import Net


@dataclass(frozen=True)
class OpEvent:
    """One operator run: op index, start and end (perf_counter seconds), thread id."""

    index: int
    start: float
    end: float
    thread: int


class Profiler:
    """Collects op events and run spans; safe to call from several threads."""

    def __init__(self) -> None:
        self.events: list[OpEvent] = []
        self.runs: list[tuple[float, float]] = []
        self.thread_names: dict[int, str] = {}
        # perf_counter has an arbitrary origin; remember it against the wall clock for traces.
        self.origin = time.perf_counter()

    def op(self, index: int, start: float, end: float) -> None:
        """Record one op run on the current thread."""
        ident = threading.get_ident()
        if ident not in self.thread_names:
            self.thread_names[ident] = threading.current_thread().name
        self.events.append(OpEvent(index, start, end, ident))  # list.append is atomic under the GIL

    def run(self, start: float, end: float) -> None:
        """Record the span of one whole net run."""
        self.runs.append((start, end))

    def clear(self) -> None:
        self.events.clear()
        self.runs.clear()


@dataclass(frozen=True)
class OpStats:
    """Aggregated timings of one operator over all recorded runs."""

    index: int
    label: str
    count: int
    total: float
    mean: float
    share: float  # of the summed run wall time


def op_stats(profiler: Profiler, infos: Sequence[OpInfo]) -> list[OpStats]:
    """Per-op statistics, slowest total first."""
    wall = sum(e - s for s, e in profiler.runs)
    totals: dict[int, list[float]] = {}
    for ev in profiler.events:
        acc = totals.setdefault(ev.index, [0, 0.0])
        acc[0] += 1
        acc[1] += ev.end - ev.start
    stats = []
    for idx, (count, total) in totals.items():
        label = infos[idx].label() if 0 <= idx < len(infos) else f"op #{idx}"
        stats.append(OpStats(idx, label, int(count), total, total / count, total / wall if wall > 0 else 0.0))
    stats.sort(key=lambda s: (-s.total, s.index))
    return stats


def format_stats(profiler: Profiler, infos: Sequence[OpInfo], *, limit: int | None = None) -> list[str]:
    """A readable table of :func:`op_stats` plus per-type totals."""
    stats = op_stats(profiler, infos)
    wall = sum(e - s for s, e in profiler.runs)
    busy = sum(s.total for s in stats)
    lines = [
        f"profile: {len(profiler.runs)} run(s), {wall * 1e3:.3f} ms wall, {busy * 1e3:.3f} ms in ops "
        f"(parallelism {busy / wall if wall > 0 else 0.0:.2f}), {len(profiler.thread_names)} thread(s)"
    ]
    lines.append(f"  {'op':40s} {'count':>6s} {'total ms':>10s} {'mean us':>10s} {'share':>7s}")
    for s in stats[:limit]:
        lines.append(f"  {s.label[:40]:40s} {s.count:6d} {s.total * 1e3:10.3f} {s.mean * 1e6:10.1f} {s.share:7.1%}")
    if limit is not None and len(stats) > limit:
        lines.append(f"  ... {len(stats) - limit} more op(s)")
    by_type: dict[str, list[float]] = {}
    for s in stats:
        t = infos[s.index].type if 0 <= s.index < len(infos) else "?"
        acc = by_type.setdefault(t, [0, 0.0])
        acc[0] += s.count
        acc[1] += s.total
    lines.append("  by type:")
    for t, (count, total) in sorted(by_type.items(), key=lambda kv: -kv[1][1]):
        share = total / wall if wall > 0 else 0.0
        lines.append(f"    {t:38s} {int(count):6d} {total * 1e3:10.3f} {total / count * 1e6:10.1f} {share:7.1%}")
    return lines


def chrome_trace(profiler: Profiler, infos: Sequence[OpInfo], *, net_name: str = "") -> dict[str, Any]:
    """Trace-event JSON (``{"traceEvents": [...]}``): one complete event per op run, one lane per thread."""
    pid = os.getpid()
    tids: dict[int, int] = {}
    events: list[dict[str, Any]] = []
    for ident, name in profiler.thread_names.items():
        tids[ident] = len(tids) + 1
        events.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tids[ident], "args": {"name": name}})
    events.append({"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": f"asyncnet {net_name}"}})
    origin = profiler.origin
    for i, (s, e) in enumerate(profiler.runs):
        events.append(
            {
                "name": f"run {i}",
                "cat": "net",
                "ph": "X",
                "pid": pid,
                "tid": 0,
                "ts": (s - origin) * 1e6,
                "dur": (e - s) * 1e6,
            }
        )
    for ev in profiler.events:
        info = infos[ev.index] if 0 <= ev.index < len(infos) else None
        events.append(
            {
                "name": info.type if info else f"op #{ev.index}",
                "cat": "op",
                "ph": "X",
                "pid": pid,
                "tid": tids.setdefault(ev.thread, len(tids) + 1),
                "ts": (ev.start - origin) * 1e6,
                "dur": max(ev.end - ev.start, 0.0) * 1e6,
                "args": {"index": ev.index, "label": info.label() if info else "", "net": net_name},
            }
        )
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def write_trace(
    path: str | os.PathLike[str], profiler: Profiler, infos: Sequence[OpInfo], *, net_name: str = ""
) -> None:
    """Write :func:`chrome_trace` to ``path`` (atomically)."""
    data = json.dumps(chrome_trace(profiler, infos, net_name=net_name)).encode()
    atomic_write_bytes(Path(path), data)


def profiler_of(net: Net) -> Profiler | None:
    """The profiler of a net created with ``ExecutorOptions(profile=True)``, else None."""
    prof = getattr(net.executor, "profiler", None)
    return prof if isinstance(prof, Profiler) else None


def profile_report(net: Net, *, profile: bool = True, trace: str | None = None) -> list[str]:
    """Lines for ``asyncnet run --profile`` and, with ``trace``, write the trace file there."""
    prof = profiler_of(net)
    if prof is None:
        return [f"no profile: executor '{net.executor.name}' was not created with profiling on"]
    lines = format_stats(prof, net.infos, limit=40) if profile else []
    if trace:
        write_trace(trace, prof, net.infos, net_name=net.name)
        lines.append(f"wrote trace of {len(prof.events)} op run(s) on {len(prof.thread_names)} thread(s) to {trace}")
    return lines
