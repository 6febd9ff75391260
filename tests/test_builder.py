"""The idiomatic NetBuilder: naming, scopes, validation with the user's line, running."""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import subprocess
import sys
import threading
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncnet import Workspace
from asyncnet.builder import Blob, NetBuilder, NetPair, device_option
from asyncnet.builder_ops import UnknownOpAttributeError
from asyncnet.errors import (
    ArgumentError,
    NetDefinitionError,
    OperatorError,
    SchemaError,
    UnknownOperatorError,
)
from asyncnet.proto import caffe2_pb2 as pb

ROOT = Path(__file__).resolve().parents[1]


def next_line() -> str:
    """``file:line`` of the line after the caller's."""
    frame = inspect.currentframe()
    assert frame is not None and frame.f_back is not None
    return f"{__file__}:{frame.f_back.f_lineno + 1}"


def run(pair: NetPair, feeds: dict[str, np.ndarray]) -> Workspace:
    ws = Workspace()
    ws.run_net_once(pair.init)
    for k, v in feeds.items():
        ws.feed(k, v)
    ws.run_net_once(pair.predict)
    return ws


# -- running ---------------------------------------------------------------------------


def test_mlp_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((8, 4)).astype(np.float32)
    b1 = rng.standard_normal(8).astype(np.float32)
    w2 = rng.standard_normal((3, 8)).astype(np.float32)
    x_val = rng.standard_normal((5, 4)).astype(np.float32)

    b = NetBuilder("mlp")
    x = b.input("x")
    h = b.ops.Relu(b.ops.FC(x, b.param("fc1_w", init=w1), b.param("fc1_b", init=b1)))
    logits = b.ops.FC(h, b.param("fc2_w", init=w2), b.param("fc2_b", shape=[3], init=0.25))
    prob = b.ops.Softmax(logits, outputs="prob")
    b.output(prob)
    pair = b.build()
    ws = run(pair, {"x": x_val})

    # Independent computation, written out by hand.
    hid = np.maximum(x_val @ w1.T + b1, 0)
    z = hid @ w2.T + 0.25
    e = np.exp(z - z.max(axis=1, keepdims=True))
    expected = e / e.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(ws.fetch("prob"), expected, rtol=1e-5, atol=1e-6)
    assert list(pair.predict.external_output) == ["prob"]
    assert list(pair.predict.external_input) == ["x", "fc1_w", "fc1_b", "fc2_w", "fc2_b"]
    assert sorted(pair.init.external_output) == ["fc1_b", "fc1_w", "fc2_b", "fc2_w"]
    assert [op.type for op in pair.init.op] == ["GivenTensorFill"] * 3 + ["ConstantFill"]


def test_param_fill_ops_and_shapes() -> None:
    b = NetBuilder("p")
    b.param("w", shape=[6, 5], init="XavierFill")
    b.param("g", shape=[2], init=("GaussianFill", {"std": 0.5}))
    b.param("c", shape=[3], init=2.0)
    b.param("i", init=np.arange(4, dtype=np.int64))
    init = b.build_init()
    assert [op.type for op in init.op] == ["XavierFill", "GaussianFill", "ConstantFill", "GivenTensorInt64Fill"]
    ws = Workspace()
    ws.run_net_once(init)
    w = ws.fetch("w")
    assert w.shape == (6, 5) and w.dtype == np.float32
    assert np.all(np.abs(w) <= np.sqrt(3.0 / 5))
    np.testing.assert_array_equal(ws.fetch("c"), np.full(3, 2.0, np.float32))
    np.testing.assert_array_equal(ws.fetch("i"), np.arange(4))


def test_const_and_inplace() -> None:
    b = NetBuilder("c")
    x = b.input("x")
    k = b.const([1.0, -2.0, 3.0], "k")
    s = b.ops.Add(x, k)
    b.ops.Relu(s, outputs=s)  # in place, allowed by Relu's schema
    pair = b.build()
    ws = run(pair, {"x": np.array([0.5, 0.5, -4.0], np.float32)})
    np.testing.assert_array_equal(ws.fetch(s), np.array([1.5, 0.0, 0.0], np.float32))
    assert pair.predict.op[0].type == "GivenTensorFill"


# -- naming and scopes -----------------------------------------------------------------------


