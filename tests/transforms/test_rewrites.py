"""Inference rewrites on generated nets (hypothesis) and on the cases they must leave alone."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncnet.errors import ArgumentError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.transforms import optimize_for_inference
from tests.ops.run_util import make_op
from tests.transforms.equiv import check_rewrite

TAILS = ("SpatialBN", "AffineChannel", "Mul", "MulLegacy", "Add", "Relu", "Dropout", "Copy", "Alias")


class _Chain:
    """Builds conv/fc + tail chains with parameters."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.ops: list[pb.OperatorDef] = []
        self.params: dict[str, np.ndarray] = {}
        self.n = 0

    def param(self, base: str, value: np.ndarray) -> str:
        self.n += 1
        name = f"{base}{self.n}"
        self.params[name] = value.astype(np.float32)
        return name

    def tail(self, kind: str, x: str, m: int, order: str, rank: int, inplace: bool) -> str:
        self.n += 1
        y = x if inplace else f"t{self.n}"
        r = self.rng
        if kind == "SpatialBN":
            names = [
                self.param("s", r.standard_normal(m)),
                self.param("b", r.standard_normal(m)),
                self.param("mu", r.standard_normal(m)),
                self.param("var", r.random(m) + 0.1),
            ]
            self.ops.append(make_op("SpatialBN", [x, *names], [y], is_test=1, epsilon=1e-3, order=order))
        elif kind == "AffineChannel":
            names = [self.param("as", r.standard_normal(m)), self.param("ab", r.standard_normal(m))]
            self.ops.append(make_op("AffineChannel", [x, *names], [y], order=order))
        elif kind in ("Mul", "Add"):
            shape = [m] + [1] * (rank - 2) if order == "NCHW" else [m]
            c = self.param("c", r.standard_normal(shape))
            self.ops.append(make_op(kind, [x, c] if r.random() < 0.5 else [c, x], [y]))
        elif kind == "MulLegacy":
            c = self.param("c", r.standard_normal(m))
            axis = 1 if order == "NCHW" else -1
            self.ops.append(make_op("Mul", [x, c], [y], broadcast=1, axis=axis))
        elif kind == "Dropout":
            self.ops.append(make_op("Dropout", [x], [y], is_test=1, ratio=0.3))
        else:
            self.ops.append(make_op(kind, [x], [y]))
        return y


