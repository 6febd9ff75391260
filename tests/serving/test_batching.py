"""Dynamic batching: same results as unbatched runs, only for batch-independent nets."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from executors.helpers import op

from asyncnet.errors import ServingError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serving import BatchingOptions, Predictor, batch_blockers
from serving.models import batch, init_net, predict_net, reference, weights, write_model


def _net(*ops: pb.OperatorDef) -> pb.NetDef:
    n = pb.NetDef(name="n")
    n.op.extend(ops)
    return n


def test_blockers_come_from_op_types_and_arguments() -> None:
    assert batch_blockers(predict_net()) == []
    assert batch_blockers(_net(op("Concat", ["a", "b"], ["c", "i"]), op("Dropout", ["c"], ["d"], is_test=1))) == []
    blocked = batch_blockers(
        _net(
            op("Concat", ["a", "b"], ["c", "i"], axis=0, name="cat0"),
            op("Dropout", ["c"], ["d", "m"], is_test=0),
            op("SpatialBN", ["d", "s", "b", "m", "v"], ["e"]),
            op("Transpose", ["e"], ["f"]),
            op("Reshape", ["f"], ["g", "old"], shape=[-1]),
            op("Reshape", ["f"], ["g2", "old2"], shape=[0, -1]),
            op("ReduceMean", ["g"], ["h"]),
        )
    )
    text = "\n".join(blocked)
    assert len(blocked) == 6, blocked
    assert "Concat 'cat0' works along axis 0" in text
    assert "Dropout" in text and "is_test=0" in text
    assert "SpatialBN" in text
    assert "Transpose" in text and "moves the batch dimension" in text
    assert "shape[0] must be 0" in text
    assert "ReduceMean" in text and "not known to be batch-independent" in text


def test_enabling_batching_on_a_batch_dependent_net_is_refused() -> None:
    net = predict_net(extra=[op("ReduceMean", ["prob"], ["mean"], axes=[0])])
    with pytest.raises(
        ServingError, match=r"dynamic batching needs batch-independent ops; not known to be: ReduceMean"
    ):
        Predictor(init_net(weights()), net, batching=BatchingOptions())
    # Off by default: the same net loads fine without batching.
    with Predictor(init_net(weights()), net) as p:
        assert not p.batching_enabled


@pytest.mark.timeout(60)
def test_concurrent_batched_requests_equal_unbatched_runs(tmp_path: Path, no_thread_leak: None) -> None:
    d = write_model(tmp_path / "dense")
    xs = [batch(1 + i % 2, seed=i) for i in range(16)]
    with Predictor.from_dir(d) as plain:
        expected = [plain.predict({"data": x})["prob"] for x in xs]  # type: ignore[call-overload]
    options = BatchingOptions(max_batch=8, max_delay_ms=50)
    with Predictor.from_dir(d, batching=options, max_concurrency=2) as p:
        assert p.batching_enabled
        results: list[np.ndarray | None] = [None] * len(xs)
        errors: list[BaseException] = []
        barrier = threading.Barrier(len(xs))

        def call(i: int) -> None:
            try:
                barrier.wait(timeout=10)
                out = p.predict({"data": xs[i]})
                assert isinstance(out, dict)
                results[i] = out["prob"]
            except BaseException as e:  # noqa: BLE001 - re-raised below
                errors.append(e)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(xs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors, errors[:3]
        batcher = p._batcher
        assert batcher is not None
        assert batcher.rows_run == sum(len(x) for x in xs)
        assert batcher.batches_run < len(xs), "requests were stacked into shared batches"
        for i, (r, e) in enumerate(zip(results, expected)):
            assert r is not None and r.shape == e.shape, i
            np.testing.assert_allclose(r, e, rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(r, reference(xs[i], weights()), rtol=1e-5, atol=1e-6)


@pytest.mark.timeout(30)
def test_a_lone_request_runs_after_max_delay(tmp_path: Path, no_thread_leak: None) -> None:
    d = write_model(tmp_path / "dense")
    with Predictor.from_dir(d, batching=BatchingOptions(max_batch=64, max_delay_ms=5)) as p:
        x = batch(3)
        np.testing.assert_allclose(p.predict({"data": x})["prob"], reference(x, weights()), rtol=1e-5, atol=1e-6)  # type: ignore[call-overload]
        # Requests at least max_batch rows long skip batching.
        big = batch(64)
        np.testing.assert_allclose(p.predict({"data": big})["prob"], reference(big, weights()), rtol=1e-5, atol=1e-6)  # type: ignore[call-overload]


@pytest.mark.timeout(30)
def test_a_failing_batch_fails_each_of_its_requests(no_thread_leak: None) -> None:
    net = predict_net(extra=[op("ExecTestFail", ["prob"], ["never"], ms=20, message="batch broke")])
    with Predictor(init_net(weights()), net, batching=BatchingOptions(4, 100, extra_ops=("ExecTestFail",))) as p:
        errors: list[BaseException] = []

        def call() -> None:
            try:
                p.predict({"data": batch(1)})
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=call) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert len(errors) == 4 and all("batch broke" in str(e) for e in errors)


def test_batching_options_are_checked() -> None:
    with pytest.raises(ServingError, match="max_batch must be at least 1"):
        BatchingOptions(max_batch=0)
    with pytest.raises(ServingError, match="max_delay_ms must be >= 0"):
        BatchingOptions(max_delay_ms=-1)
