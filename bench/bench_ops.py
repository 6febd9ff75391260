"""Vision-op speed against onnxruntime, measured as ratios within one process.

Two parts:

* ``ops``: single Conv / MaxPool / AveragePool / FC shapes taken from ResNet-50, each run
  through asyncnet's kernel and through an equivalent one-node onnxruntime model.
* ``nets``: whole nets translated from the Caffe prototxts under realnets with
  ``asyncnet.caffe`` (ResNet-50, SqueezeNet 1.1, MobileNet v1; batch 1, seeded random weights)
  plus bench_executors' INCEPTION, against the ONNX export of the same net in onnxruntime's
  default session; timed in alternating rounds, medians reported. ``--no-reuse`` turns off
  output-buffer reuse (asyncnet.ops._buffers) to measure what it saves.
* ``resnet50``: the Caffe2 model-zoo ``resnet50/predict_net.pbtxt`` against the ONNX
  ``light_resnet50.onnx`` of the same architecture. The ONNX file stores only weight
  shapes (ConstantOfShape nodes); both runtimes get the same seeded random weights made
  from those shapes, the outputs are compared, then timed. ``--profile`` adds a per-op-type
  breakdown of asyncnet's time.

Usage::

    .venv/bin/python bench/bench_ops.py [ops|nets|resnet50|all] [--repeat N] [--threads T] [--profile]
    .venv/bin/python bench/bench_ops.py nets --rounds 15 [--only resnet50,mobilenet] [--no-reuse]

Needs onnx and onnxruntime, and the realnets corpus (../shared/realnets or $ASYNCNET_REALNETS)
for the resnet50 part. Machines are noisy: compare the ratio, not the absolute times.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REALNETS = Path(os.environ.get("ASYNCNET_REALNETS", ROOT.parent / "shared" / "realnets"))


def _ort_session(model: Any, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # Spinning pool threads would steal the cores from numpy's BLAS threads between runs.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


CLOCK: Callable[[], float] = time.perf_counter


def _best(fn: Callable[[], Any], repeat: int) -> float:
    """Best of ``repeat`` timed calls after one warm-up (best-of is the least noisy on shared machines)."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = CLOCK()
        fn()
        times.append(CLOCK() - t0)
    return min(times)


def _best_pair(a: Callable[[], Any], b: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """Best times of ``a`` and ``b`` timed alternately, so that load changes hit both alike."""
    a()
    b()
    ta, tb = [], []
    for _ in range(repeat):
        t0 = CLOCK()
        a()
        t1 = CLOCK()
        b()
        t2 = CLOCK()
        ta.append(t1 - t0)
        tb.append(t2 - t1)
    return min(ta), min(tb)


# ---------------------------------------------------------------------------
# Single ops


def _one_node_model(op_type: str, inputs: dict[str, np.ndarray], attrs: dict[str, Any]) -> Any:
    from onnx import TensorProto, helper

    node = helper.make_node(op_type, list(inputs), ["y"], **attrs)
    graph = helper.make_graph(
        [node],
        "bench",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, a.shape) for n, a in inputs.items()],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _asyncnet_kernel(op_type: str, inputs: Sequence[str], args: dict[str, Any]) -> Callable[..., Any]:
    from asyncnet.net import op_info, prepare_op
    from asyncnet.proto import caffe2_pb2 as pb
    from asyncnet.serde import make_argument
    from asyncnet.workspace import Workspace

    op = pb.OperatorDef(type=op_type, input=list(inputs), output=["y"])
    op.arg.extend(make_argument(k, v) for k, v in args.items())
    ws = Workspace()
    return prepare_op(op_info(op, workspace=ws), ws).kernel  # type: ignore[no-any-return]