@st.composite
def conv_chains(draw: Any) -> tuple[pb.NetDef, dict[str, np.ndarray], dict[str, np.ndarray]]:
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    order = draw(st.sampled_from(["NCHW", "NHWC"]))
    group = draw(st.sampled_from([1, 2, 3]))
    depthwise = draw(st.booleans())
    cin = 3 * group
    m = cin if depthwise else group * draw(st.integers(1, 3))
    g = cin if depthwise else group
    k = draw(st.sampled_from([1, 3]))
    hw = draw(st.integers(k, 6))
    with_bias = draw(st.booleans())
    tails = draw(st.lists(st.sampled_from(TAILS), min_size=1, max_size=4))
    inplace = draw(st.lists(st.booleans(), min_size=len(tails), max_size=len(tails)))
    ch = _Chain(rng)
    wshape = (m, cin // g, k, k) if order == "NCHW" else (m, k, k, cin // g)
    ins = ["data", ch.param("w", rng.standard_normal(wshape))]
    if with_bias:
        ins.append(ch.param("bias", rng.standard_normal(m)))
    ch.ops.append(make_op("Conv", ins, ["conv"], kernel=k, pad=k // 2, group=g, order=order))
    x = "conv"
    for kind, ip in zip(tails, inplace):
        x = ch.tail(kind, x, m, order, 4, ip)
    ch.ops.append(make_op("Relu", [x], ["out"]))
    net = pb.NetDef(name="chain", op=ch.ops, external_input=["data", *ch.params], external_output=["out"])
    xshape = (2, cin, hw, hw) if order == "NCHW" else (2, hw, hw, cin)
    feeds = {"data": rng.standard_normal(xshape).astype(np.float32)}
    return net, ch.params, feeds


@given(conv_chains())
def test_generated_conv_chains_keep_their_outputs(case: tuple[pb.NetDef, Any, Any]) -> None:
    net, params, feeds = case
    res = check_rewrite(net, params, feeds)
    assert len(res.predict_net.op) <= len(net.op)
    first_tail = net.op[1].type
    if first_tail in ("SpatialBN", "AffineChannel"):
        assert any(r.rewrite.startswith("fold_") for r in res.report), res.report
        assert res.predict_net.op[0].type in ("Conv", "ConvRelu")


@given(st.integers(0, 2**16), st.sampled_from(TAILS[:5]), st.booleans())
def test_generated_fc_chains_keep_their_outputs(seed: int, tail: str, relu: bool) -> None:
    rng = np.random.default_rng(seed)
    ch = _Chain(rng)
    w, b = ch.param("w", rng.standard_normal((6, 5))), ch.param("b", rng.standard_normal(6))
    ch.ops.append(make_op("FC", ["x", w, b], ["fc"]))
    y = ch.tail(tail, "fc", 6, "NCHW", 2, False)
    if relu:
        ch.ops.append(make_op("Relu", [y], [y]))
    net = pb.NetDef(name="fc", op=ch.ops, external_input=["x", *ch.params], external_output=[y])
    res = check_rewrite(net, ch.params, {"x": rng.standard_normal((3, 5)).astype(np.float32)})
    expect = "FCRelu" if relu else "FC"
    assert [op.type for op in res.predict_net.op] == [expect], res.report


def _bn_params(rng: np.random.Generator, m: int, prefix: str = "") -> dict[str, np.ndarray]:
    return {
        f"{prefix}s": rng.standard_normal(m).astype(np.float32),
        f"{prefix}b": rng.standard_normal(m).astype(np.float32),
        f"{prefix}mu": rng.standard_normal(m).astype(np.float32),
        f"{prefix}v": (rng.random(m) + 0.5).astype(np.float32),
    }


def _conv_bn_net(extra: list[pb.OperatorDef], outputs: list[str], bn_out: str = "y") -> pb.NetDef:
    ops = [
        *extra,
        make_op("Conv", ["x", "w"], ["c"], kernel=3, pad=1),
        make_op("SpatialBN", ["c", "s", "b", "mu", "v"], [bn_out], is_test=1),
    ]
    return pb.NetDef(name="n", op=ops, external_input=["x"], external_output=outputs)


@pytest.fixture
def conv_bn() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32), **_bn_params(rng, 4)}
    return params, {"x": rng.standard_normal((1, 3, 5, 5)).astype(np.float32)}


def test_bn_folds_and_creates_a_bias(conv_bn: Any) -> None:
    params, feeds = conv_bn
    res = check_rewrite(_conv_bn_net([], ["y"]), params, feeds)
    assert [op.type for op in res.predict_net.op] == ["Conv"]
    conv = res.predict_net.op[0]
    assert len(conv.input) == 3 and conv.input[1] != "w" and conv.output[0] == "y"
    assert set(res.params) == {conv.input[1], conv.input[2]}
    assert res.report[0].rewrite == "fold_bn_into_conv"
    assert "SpatialBN" in res.report[0].ops[1]


def test_bn_whose_scale_the_net_writes_is_not_folded(conv_bn: Any) -> None:
    params, feeds = conv_bn
    params = {**params, "s0": params.pop("s")}
    net = _conv_bn_net([make_op("Scale", ["s0"], ["s"], scale=2.0)], ["y"])
    res = check_rewrite(net, params, feeds)
    assert [op.type for op in res.predict_net.op] == ["Scale", "Conv", "SpatialBN"]
    assert not res.report


def test_bn_in_training_mode_is_not_folded(conv_bn: Any) -> None:
    params, feeds = conv_bn
    net = _conv_bn_net([], ["y"])
    net.op[1].CopyFrom(
        make_op("SpatialBN", ["c", "s", "b", "mu", "v"], ["y", "mu", "v", "sm", "siv"], is_test=0, momentum=0.9)
    )
    res = optimize_for_inference(net, params=params, data_inputs=["x"])
    assert [op.type for op in res.predict_net.op] == ["Conv", "SpatialBN"]


def test_conv_output_that_is_an_external_output_is_kept(conv_bn: Any) -> None:
    params, feeds = conv_bn
    res = check_rewrite(_conv_bn_net([], ["c", "y"]), params, feeds)
    assert [op.type for op in res.predict_net.op] == ["Conv", "SpatialBN"]


def test_shared_weights_are_not_mutated_and_still_serve_the_other_conv(conv_bn: Any) -> None:
    params, feeds = conv_bn
    net = _conv_bn_net([], ["y", "z"])
    net.op.append(make_op("Conv", ["x", "w"], ["z"], kernel=3, pad=1))
    res = check_rewrite(net, params, feeds)  # also checks that no parameter changed
    assert res.predict_net.op[1].input[1] == "w" and res.predict_net.op[0].input[1] != "w"


def test_relu_is_not_fused_into_a_conv_output_with_two_readers() -> None:
    rng = np.random.default_rng(1)
    params = {"w": rng.standard_normal((2, 3, 1, 1)).astype(np.float32)}
    ops = [
        make_op("Conv", ["x", "w"], ["c"], kernel=1),
        make_op("Relu", ["c"], ["r"]),
        make_op("Sigmoid", ["c"], ["s"]),
    ]
    net = pb.NetDef(name="two", op=ops, external_input=["x"], external_output=["r", "s"])
    res = check_rewrite(net, params, {"x": rng.standard_normal((1, 3, 4, 4)).astype(np.float32)})
    assert [op.type for op in res.predict_net.op] == ["Conv", "Relu", "Sigmoid"]


def test_in_place_relu_chain_after_residual_sum_is_fused() -> None:
    rng = np.random.default_rng(2)
    ops = [make_op("Sum", ["a", "b"], ["a"]), make_op("Relu", ["a"], ["a"]), make_op("Copy", ["a"], ["out"])]
    net = pb.NetDef(name="res", op=ops, external_input=["a", "b"], external_output=["out"])
    feeds = {k: rng.standard_normal((2, 3)).astype(np.float32) for k in "ab"}
    res = check_rewrite(net, {}, feeds)
    # Copy writes the external output 'out' from the data input 'a': it must stay.
    assert [op.type for op in res.predict_net.op] == ["SumRelu", "Copy"]


def test_identity_before_an_external_output_renames_the_producer() -> None:
    rng = np.random.default_rng(3)
    params = {"w": rng.standard_normal((2, 3, 1, 1)).astype(np.float32)}
    ops = [
        make_op("Conv", ["x", "w"], ["c"], kernel=1),
        make_op("Dropout", ["c"], ["d"], is_test=1),
        make_op("Alias", ["d"], ["out"]),
    ]
    net = pb.NetDef(name="id", op=ops, external_input=["x"], external_output=["out"])
    res = check_rewrite(net, params, {"x": rng.standard_normal((1, 3, 2, 2)).astype(np.float32)})
    assert [(op.type, list(op.output)) for op in res.predict_net.op] == [("Conv", ["out"])]
    assert {r.rewrite for r in res.report} == {"drop_dropout", "drop_identity"}


def test_dropout_whose_mask_is_read_stays() -> None:
    ops = [make_op("Dropout", ["x"], ["y", "mask"], is_test=1), make_op("Cast", ["mask"], ["m"], to=1)]
    net = pb.NetDef(name="mask", op=ops, external_input=["x"], external_output=["y", "m"])
    res = check_rewrite(net, {}, {"x": np.ones((2, 2), np.float32)})
    assert [op.type for op in res.predict_net.op] == ["Dropout", "Cast"]


def test_copy_whose_output_is_written_again_stays() -> None:
    ops = [make_op("Copy", ["x"], ["y"]), make_op("Relu", ["y"], ["y"]), make_op("Sum", ["x", "y"], ["z"])]
    net = pb.NetDef(name="cw", op=ops, external_input=["x"], external_output=["z"])
    res = check_rewrite(net, {}, {"x": np.array([-1.0, 2.0], np.float32)})
    assert [op.type for op in res.predict_net.op] == ["Copy", "Relu", "Sum"]


def test_rewrites_can_be_chosen_and_unknown_names_are_refused(conv_bn: Any) -> None:
    params, feeds = conv_bn
    net = _conv_bn_net([], ["y"])
    net.op.append(make_op("Relu", ["y"], ["y"]))
    res = check_rewrite(net, params, feeds, rewrites=["fuse_relu"])
    assert [op.type for op in res.predict_net.op] == ["Conv", "SpatialBN", "Relu"]
    with pytest.raises(ArgumentError, match="unknown rewrite.*available: drop_identity"):
        optimize_for_inference(net, params=params, rewrites=["fold_everything"])


def test_init_net_is_rewritten_with_the_folded_parameters(conv_bn: Any) -> None:
    from asyncnet.workspace import Workspace
    from tests.transforms.equiv import assert_close, run_net

    params, feeds = conv_bn
    init = pb.NetDef(name="init")
    for k, v in params.items():
        init.op.append(make_op("GivenTensorFill", [], [k], shape=list(v.shape), values=v))
    net = _conv_bn_net([], ["y"])
    res = optimize_for_inference(net, init, data_inputs=["x"])
    assert res.init_net is not None
    made = [o for op in res.init_net.op for o in op.output]
    assert set(made) == set(res.params), "parameters only the folded ops read are dropped from the init net"
    with Workspace() as ws:
        ws.run_net_once(res.init_net)
        ws.feed("x", feeds["x"])
        ws.run_net_once(res.predict_net)
        got = ws.fetch("y")
    assert_close(got, run_net(net, {**params, **feeds}, ["y"])["y"], "y")
    assert "rewrites: 2 -> 1 ops (fold_bn_into_conv x1)" in res.summary_lines()[0]


def test_blobs_used_inside_nested_nets_are_left_alone(conv_bn: Any) -> None:
    from asyncnet.workspace import Workspace

    params, feeds = conv_bn
    then_net = pb.NetDef(name="then", op=[make_op("Copy", ["c"], ["branch"])])
    net = _conv_bn_net([], ["y"])
    net.op.append(make_op("If", ["cond"], [], then_net=then_net))
    cond = {"cond": np.array(True)}
    res = check_rewrite(net, params, {**feeds, **cond})
    assert [op.type for op in res.predict_net.op] == ["Conv", "SpatialBN", "If"], "c is read by the branch"
    with Workspace() as ws:
        for k, v in {**params, **feeds, **cond}.items():
            ws.feed(k, v)
        ws.run_net_once(res.predict_net)
        assert ws.has("branch")
