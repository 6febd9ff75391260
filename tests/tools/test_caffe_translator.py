"""Caffe -> Caffe2 translation: every real prototxt, numerics vs a naive reference, zoo parity, errors."""

from __future__ import annotations

import collections
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from asyncnet.caffe import read_prototxt, translate, translate_files
from asyncnet.caffe.layers import pooled_size
from asyncnet.cli import main
from asyncnet.errors import NetDefinitionError, ParseError, TensorError, UnsupportedError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.proto import caffe_pb2 as cpb
from asyncnet.registry import default_registry
from asyncnet.serde import read_net
from asyncnet.workspace import Workspace
from tests.conftest import realnets_path

# Every Caffe net definition in the corpus that BVLC Caffe parses, with the extra settings it needs
# (MNIST Data layers carry no crop size, so their shape must be given; the autoencoder's TEST
# data layers only exist in a stage).
NETS: dict[str, dict[str, object]] = {
    "caffe_bvlc/examples/cifar10/cifar10_full.prototxt": {},
    "caffe_bvlc/examples/cifar10/cifar10_quick.prototxt": {},
    "caffe_bvlc/examples/mnist/lenet.prototxt": {},
    "caffe_bvlc/examples/mnist/lenet_train_test.prototxt": {"input_shapes": {"data": (2, 1, 28, 28)}},
    "caffe_bvlc/examples/mnist/mnist_autoencoder.prototxt": {
        "input_shapes": {"data": (2, 1, 28, 28)},
        "stages": ["test-on-test"],
    },
    "caffe_bvlc/examples/net_surgery/bvlc_caffenet_full_conv.prototxt": {},
    "caffe_bvlc/examples/net_surgery/conv.prototxt": {},
    "caffe_bvlc/examples/siamese/mnist_siamese.prototxt": {},
    "caffe_bvlc/legacy_v1/bvlc_reference_caffenet_deploy_V1.prototxt": {},
    "caffe_bvlc/legacy_v1/lenet_V1.prototxt": {},
    "caffe_bvlc/models/bvlc_alexnet/deploy.prototxt": {},
    "caffe_bvlc/models/bvlc_alexnet/train_val.prototxt": {},
    "caffe_bvlc/models/bvlc_googlenet/deploy.prototxt": {},
    "caffe_bvlc/models/bvlc_googlenet/train_val.prototxt": {},
    "caffe_bvlc/models/bvlc_reference_caffenet/deploy.prototxt": {},
    "caffe_bvlc/models/bvlc_reference_caffenet/train_val.prototxt": {},
    "caffe_bvlc/models/bvlc_reference_rcnn_ilsvrc13/deploy.prototxt": {},
    "caffe_bvlc/models/finetune_flickr_style/deploy.prototxt": {},
    "caffe_mobilenet_shicai/mobilenet_deploy.prototxt": {},
    "caffe_mobilenet_shicai/mobilenet_v2_deploy.prototxt": {},
    "caffe_resnet_kaiminghe/ResNet-50-deploy.prototxt": {},
    "caffe_resnet_kaiminghe/ResNet-101-deploy.prototxt": {},
    "caffe_resnet_kaiminghe/ResNet-152-deploy.prototxt": {},
    "caffe_squeezenet/SqueezeNet_v1.0/deploy.prototxt": {},
    "caffe_squeezenet/SqueezeNet_v1.0/train_val.prototxt": {},
    "caffe_squeezenet/SqueezeNet_v1.1/deploy.prototxt": {},
    "caffe_squeezenet/SqueezeNet_v1.1/train_val.prototxt": {},
}

