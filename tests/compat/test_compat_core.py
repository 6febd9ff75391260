"""Caffe2's core behaviours (after caffe2/python/core_test.py), scripted against asyncnet.compat."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from asyncnet.compat import caffe2_pb2, core, workspace
from asyncnet.errors import OperatorError, UnknownOperatorError


def next_line() -> str:
    """``file:line`` of the line after the caller's."""
    frame = inspect.currentframe()
    assert frame is not None and frame.f_back is not None
    return f"{__file__}:{frame.f_back.f_lineno + 1}"


def cuda(device_id: int) -> caffe2_pb2.DeviceOption:
    opt = caffe2_pb2.DeviceOption()
    opt.device_type = caffe2_pb2.CUDA
    opt.device_id = device_id
    return opt


# -- scopes -----------------------------------------------------------------------------


def test_blob_reference_ignores_name_scope() -> None:
    v = core.BlobReference("v")
    with core.NameScope("foo"):
        w = core.BlobReference("w")
        with core.NameScope("bar"):
            x = core.BlobReference("x")
    assert (str(v), str(w), str(x)) == ("v", "w", "x")


def test_name_scope_prefixes_strings_not_references() -> None:
    gx, gy = core.BlobReference("x"), core.BlobReference("y")
    with core.NameScope("foo"):
        op = core.CreateOperator("Relu", "x", "y")
        assert (list(op.input), list(op.output)) == (["foo/x"], ["foo/y"])
        op = core.CreateOperator("Relu", gx, gy)
        assert (list(op.input), list(op.output)) == (["x"], ["y"])


def test_name_scope_nesting_and_reset() -> None:
    def io() -> tuple[str, str]:
        op = core.CreateOperator("Relu", "x", "y")
        return op.input[0], op.output[0]

    with core.NameScope("foo"):
        assert io() == ("foo/x", "foo/y")
        with core.NameScope("bar"):
            assert io() == ("foo/bar/x", "foo/bar/y")
        assert io() == ("foo/x", "foo/y")
        with core.NameScope("bar", reset=True):
            assert io() == ("bar/x", "bar/y")
        assert io() == ("foo/x", "foo/y")
    assert io() == ("x", "y")


def test_scoped_name_helpers() -> None:
    with core.NameScope("a"):
        with core.NameScope("b"):
            assert core.ScopedName("w") == "a/b/w"
            ref = core.ScopedBlobReference("w")
    assert str(ref) == "a/b/w"
    assert ref.GetNameScope() == "a/b/" and ref.GetUnscopedName() == "w"


def test_device_scope() -> None:
    assert not core.CreateOperator("Relu", "x", "y").HasField("device_option")
    op = core.CreateOperator("Relu", "x", "y", device_option=cuda(1))
    assert op.device_option.device_type == caffe2_pb2.CUDA and op.device_option.device_id == 1
    with core.DeviceScope(cuda(1)):
        op = core.CreateOperator("Relu", "x", "y")
        assert op.device_option.device_type == caffe2_pb2.CUDA and op.device_option.device_id == 1
        override = caffe2_pb2.DeviceOption()
        override.device_type = caffe2_pb2.CPU
        op = core.CreateOperator("Relu", "x", "y", device_option=override)
        assert op.HasField("device_option") and op.device_option.device_type == caffe2_pb2.CPU
    assert not core.CreateOperator("Relu", "x", "y").HasField("device_option")


def test_name_and_device_scope_together() -> None:
    with core.DeviceScope(cuda(1)), core.NameScope("foo"):
        op = core.CreateOperator("Relu", "x", "y")
    assert op.device_option.device_id == 1
    assert (op.input[0], op.output[0]) == ("foo/x", "foo/y")


def test_device_option_helper() -> None:
    opt = core.DeviceOption(caffe2_pb2.CUDA, 2, random_seed=7)
    assert (opt.device_type, opt.device_id, opt.random_seed) == (1, 2, 7)


# -- CreateOperator ---------------------------------------------------------------------------


def test_create_operator_fields_and_arguments() -> None:
    op = core.CreateOperator(
        "Ludicrous",
        "x",
        "y",
        name="ludicrous",
        control_input="z",
        device_option=cuda(1),
        engine="WARP",
        arg1=1,
        arg2="2",
        arg3=[1, 2, 3],
        arg4=0.5,
    )
    assert (op.type, op.name, op.engine) == ("Ludicrous", "ludicrous", "WARP")
    assert list(op.control_input) == ["z"]
    assert [a.name for a in op.arg] == ["arg1", "arg2", "arg3", "arg4"]
    assert op.arg[0].i == 1 and op.arg[1].s == b"2" and list(op.arg[2].ints) == [1, 2, 3]
    assert op.arg[3].f == pytest.approx(0.5)


