"""Issue 10's whole table in one run: simple, async_scheduling and onnxruntime on real and bench nets.

Nets:
  resnet50    ResNet-50 deploy (realnets caffe_resnet_kaiminghe), translated from Caffe, batch 1
  squeezenet  SqueezeNet 1.1 deploy (realnets caffe_squeezenet), batch 1
  mobilenet   MobileNet v1 deploy (realnets caffe_mobilenet_shicai), batch 1
  inception   bench_executors INCEPTION x3
  wide        bench_executors WIDE (8 branches of 4 x MatMul 256 -> Relu)
  widetiny    bench_executors WIDETINY (WIDE with 16x16 matrices)
  chain       bench_executors CHAIN (1000 tiny Adds; also timed as bare numpy, reported in us/op)
Caffe nets get seeded random weights (no caffemodel) and seeded random input; nets whose files are
missing are skipped with a line saying so.

Run (from the repository root):
  PYTHONPATH=$PWD python bench/bench_nets.py [--nets resnet50,wide] [--rounds 9] [--sample 0.3]
      [--variant LABEL=EXECUTOR[,key=value...]] [--cooldown 0.15] [--no-ort] [--json FILE]

Every contender of a net is timed in the same process, in interleaved rounds (each round times each
contender for about --sample seconds, starting with a different contender each round), so load from
other processes hits all of them alike. Each sample starts after a --cooldown busy pause: OpenBLAS
keeps a worker spinning ~0.1 s after its last call and onnxruntime its pool ~0.05 s, which would
otherwise slow whichever contender comes next (measured: onnxruntime up to 1.5x slower right after
the numpy contenders; offloaded nets 1.10-1.15x onnxruntime there, 1.01x with nothing before them).
The table gives medians over rounds, and the ratios are medians of the per-round ratios with their
spread (interquartile range) so that the noise is visible. All contenders start from the same
blobs and their outputs are compared with simple's before timing.

Columns are contenders. simple, async_scheduling and onnxruntime (its default session, the net
exported with asyncnet.onnx) are always there; --variant adds one, e.g.
  --variant async1blas=async_scheduling,blas_threads=1
  --variant opt=simple,prepare=optimize          (rewrites of asyncnet.transforms, when present)
  --variant offload=async_scheduling,prepare=offload
  --variant mine=simple,prepare=mypkg.mod:func   (func(predict, workspace, data_inputs) -> NetDef)
Keys other than ``prepare`` are ExecutorOptions fields. Each variant is printed as a ratio to simple.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from asyncnet.benchmark import pause, settle_blas_policy
from asyncnet.executors import ExecutorOptions
from asyncnet.net import Net, net_inputs
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]


def _realnets() -> Path:
    # As tests/conftest.py: ../shared/realnets next to the checkout (ASYNCNET_REALNETS overrides);
    # also one level further up, for git worktrees kept in a folder of their own.
    if "ASYNCNET_REALNETS" in os.environ:
        return Path(os.environ["ASYNCNET_REALNETS"])
    candidates = [ROOT.parent / "shared" / "realnets", ROOT.parent.parent / "shared" / "realnets"]
    return next((c for c in candidates if c.exists()), candidates[0])


REALNETS = _realnets()
CAFFE_NETS = {
    "resnet50": ("ResNet-50", "caffe_resnet_kaiminghe/ResNet-50-deploy.prototxt"),
    "squeezenet": ("SqueezeNet 1.1", "caffe_squeezenet/SqueezeNet_v1.1/deploy.prototxt"),
    "mobilenet": ("MobileNet v1", "caffe_mobilenet_shicai/mobilenet_deploy.prototxt"),
}
BENCH_NETS = {"inception": "INCEPTION x3", "wide": "WIDE", "widetiny": "WIDETINY", "chain": "CHAIN"}
ALL_NETS = [*CAFFE_NETS, *BENCH_NETS]


@dataclass
class Case:
    """One net ready to time: predict net, the blobs it starts from, what to compare."""

    name: str
    label: str
    predict: pb.NetDef
    blobs: dict[str, np.ndarray]  # parameters and data, fed before every contender is built
    data_inputs: list[str]
    outputs: list[str]
    baselines: dict[str, Callable[[], Any]] = field(default_factory=dict)  # extra contenders (bare numpy)
    per_op: bool = False  # report microseconds per op (CHAIN)


def _bench_executors() -> Any:
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    return importlib.import_module("bench_executors")


def caffe_case(name: str, seed: int = 0) -> Case | str:
    """A realnets Caffe prototxt translated with random seeded weights (or why it is skipped)."""
    label, rel = CAFFE_NETS[name]
    path = REALNETS / rel
    if not path.exists():
        return f"{label}: {path} not found (set ASYNCNET_REALNETS)"
    from asyncnet.caffe import read_prototxt, translate

    cnet = read_prototxt(path)
    probe = translate(cnet, seed=seed)
    shapes = {k: (1, *v[1:]) for k, v in probe.input_shapes.items()}
    t = translate(cnet, input_shapes=shapes, seed=seed)
    ws = Workspace()
    ws.run_net_once(t.init)
    rng = np.random.default_rng(seed)
    blobs = {n: np.asarray(ws.fetch(n)) for n in ws.blobs()}
    for k, s in shapes.items():
        blobs[k] = rng.standard_normal(s).astype(np.float32)
    ws.close()
    outputs = list(t.predict.external_output) or list(t.predict.op[-1].output)
    return Case(name, label, t.predict, blobs, list(shapes), outputs)


def bench_case(name: str) -> Case:
    bx = _bench_executors()
    label = BENCH_NETS[name]
    if name == "chain":
        net, feeds, ops = bx.chain_net()
        one, start, n_ops = feeds["one"], feeds["c0"], len(ops)

        def bare() -> None:
            y = start
            for _ in range(n_ops):
                y = np.add(y, one)

        return Case(name, label, net, dict(feeds), ["c0"], [net.op[-1].output[0]], {"bare numpy": bare}, per_op=True)
    if name == "inception":
        net, feeds, _ops = bx.inception_net()
        data = ["data"]
    else:
        net, feeds, _ops = bx.wide_net(256 if name == "wide" else 16)
        data = ["x"]
    return Case(name, label, net, dict(feeds), data, [net.op[-1].output[0]])


def make_case(name: str) -> Case | str:
    return caffe_case(name) if name in CAFFE_NETS else bench_case(name)


# -- contenders ------------------------------------------------------------------------------------


@dataclass
class Variant:
    """A column: an executor, its options, and transforms applied to the predict net first."""

    label: str
    executor: str
    options: dict[str, Any] = field(default_factory=dict)
    prepare: list[str] = field(default_factory=list)


def _prepare_optimize(predict: pb.NetDef, ws: Workspace, data: Sequence[str]) -> pb.NetDef:
    # Issue 10's inference rewrites (helper perf-rewrite); a clear error until they are merged.
    try:
        from asyncnet.transforms import optimize_for_inference  # type: ignore[attr-defined]
    except ImportError as e:
        raise SystemExit(f"prepare=optimize needs asyncnet.transforms.optimize_for_inference: {e}") from None
    res = optimize_for_inference(predict, workspace=ws, data_inputs=data)
    res.apply(ws)
    return res.predict_net  # type: ignore[no-any-return]


def _prepare_offload(predict: pb.NetDef, ws: Workspace, data: Sequence[str]) -> pb.NetDef:
    # Issue 10's onnxruntime offload (helper perf-rewrite); a clear error until it is merged.
    try:
        from asyncnet.transforms import offload_to_onnxruntime  # type: ignore[attr-defined]
    except ImportError as e:
        raise SystemExit(f"prepare=offload needs asyncnet.transforms.offload_to_onnxruntime: {e}") from None
    return offload_to_onnxruntime(predict, workspace=ws, data_inputs=data).predict_net  # type: ignore[no-any-return]


# LEAD: the place to add net transforms for new columns ("optimize", "offload", ...). Each takes the
# predict net, the workspace holding parameters and data, and the data input names; returns the net.
PREPARERS: dict[str, Callable[[pb.NetDef, Workspace, Sequence[str]], pb.NetDef]] = {
    "optimize": _prepare_optimize,
    "offload": _prepare_offload,
}


def _preparer(name: str) -> Callable[[pb.NetDef, Workspace, Sequence[str]], pb.NetDef]:
    if name in PREPARERS:
        return PREPARERS[name]
    if ":" in name:
        mod, fn = name.split(":", 1)
        return getattr(importlib.import_module(mod), fn)  # type: ignore[no-any-return]
    raise SystemExit(f"unknown prepare step '{name}'; known: {', '.join(PREPARERS)} or module:function")


def parse_variant(text: str) -> Variant:
    """``LABEL=EXECUTOR[,key=value...]`` (values parsed as int/float/bool when they look like one)."""
    if "=" not in text:
        raise SystemExit(f"--variant '{text}': expected LABEL=EXECUTOR[,key=value...]")
    label, rest = text.split("=", 1)
    executor, *pairs = rest.split(",")
    v = Variant(label, executor)
    known = {f.name for f in dataclasses.fields(ExecutorOptions)}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        if key == "prepare":
            v.prepare += [p for p in raw.split("+") if p]
            continue
        if key not in known:
            raise SystemExit(f"--variant '{text}': unknown key '{key}'; known: prepare, {', '.join(sorted(known))}")
        value: Any = raw
        if raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        elif raw.lower() == "none":
            value = None
        else:
            for conv in (int, float):
                try:
                    value = conv(raw)
                    break
                except ValueError:
                    pass
        v.options[key] = value
    return v


def _fresh_workspace(case: Case) -> Workspace:
    ws = Workspace()
    for k, v in case.blobs.items():
        ws.feed(k, v)
    return ws


def build_contender(
    case: Case, v: Variant
) -> tuple[Callable[[], Any], Callable[[], None], Callable[[], list[Any]], Callable[[], None]]:
    """(run, first runs, fetch outputs, close) for one variant on its own workspace."""
    ws = _fresh_workspace(case)
    predict = case.predict
    for step in v.prepare:
        predict = _preparer(step)(predict, ws, case.data_inputs)
    nd = pb.NetDef()
    nd.CopyFrom(predict)
    nd.name = f"{case.name}_{v.label}"
    net = Net(nd, ws, executor=v.executor, options=ExecutorOptions(**v.options))

    def fetch() -> list[Any]:
        return [np.asarray(ws.fetch(o)) for o in case.outputs]

    def close() -> None:
        net.close()
        ws.close()

    def settle() -> None:
        net.run()
        # The measured BLAS policy times its ways over the first runs (executors/mode_choice.py):
        # let it settle before timing, as any long-running user would see it.
        settle_blas_policy(net)

    return net.run, settle, fetch, close


def ort_contender(case: Case) -> tuple[Callable[[], Any], Callable[[], list[Any]]] | str:
    """onnxruntime's default CPU session on the exported net, or why there is none."""
    try:
        import onnxruntime as ort

        from asyncnet.onnx import export_onnx
        from asyncnet.shapes import info_of
    except ImportError as e:
        return f"onnxruntime unavailable ({e})"
    data = set(case.data_inputs)
    names = [n for n in net_inputs(case.predict) if n in case.blobs]
    params = {n: case.blobs[n] for n in names if n not in data}
    infos = {n: info_of(case.blobs[n]) for n in case.data_inputs}
    predict = pb.NetDef()
    predict.CopyFrom(case.predict)
    predict.external_output[:] = case.outputs  # only the compared outputs (not e.g. Concat's split info)
    try:
        model = export_onnx(predict, None, input_infos=infos, params=params)
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as e:  # report, do not hide: the table says why the column is empty
        return f"export/session failed: {type(e).__name__}: {e}"
    feeds = {i.name: case.blobs[i.name] for i in sess.get_inputs()}
    outs = [o.name for o in sess.get_outputs()]
    last: list[Any] = []

    def run() -> None:
        last[:] = sess.run(outs, feeds)

    def fetch() -> list[Any]:
        by_name = dict(zip(outs, last))
        return [np.asarray(by_name[o]) for o in case.outputs if o in by_name]

    return run, fetch