# Run with batch 1 and random weights (the rest only translate: their conv stacks take
# seconds each on the CI machine).
RUN = [
    "caffe_bvlc/examples/cifar10/cifar10_full.prototxt",
    "caffe_bvlc/examples/cifar10/cifar10_quick.prototxt",
    "caffe_bvlc/examples/mnist/lenet.prototxt",
    "caffe_bvlc/examples/mnist/lenet_train_test.prototxt",
    "caffe_bvlc/examples/mnist/mnist_autoencoder.prototxt",
    "caffe_bvlc/examples/net_surgery/conv.prototxt",
    "caffe_bvlc/examples/siamese/mnist_siamese.prototxt",
    "caffe_bvlc/legacy_v1/lenet_V1.prototxt",
    "caffe_mobilenet_shicai/mobilenet_deploy.prototxt",
    "caffe_squeezenet/SqueezeNet_v1.1/deploy.prototxt",
]


def _translate(rel: str, **extra: object):  # type: ignore[no-untyped-def]
    kwargs = dict(NETS[rel])
    kwargs.update(extra)
    return translate_files(realnets_path(*rel.split("/")), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("rel", sorted(NETS))
def test_translates_every_caffe_net(rel: str) -> None:
    t = _translate(rel)
    reg = default_registry()
    assert t.predict.op and t.predict.external_output
    missing = sorted({op.type for op in t.predict.op if not reg.has(op.type)})
    assert not missing, f"translated ops without an asyncnet kernel: {missing}"
    params = {p.name for p in t.params}
    assert set(t.predict.external_input) == set(t.input_shapes) | params
    assert [op.output[0] for op in t.init.op] == [p.name for p in t.params]
    for out in t.predict.external_output:
        assert out in t.blob_shapes


@pytest.mark.timeout(120)
@pytest.mark.parametrize("rel", RUN)
def test_translated_net_runs(rel: str) -> None:
    first = _translate(rel)
    shapes = {k: (1, *v[1:]) for k, v in first.input_shapes.items()}
    t = _translate(rel, input_shapes=shapes)
    rng = np.random.default_rng(0)
    with Workspace() as ws:
        ws.run_net_once(t.init)
        for name, shape in shapes.items():
            ws.feed(name, rng.standard_normal(shape).astype(np.float32))
        ws.run_net_once(t.predict)
        for out in t.predict.external_output:
            value = ws.fetch(out)
            want = t.blob_shapes[out]
            assert value.shape == (1, *want[1:]), out
            assert np.isfinite(value).all(), out
            if out == "prob":
                np.testing.assert_allclose(value.reshape(1, value.shape[1], -1).sum(axis=1), 1.0, rtol=1e-4)


def test_explicit_pads_equal_legacy_pad_for_max_pooling(tmp_path: Path) -> None:
    proto = tmp_path / "pools.prototxt"
    proto.write_text(
        'input: "x" input_shape { dim: 2 dim: 3 dim: 10 dim: 11 }\n'
        'layer { name: "p1" type: "Pooling" bottom: "x" top: "p1" pooling_param { kernel_size: 3 stride: 2 } }\n'
        'layer { name: "p2" type: "Pooling" bottom: "p1" top: "p2" pooling_param { kernel_size: 2 stride: 2 pad: 1 } }\n'
    )
    legacy = translate_files(proto)
    explicit = translate_files(proto, remove_legacy_pad=True)
    assert legacy.blob_shapes["p1"] == (2, 3, 5, 5) and legacy.blob_shapes["p2"] == (2, 3, 3, 3)
    for op in explicit.predict.op:
        assert not any(a.name == "legacy_pad" for a in op.arg)
    assert {a.name: a.i for a in explicit.predict.op[0].arg if a.name.startswith("pad")} == {
        "pad_t": 0,
        "pad_l": 0,
        "pad_b": 1,
        "pad_r": 0,
    }
    x = np.random.default_rng(3).standard_normal((2, 3, 10, 11)).astype(np.float32)
    results = []
    for t in (legacy, explicit):
        with Workspace() as ws:
            ws.feed("x", x)
            ws.run_net_once(t.predict)
            results.append(ws.fetch("p2"))
    assert results[0].shape == (2, 3, 3, 3)
    np.testing.assert_array_equal(results[0], results[1])


def test_random_weights_are_seeded() -> None:
    rel = "caffe_bvlc/examples/mnist/lenet.prototxt"
    a = _translate(rel, seed=5)
    b = _translate(rel, seed=5)
    c = _translate(rel, seed=6)
    assert a.init == b.init
    assert a.init != c.init


# ---------------------------------------------------------------------------
# Numerics with a caffemodel, against a deliberately naive reference

PROTO = """
name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 9 dim: 9 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 stride: 2 } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }
layer { name: "sc" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""


def _blob(arr: np.ndarray, legacy: bool = False) -> cpb.BlobProto:
    b = cpb.BlobProto()
    if legacy:
        dims = [1] * (4 - arr.ndim) + list(arr.shape)
        b.num, b.channels, b.height, b.width = dims
    else:
        b.shape.dim.extend(arr.shape)
    b.data.extend(arr.reshape(-1).tolist())
    return b


def _naive(x: np.ndarray, w: dict[str, np.ndarray]) -> np.ndarray:
    n, c, h, wd = x.shape
    k, s, p = 3, 2, 1
    oh = (h + 2 * p - k) // s + 1
    xp = np.zeros((n, c, h + 2 * p, wd + 2 * p), np.float64)
    xp[:, :, p : p + h, p : p + wd] = x
    conv = np.zeros((n, 4, oh, oh))
    for b in range(n):
        for o in range(4):
            for i in range(oh):
                for j in range(oh):
                    conv[b, o, i, j] = (xp[b, :, i * s : i * s + k, j * s : j * s + k] * w["conv_w"][o]).sum()
            conv[b, o] += w["conv_b"][o]
    mean, var = w["mean"] / w["factor"], w["var"] / w["factor"]
    for o in range(4):
        conv[:, o] = (conv[:, o] - mean[o]) / math.sqrt(var[o] + 1e-5) * w["gamma"][o] + w["beta"][o]
    conv = np.maximum(conv, 0)
    # Caffe pooling rounds up: 5x5 -> 3x3, the last window hanging over the edge.
    ph = -(-(oh - 2) // 2) + 1
    pool = np.full((n, 4, ph, ph), -np.inf)
    for i in range(ph):
        for j in range(ph):
            pool[:, :, i, j] = conv[:, :, i * 2 : min(i * 2 + 2, oh), j * 2 : min(j * 2 + 2, oh)].max(axis=(2, 3))
    flat = pool.reshape(n, -1)
    logits = flat @ w["fc_w"].T + w["fc_b"]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _weights(rng: np.random.Generator) -> tuple[dict[str, np.ndarray], cpb.NetParameter]:
    w = {
        "conv_w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "conv_b": rng.standard_normal(4).astype(np.float32),
        "mean": rng.standard_normal(4).astype(np.float32),
        "var": rng.uniform(0.5, 2.0, 4).astype(np.float32),
        "factor": np.float32(2.0),
        "gamma": rng.uniform(0.5, 1.5, 4).astype(np.float32),
        "beta": rng.standard_normal(4).astype(np.float32),
        "fc_w": (rng.standard_normal((5, 36)) * 0.3).astype(np.float32),
        "fc_b": rng.standard_normal(5).astype(np.float32),
    }
    model = cpb.NetParameter(name="tiny")
    model.layer.add(name="conv", type="Convolution").blobs.extend([_blob(w["conv_w"]), _blob(w["conv_b"])])
    model.layer.add(name="bn", type="BatchNorm").blobs.extend(
        [_blob(w["mean"]), _blob(w["var"]), _blob(np.array([w["factor"]], np.float32))]
    )
    model.layer.add(name="sc", type="Scale").blobs.extend([_blob(w["gamma"]), _blob(w["beta"])])
    # Old caffemodels keep InnerProduct weights as (1, 1, N, K) in num/channels/height/width.
    model.layers.add(name="fc", type=cpb.V1LayerParameter.INNER_PRODUCT).blobs.extend(
        [_blob(w["fc_w"], legacy=True), _blob(w["fc_b"], legacy=True)]
    )
    return w, model


@pytest.mark.parametrize("fuse", [True, False])
def test_caffemodel_numerics_match_naive_reference(tmp_path: Path, fuse: bool) -> None:
    rng = np.random.default_rng(1)
    w, model = _weights(rng)
    proto = tmp_path / "tiny.prototxt"
    proto.write_text(PROTO)
    caffemodel = tmp_path / "tiny.caffemodel"
    caffemodel.write_bytes(model.SerializeToString())
    predict, init = tmp_path / "p.pb", tmp_path / "i.pbtxt"
    args = ["from-caffe", str(proto), str(caffemodel), "-o", str(predict), "--init", str(init)]
    assert main(args + ([] if fuse else ["--no-fuse-bn"])) == 0
    net = read_net(predict)
    types = [op.type for op in net.op]
    assert ("SpatialBN" in types) and (("Mul" in types) != fuse)
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    with Workspace() as ws:
        ws.run_net_once(read_net(init))
        ws.feed("data", x)
        ws.run_net_once(net)
        got = ws.fetch("prob")
    np.testing.assert_allclose(got, _naive(x.astype(np.float64), w), rtol=1e-4, atol=1e-6)


def test_caffemodel_shape_mismatch_names_layer(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    _, model = _weights(rng)
    del model.layer[0].blobs[0].shape.dim[:]
    model.layer[0].blobs[0].shape.dim.extend([4, 3, 3, 2, 1, 1, 1])
    del model.layer[0].blobs[0].data[54:]
    proto = tmp_path / "tiny.prototxt"
    proto.write_text(PROTO)
    with pytest.raises(TensorError, match="layer 'conv'"):
        translate(read_prototxt(proto), model)


# (size, kernel, stride, pad) -> Caffe's pooled size, from shapes Caffe reports for real nets
# (AlexNet, GoogLeNet, SqueezeNet) and hand-counted windows (the last one starts in the padding).
POOLED = [
    ((55, 3, 2, 0), 27),
    ((112, 3, 2, 0), 56),
    ((56, 3, 2, 0), 28),
    ((28, 3, 2, 0), 14),
    ((14, 3, 2, 0), 7),
    ((28, 3, 1, 1), 28),
    ((111, 3, 2, 0), 55),
    ((5, 2, 2, 0), 3),
    ((13, 3, 2, 1), 7),
    ((3, 1, 2, 1), 2),
]


@pytest.mark.parametrize("geometry,expected", POOLED)
def test_pooled_size_follows_caffe(geometry: tuple[int, int, int, int], expected: int) -> None:
    size, kernel, stride, pad = geometry
    assert pooled_size(size, kernel, stride, pad, ceil=True) == expected


# ---------------------------------------------------------------------------
# Each layer type against a naive numpy statement of Caffe's semantics
LAYERS_PROTO = """
name: "layers"
input: "x"
input_shape { dim: 2 dim: 4 dim: 5 dim: 5 }
layer { name: "sm" type: "Softmax" bottom: "x" top: "sm" }
layer { name: "sl" type: "Slice" bottom: "x" top: "s1" top: "s2" slice_param { axis: 1 slice_point: 1 } }
layer { name: "cat" type: "Concat" bottom: "s2" bottom: "s1" top: "cat" }
layer { name: "sum" type: "Eltwise" bottom: "x" bottom: "cat" top: "sum"
        eltwise_param { operation: SUM coeff: 2 coeff: -1 } }
layer { name: "prod" type: "Eltwise" bottom: "x" bottom: "cat" bottom: "sm" top: "prod"
        eltwise_param { operation: PROD } }
layer { name: "max" type: "Eltwise" bottom: "x" bottom: "cat" top: "max" eltwise_param { operation: MAX } }
layer { name: "pow" type: "Power" bottom: "sm" top: "pow" power_param { power: 2 scale: 3 shift: 1 } }
layer { name: "exp" type: "Exp" bottom: "x" top: "exp" exp_param { scale: 0.5 shift: -1 } }
layer { name: "elu" type: "ELU" bottom: "x" top: "elu" elu_param { alpha: 0.5 } }
layer { name: "lrelu" type: "ReLU" bottom: "x" top: "lrelu" relu_param { negative_slope: 0.1 } }
layer { name: "bnll" type: "BNLL" bottom: "x" top: "bnll" }
layer { name: "abs" type: "AbsVal" bottom: "x" top: "abs" }
layer { name: "sig" type: "Sigmoid" bottom: "x" top: "sig" }
layer { name: "tanh" type: "TanH" bottom: "x" top: "tanh" }
layer { name: "drop" type: "Dropout" bottom: "x" top: "drop" dropout_param { dropout_ratio: 0.3 } }
layer { name: "prelu" type: "PReLU" bottom: "x" top: "prelu" prelu_param { filler { type: "uniform" min: -1 } } }
layer { name: "flat" type: "Flatten" bottom: "x" top: "flat" flatten_param { axis: 2 } }
layer { name: "flat1" type: "Flatten" bottom: "x" top: "flat1" }
layer { name: "rs" type: "Reshape" bottom: "x" top: "rs" reshape_param { shape { dim: 0 dim: -1 dim: 5 } } }
layer { name: "rs2" type: "Reshape" bottom: "x" top: "rs2"
        reshape_param { shape { dim: 2 dim: 2 } axis: 1 num_axes: 1 } }
layer { name: "split" type: "Split" bottom: "x" top: "x1" top: "x2" }
layer { name: "lrn" type: "LRN" bottom: "x" top: "lrn" lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 k: 2 } }
layer { name: "lrnw" type: "LRN" bottom: "x" top: "lrnw"
        lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 norm_region: WITHIN_CHANNEL } }
