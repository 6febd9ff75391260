"""Thread bounds: hostile num_workers / --threads and hundreds of devices must not create unbounded threads."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest

from asyncnet.executors import ExecutorOptions
from asyncnet.executors.async_scheduling import MAX_INLINE_SECONDS, AsyncSchedulingExecutor
from asyncnet.executors.pools import MAX_DEVICE_POOLS, OVERFLOW_DEVICE, WorkerPool, max_threads, pool_device
from asyncnet.opinfo import DeviceKey
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.workspace import Workspace
from executors import helpers
from executors.helpers import net, op

# Every pool of one kind (shared, or one net's own) together: cpu:0, one per device up to the limit, overflow.
POOL_THREADS_BOUND = (MAX_DEVICE_POOLS + 2) * max_threads()


def _hostile_net(name: str, n_ops: int) -> pb.NetDef:
    """Each op on its own (type, id, NUMA node); absurd num_workers."""
    ops = []
    for i in range(n_ops):
        o = op("ExecTestSleep", ["x"], [f"y{i}"], ms=1.0)
        o.device_option.device_type = i % 2
        o.device_option.device_id = i // 2
        o.device_option.numa_node_id = i
        ops.append(o)
    return net(ops, name=name, num_workers=10**6)


@contextmanager
def _peak_threads() -> Iterator[list[int]]:
    """Sample the live thread count every millisecond; yields [peak] (filled on exit)."""
    peak = [threading.active_count()]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], threading.active_count())
            time.sleep(0.001)

    t = threading.Thread(target=sample, name="exec-test-sampler")
    t.start()
    try:
        yield peak
    finally:
        done.set()
        t.join()


def _names(prefix: str) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(prefix)]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("shared", [True, False])
def test_hostile_devices_and_num_workers_keep_threads_bounded(
    shared: bool, no_thread_leak: None, caplog: pytest.LogCaptureFixture
) -> None:
    before = threading.active_count()
    name = f"hostile_{'shared' if shared else 'own'}"
    with Workspace() as ws, caplog.at_level(logging.WARNING, logger="asyncnet.executors.pools"):
        ws.feed("x", np.arange(3.0))
        n = ws.create_net(_hostile_net(name, 300), options=ExecutorOptions(shared_pools=shared))
        assert isinstance(n.executor, AsyncSchedulingExecutor)
        assert n.executor.threads == max_threads()
        assert f"net '{name}' asks for 1000000 worker threads; using {max_threads()}" in caplog.text
        with _peak_threads() as peak:
            for _ in range(3):
                n.run(timeout=30)
        for i in range(300):
            np.testing.assert_array_equal(ws.fetch(f"y{i}"), np.arange(3.0))
        # +1 sampler, +1 shared timer (the run timeout), +4 shared I/O (if some other test started it)
        assert peak[0] - before <= POOL_THREADS_BOUND + 6, peak[0] - before
        if not shared:
            own = _names(f"asyncnet-net-{name}-dev")
            assert 0 < len(own) <= POOL_THREADS_BOUND
            assert any("-devother-w" in t for t in own), own  # devices beyond the limit share one pool
            n.close()
    assert len(_names("asyncnet-shared-dev")) <= POOL_THREADS_BOUND


@pytest.mark.timeout(60)
def test_many_nets_with_distinct_sizes_share_bounded_pools(no_thread_leak: None) -> None:
    with Workspace() as ws:
        ws.feed("x", np.arange(3.0))
        for k in range(1, 41):
            ops = [op("ExecTestSleep", ["x"], [f"y{i}"]) for i in range(4)]
            ws.create_net(net(ops, name=f"sized{k}", num_workers=k)).run(timeout=30)
    cpu_pool = _names("asyncnet-shared-dev0.0-")
    # one pool for cpu:0 whatever the sizes asked (it used to be one pool per distinct size)
    assert {t.rsplit("-w", 1)[0] for t in cpu_pool} == {"asyncnet-shared-dev0.0"}, cpu_pool
    assert len(cpu_pool) <= max_threads()


def test_pool_keys_and_growth() -> None:
    have = {DeviceKey(1, i) for i in range(MAX_DEVICE_POOLS)}
    assert pool_device(DeviceKey(1, 0), have) == DeviceKey(1, 0)
    assert pool_device(DeviceKey(1, 99), have) == OVERFLOW_DEVICE
    assert pool_device(DeviceKey(1, 99), set()) == DeviceKey(1, 99)
    assert pool_device(DeviceKey(), have) == DeviceKey()  # the default device is never pushed out
    p = WorkerPool(2, "exec-test-growth")
    p.grow_to(1)
    assert p.size == 2  # never shrinks
    p.grow_to(10**9)
    assert p.size == max_threads()
    p.close()


def test_threads_option_is_clamped_too(caplog: pytest.LogCaptureFixture) -> None:
    with Workspace() as ws, caplog.at_level(logging.WARNING, logger="asyncnet.executors.pools"):
        ws.feed("x", np.arange(3.0))
        d = net([op("Relu", ["x"], ["r"])], name="big")
        n = ws.create_net(d, options=ExecutorOptions(threads=10**5, shared_pools=False))
        assert n.executor.threads == max_threads()  # type: ignore[attr-defined]
        assert "net 'big' asks for 100000 worker threads" in caplog.text
        n.run()
        n.close()


@pytest.mark.timeout(30)
def test_slow_hand_offs_do_not_make_long_chains_inline(no_thread_leak: None) -> None:
    """A loaded machine measures slow hand-offs; chains of milliseconds must still go to a second thread."""
    helpers.EVENTS.clear()
    ops = [op("ExecTestSleep", ["x"], [f"y{b}"], ms=5.0, tag=f"b{b}") for b in range(2)]
    with Workspace() as ws:
        ws.feed("x", np.arange(3.0))
        n = ws.create_net(net(ops, name="handoff"), options=ExecutorOptions(threads=2, shared_pools=False))
        ex = n.executor
        assert isinstance(ex, AsyncSchedulingExecutor)
        n.run(timeout=10)
        ex._handoff = 0.05  # as if waking a worker had taken 50 ms
        n.run(timeout=10)  # the worker that drains re-derives the inline limit from it
        assert ex._inline_limit <= MAX_INLINE_SECONDS < min(ex._cost)
        helpers.EVENTS.clear()
        n.run(timeout=10)
        assert len({th for _, th, _, _ in helpers.EVENTS}) == 2, helpers.EVENTS
        n.close()
