"""Executor benchmarks: simple vs async_scheduling vs onnxruntime, in one process.

Nets:
  CHAIN     1000 tiny Adds in a chain (per-op executor overhead)
  WIDE      8 independent branches of 4 x (MatMul 256x256 -> Relu), summed
  WIDETINY  WIDE's shape with 16x16 matrices (tiny ops must not pay a thread hand-off)
  INCEPTION an inception-like CNN block (1x1 / 1x1->3x3 / 1x1->5x5 / pool->1x1, Concat) x3

Run:  .venv/bin/python bench/bench_executors.py [--quick] [--threads N] [--only CHAIN,WIDE]

Times are medians (and bests) of several repeats of a timed loop, the contenders measured in
alternation so that load noise hits all alike; the load average is printed with each line.
BLAS is limited with threadpoolctl: WIDE runs with 1 BLAS thread per op and again with the
library default, so both can be compared. WIDE cases also time "2 raw threads": the same
kernels (numpy directly) split by hand over two Python threads, the ceiling that the
machine's free cores allow right now; judge the async_scheduling speedup against it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from asyncnet.executors import ExecutorOptions
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import make_argument
from asyncnet.workspace import Workspace


def _op(t: str, ins: list[str], outs: list[str], **args: Any) -> pb.OperatorDef:
    o = pb.OperatorDef(type=t, input=ins, output=outs)
    for k, v in args.items():
        o.arg.append(make_argument(k, v))
    return o


# -- nets (NetDef + feeds + matching ONNX graph) --------------------------------------------


def chain_net(
    n: int = 1000,
) -> tuple[pb.NetDef, dict[str, np.ndarray], list[tuple[str, list[str], list[str], dict[str, Any]]]]:
    ops = [("Add", ["c0" if i == 0 else f"c{i}", "one"], [f"c{i + 1}"], {}) for i in range(n)]
    feeds = {"c0": np.zeros(4, np.float32), "one": np.ones(4, np.float32)}
    return _netdef("chain", ops), feeds, ops


def wide_net(size: int, branches: int = 8, depth: int = 4) -> tuple[pb.NetDef, dict[str, np.ndarray], list[Any]]:
    rng = np.random.default_rng(0)
    ops: list[Any] = []
    feeds = {"x": rng.standard_normal((size, size)).astype(np.float32)}
    for b in range(branches):
        src = "x"
        for d in range(depth):
            w = f"w{b}_{d}"
            feeds[w] = (rng.standard_normal((size, size)) / np.sqrt(size)).astype(np.float32)
            ops.append(("MatMul", [src, w], [f"m{b}_{d}"], {}))
            ops.append(("Relu", [f"m{b}_{d}"], [f"r{b}_{d}"], {}))
            src = f"r{b}_{d}"
    ops.append(("Sum", [f"r{b}_{depth - 1}" for b in range(branches)], ["out"], {}))
    return _netdef(f"wide{size}", ops), feeds, ops


def inception_net(blocks: int = 3, c: int = 32, hw: int = 28) -> tuple[pb.NetDef, dict[str, np.ndarray], list[Any]]:
    rng = np.random.default_rng(0)
    ops: list[Any] = []
    feeds = {"data": rng.standard_normal((1, c, hw, hw)).astype(np.float32)}

    def conv(src: str, cin: int, cout: int, k: int, name: str) -> str:
        feeds[f"{name}_w"] = (rng.standard_normal((cout, cin, k, k)) / np.sqrt(cin * k * k)).astype(np.float32)
        feeds[f"{name}_b"] = np.zeros(cout, np.float32)
        ops.append(("Conv", [src, f"{name}_w", f"{name}_b"], [name], {"kernel": k, "pad": k // 2}))
        ops.append(("Relu", [name], [f"{name}_r"], {}))
        return f"{name}_r"

    src, cin = "data", c
    for b in range(blocks):
        p = f"b{b}"
        a = conv(src, cin, 16, 1, f"{p}_1x1")
        r3 = conv(conv(src, cin, 16, 1, f"{p}_3r"), 16, 24, 3, f"{p}_3x3")
        r5 = conv(conv(src, cin, 8, 1, f"{p}_5r"), 8, 8, 5, f"{p}_5x5")
        ops.append(("MaxPool", [src], [f"{p}_pool"], {"kernel": 3, "stride": 1, "pad": 1}))
        pp = conv(f"{p}_pool", cin, 8, 1, f"{p}_pp")
        ops.append(("Concat", [a, r3, r5, pp], [f"{p}_out", f"{p}_split"], {"axis": 1}))
        src, cin = f"{p}_out", 16 + 24 + 8 + 8
    return _netdef("inception", ops), feeds, ops


def _netdef(name: str, ops: list[Any]) -> pb.NetDef:
    net = pb.NetDef(name=name)
    for t, ins, outs, args in ops:
        net.op.append(_op(t, ins, outs, **args))
    return net


def onnx_session(
    ops: list[Any], feeds: dict[str, np.ndarray], inputs: list[str], output: str, out_shape: tuple[int, ...]
) -> Callable[[], Any]:
    """The same net as an ONNX model (weights as initializers) in onnxruntime's default session."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    nodes = []
    for t, ins, outs, args in ops:
        if t == "Conv":
            k, pad = args["kernel"], args["pad"]
            nodes.append(helper.make_node("Conv", ins, outs[:1], kernel_shape=[k, k], pads=[pad] * 4))
        elif t == "MaxPool":
            k, pad = args["kernel"], args["pad"]
            nodes.append(
                helper.make_node("MaxPool", ins, outs[:1], kernel_shape=[k, k], pads=[pad] * 4, strides=[1, 1])
            )
        elif t == "Concat":
            nodes.append(helper.make_node("Concat", ins, outs[:1], axis=args["axis"]))
        else:
            nodes.append(helper.make_node(t, ins, outs[:1]))
    inits = [numpy_helper.from_array(v, name=k) for k, v in feeds.items() if k not in inputs]
    graph = helper.make_graph(
        nodes,
        "bench",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(feeds[n].shape)) for n in inputs],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, list(out_shape))],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    in_feeds = {n: feeds[n] for n in inputs}
    return lambda: sess.run([output], in_feeds)


