"""APMeter against a naive average-precision loop, including its sliding buffer across runs."""

from __future__ import annotations

import numpy as np

from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.workspace import Workspace
from tests.ops.run_util import make_op, run_op


def naive_ap(scores: np.ndarray, labels: np.ndarray) -> list[float]:
    out = []
    for k in range(scores.shape[1]):
        ranked = sorted(range(scores.shape[0]), key=lambda i: -scores[i, k])
        hits, total = 0, 0.0
        for rank, i in enumerate(ranked, 1):
            if labels[i, k]:
                hits += 1
                total += hits / rank
        out.append(total / max(1, hits))
    return out


def test_apmeter_matches_naive() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0.1, 1, (10, 3)).astype(np.float32)
    t = rng.integers(0, 2, (10, 3)).astype(np.int32)
    t[:, 2] = 0  # a class with no positives has AP 0
    (ap,) = run_op("APMeter", [p, t], buffer_size=10)
    np.testing.assert_allclose(ap, naive_ap(p, t), rtol=1e-6)


def test_apmeter_buffer_keeps_the_last_rows() -> None:
    rng = np.random.default_rng(1)
    batches = [(rng.random((4, 2)).astype(np.float32), rng.integers(0, 2, (4, 2))) for _ in range(3)]
    net = pb.NetDef(name="ap")
    net.op.append(make_op("APMeter", ["p", "t"], ["ap"], buffer_size=6))
    with Workspace() as ws:
        ws.feed("p", batches[0][0])
        ws.feed("t", batches[0][1])
        with ws.create_net(net) as n:
            for p, t in batches:
                ws.feed("p", p)
                ws.feed("t", t)
                n.run()
        allp = np.concatenate([b[0] for b in batches])[-6:]
        allt = np.concatenate([b[1] for b in batches])[-6:]
        np.testing.assert_allclose(ws.fetch("ap"), naive_ap(allp, allt), rtol=1e-6)
