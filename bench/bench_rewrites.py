"""Inference rewrites and onnxruntime offload on real CNNs, against onnxruntime's default session.

For each Caffe net (translated from ../shared/realnets with asyncnet's Caffe front end, generated
weights, batch 1) this times, round-robin in one process so that load changes hit all variants
alike: the numpy net as translated, the numpy net after the inference rewrites, the rewritten net
offloaded to onnxruntime (``Onnxifi`` ops, run by the asyncnet executor), and onnxruntime's default
session on the original net exported to ONNX (the baseline). It prints medians and ratios; it
asserts nothing.

    PYTHONPATH=. python bench/bench_rewrites.py [--iters 30] [--nets resnet50 squeezenet mobilenet]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from asyncnet.caffe import translate_files
from asyncnet.net import Net
from asyncnet.onnx import export_onnx
from asyncnet.schema import TensorInfo
from asyncnet.transforms import offload_to_onnxruntime, optimize_for_inference
from asyncnet.workspace import Workspace

REALNETS = Path(os.environ.get("ASYNCNET_REALNETS", Path(__file__).resolve().parents[2] / "shared" / "realnets"))
NETS = {
    "resnet50": ("caffe_resnet_kaiminghe", "ResNet-50-deploy.prototxt"),
    "squeezenet": ("caffe_squeezenet", "SqueezeNet_v1.1", "deploy.prototxt"),
    "mobilenet": ("caffe_mobilenet_shicai", "mobilenet_deploy.prototxt"),
}


def bench_one(name: str, iters: int, executor: str) -> dict[str, float]:
    import onnxruntime as ort

    t = translate_files(REALNETS.joinpath(*NETS[name]))
    (data,) = t.input_shapes
    shape = (1, *t.input_shapes[data][1:])
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    out = t.predict.external_output[0]
    with Workspace() as ws:
        ws.run_net_once(t.init)
        ws.feed(data, x)
        params = {n: ws.fetch(n) for n in ws.blobs() if n != data}
        opt = optimize_for_inference(t.predict, workspace=ws, data_inputs=[data])
        opt.apply(ws)
        off = offload_to_onnxruntime(opt.predict_net, workspace=ws, data_inputs=[data])
        model = export_onnx(t.predict, None, input_infos={data: TensorInfo(shape, np.dtype(np.float32))}, params=params)
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        out_name = sess.get_outputs()[0].name
        nets = {
            "numpy": Net(t.predict, ws, executor=executor),
            "numpy+rewrites": Net(opt.predict_net, ws, executor=executor),
            "offload": Net(off.predict_net, ws, executor=executor),
        }
        steps: dict[str, Callable[[], object]] = {k: n.run for k, n in nets.items()}
        steps["onnxruntime"] = lambda: sess.run([out_name], {data: x})
        results: dict[str, np.ndarray] = {}
        for k, n in nets.items():
            n.run()
            results[k] = np.array(ws.fetch(out))
        ref = sess.run([out_name], {data: x})[0]
        for k, v in results.items():
            diff = float(np.abs(v - ref).max())
            print(f"  {name} {k}: max |diff| vs onnxruntime {diff:.3g}", file=sys.stderr)
        times: dict[str, list[float]] = {k: [] for k in steps}
        for _ in range(2):  # warmup
            for step in steps.values():
                step()
        for _ in range(iters):
            for k, step in steps.items():
                t0 = time.perf_counter()
                step()
                times[k].append(time.perf_counter() - t0)
        for n in nets.values():
            n.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"{name}: ops {len(t.predict.op)} -> {len(opt.predict_net.op)} after rewrites "
        f"({opt.summary_lines()[0]}); offload: {len(off.report)} Onnxifi op(s)"
    )
    base = med["onnxruntime"]
    for k, v in med.items():
        print(f"  {k:16s} median {v * 1e3:9.2f} ms   / onnxruntime {v / base:6.3f}")
    print(f"  rewrites alone: numpy/numpy+rewrites = {med['numpy'] / med['numpy+rewrites']:.3f}x")
    return med


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--nets", nargs="+", choices=list(NETS), default=list(NETS))
    p.add_argument("--executor", default="simple")
    args = p.parse_args()
    if not REALNETS.exists():
        print(f"real-net corpus not found at {REALNETS} (set ASYNCNET_REALNETS)", file=sys.stderr)
        return 1
    for name in args.nets:
        bench_one(name, args.iters, args.executor)
    return 0


if __name__ == "__main__":
    sys.exit(main())
