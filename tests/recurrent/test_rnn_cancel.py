"""Cancelling / timing out the outer net stops a RecurrentNetwork at the next timestep (task) boundary."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from asyncnet.errors import RunCancelledError, RunTimeoutError
from asyncnet.opinfo import OpInfo
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import default_registry, register_op
from asyncnet.schema import Arg, TensorInfo
from asyncnet.serde import make_argument
from asyncnet.workspace import Workspace

from .test_timesteps import sleepy_two_layer_rnn

STEPS, MS = 200, 10.0  # 4 s of sleeping ops per run if nothing stops it
# Own op and event list: test_timesteps' op may be registered from another import of that module.
SLEEP_EVENTS: list[float] = []


def _register_sleep_op() -> None:
    if default_registry().has("RnnCancelTestSleep"):
        return

    def infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
        return [ins[0]]

    @register_op(
        "RnnCancelTestSleep",
        inputs=(1, 2),
        outputs=1,
        infer=infer,
        args=(Arg("ms", 0.0, "sleep"), Arg("tag", "", "unused")),
        doc="Test only: sleeps `ms`, records its end time, passes input 0 through.",
    )
    def factory(op: OpInfo) -> Callable[..., Any]:
        delay = float(op.arg("ms", 0.0)) / 1000.0

        def kernel(*xs: Any) -> tuple[Any]:
            time.sleep(delay)
            SLEEP_EVENTS.append(time.monotonic())
            return (xs[0],)

        return kernel


def outer_net(executor: str, threaded: bool, steps: int = STEPS) -> pb.NetDef:
    rnn = sleepy_two_layer_rnn(threaded, steps, MS)
    rnn.name = "rnn"
    for a in rnn.arg:
        if a.name == "step_net":
            for step_op in a.n.op:
                step_op.type = "RnnCancelTestSleep"
    main = pb.NetDef(name="main", type=executor)
    main.op.append(rnn)
    if executor == "async_scheduling":
        main.arg.append(make_argument("num_workers", 2))
    return main


def feed(ws: Workspace, steps: int = STEPS) -> None:
    ws.feed("x", np.zeros((steps, 1, 1), np.float32))
    ws.feed("a0", np.ones((1, 1), np.float32))
    ws.feed("b0", np.full((1, 1), 2.0, np.float32))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("executor", ["simple", "async_scheduling"])
@pytest.mark.parametrize("threaded", [False, True])
def test_cancel_stops_a_long_recurrent_network_midway(no_thread_leak: None, executor: str, threaded: bool) -> None:
    _register_sleep_op()
    SLEEP_EVENTS.clear()
    with Workspace() as ws:
        feed(ws)
        with ws.create_net(outer_net(executor, threaded)) as m:
            cancelled_at: list[float] = []

            def cancel_once_steps_run() -> None:
                # Cancel mid-way by what has run, not by the clock: preparing 200 step workspaces can
                # take longer than any fixed delay on a loaded machine.
                deadline = time.monotonic() + 20.0
                while len(SLEEP_EVENTS) < 3 and time.monotonic() < deadline:
                    time.sleep(0.005)
                cancelled_at.append(time.monotonic())
                m.cancel()

            canceller = threading.Thread(target=cancel_once_steps_run)
            canceller.start()
            with pytest.raises(RunCancelledError) as info:
                m.run()
            canceller.join()
            assert time.monotonic() - cancelled_at[0] < 2.0  # far less than the 4 s the steps take
            assert not isinstance(info.value, RunTimeoutError)
            assert "net 'main'" in str(info.value) and "RecurrentNetwork 'rnn'" in str(info.value)
            ran = len(SLEEP_EVENTS)
            assert 0 < ran < 2 * STEPS
            time.sleep(0.1)
            assert len(SLEEP_EVENTS) == ran  # no timestep runs after the cancel returned

            with pytest.raises(RunTimeoutError, match="RecurrentNetwork 'rnn'"):
                m.run(timeout=0.2)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("threaded", [False, True])
def test_a_cancelled_recurrent_net_runs_again_correctly(no_thread_leak: None, threaded: bool) -> None:
    _register_sleep_op()
    with Workspace() as ws:
        feed(ws)
        with ws.create_net(outer_net("async_scheduling", threaded)) as m:
            with pytest.raises(RunTimeoutError):
                m.run(timeout=0.2)
            feed(ws, 6)  # the same net over a short sequence: every timestep runs
            SLEEP_EVENTS.clear()
            m.run(timeout=20)
            np.testing.assert_array_equal(ws.fetch("s2_all"), np.full((6, 1, 1), 2.0))
            assert len(SLEEP_EVENTS) == 12
