"""Offload to onnxruntime: Onnxifi ops give the numpy path's outputs, split around unexportable ops,
and fail with errors that name the Onnxifi op and the ops it replaced."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest

from asyncnet.errors import OperatorError, UnsupportedError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.schema import TensorInfo
from asyncnet.transforms import offload_to_onnxruntime, optimize_for_inference
from asyncnet.workspace import Workspace
from tests.conftest import realnets_path
from tests.ops.run_util import make_op
from tests.transforms.equiv import assert_close

pytest.importorskip("onnxruntime")


def _small_cnn() -> tuple[pb.NetDef, dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    params = {
        "w1": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "b1": rng.standard_normal(4).astype(np.float32),
        "w2": rng.standard_normal((5, 4, 1, 1)).astype(np.float32),
        "fw": rng.standard_normal((3, 5 * 4 * 4)).astype(np.float32),
        "fb": rng.standard_normal(3).astype(np.float32),
    }
    ops = [
        make_op("Conv", ["x", "w1", "b1"], ["c1"], kernel=3, pad=1),
        make_op("Relu", ["c1"], ["c1"]),
        make_op("Sigmoid", ["c1"], ["s1"]),
        make_op("Conv", ["s1", "w2"], ["c2"], kernel=1),
        make_op("MaxPool", ["c2"], ["p"], kernel=2, stride=2),
        make_op("FC", ["p", "fw", "fb"], ["f"]),
        make_op("Softmax", ["f"], ["prob"]),
    ]
    net = pb.NetDef(name="cnn", op=ops, external_input=["x", *params], external_output=["prob"])
    return net, params, {"x": rng.standard_normal((2, 3, 8, 8)).astype(np.float32)}


def _run(net: pb.NetDef, blobs: dict[str, Any], executor: str = "simple") -> np.ndarray:
    with Workspace() as ws:
        for k, v in blobs.items():
            ws.feed(k, v)
        ws.run_net_once(net, executor=executor)
        return np.array(ws.fetch("prob"))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("executor", ["simple", "async_scheduling"])
def test_whole_net_offload_matches_numpy(executor: str, no_thread_leak: None) -> None:
    net, params, feeds = _small_cnn()
    with Workspace() as ws:
        for k, v in {**params, **feeds}.items():
            ws.feed(k, v)
        res = offload_to_onnxruntime(net, workspace=ws, data_inputs=["x"])
    assert [op.type for op in res.predict_net.op] == ["Onnxifi"]
    assert len(res.report) == 1 and len(res.report[0].ops) == len(net.op)
    assert_close(_run(res.predict_net, {**params, **feeds}, executor), _run(net, {**params, **feeds}), "prob")


@pytest.mark.timeout(120)
def test_a_net_without_declared_outputs_keeps_the_blobs_nothing_reads() -> None:
    """Hand-built nets often declare no external outputs: their sinks come out of the Onnxifi op."""
    net, params, feeds = _small_cnn()
    del net.external_output[:]
    with Workspace() as ws:
        for k, v in {**params, **feeds}.items():
            ws.feed(k, v)
        res = offload_to_onnxruntime(net, workspace=ws, data_inputs=["x"])
    assert [op.type for op in res.predict_net.op] == ["Onnxifi"]
    assert list(res.predict_net.op[0].output) == ["prob"]
    assert_close(_run(res.predict_net, {**params, **feeds}), _run(net, {**params, **feeds}), "prob")


@pytest.mark.timeout(120)
def test_partial_offload_splits_around_an_unexportable_op(monkeypatch: pytest.MonkeyPatch) -> None:
    from asyncnet.onnx.export_ops import EXPORTERS

    monkeypatch.delitem(EXPORTERS, "Sigmoid")
    net, params, feeds = _small_cnn()
    with Workspace() as ws:
        for k, v in {**params, **feeds}.items():
            ws.feed(k, v)
        res = offload_to_onnxruntime(net, workspace=ws, data_inputs=["x"])
    assert [op.type for op in res.predict_net.op] == ["Onnxifi", "Sigmoid", "Onnxifi"]
    first = res.predict_net.op[0]
    assert list(first.output) == ["c1"], "only the blob the numpy op reads leaves the first subgraph"
    assert [len(r.ops) for r in res.report] == [2, 4]
    assert any("Sigmoid" in k for k in res.kept)
    assert_close(_run(res.predict_net, {**params, **feeds}), _run(net, {**params, **feeds}), "prob")


@pytest.mark.timeout(120)
def test_offload_after_rewrites_exports_the_fused_ops() -> None:
    net, params, feeds = _small_cnn()
    opt = optimize_for_inference(net, params=params, data_inputs=["x"])
    assert "ConvRelu" in [op.type for op in opt.predict_net.op]
    all_params = {**params, **opt.params}
    infos = {"x": TensorInfo(feeds["x"].shape, feeds["x"].dtype)}
    res = offload_to_onnxruntime(opt.predict_net, params=all_params, data_inputs=["x"], input_infos=infos)
    assert [op.type for op in res.predict_net.op] == ["Onnxifi"]
    assert_close(_run(res.predict_net, {**all_params, **feeds}), _run(net, {**params, **feeds}), "prob")


@pytest.mark.timeout(120)
def test_onnxruntime_failure_names_the_onnxifi_op_and_the_replaced_ops() -> None:
    net, params, feeds = _small_cnn()
    with Workspace() as ws:
        for k, v in {**params, **feeds}.items():
            ws.feed(k, v)
        res = offload_to_onnxruntime(net, workspace=ws, data_inputs=["x"])
        ws.feed("x", np.zeros((2, 3, 9, 9), np.float32))  # not the shape the session was built for
        with pytest.raises(OperatorError) as err:
            ws.run_net_once(res.predict_net)
    text = str(err.value)
    assert "Onnxifi 'onnxifi_0'" in text and "onnxruntime failed" in text
    assert "replacing op #0 Conv" in text and "op #6 Softmax" in text


def test_data_inputs_of_unknown_shape_are_refused_clearly() -> None:
    net, params, _ = _small_cnn()
    with pytest.raises(UnsupportedError, match=r"needs the shapes of its data inputs \['x'\]"):
        offload_to_onnxruntime(net, params=params, data_inputs=["x"])


def test_a_broken_model_is_refused_when_the_net_is_prepared() -> None:
    op = make_op("Onnxifi", ["x"], ["y"], onnx_model=b"\x00not a model", input_names=["x"], output_names=["y"])
    net = pb.NetDef(name="bad", op=[op], external_input=["x"], external_output=["y"])
    with Workspace() as ws, pytest.raises(UnsupportedError, match="op #0 Onnxifi: onnxruntime cannot load"):
        ws.create_net(net)


def test_without_the_onnx_extra_the_error_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    net, params, _ = _small_cnn()
    with pytest.raises(UnsupportedError, match=r"'onnx' extra.*asyncnet\[onnx\]"):
        offload_to_onnxruntime(net, params=params)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("rel", "shape"),
    [
        (("caffe_squeezenet", "SqueezeNet_v1.1", "deploy.prototxt"), (1, 3, 227, 227)),
        (("caffe_mobilenet_shicai", "mobilenet_deploy.prototxt"), (1, 3, 128, 128)),
        (("caffe_resnet_kaiminghe", "ResNet-50-deploy.prototxt"), (1, 3, 224, 224)),
    ],
    ids=["squeezenet", "mobilenet", "resnet50"],
)
def test_caffe_cnns_offloaded_match_numpy(rel: tuple[str, ...], shape: tuple[int, ...]) -> None:
    from asyncnet.caffe import translate_files

    t = translate_files(realnets_path(*rel))
    (data,) = t.input_shapes
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    out = t.predict.external_output[0]
    with Workspace() as ws:
        ws.run_net_once(t.init)
        ws.feed(data, x)
        ws.run_net_once(t.predict)
        ref = np.array(ws.fetch(out))
        opt = optimize_for_inference(t.predict, workspace=ws, data_inputs=[data])
        opt.apply(ws)
        res = offload_to_onnxruntime(opt.predict_net, workspace=ws, data_inputs=[data])
        assert [op.type for op in res.predict_net.op] == ["Onnxifi"]
        ws.run_net_once(res.predict_net)
        assert_close(ws.fetch(out), ref, out)


@pytest.mark.timeout(120)
def test_initializers_argument_reads_weights_from_the_workspace() -> None:
    import onnx

    net, params, feeds = _small_cnn()
    with Workspace() as ws:
        for k, v in {**params, **feeds}.items():
            ws.feed(k, v)
        res = offload_to_onnxruntime(net, workspace=ws, data_inputs=["x"])
        op = res.predict_net.op[0]
        arg = next(a for a in op.arg if a.name == "onnx_model")
        model = onnx.ModelProto()
        model.ParseFromString(arg.s)
        weights = [i for i in model.graph.initializer if i.name in params]
        assert {i.name for i in weights} == set(params)
        for i in weights:
            model.graph.initializer.remove(i)
        arg.s = model.SerializeToString()
        from asyncnet.serde import make_argument

        op.arg.append(make_argument("initializers", sorted(params)))
        ws.run_net_once(res.predict_net)
        assert_close(ws.fetch("prob"), _run(net, {**params, **feeds}), "prob")
