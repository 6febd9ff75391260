"""Inference rewrites on the real nets of ../shared/realnets: rewritten and original nets agree.

Real init nets where the corpus has them (third-party exports, style transfer), translated Caffe
prototxts with their generated weights, and model-zoo predict nets with seeded random parameters.
"""

from __future__ import annotations

import numpy as np
import pytest

from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.randinit import fill_workspace
from asyncnet.serde import read_net
from asyncnet.transforms import OptimizeResult, optimize_for_inference
from asyncnet.workspace import Workspace
from tests.conftest import realnets_path
from tests.transforms.equiv import assert_close


def _compare(
    predict: pb.NetDef, init: pb.NetDef | None, feeds: dict[str, np.ndarray], *, random_params: bool = False
) -> OptimizeResult:
    outs = list(predict.external_output) or list(predict.op[-1].output)
    with Workspace() as ws:
        if init is not None:
            ws.run_net_once(init)
        for k, v in feeds.items():
            ws.feed(k, v)
        if random_params:
            fill_workspace(predict, ws, {}, params=True, seed=0)
        ws.run_net_once(predict)
        ref = {n: np.array(ws.fetch(n), copy=True) for n in outs}
        res = optimize_for_inference(predict, init, workspace=ws, data_inputs=list(feeds))
        res.apply(ws)
        for n in outs:
            ws.remove(n)
        ws.run_net_once(res.predict_net)
        for n in outs:
            assert_close(ws.fetch(n), ref[n], f"{predict.name} output '{n}'")
    assert list(res.predict_net.external_output) == list(predict.external_output)
    return res


def _kinds(res: OptimizeResult) -> set[str]:
    return {r.rewrite for r in res.report}


EXPORTS: dict[str, tuple[str, tuple[int, ...], set[str]]] = {
    "pytorch_onnx_lenet_mnist": ("1", (2, 1, 28, 28), {"fold_add_into_conv"}),
    "mtcnn_pnet_facial_detection": ("data", (1, 3, 24, 24), set()),
    "squeezenet_trafficlight_3class": ("data", (1, 3, 227, 227), {"fuse_relu", "drop_dropout"}),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_third_party_exports_with_real_weights(name: str) -> None:
    folder = realnets_path("third_party_caffe2_exports", name)
    data, shape, expected = EXPORTS[name]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    res = _compare(read_net(folder / "predict_net.pb"), read_net(folder / "init_net.pb"), {data: x})
    assert expected <= _kinds(res), res.summary_lines()


@pytest.mark.timeout(120)
def test_style_transfer_with_its_real_init_net() -> None:
    predict = read_net(realnets_path("caffe2_model_zoo", "style_transfer_crayon", "crayon_predict.pb"))
    init = read_net(realnets_path("caffe2_model_zoo", "style_transfer_crayon", "crayon_init.pb"))
    img = np.random.default_rng(0).integers(0, 256, (1, 64, 56, 4)).astype(np.uint8)
    _compare(predict, init, {"data_int8_bgra": img})


CAFFE: dict[str, tuple[tuple[str, ...], tuple[int, ...], set[str]]] = {
    "resnet50": (("caffe_resnet_kaiminghe", "ResNet-50-deploy.prototxt"), (1, 3, 224, 224), {"fold_bn_into_conv"}),
    "squeezenet_v1.1": (("caffe_squeezenet", "SqueezeNet_v1.1", "deploy.prototxt"), (1, 3, 227, 227), {"fuse_relu"}),
    "mobilenet_v1": (("caffe_mobilenet_shicai", "mobilenet_deploy.prototxt"), (1, 3, 160, 160), {"fold_bn_into_conv"}),
    "mobilenet_v2": (("caffe_mobilenet_shicai", "mobilenet_v2_deploy.prototxt"), (1, 3, 160, 160), {"fuse_relu"}),
    "googlenet": (("caffe_bvlc", "models", "bvlc_googlenet", "deploy.prototxt"), (1, 3, 224, 224), {"drop_dropout"}),
    "caffenet": (
        ("caffe_bvlc", "models", "bvlc_reference_caffenet", "deploy.prototxt"),
        (1, 3, 227, 227),
        {"fuse_relu", "drop_dropout"},
    ),
    "lenet": (("caffe_bvlc", "examples", "mnist", "lenet.prototxt"), (4, 1, 28, 28), {"fuse_relu"}),
    "cifar10_full": (("caffe_bvlc", "examples", "cifar10", "cifar10_full.prototxt"), (2, 3, 32, 32), set()),
}


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", sorted(CAFFE))
def test_translated_caffe_nets(name: str) -> None:
    from asyncnet.caffe import translate_files

    rel, shape, expected = CAFFE[name]
    t = translate_files(realnets_path(*rel))
    (data,) = t.input_shapes
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    res = _compare(t.predict, t.init, {data: x})
    assert expected <= _kinds(res), res.summary_lines()
    assert len(res.predict_net.op) < len(t.predict.op) or not expected


ZOO: dict[str, tuple[str, str, tuple[int, ...], set[str]]] = {
    "densenet121": ("densenet121/predict_net.pbtxt", "data", (1, 3, 64, 64), {"fold_mul_into_conv"}),
    "resnet50": ("resnet50/predict_net.pbtxt", "gpu_0/data", (1, 3, 224, 224), {"fold_bn_into_conv"}),
    "bn_inception": ("inception_v2/predict_net.pbtxt", "data", (1, 3, 224, 224), {"fold_bn_into_conv"}),
    "googlenet": ("inception_v1/predict_net.pbtxt", "data", (1, 3, 224, 224), {"fuse_relu"}),
    "squeezenet": ("squeezenet/predict_net.pb", "data", (1, 3, 64, 64), {"fuse_relu"}),
}


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_predict_nets_with_random_parameters(name: str) -> None:
    rel, data, shape, expected = ZOO[name]
    predict = read_net(realnets_path("caffe2_model_zoo", *rel.split("/")))
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    res = _compare(predict, None, {data: x}, random_params=True)
    assert expected <= _kinds(res), res.summary_lines()