def _median_triple(fns: Sequence[Callable[[], Any]], repeat: int) -> list[float]:
    """Median time of each of ``fns``, timed in alternation (in a shuffled order each round, so
    that neither load changes nor who-ran-before favours one)."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    order = np.random.default_rng(0)
    for _ in range(repeat):
        for i in order.permutation(len(fns)):
            t0 = CLOCK()
            fns[i]()
            times[i].append(CLOCK() - t0)
    return [float(np.median(t)) for t in times]


OpCase = tuple[str, str, dict[str, np.ndarray], dict[str, Any], str, dict[str, Any], Callable[..., Any]]


def _window(hw: int, k: int, s: int, p: int, legacy: int = 0) -> Any:
    from asyncnet.ops._window import Window, compute_size_and_pad

    out, head, tail = compute_size_and_pad(hw, s, k, 1, legacy, p, p)
    return Window((k, k), (s, s), (1, 1), (head, head), (tail, tail), (out, out))


def op_cases(rng: np.random.Generator) -> list[OpCase]:
    """Single ops from ResNet-50, MobileNet, SqueezeNet and INCEPTION, each with the previous
    formulation of the kernel (``asyncnet.ops._conv_util``: im2col/strided-view conv, padded
    separable pooling) as a same-process reference for what the planned kernels gained."""
    from asyncnet.ops import _conv_util as cu

    cases: list[OpCase] = []

    def conv(name: str, n: int, c: int, hw: int, m: int, k: int, s: int, p: int, group: int = 1) -> None:
        x = rng.standard_normal((n, c, hw, hw), dtype=np.float32)
        w = rng.standard_normal((m, c // group, k, k), dtype=np.float32) * np.float32(0.05)
        win = _window(hw, k, s, p)
        args = {"kernel": k, "stride": s, "pad": p, "group": group}
        attrs = {"kernel_shape": [k, k], "strides": [s, s], "pads": [p] * 4, "group": group}
        ref = lambda x, w, win=win, g=group: cu.conv_forward(x, w, None, win, "NCHW", g)  # noqa: E731
        cases.append((name, "Conv", {"x": x, "w": w}, args, "Conv", attrs, ref))

    def pool(name: str, op: str, c: int, hw: int, k: int, s: int, p: int, legacy: int = 0) -> None:
        x = rng.standard_normal((1, c, hw, hw), dtype=np.float32)
        win = _window(hw, k, s, p, legacy)
        args = {"kernel": k, "stride": s, "pad": p, "legacy_pad": legacy}
        attrs: dict[str, Any] = {"kernel_shape": [k, k], "strides": [s, s], "pads": [p] * 4}
        if legacy:
            attrs["ceil_mode"] = 1
        if op == "MaxPool":
            ref = lambda x, win=win: cu.max_pool(x, win, "NCHW")  # noqa: E731
        else:
            attrs["count_include_pad"] = 0
            ref = lambda x, win=win: cu.average_pool(x, win, "NCHW", False)  # noqa: E731
        cases.append((name, op, {"x": x}, args, op, attrs, ref))

    conv("r50 conv1 7x7/2 3->64 @224", 1, 3, 224, 64, 7, 2, 3)
    conv("r50 3x3 64->64 @56", 1, 64, 56, 64, 3, 1, 1)
    conv("r50 1x1 64->256 @56", 1, 64, 56, 256, 1, 1, 0)
    conv("r50 1x1/2 512->1024 @28", 1, 512, 28, 1024, 1, 2, 0)
    conv("r50 3x3 256->256 @14", 1, 256, 14, 256, 3, 1, 1)
    conv("r50 3x3 64->64 @56 batch 4", 4, 64, 56, 64, 3, 1, 1)
    conv("mb dw 3x3 32 @112", 1, 32, 112, 32, 3, 1, 1, group=32)
    conv("mb dw 3x3/2 64 @112", 1, 64, 112, 64, 3, 2, 1, group=64)
    conv("mb dw 3x3 128 @56", 1, 128, 56, 128, 3, 1, 1, group=128)
    conv("mb dw 3x3 256 @28", 1, 256, 28, 256, 3, 1, 1, group=256)
    conv("mb dw 3x3 512 @14", 1, 512, 14, 512, 3, 1, 1, group=512)
    conv("mb dw 3x3 1024 @7", 1, 1024, 7, 1024, 3, 1, 1, group=1024)
    conv("mb 1x1 512->512 @14", 1, 512, 14, 512, 1, 1, 0)
    conv("sq 3x3 16->64 @55", 1, 16, 55, 64, 3, 1, 1)
    conv("inc 5x5 8->8 @28", 1, 8, 28, 8, 5, 1, 2)
    pool("r50 maxpool 3x3/2 @112", "MaxPool", 64, 112, 3, 2, 1)
    pool("sq maxpool 3x3/2 ceil @111", "MaxPool", 64, 111, 3, 2, 0, legacy=3)
    pool("inc maxpool 3x3/1 @28", "MaxPool", 56, 28, 3, 1, 1)
    pool("avgpool 3x3/1 @112", "AveragePool", 64, 112, 3, 1, 1)
    return cases


def bench_ops(repeat: int, threads: int) -> list[tuple[str, float, float, float]]:
    """(name, asyncnet s, previous-formulation s, onnxruntime s), medians of alternated runs."""
    rng = np.random.default_rng(0)
    cases = op_cases(rng)
    xf = rng.standard_normal((1, 2048), dtype=np.float32)
    wf = rng.standard_normal((1000, 2048), dtype=np.float32)
    bf = rng.standard_normal((1000,), dtype=np.float32)

    def fc_ref(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
        return x @ w.T + b  # type: ignore[no-any-return]

    cases.append(("FC 2048->1000", "FC", {"x": xf, "w": wf, "b": bf}, {}, "Gemm", {"transB": 1}, fc_ref))
    results = []
    for name, c2_type, inputs, c2_args, onnx_type, onnx_attrs, reference in cases:
        kernel = _asyncnet_kernel(c2_type, list(inputs), c2_args)
        sess = _ort_session(_one_node_model(onnx_type, inputs, onnx_attrs), threads)
        values = list(inputs.values())
        ours = kernel(*values)[0]
        ref = sess.run(None, inputs)[0]
        np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=1e-3 * float(np.abs(ref).max()))
        np.testing.assert_allclose(reference(*values), ref, rtol=1e-3, atol=1e-3 * float(np.abs(ref).max()))
        t_ours, t_ref, t_ort = _median_triple(
            [
                lambda k=kernel, v=values: k(*v),  # type: ignore[misc]
                lambda f=reference, v=values: f(*v),  # type: ignore[misc]
                lambda s=sess, i=inputs: s.run(None, i),  # type: ignore[misc]
            ],
            repeat,
        )
        results.append((name, t_ours, t_ref, t_ort))
    return results


# ---------------------------------------------------------------------------
# ResNet-50


def _seeded_weights(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
    """Random weights scaled so activations stay O(1) through 50 layers."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name in sorted(shapes):
        shape = shapes[name]
        base = name[:-2] if name.endswith("_0") else name
        if len(shape) >= 2:
            fan_in = int(np.prod(shape[1:]))
            v = rng.standard_normal(shape) * np.sqrt(1.0 / fan_in)
        elif base.endswith(("_riv", "_var")):
            v = rng.uniform(0.5, 1.5, shape)
        elif base.endswith("_s"):
            v = rng.uniform(0.5, 1.0, shape)
        else:
            v = rng.standard_normal(shape) * 0.1
        out[name] = np.asarray(v, dtype=np.float32)
    return out