def test_create_operator_skips_none_argument() -> None:
    # Caffe2's CreateOperator drops None-valued keyword arguments.
    op = core.CreateOperator("Ludicrous", "x", "y", arg1=None, arg2=1)
    assert [a.name for a in op.arg] == ["arg2"]


def test_random_seed_goes_to_device_option() -> None:
    op = core.CreateOperator("UniformFill", [], "y", random_seed=3, shape=[2])
    assert op.device_option.random_seed == 3
    assert [a.name for a in op.arg] == ["shape"]


# -- naming --------------------------------------------------------------------------------------


def test_next_blob_is_predictable() -> None:
    def create_net() -> core.Net:
        net = core.Net("net")
        with core.NameScope("foo"):
            net.Add(["a", "b"], net.NextScopedBlob("ab"))
        net.Add(["c", "d"], net.NextBlob("cd"))
        return net

    a, b = create_net(), create_net()
    assert list(a.Proto().op) == list(b.Proto().op)
    assert a.Proto().op[0].output[0] == "foo/ab"
    assert a.Proto().op[1].output[0] == "cd"
    c = core.Net("net")
    assert str(c.NextBlob("b")) != str(c.NextBlob("b"))


def test_net_names_are_unique() -> None:
    a, b = core.Net("dup_name"), core.Net("dup_name")
    assert a.Proto().name == "dup_name" and b.Proto().name == "dup_name_1"


def test_auto_named_outputs() -> None:
    net = core.Net("auto_out")
    x = net.AddExternalInput("x")
    assert str(net.Relu(x)) == "auto_out/Relu"
    assert str(net.Relu(x)) == "auto_out/Relu_2"
    with core.NameScope("s"):
        assert str(net.Relu(x)) == "s/auto_out/Relu"
    parts = net.Split(x, outputs=2)
    assert [str(p) for p in parts] == ["auto_out/Split:0", "auto_out/Split:1"]
    assert net.NextName() == "auto_out_blob_0" and net.NextName() == "auto_out_blob_1"


def test_auto_names_never_clash() -> None:
    a, b = core.Net("net"), core.Net("net")
    assert a.Proto().name != b.Proto().name
    a_in, b_in = a.AddExternalInput("a"), b.AddExternalInput("b")
    singles: list[core.BlobReference] = []
    multis: list[tuple[core.BlobReference, ...]] = []

    def add_ops() -> None:
        for net, inp in ((a, a_in), (a, a_in), (b, b_in), (b, b_in)):
            singles.append(net.Sum([inp, inp]))
        for net, inp in ((a, a_in), (a, a_in), (b, b_in), (b, b_in)):
            multis.append(net.Split([inp], outputs=2))

    add_ops()
    with core.NameScope("n1"):
        add_ops()
    a.Proto()  # forces the lookup tables to be rebuilt, as in Caffe2's test
    with core.NameScope("n2"):
        add_ops()
    names = [str(s) for s in singles] + [str(o) for m in multis for o in m]
    assert len(names) == len(set(names)) == 36


def test_blob_reference_string_concatenation() -> None:
    net = core.Net("concat_names")
    ref = net.AddExternalInput("fc")
    w = ref + "_w"
    assert isinstance(w, core.BlobReference) and str(w) == "fc_w" and w.Net() is net
    assert str("pre_" + ref) == "pre_fc"
    assert ref == "fc" and hash(ref) == hash("fc")
    assert {"fc": 1}[ref] == 1


# -- external inputs / outputs, AppendNet, Clone --------------------------------------------------------


def test_inputs_read_but_not_produced_become_external() -> None:
    net = core.Net("ext")
    net.Sum(["in1", "in2"], ["sum1"])
    assert "in1" in net.external_inputs and "in2" in net.external_inputs
    net.AddExternalOutput(core.BlobReference("sum1"))
    assert list(net.Proto().external_output) == ["sum1"]
    with pytest.raises(ValueError, match="already contains an input named 'in1'"):
        net.AddExternalInput("in1")
    with pytest.raises(ValueError, match="not defined"):
        net.AddExternalOutput(core.BlobReference("nothing"))