layer { name: "deconv" type: "Deconvolution" bottom: "x" top: "deconv"
        convolution_param { num_output: 3 kernel_size: 3 stride: 2 pad: 1
                            weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "uniform" } } }
layer { name: "scl" type: "Scale" bottom: "x" top: "scl"
        scale_param { axis: 1 num_axes: 2 bias_term: true filler { type: "uniform" } bias_filler { type: "uniform" } } }
layer { name: "bias" type: "Bias" bottom: "x" top: "bias" bias_param { filler { type: "uniform" } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip"
        inner_product_param { num_output: 3 axis: 2 bias_filler { type: "uniform" } } }
layer { name: "bn" type: "BatchNorm" bottom: "x" top: "bn" batch_norm_param { eps: 0.01 } }
"""


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _layers_reference(x: np.ndarray, p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    n, c, h, w = x.shape
    sm = _softmax(x, 1)
    cat = np.concatenate([x[:, 1:], x[:, :1]], axis=1)
    out = {
        "sm": sm,
        "s1": x[:, :1],
        "s2": x[:, 1:],
        "cat": cat,
        "sum": 2 * x - cat,
        "prod": x * cat * sm,
        "max": np.maximum(x, cat),
        "pow": (1 + 3 * sm) ** 2,
        "exp": np.exp(-1 + 0.5 * x),
        "elu": np.where(x > 0, x, 0.5 * (np.exp(x) - 1)),
        "lrelu": np.where(x > 0, x, 0.1 * x),
        "bnll": np.log1p(np.exp(x)),
        "abs": np.abs(x),
        "sig": 1 / (1 + np.exp(-x)),
        "tanh": np.tanh(x),
        "drop": x,
        "flat": x.reshape(n, c, h * w),
        "flat1": x.reshape(n, -1),
        "rs": x.reshape(n, -1, 5),
        "rs2": x.reshape(n, 2, 2, h, w),
        "x1": x,
        "x2": x,
    }
    slope = p["prelu_Slope"]
    out["prelu"] = np.where(x > 0, x, x * slope[None, :, None, None])
    # Across channels: k + alpha / n * (sum of squares over n neighbouring channels).
    lrn = np.empty_like(x)
    for ch in range(c):
        lo, hi = max(0, ch - 1), min(c, ch + 2)
        lrn[:, ch] = x[:, ch] * (2 + 0.5 / 3 * (x[:, lo:hi] ** 2).sum(axis=1)) ** -0.75
    out["lrn"] = lrn
    # Within channel: 1 + alpha * (mean of squares over the zero-padded 3x3 window).
    padded = np.pad(x**2, ((0, 0), (0, 0), (1, 1), (1, 1)))
    win = np.zeros_like(x)
    for i in range(h):
        for j in range(w):
            win[:, :, i, j] = padded[:, :, i : i + 3, j : j + 3].sum(axis=(2, 3)) / 9
    out["lrnw"] = x * (1 + 0.5 * win) ** -0.75
    wt, bias = p["deconv_w"], p["deconv_b"]
    size = (h - 1) * 2 + 3 - 2
    full = np.zeros((n, 3, size + 2, size + 2))
    for i in range(h):
        for j in range(w):
            full[:, :, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3] += np.einsum("bc,cokl->bokl", x[:, :, i, j], wt)
    out["deconv"] = full[:, :, 1 : 1 + size, 1 : 1 + size] + bias[None, :, None, None]
    out["scl"] = x * p["scl_w"][None, :, :, None] + p["scl_b"][None, :, :, None]
    out["bias"] = x + p["bias_b"][None, :, None, None]
    out["ip"] = np.einsum("bck,ok->bco", x.reshape(n, c, h * w), p["ip_w"]) + p["ip_b"]
    mean, var = p["bn_mean"], p["bn_var"]
    out["bn"] = (x - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + 0.01)
    return out


@pytest.mark.timeout(60)
def test_layers_match_caffe_semantics(tmp_path: Path) -> None:
    proto = tmp_path / "layers.prototxt"
    proto.write_text(LAYERS_PROTO)
    t = translate_files(proto, seed=3)
    x = np.random.default_rng(0).standard_normal((2, 4, 5, 5)).astype(np.float32)
    with Workspace() as ws:
        ws.run_net_once(t.init)
        params = {p.name: ws.fetch(p.name).astype(np.float64) for p in t.params}
        ws.feed("x", x)
        ws.run_net_once(t.predict)
        expected = _layers_reference(x.astype(np.float64), params)
        for name, want in expected.items():
            got = ws.fetch(name)
            assert got.shape == want.shape, name
            assert tuple(t.blob_shapes[name]) == want.shape, name
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=name)
    # The generated parameters follow the layers' fillers.
    assert params["prelu_Slope"].min() >= -1 and params["prelu_Slope"].max() <= 1
    assert math.isclose(float(params["deconv_w"].std()), 0.5, rel_tol=0.5)


# ---------------------------------------------------------------------------
# Parity with the Caffe2 model zoo's own conversions

ZOO = {
    "caffe_bvlc/models/bvlc_alexnet/deploy.prototxt": "bvlc_alexnet/predict_net.pbtxt",
    "caffe_bvlc/models/bvlc_googlenet/deploy.prototxt": "inception_v1/predict_net.pbtxt",
    # The zoo's "squeezenet" is v1.1 (3x3 conv1, early pools), whatever its folder says.
    "caffe_squeezenet/SqueezeNet_v1.1/deploy.prototxt": "squeezenet/predict_net.pb",
    "caffe_resnet_kaiminghe/ResNet-50-deploy.prototxt": "resnet50/predict_net.pbtxt",
}


def _structure(net: pb.NetDef) -> collections.Counter[tuple[str, tuple[str, ...]]]:
    """Order- and name-free form: each op's type with the types of the ops producing its inputs."""
    producer: dict[str, str] = {}
    out: collections.Counter[tuple[str, tuple[str, ...]]] = collections.Counter()
    for op in net.op:
        out[(op.type, tuple(sorted(producer[b] for b in op.input if b in producer)))] += 1
        for b in op.output:
            producer[b] = op.type
    return out


@pytest.mark.parametrize("rel", sorted(ZOO))
def test_matches_model_zoo(rel: str) -> None:
    zoo = read_net(realnets_path("caffe2_model_zoo", *ZOO[rel].split("/")))
    ours = _translate(rel).predict
    if "ResNet" in rel:
        # Kaiming He's prototxt lists branch1 before branch2a, the zoo net the reverse:
        # compare the dataflow structure instead of the op order.
        assert _structure(ours) == _structure(zoo)
    else:
        assert [op.type for op in ours.op] == [op.type for op in zoo.op]
    if "ResNet" not in rel:
        # Convolutions carry the same window arguments (ResNet's zoo net moved strides to the 3x3s).
        keys = ("kernel", "stride", "pad", "group")
        for a, b in zip([o for o in ours.op if o.type == "Conv"], [o for o in zoo.op if o.type == "Conv"]):
            assert {x.name: x.i for x in a.arg if x.name in keys} == {x.name: x.i for x in b.arg if x.name in keys}


# ---------------------------------------------------------------------------
# Failures name the layer, its type and line


def test_ssd_deploy_names_unknown_field_and_layer() -> None:
    with pytest.raises(ParseError) as e:
        read_prototxt(realnets_path("caffe2_repo_assets", "ssd_test_caffe_ssd_deploy.prototxt"))
    msg = str(e.value)
    assert ":817" in msg and "norm_param" in msg and "conv4_3_norm" in msg and "Normalize" in msg
    assert e.value.line == 817


def test_python_layer_is_refused_naming_it() -> None:
    with pytest.raises(UnsupportedError) as e:
        translate_files(realnets_path("caffe_bvlc", "examples", "pycaffe", "linreg.prototxt"))
    msg = str(e.value)
    assert "layer 'loss'" in msg and "Python" in msg and "linreg.prototxt:44" in msg and "pyloss" in msg


def test_unsupported_layer_type_names_layer_and_line(tmp_path: Path) -> None:
    proto = tmp_path / "crop.prototxt"
    proto.write_text(
        'input: "a"\ninput_shape { dim: 1 dim: 2 dim: 8 dim: 8 }\ninput: "b"\ninput_shape { dim: 1 dim: 2 dim: 4 dim: 4 }\n'
        '# a comment with { braces\nlayer {\n  name: "crop1"\n  type: "Crop"\n  bottom: "a" bottom: "b" top: "c"\n}\n'
    )
    with pytest.raises(UnsupportedError, match=r"layer 'crop1' \(type Crop\) at .*crop.prototxt:6"):
        translate_files(proto)


def test_unknown_input_shape_asks_for_it() -> None:
    with pytest.raises(NetDefinitionError, match="--input-shape"):
        translate_files(realnets_path("caffe_bvlc", "examples", "mnist", "lenet_train_test.prototxt"))


def test_train_val_loss_layers(tmp_path: Path) -> None:
    rel = "caffe_bvlc/examples/mnist/lenet_train_test.prototxt"
    dropped = _translate(rel)
    assert not {"SoftmaxWithLoss", "Accuracy"} & {op.type for op in dropped.predict.op}
    assert any("training-only" in n for n in dropped.notes)
    assert "label" not in dropped.predict.external_input
    kept = _translate(rel, include_loss=True)
    assert {"SoftmaxWithLoss", "Accuracy"} <= {op.type for op in kept.predict.op}
    assert "label" in kept.predict.external_input


def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = ["-o", str(tmp_path / "p.pb"), "--init", str(tmp_path / "i.pb")]
    assert main(["from-caffe", str(tmp_path / "missing.prototxt"), *out]) == 1
    assert "missing.prototxt: no such file" in capsys.readouterr().err
    ssd = realnets_path("caffe2_repo_assets", "ssd_test_caffe_ssd_deploy.prototxt")
    assert main(["from-caffe", str(ssd), *out]) == 1
    err = capsys.readouterr().err
    assert err.startswith("asyncnet from-caffe: error:") and "norm_param" in err and "Traceback" not in err
    lenet = realnets_path("caffe_bvlc", "examples", "mnist", "lenet.prototxt")
    assert main(["from-caffe", str(lenet), str(lenet), *out]) == 1
    assert "caffemodel" in capsys.readouterr().err
    linreg = realnets_path("caffe_bvlc", "examples", "pycaffe", "linreg.prototxt")
    assert main(["from-caffe", str(linreg), *out]) == 1
    err = capsys.readouterr().err
    assert "layer 'loss' (type Python)" in err and "linreg.prototxt:44" in err
    assert main(["from-caffe", str(lenet), *out, "--input-shape", "data=1,x"]) == 1
    assert "dims must be integers" in capsys.readouterr().err
    bad = tmp_path / "bad.caffemodel"
    bad.write_bytes(b"\xff\xff\xff")
    assert main(["from-caffe", str(lenet), str(bad), *out]) == 1
    assert "bad.caffemodel" in capsys.readouterr().err
    assert not (tmp_path / "p.pb").exists()


def test_cli_writes_value_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lenet = realnets_path("caffe_bvlc", "legacy_v1", "lenet_V1.prototxt")
    vi = tmp_path / "value_info.json"
    args = ["from-caffe", str(lenet), "-o", str(tmp_path / "p.pbtxt"), "--init", str(tmp_path / "i.pb")]
    assert main([*args, "--input-shape", "data=3,1,28,28", "--value-info", str(vi)]) == 0
    assert vi.read_text().strip() == '{"data": [1, [3, 1, 28, 28]]}'
    assert "outputs: prob" in capsys.readouterr().out


def test_tools_script_is_the_subcommand() -> None:
    script = Path(__file__).resolve().parents[2] / "tools" / "caffe_translator.py"
    res = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "usage: asyncnet from-caffe" in res.stdout


@pytest.mark.timeout(60)
def test_cli_translation_runs_with_asyncnet_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lenet = realnets_path("caffe_bvlc", "legacy_v1", "lenet_V1.prototxt")
    predict, init = tmp_path / "predict.pb", tmp_path / "init.pb"
    assert (
        main(["from-caffe", str(lenet), "-o", str(predict), "--init", str(init), "--input-shape", "data=2,1,28,28"])
        == 0
    )
    inputs, outputs = tmp_path / "in.npz", tmp_path / "out.npz"
    np.savez(inputs, data=np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32))
    capsys.readouterr()
    assert main(["run", str(predict), "--init", str(init), "--inputs", str(inputs), "--outputs", str(outputs)]) == 0
    with np.load(outputs) as got:
        prob = got["prob"]
    assert prob.shape == (2, 10)
    np.testing.assert_allclose(prob.sum(axis=1), 1.0, rtol=1e-5)