# -- timing -----------------------------------------------------------------------------------


@contextlib.contextmanager
def blas_threads(n: int | None) -> Iterator[None]:
    if n is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(n):
        yield


def run_net(
    name: str, net: pb.NetDef, feeds: dict[str, np.ndarray], executor: str, threads: int
) -> tuple[Workspace, Any]:
    ws = Workspace()
    for k, v in feeds.items():
        ws.feed(k, v)
    n = ws.create_net(net, executor=executor, options=ExecutorOptions(threads=threads))
    return ws, n


def bench_one(
    label: str,
    net: pb.NetDef,
    feeds: dict[str, np.ndarray],
    ops: list[Any],
    inputs: list[str],
    output: str,
    *,
    threads: int,
    loops: int,
    repeats: int,
    blas: int | None,
    with_ort: bool,
) -> dict[str, float]:
    fns: dict[str, Callable[[], Any]] = {}
    workspaces = []
    with blas_threads(blas):
        ref = None
        for ex in ("simple", "async_scheduling"):
            ws, n = run_net(label, net, feeds, ex, threads)
            workspaces.append(ws)
            n.run()
            if ref is None:
                ref = np.array(ws.fetch(output), copy=True)
            else:
                np.testing.assert_allclose(ws.fetch(output), ref, rtol=1e-5, atol=1e-5)
            fns[ex] = n.run
        assert ref is not None
        if with_ort:
            try:
                sess = onnx_session(ops, feeds, inputs, output, ref.shape)
                np.testing.assert_allclose(sess()[0], ref, rtol=1e-4, atol=1e-4)
                fns["onnxruntime"] = sess
            except Exception as e:  # report, do not hide: the line says why it is missing
                print(f"  onnxruntime unavailable for {label}: {type(e).__name__}: {e}")
        raw = raw_threads(ops, feeds)
        if raw is not None:
            fns["2 raw threads"] = raw
        res = interleaved(fns, loops=loops, rounds=repeats)
    for ws in workspaces:
        ws.close()
    return res


BEST: dict[str, float] = {}  # best seconds per call of the last interleaved() call, by name


def interleaved(fns: dict[str, Callable[[], Any]], *, loops: int, rounds: int) -> dict[str, float]:
    """Median seconds per call of each function, measured in alternation (load noise hits all alike).

    The best times land in ``BEST``.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(loops):
                fn()
            times[name].append((time.perf_counter() - t0) / loops)
    BEST.clear()
    BEST.update({name: min(v) for name, v in times.items()})
    return {name: statistics.median(v) for name, v in times.items()}


def load() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def raw_threads(ops: list[Any], feeds: dict[str, np.ndarray]) -> Callable[[], Any] | None:
    """WIDE's branches as plain numpy, split over the calling thread and one more (None if not WIDE)."""
    if any(t not in ("MatMul", "Relu", "Sum") for t, _, _, _ in ops):
        return None
    branches: dict[str, list[np.ndarray]] = {}
    for t, ins, _outs, _ in ops:
        if t == "MatMul":
            branches.setdefault(ins[1].split("_")[0], []).append(feeds[ins[1]])
    x = feeds["x"]
    work = list(branches.values())

    def branch(ws: list[np.ndarray]) -> np.ndarray:
        s = x
        for w in ws:
            s = np.maximum(s @ w, 0)
        return s

    def run() -> Any:
        out: list[Any] = [None] * len(work)

        def part(ix: range) -> None:
            for i in ix:
                out[i] = branch(work[i])

        t = threading.Thread(target=part, args=(range(1, len(work), 2),))
        t.start()
        part(range(0, len(work), 2))
        t.join()
        return sum(out)

    return run