def prepare_zoo_pair(
    name: str, threads: int = 0, seed: int = 0
) -> tuple[Callable[[], np.ndarray], Callable[[], np.ndarray], Any]:
    """(run asyncnet, run onnxruntime, asyncnet Net) for a model-zoo net and its ONNX light model,
    both given the same seeded weights (ONNX blob ``X_0`` is Caffe2 blob ``X``)."""
    import json

    import onnx
    from onnx import numpy_helper

    from asyncnet import serde
    from asyncnet.workspace import Workspace

    model = onnx.load(str(REALNETS / "onnx_light_models" / f"light_{name}.onnx"))
    zoo = REALNETS / "caffe2_model_zoo" / name
    net_path = zoo / "predict_net.pbtxt"
    net_def = serde.read_net(net_path if net_path.exists() else zoo / "predict_net.pb")
    (c2_data, (_, data_shape)), *_ = json.loads((zoo / "value_info.json").read_text()).items()
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    # The light model makes each big weight with ConstantOfShape(shape initializer).
    shapes: dict[str, tuple[int, ...]] = {}
    keep_nodes = []
    for node in model.graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in inits:
            shapes[node.output[0]] = tuple(int(d) for d in inits[node.input[0]])
        else:
            keep_nodes.append(node)
    names = [i.name for i in model.graph.input]
    data_name = f"{c2_data}_0" if f"{c2_data}_0" in names else names[0]
    for inp in model.graph.input:
        if inp.name != data_name and inp.name not in inits:
            shapes[inp.name] = tuple(d.dim_value for d in inp.type.tensor_type.shape.dim)
    weights = _seeded_weights(shapes, seed)
    real = {n: a for n, a in inits.items() if not n.endswith("__SHAPE") and a.dtype == np.float32}
    del model.graph.node[:]
    model.graph.node.extend(keep_nodes)
    used_inits = [t for t in model.graph.initializer if not t.name.endswith("__SHAPE")]
    del model.graph.initializer[:]
    model.graph.initializer.extend(used_inits)
    model.graph.initializer.extend(numpy_helper.from_array(a, n) for n, a in weights.items() if n not in real)
    graph_inputs = [i for i in model.graph.input if i.name == data_name]
    del model.graph.input[:]
    model.graph.input.extend(graph_inputs)
    # IR 3 demanded every initializer be a graph input; from IR 4 on they need not be.
    model.ir_version = max(model.ir_version, 4)
    sess = _ort_session(model, threads)

    onnx_dims = [
        d.dim_value for d in next(i for i in model.graph.input if i.name == data_name).type.tensor_type.shape.dim
    ]
    if all(onnx_dims):
        # The zoo's squeezenet value_info says 227 x 227 where its ONNX export fixed 224 x 224.
        data_shape = onnx_dims
    count = int(np.prod(data_shape))
    data = np.arange(count, dtype=np.float32).reshape(data_shape) / np.float32(count)
    ws = Workspace()
    for blob, arr in {**weights, **real}.items():
        ws.feed(blob[:-2] if blob.endswith("_0") else blob, arr)
    ws.feed(c2_data, data)
    missing = [n for n in net_def.external_input if not ws.has(n)]
    if missing:
        raise SystemExit(f"no weights for {missing[:5]}")
    net = ws.create_net(net_def)
    out_name = net_def.external_output[0]

    def run_ours() -> np.ndarray:
        net.run()
        return ws.fetch(out_name)  # type: ignore[no-any-return]

    def run_ort() -> np.ndarray:
        return sess.run(None, {data_name: data})[0]  # type: ignore[no-any-return]

    return run_ours, run_ort, net