def test_auto_names_are_deterministic_and_unique() -> None:
    def make() -> pb.NetDef:
        b = NetBuilder("n")
        x = b.input("x")
        r1 = b.ops.Relu(x)
        r2 = b.ops.Relu(r1)
        with b.name_scope("enc"):
            r3 = b.ops.Relu(r2)
            with b.name_scope("inner"):
                r4 = b.ops.Relu(r3, outputs="out")
        assert (r1, r2, r3, r4) == ("Relu_1", "Relu_2", "enc/Relu_1", "enc/inner/out")
        return b.build_predict()

    a, c = make(), make()
    assert [op.output[0] for op in a.op] == [op.output[0] for op in c.op]
    a_ops = [(op.type, list(op.input), list(op.output)) for op in a.op]
    c_ops = [(op.type, list(op.input), list(op.output)) for op in c.op]
    assert a_ops == c_ops


def test_auto_names_skip_taken_names() -> None:
    b = NetBuilder("n")
    b.input("Relu_1")
    out = b.ops.Relu("Relu_1")
    assert out == "Relu_2"
    assert isinstance(out, Blob) and out.builder is b


def test_multi_output_names() -> None:
    b = NetBuilder("n")
    x = b.input("x")
    parts = b.ops.Split(x, outputs=2, axis=0)
    assert parts == ("Split_1_0", "Split_1_1")
    ws = run(b.build(), {"x": np.arange(4, dtype=np.float32)})
    np.testing.assert_array_equal(ws.fetch(parts[1]), [2.0, 3.0])


def test_device_scope_sets_device_option() -> None:
    b = NetBuilder("d")
    x = b.input("x")
    with b.device_scope("cuda:1"):
        y = b.ops.Relu(x)
        z = b.ops.Relu(y, device=0)
    w = b.ops.Relu(z)
    net = b.build_predict()
    assert net.op[0].device_option.device_type == 1 and net.op[0].device_option.device_id == 1
    assert net.op[1].device_option.device_type == 0
    assert not net.op[2].HasField("device_option")
    # Device ops fall back to CPU kernels: the net still runs.
    ws = run(b.build(), {"x": np.array([-1.0, 2.0], np.float32)})
    np.testing.assert_array_equal(ws.fetch(w), [0.0, 2.0])


def test_scopes_are_per_builder_not_global() -> None:
    a, c = NetBuilder("a"), NetBuilder("c")
    seen: list[str] = []

    def other_thread() -> None:
        seen.append(c.ops.Relu(c.input("x")))

    with a.name_scope("outer"):
        t = threading.Thread(target=other_thread)
        t.start()
        t.join()
        seen.append(c.ops.Relu(c.input("y")))
    assert seen == ["Relu_1", "Relu_2"]


def test_device_option_parsing() -> None:
    assert device_option("cpu") == pb.DeviceOption(device_type=0, device_id=0)
    with pytest.raises(ArgumentError, match="did you mean 'cuda'"):
        device_option("cdua:0")


def test_build_returns_copies() -> None:
    b = NetBuilder("n")
    b.ops.Relu(b.input("x"))
    first = b.build_predict()
    first.op[0].type = "Changed"
    assert b.build_predict().op[0].type == "Relu"


# -- validation at build(), naming the user's line ------------------------------------------------


def test_unknown_op_raises_at_build_with_line() -> None:
    b = NetBuilder("n")
    x = b.input("x")
    line = next_line()
    b.op("Rleu", x)
    with pytest.raises(UnknownOperatorError) as ei:
        b.build()
    assert line in str(ei.value)
    assert "did you mean 'Relu'" in str(ei.value)


def test_typed_namespace_typo_is_attribute_error() -> None:
    b = NetBuilder("n")
    with pytest.raises(AttributeError, match="did you mean 'Relu'"):
        b.ops.Rleu  # noqa: B018
    with pytest.raises(UnknownOpAttributeError):
        b.ops.Softmaxx  # noqa: B018
    assert "Relu" in dir(b.ops)


def test_wrong_arity_raises_at_build_with_line() -> None:
    b = NetBuilder("n")
    x = b.input("x")
    line = next_line()
    b.op("FC", [x, x])
    with pytest.raises(SchemaError, match="takes 3 input") as ei:
        b.build()
    assert line in str(ei.value)


def test_unknown_argument_raises_at_build_with_line() -> None:
    b = NetBuilder("n")
    x = b.input("x")
    line = next_line()
    b.ops.Softmax(x, axsi=1)
    with pytest.raises(SchemaError) as ei:
        b.build()
    assert line in str(ei.value)
    assert "'axsi'" in str(ei.value) and "did you mean 'axis'" in str(ei.value)


def test_reading_unknown_blob_raises_at_build_with_line() -> None:
    b = NetBuilder("n")
    b.input("data")
    line = next_line()
    b.ops.Relu("dat")
    with pytest.raises(NetDefinitionError) as ei:
        b.build()
    msg = str(ei.value)
    assert line in msg and "'dat'" in msg and "did you mean 'data'" in msg


