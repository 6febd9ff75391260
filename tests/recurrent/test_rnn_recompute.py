"""recompute_blobs_on_backward: the forward keeps one value of those blobs, gradients stay identical."""

from __future__ import annotations

import numpy as np
import pytest

from asyncnet.errors import ArgumentError, OperatorError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.recurrent.build import lstm
from asyncnet.recurrent.runtime import StepWorkspaces
from asyncnet.training.gradients import add_gradient_ops
from asyncnet.workspace import Workspace

T, N, D, H = 6, 3, 4, 5
RECOMPUTE = ("L/layer0/gates_h", "L/layer0/gates", "L/layer1/gates_h", "L/layer1/gates")


def _run(recompute: tuple[str, ...], threaded: bool) -> tuple[dict[str, np.ndarray], StepWorkspaces, int]:
    layer = lstm("x", "lens", [("h0", "c0"), ("h1", "c1")], D, [H, H], "L", threaded=threaded,
                 recompute_blobs_on_backward=recompute)  # fmt: skip
    net = pb.NetDef(name="rnn")
    net.op.extend(layer.ops)
    net.op.append(pb.OperatorDef(type="SumElements", input=[layer.outputs["hidden_all"]], output=["loss"]))
    grads = add_gradient_ops(net, ["loss"])
    rng = np.random.default_rng(3)
    ws = Workspace()
    ws.feed("x", rng.standard_normal((T, N, D)))
    ws.feed("lens", np.array([T, T - 2, 1], np.int32))
    for name in layer.initial_states:
        ws.feed(name, rng.standard_normal((1, N, H)))
    for name, shape in sorted(layer.params.items()):
        ws.feed(name, rng.standard_normal(shape) * 0.3)
    ws.create_net(net)
    ws.run_net(net.name)
    steps = ws.fetch("L/step_workspaces")
    assert isinstance(steps, StepWorkspaces)
    wanted = ["x", *sorted(layer.params)]
    return {n: np.asarray(ws.fetch(grads[n])).copy() for n in wanted}, steps, steps.retained_bytes()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("threaded", [False, True])
def test_recompute_keeps_fewer_bytes_and_gives_identical_gradients(threaded: bool, no_thread_leak: None) -> None:
    full, _, kept_full = _run((), threaded)
    lean, steps, kept_lean = _run(RECOMPUTE, threaded)
    for name, g in full.items():
        assert np.array_equal(g, lean[name]), name
    # Each recomputed blob is (N, 4H) float64 per timestep; only one value of each is kept.
    per_step = len(RECOMPUTE) * N * 4 * H * 8
    assert kept_full - kept_lean == (T - 1) * per_step
    cells = {id(slot.workspace.cell(RECOMPUTE[1])) for slot in steps.slots}
    assert len(cells) == 1


def test_threaded_and_sequential_agree_bitwise_with_recompute() -> None:
    seq, _, _ = _run(RECOMPUTE, False)
    thr, _, _ = _run(RECOMPUTE, True)
    for name, g in seq.items():
        assert np.array_equal(g, thr[name]), name


def test_recompute_names_the_backward_net_does_not_recompute_are_refused() -> None:
    layer = lstm("x", None, [("h0", "c0")], D, H, "L", recompute_blobs_on_backward=("L/layer0/gates",))
    rnn = layer.ops[-1] if layer.ops[-1].type == "RecurrentNetwork" else layer.ops[1]
    for a in rnn.arg:
        if a.name == "recompute_blobs_on_backward":
            del a.strings[:]
            a.strings.append(b"L/layer0/hidden_t")  # written by the forward step net only
    ws = Workspace()
    ws.feed("x", np.zeros((T, N, D)))
    for name in layer.initial_states:
        ws.feed(name, np.zeros((1, N, H)))
    for name, shape in layer.params.items():
        ws.feed(name, np.zeros(shape))
    with pytest.raises((ArgumentError, OperatorError), match="does not recompute"):
        for o in layer.ops:
            ws.run_operator_once(o)


def test_per_timestep_param_gradients_are_released_once_summed() -> None:
    grads, steps, _ = _run((), False)
    names = [n for n in steps.slots[0].workspace.blobs() if n.endswith("_grad")]
    params = [n for n in names if n.startswith("L/layer") and ("_w_grad" in n or "_b_grad" in n)]
    assert not params, params  # nothing of the kind is kept per timestep
    assert all(np.isfinite(g).all() for g in grads.values())
    again, _, _ = _run((), False)
    for name, g in grads.items():
        assert np.array_equal(g, again[name]), name