# ---------------------------------------------------------------------------
# Whole nets from Caffe prototxts

CAFFE_NETS = {
    "resnet50": ("caffe_resnet_kaiminghe", "ResNet-50-deploy.prototxt"),
    "squeezenet": ("caffe_squeezenet", "SqueezeNet_v1.1/deploy.prototxt"),
    "mobilenet": ("caffe_mobilenet_shicai", "mobilenet_deploy.prototxt"),
}


def _ort_net_session(model: Any, threads: int) -> Any:
    """onnxruntime's default session, or one limited to ``threads`` intra-op threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _inception_onnx(ops: list[Any], feeds: dict[str, np.ndarray], output: str, out_shape: tuple[int, ...]) -> Any:
    """bench_executors' INCEPTION as an ONNX model (weights as initializers)."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = []
    for t, ins, outs, args in ops:
        if t in ("Conv", "MaxPool"):
            k, pad = args["kernel"], args["pad"]
            nodes.append(helper.make_node(t, ins, outs[:1], kernel_shape=[k, k], pads=[pad] * 4))
        elif t == "Concat":
            nodes.append(helper.make_node("Concat", ins, outs[:1], axis=args["axis"]))
        else:
            nodes.append(helper.make_node(t, ins, outs[:1]))
    graph = helper.make_graph(
        nodes,
        "inception",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, list(feeds["data"].shape))],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, list(out_shape))],
        initializer=[numpy_helper.from_array(v, name=k) for k, v in feeds.items() if k != "data"],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def prepare_net_pair(
    name: str, seed: int = 0, ort_threads: int = 0
) -> tuple[Callable[[], Any], Callable[[], Any], Any]:
    """(run asyncnet, run onnxruntime, asyncnet Net) for a CAFFE_NETS entry or "inception";
    onnxruntime gets its default session unless ``ort_threads``; outputs are checked to agree first."""

    from asyncnet.onnx import export_onnx
    from asyncnet.shapes import info_of
    from asyncnet.workspace import Workspace

    ws = Workspace()
    rng = np.random.default_rng(seed)
    if name == "inception":
        sys.path.insert(0, str(ROOT / "bench"))
        from bench_executors import inception_net

        net_def, feeds, ops = inception_net()
        for blob, arr in feeds.items():
            ws.feed(blob, arr)
        net = ws.create_net(net_def)
        out_name = net_def.op[-1].output[0]
        net.run()
        isess = _ort_net_session(_inception_onnx(ops, feeds, out_name, ws.fetch(out_name).shape), ort_threads)
        data_feed = {"data": feeds["data"]}

        def run_ort() -> Any:
            return isess.run(None, data_feed)[0]

    else:
        from asyncnet.caffe import translate_files

        folder, proto = CAFFE_NETS[name]
        tr = translate_files(REALNETS / folder / proto)
        ws.run_net_once(tr.init)
        net_def = tr.predict
        data = list(tr.input_shapes)
        for blob, shape in tr.input_shapes.items():
            ws.feed(blob, rng.standard_normal((1, *shape[1:])).astype(np.float32))
        names = [n for n in net_def.external_input if ws.has(n)]
        params = {n: ws.fetch(n) for n in names if n not in data}
        infos = {n: info_of(ws.fetch(n)) for n in data}
        model = export_onnx(net_def, None, input_infos=infos, params=params)
        sess = _ort_net_session(model, ort_threads)
        feeds_ort = {i.name: np.asarray(ws.fetch(i.name)) for i in sess.get_inputs()}
        net = ws.create_net(net_def)
        out_name = net_def.external_output[0]

        def run_ort() -> Any:
            return sess.run(None, feeds_ort)[0]

    def run_ours() -> Any:
        net.run()
        return ws.fetch(out_name)

    a, b = np.asarray(run_ours()), np.asarray(run_ort())
    np.testing.assert_allclose(a, b.reshape(a.shape), rtol=1e-3, atol=1e-4 * max(1.0, float(np.abs(b).max())))
    return run_ours, run_ort, net