def test_blob_produced_later_is_not_available_earlier() -> None:
    b = NetBuilder("n")
    x = b.input("x")
    b.ops.Relu("later")
    b.ops.Relu(x, outputs="later")
    with pytest.raises(NetDefinitionError, match="'later'"):
        b.build()


def test_inplace_violation_raises_at_build() -> None:
    b = NetBuilder("n")
    x = b.input("x")
    w = b.param("w", shape=[2, 2])
    bias = b.param("b", shape=[2], init=0.0)
    line = next_line()
    b.ops.FC(x, w, bias, outputs=x)
    with pytest.raises(SchemaError, match="in place") as ei:
        b.build()
    assert line in str(ei.value)


def test_undefined_external_output_raises() -> None:
    b = NetBuilder("n")
    b.ops.Relu(b.input("x"))
    b.output("nope")
    with pytest.raises(NetDefinitionError, match="'nope'"):
        b.build()


def test_bad_argument_value_names_line_immediately() -> None:
    b = NetBuilder("n")
    x = b.input("x")
    with pytest.raises(ArgumentError) as ei:
        line = next_line()
        b.ops.Softmax(x, axis=object())
    assert line in str(ei.value)


def test_runtime_error_points_at_user_line() -> None:
    b = NetBuilder("n")
    x = b.input("x")
    w = b.input("w")
    bias = b.input("b")
    line = next_line()
    b.ops.FC(x, w, bias)
    ws = Workspace()
    ws.feed("x", np.ones((2, 3), np.float32))
    ws.feed("w", np.ones((4, 5), np.float32))  # K mismatch: fails only at run time
    ws.feed("b", np.ones(4, np.float32))
    with pytest.raises(OperatorError) as ei:
        ws.run_net_once(b.build_predict())
    assert line in str(ei.value)


# -- generated stub ------------------------------------------------------------------------------------


def _load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_builder_stubs", ROOT / "tools" / "gen_builder_stubs.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_builder_stubs", mod)
    spec.loader.exec_module(mod)
    return mod


def test_stub_is_in_sync_with_registry() -> None:
    # A fresh process: other tests may register extra ops in this one's registry.
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_builder_stubs.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr + " (regenerate with: python tools/gen_builder_stubs.py)"


def test_stub_describes_inputs_and_arguments() -> None:
    text = _load_tool().render()
    fc = text[text.index("    def FC(") :]
    fc = fc[: fc.index("        ...")]
    assert "X: BlobLike," in fc and "W: BlobLike," in fc and "axis: int = ..." in fc and "-> Blob:" in fc
    split = text[text.index("    def Split(") :]
    assert "-> tuple[Blob, ...]:" in split[: split.index("        ...")]
    compile(text, "builder_ops.pyi", "exec")  # valid Python syntax


def test_init_op_outputs_become_predict_inputs() -> None:
    b = NetBuilder("io", net_type="simple")
    it = b.init_op("ConstantFill", [], "iter", shape=[1], value=0, dtype=np.int64)
    x = b.input("x")
    b.ops.Add(x, b.const(np.float32(1.0)), outputs="y")
    init, predict = b.build()
    assert predict.type == "simple"
    assert list(predict.external_input) == ["iter", "x"]
    assert init.op[0].output[0] == it == "iter"
    assert predict.op[0].output[0] == "Const_1"
    ws = run(NetPair(init, predict), {"x": np.array([1.0, 2.0], np.float32)})
    assert ws.fetch("iter").dtype == np.int64
    np.testing.assert_array_equal(ws.fetch("y"), [2.0, 3.0])


@settings(max_examples=25)
@given(st.lists(st.tuples(st.sampled_from(["Relu", "Sigmoid", "Tanh"]), st.integers(0, 2)), min_size=1, max_size=12))
def test_random_chains_build_with_unique_deterministic_names(steps: list[tuple[str, int]]) -> None:
    def make() -> pb.NetDef:
        b = NetBuilder("chain")
        blob = b.input("x")
        for op_type, depth in steps:
            with contextlib.ExitStack() as stack:
                for level in range(depth):
                    stack.enter_context(b.name_scope(f"s{level}"))
                blob = b.op(op_type, blob)
        b.output(blob)
        return b.build_predict()

    first, second = make(), make()
    outs = [op.output[0] for op in first.op]
    assert len(outs) == len(set(outs)) == len(steps)
    assert first.SerializeToString() != b"" and [op.output[0] for op in second.op] == outs
    assert all(op.debug_info.startswith(__file__ + ":") for op in first.op)