def test_append_net_merges_external_inputs() -> None:
    a = core.Net("A")
    a.Sum(["in1", "in2"], ["sum1"])
    b = core.Net("B")
    b.Sum(["in3", "in4"], ["in1"])
    b.AppendNet(a)
    assert "in1" not in b.external_inputs
    assert [op.type for op in b.Proto().op] == ["Sum", "Sum"]

    a2 = core.Net("A")
    a2.Sum(["in1", "in2"], ["sum1"])
    b2 = core.Net("B")
    b2.Sum(["in3", "in4"], ["in1"])
    a2.AppendNet(b2)
    assert "in1" in a2.external_inputs


def test_clone_remaps_blobs_and_masks_ops() -> None:
    net = core.Net("orig")
    x = net.AddExternalInput("x")
    y = net.Relu(x, "y")
    z = net.Sigmoid(y, "z")
    net.AddExternalOutput(z)
    clone = net.Clone("copy", blob_remap={"x": "x2", y: "y2"})
    assert clone.Name() == "copy"
    assert [(list(op.input), list(op.output)) for op in clone.Proto().op] == [(["x2"], ["y2"]), (["y2"], ["z"])]
    assert list(clone.Proto().external_input) == ["x2"]
    part = net.Clone("part", op_id_mask=[1], update_external_list=True)
    assert [op.type for op in part.Proto().op] == ["Sigmoid"]
    assert list(part.Proto().external_input) == ["y"]
    assert list(part.Proto().external_output) == ["z"]
    assert len(net.Proto().op) == 2  # the original is untouched


# -- ops through the registry ------------------------------------------------------------------------------


def test_blob_reference_op_chaining_runs() -> None:
    net = core.Net("chain")
    x = net.GaussianFill([], ["X"], mean=0.0, std=1.0, shape=[2, 3], run_once=0)
    w = net.GaussianFill([], ["W"], mean=0.0, std=1.0, shape=[5, 3], run_once=0)
    b = net.ConstantFill([], ["b"], shape=[5], value=1.0, run_once=0)
    y = x.FC([w, b], ["Y"])
    assert str(y) == "Y" and y.Net() is net
    assert list(net.Proto().op[-1].input) == ["X", "W", "b"]
    workspace.RunNetOnce(net)
    xv, wv = workspace.FetchBlob("X"), workspace.FetchBlob("W")
    np.testing.assert_allclose(workspace.FetchBlob("Y"), xv @ wv.T + 1.0, rtol=1e-5)


def test_unknown_operator_suggests_names() -> None:
    net = core.Net("typo")
    with pytest.raises(AttributeError, match="did you mean 'Relu'"):
        net.Rleu("x", "y")
    with pytest.raises(UnknownOperatorError):
        core.BlobReference("x", net).Sigmod()
    assert not hasattr(net, "NoSuchOperatorAnywhere")
    with pytest.raises(AttributeError, match="no net source"):
        core.BlobReference("x").Relu()


def test_is_operator() -> None:
    assert core.IsOperator("Relu") and not core.IsOperator("NOEXIST")
    assert core.IsOperatorWithEngine("Relu", "DEFAULT")
    assert not core.IsOperatorWithEngine("Relu", "NOEXIST")


def test_const_blob() -> None:
    net = core.Net("const")
    c = net.Const(np.array([[1, 2], [3, 4]], dtype=np.int32), "c")
    f = net.Const([0.5, 1.5])
    assert net.Proto().op[0].type == "GivenTensorIntFill"
    workspace.RunNetOnce(net)
    np.testing.assert_array_equal(workspace.FetchBlob(c), [[1, 2], [3, 4]])
    np.testing.assert_allclose(workspace.FetchBlob(f), [0.5, 1.5])


# -- creation sites in errors ---------------------------------------------------------------------------------


def test_operator_site_in_name_and_runtime_error() -> None:
    net = core.Net("trace")
    a, b = net.AddExternalInput("a", "b")
    line = next_line()
    net.Mul([a, b], "c")
    workspace.FeedBlob("a", np.ones(3, np.float32))
    workspace.FeedBlob("b", np.ones(4, np.float32))  # does not broadcast: fails when run
    with pytest.raises(OperatorError) as ei:
        workspace.RunNetOnce(net)
    assert line in str(ei.value)
    workspace.CreateNet(net)
    with pytest.raises(RuntimeError) as ei2:
        workspace.RunNet(net)
    assert line in str(ei2.value)
    assert not net.Proto().op[0].debug_info  # the proto itself stays as Caffe2 built it
    net.PopulateProtoWithFileName()
    assert net.Proto().op[0].name == line


# -- gradients ---------------------------------------------------------------------------------------------------