def bench_nets(
    names: Sequence[str], rounds: int, reuse: bool, block: int = 4, ort_threads: int = 0
) -> list[tuple[str, float, float]]:
    """(net, asyncnet median s, onnxruntime median s).

    Each round runs ``block`` passes of asyncnet, then ``block`` of onnxruntime, and times all
    but the first of each block: onnxruntime's default session spins its pool threads after a
    run and OpenBLAS spins its own, so strict one-by-one alternation would measure each
    contender against the other's spinning threads.
    """
    try:
        from asyncnet.ops import _buffers
    except ImportError:  # an older checkout, measured as the baseline
        _buffers = None  # type: ignore[assignment]
    if _buffers is not None:
        _buffers.ENABLED = reuse
    pairs = {n: prepare_net_pair(n, ort_threads=ort_threads) for n in names}
    times: dict[str, tuple[list[float], list[float]]] = {n: ([], []) for n in names}
    for _ in range(rounds):
        for n, (fa, fb, _) in pairs.items():
            for fn, acc in ((fa, times[n][0]), (fb, times[n][1])):
                fn()
                for _ in range(block - 1):
                    t0 = CLOCK()
                    fn()
                    acc.append(CLOCK() - t0)
    for _, _, net in pairs.values():
        net.close()
    if _buffers is not None:
        _buffers.ENABLED = True
    return [(n, float(np.median(times[n][0])), float(np.median(times[n][1]))) for n in names]


def bench_reuse(
    names: Sequence[str], rounds: int, block: int = 4, ort_threads: int = 0
) -> list[tuple[str, float, float]]:
    """(net, median s with output-buffer reuse, median s without), alternating per block.

    onnxruntime only checks outputs here, but its session is still made with ``ort_threads``:
    a default session's spinning threads would otherwise count in ``--cpu-time``."""
    from asyncnet.ops import _buffers

    pairs = {n: prepare_net_pair(n, ort_threads=ort_threads) for n in names}
    times: dict[str, tuple[list[float], list[float]]] = {n: ([], []) for n in names}
    for _ in range(rounds):
        for n, (fa, _, _) in pairs.items():
            for enabled, acc in ((True, times[n][0]), (False, times[n][1])):
                _buffers.ENABLED = enabled
                fa()
                for _ in range(block - 1):
                    t0 = CLOCK()
                    fa()
                    acc.append(CLOCK() - t0)
    _buffers.ENABLED = True
    for _, _, net in pairs.values():
        net.close()
    return [(n, float(np.median(times[n][0])), float(np.median(times[n][1]))) for n in names]


