"""Memory a RecurrentNetwork keeps per timestep, with and without recompute_blobs_on_backward.

Run:  PYTHONPATH=. .venv/bin/python bench/bench_rnn_memory.py [--hidden 128] [--batch 32] [--steps 50]

Builds the same 2-layer LSTM (asyncnet.recurrent.build.lstm) twice: keeping every step's gate
blobs, and recomputing them in the backward pass. Prints the bytes the step workspaces hold after
the forward pass and after forward+backward (StepWorkspaces.retained_bytes), and checks that the
parameter gradients are bitwise identical.
"""

from __future__ import annotations

import argparse

import numpy as np

from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.recurrent.build import lstm
from asyncnet.training.gradients import add_gradient_ops
from asyncnet.workspace import Workspace


def measure(
    steps: int, batch: int, dim_in: int, hidden: int, recompute: bool
) -> tuple[int, int, dict[str, np.ndarray]]:
    names = tuple(f"L/layer{k}/{g}" for k in range(2) for g in ("gates_h", "gates")) if recompute else ()
    layer = lstm("x", None, [("h0", "c0"), ("h1", "c1")], dim_in, [hidden, hidden], "L", threaded=False,
                 recompute_blobs_on_backward=names)  # fmt: skip
    fwd = pb.NetDef(name="fwd")
    fwd.op.extend(layer.ops)
    train = pb.NetDef()
    train.CopyFrom(fwd)
    train.name = "train"
    train.op.append(pb.OperatorDef(type="SumElements", input=[layer.outputs["hidden_all"]], output=["loss"]))
    grads = add_gradient_ops(train, ["loss"])
    rng = np.random.default_rng(0)
    ws = Workspace()
    ws.feed("x", rng.standard_normal((steps, batch, dim_in)).astype(np.float32))
    for s in layer.initial_states:
        ws.feed(s, np.zeros((1, batch, hidden), np.float32))
    for p, shape in sorted(layer.params.items()):
        ws.feed(p, (rng.standard_normal(shape) * 0.1).astype(np.float32))
    ws.run_net_once(fwd)
    after_forward = ws.fetch("L/step_workspaces").retained_bytes()
    ws.run_net_once(train)
    after_backward = ws.fetch("L/step_workspaces").retained_bytes()
    return after_forward, after_backward, {p: np.array(ws.fetch(grads[p])) for p in layer.params}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--dim-in", type=int, default=64)
    a = ap.parse_args()
    keep = measure(a.steps, a.batch, a.dim_in, a.hidden, False)
    lean = measure(a.steps, a.batch, a.dim_in, a.hidden, True)
    mib = 2.0**20
    print(f"2-layer LSTM T={a.steps} N={a.batch} D={a.dim_in} H={a.hidden} (float32)")
    print(f"after forward:      keep all {keep[0] / mib:8.2f} MiB   recompute {lean[0] / mib:8.2f} MiB"
          f"   ratio {lean[0] / keep[0]:.2f}")  # fmt: skip
    print(f"after fwd+backward: keep all {keep[1] / mib:8.2f} MiB   recompute {lean[1] / mib:8.2f} MiB"
          f"   ratio {lean[1] / keep[1]:.2f}")  # fmt: skip
    same = all(np.array_equal(keep[2][p], lean[2][p]) for p in keep[2])
    print(f"parameter gradients bitwise identical: {same}")


if __name__ == "__main__":
    main()