def test_add_gradient_operators_naming() -> None:
    net = core.Net("grad")
    x, w, b = net.AddExternalInput("x", "w", "b")
    y = net.FC([x, w, b], "y")
    s = net.Sigmoid(y, "s")
    loss = net.AveragedLoss(s, "loss")
    grads = net.AddGradientOperators([loss])
    assert {str(k): str(v) for k, v in grads.items() if k in ("w", "b", "y", "s")} == {
        "w": "w_grad",
        "b": "b_grad",
        "y": "y_grad",
        "s": "s_grad",
    }
    assert grads[w] == "w_grad"  # BlobReference keys work too
    seed = net.Proto().op[3]
    assert (seed.type, list(seed.input), list(seed.output)) == ("ConstantFill", ["loss"], ["loss_autogen_grad"])
    rng = np.random.default_rng(1)
    workspace.FeedBlob("x", rng.standard_normal((4, 3)).astype(np.float32))
    workspace.FeedBlob("w", rng.standard_normal((2, 3)).astype(np.float32))
    workspace.FeedBlob("b", np.zeros(2, np.float32))
    workspace.RunNetOnce(net)
    xv, wv = workspace.FetchBlob("x"), workspace.FetchBlob("w")
    sv = 1.0 / (1.0 + np.exp(-(xv @ wv.T)))
    dy = sv * (1 - sv) / sv.size  # d mean(s) / d y
    np.testing.assert_allclose(workspace.FetchBlob("w_grad"), dy.T @ xv, rtol=1e-4, atol=1e-6)


def test_clone_partial() -> None:
    params = core.Net("params")
    p1 = params.ConstantFill([], ["p1"], shape=[1])
    workspace.RunNetOnce(params)

    n = core.Net("original")
    a1, a2 = n.AddExternalInput("a1", "a2")
    b1, b2 = n.Concat([a1, a2], ["b1", "b2"], axis=0)
    c1 = n.Sum([b1, p1], ["c1"])
    c2 = n.Sum([b2], ["c2"])
    d = n.Sum([c1, c2], ["d"])
    n.AddGradientOperators([d])  # gradient ops must not leak into partial clones
    k = n.Sum([p1], ["k"])
    e = n.Sum([d], ["e"])
    e = n.Sum([e, k], [e])
    e = n.Sum([e], [e])
    f = n.Sum(e, ["f"])

    def check(net: core.Net, num_ops: int, inputs: set[str], outputs: set[str], internals: set[str]) -> None:
        proto = net.Proto()
        assert len(proto.op) == num_ops
        assert set(proto.external_input) == inputs and set(proto.external_output) == outputs
        blobs = set(proto.external_input) | set(proto.external_output)
        for op in proto.op:
            blobs |= set(op.input) | set(op.output)
        assert blobs == inputs | outputs | internals
        for name in inputs:
            if not workspace.HasBlob(name):
                workspace.FeedBlob(name, np.ones(1, np.float32))
        workspace.CreateNet(net)  # prepares: every op type and arity is valid

    n2, (d22,) = n.ClonePartial("f1", {a1: "a11", a2: "a22"}, [d])
    check(n2, 4, {"p1", "a11", "a22"}, {"f1/d"}, {"f1/b1", "f1/b2", "f1/c1", "f1/c2", "p1"})
    assert isinstance(d22, core.BlobReference) and d22.Net() is n2 and str(d22) == "f1/d"

    n3, (d33,) = n.ClonePartial("f2", [b1, b2], [d])
    check(n3, 3, {"p1", "b1", "b2"}, {"f2/d"}, {"f2/c1", "f2/c2", "p1"})
    assert str(d33) == "f2/d"

    n4, (c44,) = n.ClonePartial("f3", [b1], [c1])
    check(n4, 1, {"p1", "b1"}, {"f3/c1"}, {"p1"})

    n5, (c51, c52) = n.ClonePartial("f4", [b1, b2], [c1, c2])
    check(n5, 2, {"p1", "b1", "b2"}, {"f4/c1", "f4/c2"}, {"p1"})
    assert (str(c51), str(c52)) == ("f4/c1", "f4/c2")

    with pytest.raises(ValueError, match="cannot partially clone"):
        n.ClonePartial("f4", [a1, a2, c2], [d])

    n6, (e66,) = n.ClonePartial("f5", [d], [e])
    check(n6, 4, {"p1", "d"}, {"f5/e"}, {"f5/k", "p1"})
    n8, (e88, f88) = n.ClonePartial("f7", [d], [e, f])
    check(n8, 5, {"p1", "d"}, {"f7/e", "f7/f"}, {"p1", "f7/k"})
    assert (str(e66), str(e88), str(f88)) == ("f5/e", "f7/e", "f7/f")
