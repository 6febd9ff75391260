"""The threaded timestep executor: same bits as sequential timesteps, real cross-timestep overlap, failures."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from asyncnet.errors import OperatorError
from asyncnet.net import op_info
from asyncnet.opinfo import OpInfo
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.recurrent.build import RecurrentLayer, lstm
from asyncnet.recurrent.runtime import RecurrentRunner, StepWorkspaces
from asyncnet.recurrent.spec import parse_spec
from asyncnet.recurrent.timesteps import Task, dependencies
from asyncnet.registry import default_registry, register_op
from asyncnet.schema import Arg, TensorInfo
from asyncnet.serde import make_argument
from asyncnet.training.gradients import add_gradient_ops
from asyncnet.workspace import Workspace

T, N, D, H = 8, 4, 5, 16


def build(threaded: bool, layers: int = 2) -> tuple[RecurrentLayer, pb.NetDef, dict[str, str]]:
    layer = lstm("x", "lens", [(f"h{k}", f"c{k}") for k in range(layers)], D, [H] * layers, "L", threaded=threaded)
    net = pb.NetDef(name="train")
    net.op.extend(layer.ops)
    net.op.append(pb.OperatorDef(type="Mul", input=[layer.outputs["hidden_all"], "w"], output=["weighted"]))
    net.op.append(pb.OperatorDef(type="SumElements", input=["weighted"], output=["loss"]))
    grads = add_gradient_ops(net, ["loss"])
    return layer, net, grads


def fed_workspace(layer: RecurrentLayer) -> Workspace:
    """A workspace holding seeded inputs, lengths, loss weights, initial states and params for ``layer``."""
    rng = np.random.default_rng(7)
    ws = Workspace()
    ws.feed("x", rng.standard_normal((T, N, D)).astype(np.float32))
    ws.feed("lens", np.array([8, 5, 1, 7], np.int32))
    ws.feed("w", rng.standard_normal((T, N, H)).astype(np.float32))
    for s in layer.initial_states:
        ws.feed(s, rng.standard_normal((1, N, H)).astype(np.float32))
    for p, shape in layer.params.items():
        ws.feed(p, (0.3 * rng.standard_normal(shape)).astype(np.float32))
    return ws


def run(threaded: bool, threads: int | None = None) -> dict[str, np.ndarray]:
    layer, net, grads = build(threaded)
    if threads is not None:
        for op in net.op:
            if op.type.startswith("RecurrentNetwork"):
                op.arg.append(make_argument("rnn_executor.num_threads", threads))
    ws = fed_workspace(layer)
    with ws.create_net(net) as n:
        n.run(timeout=60)
        n.run(timeout=60)  # step workspaces are reused across runs
    names = [*layer.outputs.values(), *(g for g in grads.values())]
    return {name: np.array(ws.fetch(name)) for name in names}


@pytest.mark.timeout(120)
def test_threaded_timesteps_are_bitwise_sequential(no_thread_leak: None) -> None:
    seq = run(False)
    for threads in (2, 4):
        par = run(True, threads)
        assert seq.keys() == par.keys()
        for name, value in seq.items():
            assert par[name].dtype == value.dtype
            assert np.array_equal(par[name], value), f"{name} differs with {threads} threads"


@pytest.mark.timeout(120)
def test_measured_policy_runs_both_modes_with_the_same_bits(no_thread_leak: None, monkeypatch: Any) -> None:
    """enable_rnn_executor times threaded against sequential timesteps (executors/mode_choice.py):
    every run, whichever mode it got, gives the sequential bits."""
    from asyncnet.executors.mode_choice import ModeChooser

    picked: list[str] = []
    pick = ModeChooser.pick

    def recording(self: ModeChooser) -> str:
        mode = pick(self)
        picked.append(mode)
        return mode

    monkeypatch.setattr(ModeChooser, "pick", recording)
    seq = run(False)
    layer, net, grads = build(True)
    for op in net.op:
        if op.type.startswith("RecurrentNetwork"):
            op.arg.append(make_argument("rnn_executor.num_threads", 2))
    ws = fed_workspace(layer)
    with ws.create_net(net) as n:
        for _ in range(10):
            n.run(timeout=60)
            for name, value in seq.items():
                assert np.array_equal(ws.fetch(name), value), name
    assert {"threaded", "sequential"} <= set(picked)


def test_layer_two_at_t_is_independent_of_layer_one_at_t_plus_one() -> None:
    """The dependency graph of the unrolled step net allows the cross-timestep overlap."""
    layer, _net, _grads = build(True)
    ws = Workspace()
    rng = np.random.default_rng(0)
    ws.feed("x", rng.standard_normal((T, N, D)).astype(np.float32))
    ws.feed("lens", np.full(N, T, np.int32))
    for s in layer.initial_states:
        ws.feed(s, np.zeros((1, N, H), np.float32))
    for p, shape in layer.params.items():
        ws.feed(p, np.zeros(shape, np.float32))
    net = pb.NetDef(name="fwd")
    net.op.extend(layer.ops)
    ws.run_net_once(net)
    # Rebuild the forward tasks the executor used and check reachability.
    info = op_info(layer.ops[1], workspace=ws)
    runner = RecurrentRunner(info, parse_spec(info), ws)
    steps = StepWorkspaces("probe")
    runner.forward([ws.fetch(n) for n in layer.ops[1].input], steps)
    slots = runner.slots(steps, T)
    tasks: list[Task] = runner._tasks(
        slots,
        [s.forward.net.ops for s in slots],
        runner.spec.links,
        runner.written_f,
        {
            **{s: ws.fetch(s) for s in runner.spec.recurrent_states},
            "L/i2h": ws.fetch("L/i2h"),
        },
    )
    children, counts = dependencies(tasks)
    per_step = len(tasks) // T
    unit = [k for k, op in enumerate(slots[0].forward.net.ops) if op.info.type == "LSTMUnit"]
    assert len(unit) == 2 and sum(counts) > 0

    def reaches(a: int, b: int) -> bool:
        seen, todo = {a}, [a]
        while todo:
            for c in children[todo.pop()]:
                if c == b:
                    return True
                if c not in seen:
                    seen.add(c)
                    todo.append(c)
        return False

    t = 3
    layer2_t = t * per_step + unit[1]
    layer1_next = (t + 1) * per_step + unit[0]
    assert not reaches(layer2_t, layer1_next) and not reaches(layer1_next, layer2_t)
    assert reaches(t * per_step + unit[0], layer1_next)  # layer 1 still follows itself
    assert reaches(t * per_step + unit[0], layer2_t)


def _register_fail_op() -> None:
    if default_registry().has("RnnTestFailAt"):
        return

    def infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
        return [ins[0]]

    @register_op(
        "RnnTestFailAt",
        inputs=2,
        outputs=1,
        infer=infer,
        args=(Arg("at", 0, "timestep that fails"),),
        doc="Test only: identity on input 0, raises at timestep `at` (input 1).",
    )
    def factory(op: OpInfo) -> Callable[..., Any]:
        at = int(op.arg("at", 0))

        def kernel(x: Any, t: Any) -> tuple[Any]:
            if int(np.asarray(t).reshape(-1)[0]) == at:
                raise ValueError(f"planned failure at timestep {at}")
            return (x,)

        return kernel


@pytest.mark.timeout(60)
@pytest.mark.parametrize("threaded", [False, True])
def test_failure_in_a_step_names_the_inner_and_outer_op(no_thread_leak: None, threaded: bool) -> None:
    _register_fail_op()
    layer = lstm("x", None, [("h0", "c0")], D, H, "L", threaded=threaded, forward_only=True)
    rnn = layer.ops[1]
    rnn.name = "my_rnn"
    step = next(a.n for a in rnn.arg if a.name == "step_net")
    first = step.op[0]
    bad = pb.OperatorDef(type="RnnTestFailAt", input=[first.input[0], "L/timestep"], output=["L/probe"], name="failer")
    bad.arg.append(make_argument("at", 5))
    step.op.insert(1, bad)
    net = pb.NetDef(name="outer", type="async_scheduling")
    net.op.extend(layer.ops)
    ws = Workspace()
    ws.feed("x", np.ones((T, N, D), np.float32))
    for s in layer.initial_states:
        ws.feed(s, np.zeros((1, N, H), np.float32))
    for p, shape in layer.params.items():
        ws.feed(p, np.full(shape, 0.01, np.float32))
    with ws.create_net(net) as n, pytest.raises(OperatorError) as info:
        n.run(timeout=30)
    text = str(info.value)
    assert "RecurrentNetwork 'my_rnn' in net 'outer'" in text
    assert "RnnTestFailAt 'failer' in net 'L/step_net'" in text
    assert "planned failure at timestep 5" in text


@pytest.mark.timeout(120)
def test_more_recurrent_ops_than_workers_under_async_scheduling(no_thread_leak: None) -> None:
    """Four threaded RNN ops side by side in a 2-worker async net: each runs its timesteps from a
    pool worker while the others hold the rest of the pool."""
    width = 4
    net = pb.NetDef(name="wide", type="async_scheduling")
    net.arg.append(make_argument("num_workers", 2))
    layers = []
    for k in range(width):
        layer = lstm("x", None, [(f"h{k}", f"c{k}")], D, H, f"R{k}", threaded=True, forward_only=True)
        net.op.extend(layer.ops)
        layers.append(layer)
    ws = Workspace()
    rng = np.random.default_rng(3)
    ws.feed("x", rng.standard_normal((T, N, D)).astype(np.float32))
    for layer in layers:
        for s in layer.initial_states:
            ws.feed(s, np.zeros((1, N, H), np.float32))
        for p, shape in layer.params.items():
            ws.feed(p, (0.3 * rng.standard_normal(shape)).astype(np.float32))
    with ws.create_net(net) as n:
        n.run(timeout=60)
    seq = Workspace()
    for name in ws.blobs():
        seq.feed(name, ws.fetch(name))
    plain = pb.NetDef(name="plain")
    for layer in layers:
        plain.op.extend(layer.ops)
    for op in plain.op:
        for a in op.arg:
            if a.name == "enable_rnn_executor":
                a.i = 0
    seq.run_net_once(plain)
    for layer in layers:
        out = layer.outputs["hidden_all"]
        assert np.array_equal(ws.fetch(out), seq.fetch(out))


SLEEP_EVENTS: list[tuple[str, float, float]] = []


def _register_sleep_op() -> None:
    if default_registry().has("RnnTestSleep"):
        return

    def infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
        return [ins[0]]

    @register_op(
        "RnnTestSleep",
        inputs=(1, 2),
        outputs=1,
        infer=infer,
        args=(Arg("ms", 0.0, "sleep"), Arg("tag", "", "event tag")),
        doc="Test only: sleeps `ms` (GIL released), records (tag, start, end), passes input 0 through.",
    )
    def factory(op: OpInfo) -> Callable[..., Any]:
        delay = float(op.arg("ms", 0.0)) / 1000.0
        tag = str(op.arg("tag", ""))

        def kernel(*xs: Any) -> tuple[Any]:
            t0 = time.monotonic()
            time.sleep(delay)
            SLEEP_EVENTS.append((tag, t0, time.monotonic()))
            return (xs[0],)

        return kernel


def sleepy_two_layer_rnn(threaded: bool, steps: int, ms: float) -> pb.OperatorDef:
    """Layer 1: s1[t+1] = f(s1[t]); layer 2: s2[t+1] = g(s2[t], s1[t+1]); each op sleeps ``ms``."""
    step = pb.NetDef(name="sleepy_step")
    l1 = pb.OperatorDef(type="RnnTestSleep", input=["s1_prev"], output=["s1_new"])
    l1.arg.extend([make_argument("ms", ms), make_argument("tag", "layer1")])
    l2 = pb.OperatorDef(type="RnnTestSleep", input=["s2_prev", "s1_new"], output=["s2_new"])
    l2.arg.extend([make_argument("ms", ms), make_argument("tag", "layer2")])
    step.op.extend([l1, l2])
    op = pb.OperatorDef(type="RecurrentNetwork", input=["x", "a0", "b0"], output=["s2_all", "steps"])
    args = {
        "link_internal": ["s1_prev", "s1_new", "s2_prev", "s2_new"],
        "link_external": ["s1_states", "s1_states", "s2_states", "s2_states"],
        "link_offset": [0, 1, 0, 1],
        "alias_src": ["s2_states"],
        "alias_dst": ["s2_all"],
        "alias_offset": [1],
        "recurrent_states": ["s1_states", "s2_states"],
        "initial_recurrent_state_ids": [1, 2],
        "enable_rnn_executor": int(threaded),
        "rnn_executor.num_threads": 2,
    }
    op.arg.append(pb.Argument(name="step_net", n=step))
    op.arg.extend(make_argument(k, v) for k, v in args.items())
    return op


@pytest.mark.timeout(60)
def test_layer_two_at_t_overlaps_layer_one_at_t_plus_one(no_thread_leak: None) -> None:
    """With sleeping (GIL-free) step ops the overlap is visible in time, whatever the machine load."""
    _register_sleep_op()
    steps, ms = 8, 20.0
    for threaded in (False, True):
        SLEEP_EVENTS.clear()
        with Workspace() as ws:
            ws.feed("x", np.zeros((steps, 1, 1), np.float32))
            ws.feed("a0", np.ones((1, 1), np.float32))
            ws.feed("b0", np.full((1, 1), 2.0, np.float32))
            ws.run_operator_once(sleepy_two_layer_rnn(threaded, steps, ms))
            np.testing.assert_array_equal(ws.fetch("s2_all"), np.full((steps, 1, 1), 2.0))
        l1 = [(s, e) for tag, s, e in SLEEP_EVENTS if tag == "layer1"]
        l2 = [(s, e) for tag, s, e in SLEEP_EVENTS if tag == "layer2"]
        assert len(l1) == len(l2) == steps
        overlaps = sum(1 for a in l1 for b in l2 if a[0] < b[1] and b[0] < a[1])
        if threaded:
            assert overlaps >= steps // 2, f"only {overlaps} layer-1/layer-2 overlaps"
        else:
            assert overlaps == 0


@pytest.mark.parametrize("threaded", [False, True])
def test_missing_outer_blob_of_the_step_net_is_named(threaded: bool) -> None:
    layer = lstm("x", "lens", [("h0", "c0")], D, H, "L", threaded=threaded, forward_only=True)
    rnn = layer.ops[1]
    rnn.input.remove("lens")  # the step net still reads it: nothing declares or feeds it
    ws = Workspace()
    ws.feed("L/i2h", np.ones((T, N, 4 * H), np.float32))
    for s in layer.initial_states:
        ws.feed(s, np.zeros((1, N, H), np.float32))
    for p, shape in layer.params.items():
        ws.feed(p, np.zeros(shape, np.float32))
    with pytest.raises(OperatorError, match="RecurrentNetwork.*LSTMUnit reads blob 'lens'"):
        ws.run_operator_once(rnn)
