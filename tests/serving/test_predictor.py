"""Predictor: shared read-only parameters, one child workspace per in-flight request, input checks."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from executors.helpers import op

from asyncnet.errors import DeadlineError, FileAccessError, InputError, NetDefinitionError, OperatorError, ServingError
from asyncnet.iopolicy import IOPolicy
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serving import Predictor, TensorSpec
from serving.models import IN, batch, init_net, predict_net, reference, runs, weights, write_model

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return write_model(tmp_path / "dense")


@pytest.mark.timeout(60)
def test_predict_matches_independent_numpy(model_dir: Path, no_thread_leak: None) -> None:
    with Predictor.from_dir(model_dir) as p:
        assert p.name == "dense" and p.input_names == ["data"] and p.output_names == ["prob"]
        x = batch(3)
        got = p.predict({"data": x})
        assert isinstance(got, dict)
        np.testing.assert_allclose(got["prob"], reference(x, weights()), rtol=1e-5, atol=1e-6)
        # Positional inputs give a list in output order.
        listed = p.predict([x])
        assert isinstance(listed, list)
        np.testing.assert_array_equal(listed[0], got["prob"])


@pytest.mark.timeout(60)
def test_parameters_are_shared_not_copied(model_dir: Path) -> None:
    with Predictor.from_dir(model_dir, max_concurrency=4) as p:
        barrier = threading.Barrier(4)

        def call() -> None:
            barrier.wait(timeout=10)
            p.predict({"data": batch(2)})

        threads = [threading.Thread(target=call) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        w = p.parent.fetch("W1")
        assert p._all, "children were created"
        for child in p._all:
            assert child.workspace.fetch("W1") is w
            assert "W1" not in child.workspace.local_blobs()
            # No request's data outlives it: inputs and outputs are dropped after each run.
            assert not child.workspace.has("data") and not child.workspace.has("prob")


@pytest.mark.timeout(60)
def test_sixteen_threads_equal_single_runs(model_dir: Path, no_thread_leak: None) -> None:
    xs = [batch(1 + i % 3, seed=i) for i in range(16)]
    with Predictor.from_dir(model_dir, max_concurrency=4) as p:
        single = [p.predict({"data": x})["prob"] for x in xs]  # type: ignore[call-overload]
        results: list[np.ndarray | None] = [None] * 16
        errors: list[BaseException] = []
        barrier = threading.Barrier(16)

        def call(i: int) -> None:
            try:
                barrier.wait(timeout=10)
                for _ in range(5):
                    out = p.predict({"data": xs[i]})
                    assert isinstance(out, dict)
                    results[i] = out["prob"]
                    np.testing.assert_array_equal(out["prob"], single[i])
            except BaseException as e:  # noqa: BLE001 - collected and re-raised below
                errors.append(e)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors, errors[:3]
        assert len(p._all) <= 4  # bounded: no child per request beyond max_concurrency
        for r, s in zip(results, single):
            np.testing.assert_array_equal(r, s)


@pytest.mark.timeout(30)
def test_input_errors_name_what_is_accepted(model_dir: Path) -> None:
    with Predictor.from_dir(model_dir) as p:
        x = batch(2)
        cases = {
            "are not inputs of the model": {"dta": x},
            "missing input(s) ['data']": {},
            "has dtype float64, expected float32": {"data": x.astype(np.float64)},
            "has shape [2, 7], expected data (float32 [N, 8])": {"data": x[:, :7]},
            "holds Python objects": {"data": np.array([object()] * IN, dtype=object).reshape(1, IN)},
            "empty batch": {"data": np.zeros((0, IN), np.float32)},
        }
        for text, inputs in cases.items():
            with pytest.raises(InputError, match=None) as info:
                p.predict(inputs)
            assert text in str(info.value), (text, str(info.value))
            assert "dense" in str(info.value)
        with pytest.raises(InputError, match="got 2 positional input"):
            p.predict([x, x])
        # Still serving afterwards.
        np.testing.assert_allclose(p.predict({"data": x})["prob"], reference(x, weights()), rtol=1e-5, atol=1e-6)  # type: ignore[call-overload]


@pytest.mark.timeout(30)
def test_without_value_info_only_names_are_checked(tmp_path: Path) -> None:
    d = write_model(tmp_path / "m", value_info=False)
    with Predictor.from_dir(d) as p:
        assert p.input_specs["data"] == TensorSpec("data")
        with pytest.raises(InputError, match="not inputs"):
            p.predict({"x": batch(1)})


@pytest.mark.timeout(30)
def test_request_input_never_reaches_the_parent(tmp_path: Path) -> None:
    # Zoo init nets often fill a placeholder for the data input; a request must not overwrite it.
    placeholder = op("ConstantFill", [], ["data"], shape=[1, IN], value=7.0)
    init = init_net(weights(), extra=[placeholder])
    spec = {"data": TensorSpec("data", np.dtype(np.float32), (1, IN))}
    with Predictor(init, predict_net(), value_info=spec) as p:
        assert p.input_names == ["data"]
        x = batch(1)
        np.testing.assert_allclose(p.predict({"data": x})["prob"], reference(x, weights()), rtol=1e-5, atol=1e-6)  # type: ignore[call-overload]
        np.testing.assert_array_equal(p.parent.fetch("data"), np.full((1, IN), 7.0, np.float32))


@pytest.mark.timeout(30)
def test_net_writing_a_parameter_in_place_is_refused() -> None:
    bad = predict_net(extra=[op("Relu", ["W1"], ["W1"])])
    with pytest.raises(NetDefinitionError, match="overwrites parameter 'W1'"):
        Predictor(init_net(weights()), bad)


@pytest.mark.timeout(30)
def test_nets_that_write_files_are_refused_unless_allowed(tmp_path: Path) -> None:
    target = tmp_path / "out" / "dump.pb"
    save = op("Save", ["prob"], [], absolute_path=1, db=str(target), db_type="minidb")
    d = write_model(tmp_path / "saver", extra=[save])
    with pytest.raises(FileAccessError, match="refusing to write"):
        Predictor.from_dir(d)
    allowed = IOPolicy.restricted(read=[d], write=[tmp_path / "out"])
    with Predictor.from_dir(d, io_policy=allowed) as p:
        p.predict({"data": batch(1)})
    assert target.exists()


@pytest.mark.timeout(30)
def test_deadline_while_waiting_is_not_computed(tmp_path: Path, no_thread_leak: None) -> None:
    d = write_model(tmp_path / "slow", sleep_ms=400, tag="pred-deadline")
    with Predictor.from_dir(d, max_concurrency=1) as p:
        before = runs("pred-deadline")
        t = threading.Thread(target=lambda: p.predict({"data": batch(1)}))
        t.start()
        deadline = time.monotonic() + 5
        while runs("pred-deadline") == before and len(p._free) and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(DeadlineError, match="not computed"):
            p.predict({"data": batch(1)}, timeout=0.1)
        t.join(10)
        assert runs("pred-deadline") == before + 1


@pytest.mark.timeout(30)
def test_failing_op_releases_its_slot(tmp_path: Path, no_thread_leak: None) -> None:
    init = init_net(weights())
    net = predict_net(extra=[op("ExecTestFail", ["prob"], ["never"], message="kernel broke")])
    with Predictor(init, net, max_concurrency=1) as p:
        for _ in range(3):  # the one child comes back to the pool each time
            with pytest.raises(OperatorError, match="kernel broke"):
                p.predict({"data": batch(1)})
        assert len(p._free) == 1


@pytest.mark.timeout(30)
def test_close_while_busy_finishes_running_and_refuses_new(tmp_path: Path, no_thread_leak: None) -> None:
    d = write_model(tmp_path / "slow", sleep_ms=300, tag="pred-close")
    p = Predictor.from_dir(d, max_concurrency=2)
    out: list[object] = []
    t = threading.Thread(target=lambda: out.append(p.predict({"data": batch(1)})))
    t.start()
    deadline = time.monotonic() + 5
    while len(p._free) == 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    p.close()
    with pytest.raises(ServingError, match="closed"):
        p.predict({"data": batch(1)})
    t.join(10)
    assert len(out) == 1 and isinstance(out[0], dict)


def test_bad_value_info_is_refused(tmp_path: Path) -> None:
    d = write_model(tmp_path / "m")
    (d / "value_info.json").write_text(json.dumps({"image": [1, [1, IN]]}))
    with pytest.raises(NetDefinitionError, match=r"value_info names \['image'\].*its inputs: data"):
        Predictor.from_dir(d)
    (d / "value_info.json").write_text(json.dumps({"data": [99, [1, IN]]}))
    with pytest.raises(ValueError, match="data type 99 has no array form"):
        Predictor.from_dir(d)


def test_missing_predict_net_lists_the_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"no predict_net.pb or predict_net.pbtxt \(it holds: notes.txt\)"):
        Predictor.from_dir(tmp_path / "empty")


def test_rewrite_hook_runs_before_preparing() -> None:
    seen: list[int] = []

    def rewrite(init: pb.NetDef | None, net: pb.NetDef) -> tuple[pb.NetDef | None, pb.NetDef]:
        seen.append(len(net.op))
        out = pb.NetDef()
        out.CopyFrom(net)
        del out.op[-1]  # drop the Softmax: outputs become logits
        out.external_output[:] = ["logits"]
        return init, out

    with Predictor(init_net(weights()), predict_net(), rewrite=rewrite) as p:
        assert seen == [4] and p.output_names == ["logits"]


def test_import_asyncnet_does_not_import_grpc() -> None:
    code = "import sys, asyncnet; asyncnet.Predictor; print('grpc' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env={"PYTHONPATH": str(ROOT)}
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_missing_parameters_are_named_at_load(tmp_path: Path) -> None:
    d = write_model(tmp_path / "noinit")
    (d / "init_net.pb").unlink()
    with pytest.raises(NetDefinitionError, match=r"reads 4 blob\(s\) .*: W1, b1, W2, b2; there is no init net"):
        Predictor.from_dir(d)


@pytest.mark.timeout(30)
def test_optimize_rewrites_for_inference_with_the_same_results(model_dir: Path) -> None:
    with Predictor.from_dir(model_dir) as plain, Predictor.from_dir(model_dir, optimize=True) as fast:
        assert [op.type for op in fast.predict_net.op] == ["FCRelu", "FC", "Softmax"]
        assert fast.optimize_report and fast.batch_independent
        x = batch(4)
        np.testing.assert_allclose(fast.predict({"data": x})["prob"], plain.predict({"data": x})["prob"], rtol=1e-6)  # type: ignore[call-overload]