def chain_overheads(loops: int, repeats: int) -> None:
    net, feeds, ops = chain_net()
    n_ops = len(ops)
    one = feeds["one"]

    def bare() -> None:
        y = feeds["c0"]
        for _ in range(n_ops):
            y = np.add(y, one)

    workspaces = []
    fns: dict[str, Callable[[], Any]] = {"bare numpy": bare}
    for ex in ("simple", "async_scheduling"):
        ws, n = run_net("chain", net, feeds, ex, 2)
        workspaces.append(ws)
        fns[ex] = n.run
        if ex == "simple":
            # the same kernels called from the tightest loop over pre-bound cells
            bound = [(op.kernel, op.inputs[0], op.inputs[1], op.outputs[0]) for op in n.ops]

            def direct(bound: list[Any] = bound) -> None:
                for k, a, b, o in bound:
                    o.value = k(a.value, b.value)[0]

            fns["kernels directly"] = direct
    t = interleaved(fns, loops=loops, rounds=repeats * 3)
    print(f"CHAIN medians of {repeats * 3} rounds x {loops} runs, {load()}")
    print(
        f"CHAIN ({n_ops} Adds of 4 floats): bare numpy np.add {t['bare numpy'] / n_ops * 1e6:.3f} us/op, "
        f"the Add kernels called directly {t['kernels directly'] / n_ops * 1e6:.3f} us/op"
    )
    for ex in ("simple", "async_scheduling"):
        print(
            f"  {ex:17s} {t[ex] / n_ops * 1e6:7.3f} us/op: executor overhead over direct kernel calls "
            f"{(t[ex] - t['kernels directly']) / n_ops * 1e6:6.3f} us/op, over bare numpy "
            f"{(t[ex] - t['bare numpy']) / n_ops * 1e6:6.3f} us/op (best {BEST[ex] / n_ops * 1e6:.3f})"
        )
    for ws in workspaces:
        ws.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="async_scheduling pool size")
    p.add_argument("--quick", action="store_true", help="fewer repeats")
    p.add_argument("--only", default="CHAIN,WIDE,WIDETINY,INCEPTION", help="comma-separated subset")
    args = p.parse_args(argv)
    which = {w.strip().upper() for w in args.only.split(",")}
    reps = 3 if args.quick else 9
    print(
        f"python {sys.version.split()[0]}, numpy {np.__version__}, {os.cpu_count()} CPUs, pool threads {args.threads}"
    )
    if "CHAIN" in which:
        chain_overheads(loops=5 if args.quick else 20, repeats=reps)
    cases = []
    if "WIDE" in which:
        net, feeds, ops = wide_net(256)
        cases += [("WIDE 1 BLAS thread", net, feeds, ops, 1), ("WIDE default BLAS", net, feeds, ops, None)]
    if "WIDETINY" in which:
        net, feeds, ops = wide_net(16)
        cases.append(("WIDETINY", net, feeds, ops, 1))
    if "INCEPTION" in which:
        net, feeds, ops = inception_net()
        cases.append(("INCEPTION x3", net, feeds, ops, 1))
    for label, net, feeds, ops, blas in cases:
        inputs = ["data"] if "data" in feeds else ["x"]
        output = net.op[-1].output[0]
        loops = 200 if label == "WIDETINY" else (3 if args.quick else 10)
        res = bench_one(
            label,
            net,
            feeds,
            ops,
            inputs,
            output,
            threads=args.threads,
            loops=loops,
            repeats=reps,
            blas=blas,
            with_ort=True,
        )
        s, a = res["simple"], res["async_scheduling"]
        line = (
            f"{label:20s} ({len(net.op)} ops) simple {s * 1e3:8.3f} ms  async_scheduling {a * 1e3:8.3f} ms  "
            f"speedup {s / a:5.2f}x (of bests {BEST['simple'] / BEST['async_scheduling']:5.2f}x)"
        )
        if "onnxruntime" in res:
            o = res["onnxruntime"]
            line += f"  onnxruntime {o * 1e3:8.3f} ms  async/ort {a / o:5.2f}x"
        if "2 raw threads" in res:
            line += f"  [2 raw threads: speedup {s / res['2 raw threads']:5.2f}x]"
        print(line + f"  {load()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