# -- timing ----------------------------------------------------------------------------------------


@dataclass
class Result:
    case: Case
    samples: dict[str, list[float]]  # contender -> seconds per run, one per round
    notes: list[str]
    loops: int

    def median(self, name: str) -> float:
        return statistics.median(self.samples[name])

    def ratio(self, num: str, den: str) -> tuple[float, float, float]:
        """Median and quartiles of the per-round ratios num/den."""
        r = sorted(a / b for a, b in zip(self.samples[num], self.samples[den]))
        if len(r) < 4:
            m = statistics.median(r)
            return m, min(r), max(r)
        q = statistics.quantiles(r, n=4)
        return statistics.median(r), q[0], q[2]


def _check(case: Case, name: str, got: list[Any], ref: list[Any], notes: list[str]) -> None:
    if len(got) != len(ref):
        notes.append(f"{name}: {len(got)} outputs vs simple's {len(ref)}")
        return
    for o, a, b in zip(case.outputs, got, ref):
        if a.shape != b.shape or not np.allclose(a, b, rtol=1e-3, atol=1e-4):
            diff = float(np.max(np.abs(a - b))) if a.shape == b.shape else math.nan
            notes.append(f"{name}: output {o} differs from simple's (max abs diff {diff:.3g})")


def time_case(
    case: Case, variants: list[Variant], *, rounds: int, sample: float, with_ort: bool, cooldown: float = 0.15
) -> Result:
    notes: list[str] = []
    fns: dict[str, Callable[[], Any]] = {}
    closers: list[Callable[[], None]] = []
    ref: list[Any] | None = None
    try:
        for v in variants:
            run, settle, fetch, close = build_contender(case, v)
            closers.append(close)
            settle()
            outs = fetch()
            if ref is None:
                ref = [np.array(a, copy=True) for a in outs]
            else:
                _check(case, v.label, outs, ref, notes)
            fns[v.label] = run
        if with_ort:
            o = ort_contender(case)
            if isinstance(o, str):
                notes.append(f"onnxruntime: {o}")
            else:
                run, fetch = o
                run()
                if ref is not None:
                    _check(case, "onnxruntime", fetch(), ref, notes)
                fns["onnxruntime"] = run
        for name, fn in case.baselines.items():
            fn()
            fns[name] = fn
        # Calibrate: enough runs per sample that timer and scheduling noise stay small.
        t0 = time.perf_counter()
        fns[variants[0].label]()
        one = max(time.perf_counter() - t0, 1e-6)
        loops = max(1, min(10_000, round(sample / one)))
        samples: dict[str, list[float]] = {n: [] for n in fns}
        order = list(fns.items())
        for r in range(rounds):
            # Rotate who goes first, so that no contender always runs first after a cooldown.
            for name, fn in order[r % len(order) :] + order[: r % len(order)]:
                # The contender before leaves spinning threads (asyncnet.benchmark.pause says how long).
                pause(cooldown)
                t0 = time.perf_counter()
                for _ in range(loops):
                    fn()
                samples[name].append((time.perf_counter() - t0) / loops)
    finally:
        for close in closers:
            close()
    return Result(case, samples, notes, loops)