def profile_net(net: Any, repeat: int) -> dict[str, float]:
    """Seconds per op type for one pass (best of ``repeat`` per op)."""
    per_type: dict[str, float] = defaultdict(float)
    for op in net.ops:
        op.run()
    for op in net.ops:
        best = float("inf")
        for _ in range(repeat):
            t0 = CLOCK()
            op.run()
            best = min(best, CLOCK() - t0)
        per_type[op.info.type] += best
    return dict(per_type)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("what", nargs="?", default="all", choices=("ops", "nets", "resnet50", "all"))
    parser.add_argument("--rounds", type=int, default=15, help="nets: alternating timed rounds (median reported)")
    parser.add_argument("--only", default="resnet50,squeezenet,mobilenet,inception", help="nets: comma-separated")
    parser.add_argument("--no-reuse", action="store_true", help="nets: allocate every output afresh")
    parser.add_argument(
        "--reuse-ab", action="store_true", help="nets: time asyncnet with and without output-buffer reuse instead"
    )
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0 = its default)")
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="one thread each (BLAS and onnxruntime) and process CPU time instead of wall time: "
        "stable on a loaded machine",
    )
    parser.add_argument("--profile", action="store_true", help="per-op-type breakdown of the asyncnet ResNet-50 pass")
    args = parser.parse_args(argv)
    limiter = None
    if args.cpu_time:
        from threadpoolctl import threadpool_limits

        global CLOCK
        CLOCK = time.process_time
        args.threads = 1
        limiter = threadpool_limits(1)
    print(f"clock: {'process CPU time, 1 thread each' if args.cpu_time else 'wall time'}; best of {args.repeat}")
    if args.what in ("ops", "all"):
        print(f"{'op':32s} {'asyncnet ms':>12s} {'before ms':>10s} {'ort ms':>10s} {'/ort':>6s} {'before/ort':>10s}")
        for name, ours, before, ort_t in bench_ops(args.repeat, args.threads):
            print(
                f"{name:32s} {ours * 1e3:12.3f} {before * 1e3:10.3f} {ort_t * 1e3:10.3f} "
                f"{ours / ort_t:6.2f} {before / ort_t:10.2f}"
            )
    if args.what in ("nets", "all"):
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        if args.reuse_ab:
            print(f"{'net':12s} {'reuse ms':>12s} {'fresh ms':>10s} {'ratio':>7s}   (medians of {args.rounds} rounds)")
            for name, on, off in bench_reuse(names, args.rounds, ort_threads=args.threads):
                print(f"{name:12s} {on * 1e3:12.2f} {off * 1e3:10.2f} {on / off:7.3f}")
            return 0
        print(f"{'net':12s} {'asyncnet ms':>12s} {'ort ms':>10s} {'ratio':>7s}   (medians of {args.rounds} rounds)")
        for name, ours, ort_t in bench_nets(names, args.rounds, reuse=not args.no_reuse, ort_threads=args.threads):
            print(f"{name:12s} {ours * 1e3:12.2f} {ort_t * 1e3:10.2f} {ours / ort_t:7.2f}")
        if args.profile:
            _, _, net = prepare_net_pair(names[0])
            for op_type, secs in sorted(profile_net(net, 3).items(), key=lambda kv: -kv[1]):
                print(f"  {names[0]} {op_type:14s} {secs * 1e3:8.2f} ms")
            net.close()
    if args.what in ("resnet50", "all"):
        run_ours, run_ort, net = prepare_zoo_pair("resnet50", args.threads)
        a, b = run_ours(), run_ort()
        diff = float(np.abs(a - b).max())
        print(
            f"resnet50 output {a.shape}: max |asyncnet - onnxruntime| = {diff:.2e}, argmax {a.argmax()} vs {b.argmax()}"
        )
        t_ours, t_ort = _best_pair(run_ours, run_ort, args.repeat)
        print(
            f"resnet50 batch 1: asyncnet {t_ours * 1e3:.1f} ms, onnxruntime {t_ort * 1e3:.1f} ms, ratio {t_ours / t_ort:.2f}"
        )
        if args.profile:
            for op_type, secs in sorted(profile_net(net, 3).items(), key=lambda kv: -kv[1]):
                print(f"  {op_type:14s} {secs * 1e3:8.2f} ms")
        net.close()
    if limiter is not None:
        limiter.restore_original_limits()
    return 0


if __name__ == "__main__":
    sys.exit(main())