def test_bilinear_deconvolution_upsamples(tmp_path: Path) -> None:
    # FCN-style 2x upsampling: a bilinear-filled, grouped, bias-free Deconvolution.
    proto = tmp_path / "up.prototxt"
    proto.write_text(
        'input: "x" input_shape { dim: 1 dim: 2 dim: 3 dim: 3 }\n'
        'layer { name: "up" type: "Deconvolution" bottom: "x" top: "up" convolution_param { num_output: 2 '
        'group: 2 kernel_size: 4 stride: 2 pad: 1 bias_term: false weight_filler { type: "bilinear" } } }\n'
    )
    t = translate_files(proto)
    w = next(p for p in t.params if p.name == "up_w").value
    assert w is not None and w.shape == (2, 1, 4, 4)
    np.testing.assert_allclose(w[0, 0, 0], [0.0625, 0.1875, 0.1875, 0.0625])
    np.testing.assert_allclose(w[1, 0].sum(), 4.0)
    x = np.ones((1, 2, 3, 3), np.float32)
    with Workspace() as ws:
        ws.run_net_once(t.init)
        ws.feed("x", x)
        ws.run_net_once(t.predict)
        up = ws.fetch("up")
    assert up.shape == (1, 2, 6, 6)
    # A constant image stays constant inside (the borders see the zero padding).
    np.testing.assert_allclose(up[:, :, 1:-1, 1:-1], 1.0, rtol=1e-6)