# -- report ----------------------------------------------------------------------------------------


def _fmt_time(s: float, per_op: int | None) -> str:
    return f"{s / per_op * 1e6:.3f} us/op" if per_op else f"{s * 1e3:.2f} ms"


def _fmt_ratio(r: tuple[float, float, float]) -> str:
    return f"{r[0]:.2f} [{r[1]:.2f}-{r[2]:.2f}]"


def report(results: list[Result], variants: list[Variant]) -> list[str]:
    extra = [v.label for v in variants[2:]]
    head = ["net", "simple", "async_scheduling", "onnxruntime", "simple/ORT", "async/ORT", "async/simple"]
    head += [f"{x}/simple" for x in extra]
    # A variant's speed against onnxruntime as its own per-round ratio (the product of two medians,
    # x/simple times simple/ORT, is noisier than the direct ratio).
    head += [f"{x}/ORT" for x in extra]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        per_op = len(r.case.predict.op) if r.case.per_op else None
        row = [r.case.label]
        for name in ("simple", "async_scheduling", "onnxruntime"):
            row.append(_fmt_time(r.median(name), per_op) if name in r.samples else "-")
        has_ort = "onnxruntime" in r.samples
        row.append(_fmt_ratio(r.ratio("simple", "onnxruntime")) if has_ort else "-")
        row.append(_fmt_ratio(r.ratio("async_scheduling", "onnxruntime")) if has_ort else "-")
        row.append(_fmt_ratio(r.ratio("async_scheduling", "simple")))
        row += [_fmt_ratio(r.ratio(x, "simple")) for x in extra]
        row += [_fmt_ratio(r.ratio(x, "onnxruntime")) if has_ort else "-" for x in extra]
        lines.append("| " + " | ".join(row) + " |")
    for r in results:
        if r.case.per_op and "bare numpy" in r.samples:
            n = len(r.case.predict.op)
            bare = r.median("bare numpy")
            over = ", ".join(
                f"{v.label} {(r.median(v.label) - bare) / n * 1e6:.3f}" for v in variants if v.label in r.samples
            )
            lines.append(
                f"{r.case.label}: bare numpy {bare / n * 1e6:.3f} us/op; overhead over bare numpy (us/op): {over}"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nets", default=",".join(ALL_NETS), help=f"comma-separated subset of {','.join(ALL_NETS)}")
    p.add_argument("--rounds", type=int, default=9, help="interleaved rounds (default 9)")
    p.add_argument("--sample", type=float, default=0.3, help="seconds per contender per round (default 0.3)")
    p.add_argument("--variant", action="append", default=[], help="extra column LABEL=EXECUTOR[,key=value...]")
    p.add_argument(
        "--cooldown",
        type=float,
        default=0.15,
        help="seconds of busy pause before each sample, so the contender before has stopped spinning (default 0.15)",
    )
    p.add_argument("--no-ort", action="store_true", help="leave out onnxruntime")
    p.add_argument("--json", help="write the samples here")
    args = p.parse_args(argv)
    names = [n.strip().lower() for n in args.nets.split(",") if n.strip()]
    unknown = [n for n in names if n not in ALL_NETS]
    if unknown:
        raise SystemExit(f"unknown net(s) {unknown}; known: {', '.join(ALL_NETS)}")
    variants = [Variant("simple", "simple"), Variant("async_scheduling", "async_scheduling")]
    variants += [parse_variant(t) for t in args.variant]
    print(
        f"python {sys.version.split()[0]}, numpy {np.__version__}, {os.cpu_count()} CPUs, "
        f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}, rounds {args.rounds}, ~{args.sample:g} s/sample",
        flush=True,
    )
    results: list[Result] = []
    for name in names:
        case = make_case(name)
        if isinstance(case, str):
            print(f"skipped {case}", flush=True)
            continue
        t0 = time.perf_counter()
        res = time_case(
            case, variants, rounds=args.rounds, sample=args.sample, with_ort=not args.no_ort, cooldown=args.cooldown
        )
        results.append(res)
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"{case.label}: {res.loops} runs/sample, {time.perf_counter() - t0:.0f} s, load {load}", flush=True)
        for note in res.notes:
            print(f"  note: {note}", flush=True)
    print()
    print("\n".join(report(results, variants)))
    print("ratios: median of per-round ratios [interquartile range]")
    if args.json:
        data = {r.case.name: {"loops": r.loops, "samples": r.samples, "notes": r.notes} for r in results}
        Path(args.json).write_text(json.dumps(data, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
