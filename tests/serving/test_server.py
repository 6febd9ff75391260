"""The gRPC server with a real socket on 127.0.0.1: results, statuses, limits, deadlines, shutdown."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("grpc", reason="the serve extra (grpcio) is a test dependency")

from asyncnet.errors import InputError, RemoteError  # noqa: E402
from asyncnet.proto import caffe2_pb2 as pb  # noqa: E402
from asyncnet.proto import serving_pb2 as spb  # noqa: E402
from asyncnet.serving import Predictor  # noqa: E402
from asyncnet.serving.client import Client  # noqa: E402
from asyncnet.serving.server import PredictionServer, ServerOptions  # noqa: E402
from serving.models import IN, batch, reference, runs, weights, write_model  # noqa: E402


def _serve(predictors: list[Predictor], **kw: object) -> PredictionServer:
    server = PredictionServer(predictors, ServerOptions(host="127.0.0.1", port=0, **kw), own_models=True)  # type: ignore[arg-type]
    server.start()
    return server


@pytest.fixture
def served(tmp_path: Path, no_thread_leak: None) -> Iterator[tuple[PredictionServer, Client, Predictor]]:
    p = Predictor.from_dir(write_model(tmp_path / "dense"), max_concurrency=4)
    server = _serve([p], concurrency=4, max_message_bytes=256 * 1024)
    client = Client(f"127.0.0.1:{server.port}", timeout=20)
    try:
        client.wait_ready()
        yield server, client, p
    finally:
        client.close()
        server.stop(grace=5)


@pytest.mark.timeout(60)
def test_sixteen_threads_get_exactly_the_single_run_outputs(served: tuple[PredictionServer, Client, Predictor]) -> None:
    server, client, p = served
    xs = [batch(1 + i % 4, seed=i) for i in range(16)]
    single = [client.predict({"data": x})["prob"] for x in xs]
    for x, s in zip(xs, single):
        np.testing.assert_allclose(s, reference(x, weights()), rtol=1e-5, atol=1e-6)
    errors: list[BaseException] = []
    barrier = threading.Barrier(16)

    def call(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            for _ in range(4):
                np.testing.assert_array_equal(client.predict({"data": xs[i]})["prob"], single[i])
        except BaseException as e:  # noqa: BLE001 - re-raised below
            errors.append(e)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(40)
    assert not errors, errors[:3]
    assert server.computed == 16 + 16 * 4


def _status(fn: object) -> RemoteError:
    with pytest.raises(RemoteError) as info:
        fn()  # type: ignore[operator]
    return info.value


@pytest.mark.timeout(60)
def test_bad_inputs_get_invalid_argument_with_the_cli_message(
    served: tuple[PredictionServer, Client, Predictor],
) -> None:
    _, client, p = served
    x = batch(2)
    for bad in ({"dta": x}, {"data": x.astype(np.float64)}, {"data": x[:, :3]}, {}):
        err = _status(lambda bad=bad: client.predict(bad))
        assert err.code == "INVALID_ARGUMENT"
        with pytest.raises(InputError) as local:  # the Predictor (and `asyncnet predict MODEL_DIR`) says the same
            p.predict(bad)
        assert err.details == str(local.value)
    # Garbage bytes instead of a PredictRequest.
    err = _status(lambda: client.predict_bytes(b"\xff\xff\xff\xff"))
    assert err.code == "INVALID_ARGUMENT" and "not a valid" in err.details and "PredictRequest" in err.details
    # A tensor whose payload does not match its dims.
    t = pb.TensorProto(name="data", dims=[2, IN], data_type=pb.TensorProto.FLOAT, raw_data=b"\0" * 12)
    err = _status(lambda: client.predict_bytes(spb.PredictRequest(inputs=[t]).SerializeToString()))
    assert err.code == "INVALID_ARGUMENT" and "tensor 'data' is malformed" in err.details and "raw_data" in err.details
    # An unnamed tensor, an unknown model, an unknown output.
    err = _status(lambda: client.predict_bytes(spb.PredictRequest(inputs=[pb.TensorProto()]).SerializeToString()))
    assert err.code == "INVALID_ARGUMENT" and "has no name" in err.details
    err = _status(lambda: client.predict({"data": x}, model="resnet"))
    assert err.code == "NOT_FOUND" and "no model 'resnet'" in err.details and "dense" in err.details
    err = _status(lambda: client.predict({"data": x}, outputs=["nope"]))
    assert err.code == "INVALID_ARGUMENT" and "['nope'] were not produced" in err.details
    # Oversize payload: over max_message_bytes (256 KiB) is refused by gRPC itself.
    err = _status(lambda: client.predict({"data": np.zeros((10000, IN), np.float32)}))
    assert err.code == "RESOURCE_EXHAUSTED" and "larger than max" in err.details
    # The server keeps serving.
    np.testing.assert_allclose(client.predict({"data": x})["prob"], reference(x, weights()), rtol=1e-5, atol=1e-6)
    assert client.predict({"data": x}, outputs=["logits"])["logits"].shape == (2, 5)


@pytest.mark.timeout(30)
def test_list_models_model_info_and_health(served: tuple[PredictionServer, Client, Predictor]) -> None:
    _, client, _ = served
    assert client.list_models() == ["dense"]
    info = client.model_info("dense")
    assert info.name == "dense" and not info.batching
    (inp,) = info.inputs
    assert (inp.name, inp.data_type, list(inp.dims), inp.has_shape) == ("data", pb.TensorProto.FLOAT, [-1, IN], True)
    (out,) = info.outputs  # by shape inference from the input spec
    assert (out.name, out.data_type, list(out.dims), out.has_shape) == ("prob", pb.TensorProto.FLOAT, [-1, 5], True)
    assert client.health() == "SERVING" and client.health("dense") == "SERVING"
    err = _status(lambda: client.health("other"))
    assert err.code == "NOT_FOUND"


@pytest.mark.timeout(60)
def test_queue_limit_answers_resource_exhausted(tmp_path: Path, no_thread_leak: None) -> None:
    p = Predictor.from_dir(write_model(tmp_path / "slow", sleep_ms=800, tag="srv-queue"), max_concurrency=1)
    server = _serve([p], concurrency=1, queue_limit=1)
    client = Client(f"127.0.0.1:{server.port}", timeout=20)
    try:
        codes: list[str] = []
        lock = threading.Lock()

        barrier = threading.Barrier(5)

        def call() -> None:
            barrier.wait(timeout=10)  # all five arrive within one op's 800 ms
            try:
                client.predict({"data": batch(1)})
                code = "OK"
            except RemoteError as e:
                code = e.code
                if code == "RESOURCE_EXHAUSTED":
                    assert "server busy" in e.details and "queue limit 1" in e.details
            with lock:
                codes.append(code)

        threads = [threading.Thread(target=call) for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(codes).count("OK") >= 2 and "RESOURCE_EXHAUSTED" in codes, codes
        assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}
        assert server.computed == codes.count("OK")
        client.predict({"data": batch(1)})  # serving again once the queue drained
    finally:
        client.close()
        server.stop(grace=5)


@pytest.mark.timeout(60)
def test_request_past_its_deadline_is_not_computed(tmp_path: Path, no_thread_leak: None) -> None:
    tag = "srv-deadline"
    p = Predictor.from_dir(write_model(tmp_path / "slow", sleep_ms=500, tag=tag), max_concurrency=1)
    server = _serve([p], concurrency=1)
    client = Client(f"127.0.0.1:{server.port}", timeout=20)
    try:
        before = runs(tag)
        first = threading.Thread(target=lambda: client.predict({"data": batch(1)}))
        first.start()
        deadline = time.monotonic() + 10
        while p._free and time.monotonic() < deadline:
            time.sleep(0.005)
        err = _status(lambda: client.predict({"data": batch(1)}, timeout=0.15))
        assert err.code == "DEADLINE_EXCEEDED"
        first.join(20)
        time.sleep(0.6)  # had the late request been computed, it would have finished by now
        assert runs(tag) == before + 1
        assert server.computed == 1
    finally:
        client.close()
        server.stop(grace=5)


@pytest.mark.timeout(60)
def test_stop_finishes_requests_in_flight(tmp_path: Path, no_thread_leak: None) -> None:
    p = Predictor.from_dir(write_model(tmp_path / "slow", sleep_ms=300, tag="srv-stop"), max_concurrency=2)
    server = _serve([p], concurrency=2)
    client = Client(f"127.0.0.1:{server.port}", timeout=20)
    results: list[object] = []

    def call() -> None:
        try:
            results.append(client.predict({"data": batch(1)})["prob"].shape)
        except RemoteError as e:
            results.append(e.code)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while len(p._free) + (2 - len(p._all)) > 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    server.stop(grace=10)
    for t in threads:
        t.join(20)
    client.close()
    assert results == [(1, 5), (1, 5)]
    with Client(f"127.0.0.1:{server.port}", timeout=2) as late:
        assert _status(lambda: late.predict({"data": batch(1)})).code == "UNAVAILABLE"


@pytest.mark.timeout(30)
def test_two_models_need_a_name(tmp_path: Path, no_thread_leak: None) -> None:
    a = Predictor.from_dir(write_model(tmp_path / "a"))
    b = Predictor.from_dir(write_model(tmp_path / "b"))
    server = _serve([a, b])
    try:
        with Client(f"127.0.0.1:{server.port}", timeout=20) as client:
            err = _status(lambda: client.predict({"data": batch(1)}))
            assert err.code == "INVALID_ARGUMENT" and "holds 2 models; name one: a, b" in err.details
            assert client.predict({"data": batch(1)}, model="b")["prob"].shape == (1, 5)
            assert client.list_models() == ["a", "b"]
    finally:
        server.stop(grace=5)
