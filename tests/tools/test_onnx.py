"""ONNX import/export: real ONNX models, onnx's own node tests, model-zoo nets vs onnxruntime, the CLIs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from asyncnet.cli import main  # noqa: E402
from asyncnet.errors import UnsupportedError  # noqa: E402
from asyncnet.onnx import export_onnx, import_onnx  # noqa: E402
from asyncnet.proto import caffe2_pb2 as pb  # noqa: E402
from asyncnet.randinit import random_init  # noqa: E402
from asyncnet.serde import read_net, write_message  # noqa: E402
from asyncnet.shapes import read_value_info  # noqa: E402
from asyncnet.workspace import Workspace  # noqa: E402
from tests.conftest import REALNETS, realnets_path  # noqa: E402
from tests.tools.onnx_node_cases import mapped_cases, run_case  # noqa: E402

LIGHT = [
    "bvlc_alexnet",
    "densenet121",
    "inception_v1",
    "inception_v2",
    "resnet50",
    "shufflenet",
    "squeezenet",
    "vgg19",
    "zfnet512",
]


def _session(model: object) -> object:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", LIGHT)
def test_import_reproduces_light_model_outputs(name: str) -> None:
    path = realnets_path("onnx_light_models", f"light_{name}.onnx")
    model = onnx.load(str(path))
    init, predict = import_onnx(model)
    inits = {t.name for t in model.graph.initializer}
    data = next(i for i in model.graph.input if i.name not in inits)
    shape = [d.dim_value for d in data.type.tensor_type.shape.dim]
    n = int(np.prod(shape))
    # The input onnx's backend test runner uses for these models.
    x = (np.arange(n, dtype=np.float32).reshape(shape) / n).astype(np.float32)
    expect = onnx.numpy_helper.to_array(onnx.load_tensor(str(path).replace(".onnx", "_output_0.pb")))
    ws = Workspace()
    ws.run_net_once(init)
    ws.feed(data.name, x)
    ws.run_net_once(predict)
    got = ws.fetch(model.graph.output[0].name)
    np.testing.assert_allclose(got, expect, rtol=1e-3, atol=1e-5)


def test_onnx_backend_node_tests() -> None:
    """Every node test whose ops we map either reproduces onnx's outputs or is refused clearly."""
    cases = mapped_cases()
    outcomes = {c.name: run_case(c) for c in cases}
    failed = {k: v[1] for k, v in outcomes.items() if v[0] == "failed"}
    assert not failed, failed
    refused = [v[1] for v in outcomes.values() if v[0] == "refused"]
    assert all("ONNX node '" in r for r in refused), "a refusal must name the node"
    passed = sum(1 for v in outcomes.values() if v[0] == "passed")
    assert passed >= 450, f"only {passed} node tests passed"


ZOO = {
    "bvlc_alexnet": "predict_net.pbtxt",
    "squeezenet": "predict_net.pb",
    "resnet50": "predict_net.pbtxt",
    "inception_v1": "predict_net.pbtxt",
    "inception_v2": "predict_net.pbtxt",
    "densenet121": "predict_net.pbtxt",
    "zfnet512": "predict_net.pbtxt",
    "vgg19": "predict_net.pbtxt",
}


@pytest.mark.parametrize("name", sorted(ZOO))
def test_export_matches_onnxruntime_on_zoo_nets(name: str) -> None:
    predict = read_net(realnets_path("caffe2_model_zoo", name, ZOO[name]))
    infos = read_value_info(realnets_path("caffe2_model_zoo", name, "value_info.json"))
    values = random_init(predict, {}, infos, seed=1)
    ws = Workspace()
    for k, v in values.items():
        ws.feed(k, v)
    ws.run_net_once(predict)
    params = {k: v for k, v in values.items() if k not in infos}
    model = export_onnx(predict, params=params, input_infos=infos)
    onnx.checker.check_model(model)
    results = _session(model).run(None, {k: values[k] for k in infos})  # type: ignore[attr-defined]
    assert len(results) == len(predict.external_output)
    for name_out, r in zip(predict.external_output, results):
        np.testing.assert_allclose(ws.fetch(name_out), r, rtol=1e-4, atol=1e-5)


def test_export_in_place_ops_and_legacy_broadcast() -> None:
    net = pb.NetDef(name="t", external_input=["x", "s"], external_output=["x"])
    net.op.add(type="Relu", input=["x"], output=["x"])
    mul = net.op.add(type="Mul", input=["x", "s"], output=["x"])
    from asyncnet.serde import make_argument

    mul.arg.extend([make_argument("broadcast", 1), make_argument("axis", 1)])
    net.op.add(type="Softmax", input=["x"], output=["x"])
    from asyncnet.schema import TensorInfo

    x = np.random.default_rng(0).normal(size=(2, 3, 4)).astype(np.float32)
    s = np.array([1.0, 2.0, -1.0], np.float32)
    model = export_onnx(net, input_infos={"x": TensorInfo((2, 3, 4), np.dtype(np.float32))}, params={"s": s})
    (got,) = _session(model).run(None, {"x": x})  # type: ignore[attr-defined]
    ws = Workspace()
    ws.feed("x", x)
    ws.feed("s", s)
    ws.run_net_once(net)
    np.testing.assert_allclose(got, ws.fetch("x"), rtol=1e-6, atol=1e-7)


def test_unmapped_ops_are_named() -> None:
    net = pb.NetDef(name="d", external_input=["x"])
    net.op.add(type="Relu", input=["x"], output=["y"])
    net.op.add(type="SumElements", input=["y"], output=["z"], name="total")
    with pytest.raises(UnsupportedError, match=r"op #1 SumElements 'total'.*no ONNX mapping"):
        export_onnx(net)
    g = onnx.helper.make_graph(
        [onnx.helper.make_node("Einsum", ["a", "b"], ["c"], name="ein", equation="ij,jk->ik")],
        "g",
        [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [2, 2]) for n in "ab"],
        [onnx.helper.make_tensor_value_info("c", onnx.TensorProto.FLOAT, [2, 2])],
    )
    with pytest.raises(UnsupportedError, match="'ein' has op type 'Einsum' with no Caffe2 mapping"):
        import_onnx(onnx.helper.make_model(g))


def test_cli_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = Path(__file__).resolve().parents[2] / "nets"
    model = tmp_path / "mlp.onnx"
    assert (
        main(
            [
                "to-onnx",
                str(root / "mlp_predict.pbtxt"),
                "--init",
                str(root / "mlp_init.pbtxt"),
                "-o",
                str(model),
                "--input-shape",
                "data=2,4",
            ]
        )
        == 0
    )
    assert main(["from-onnx", str(model), "-o", str(tmp_path / "p.pbtxt"), "--init", str(tmp_path / "i.pb")]) == 0
    assert (
        main(
            [
                "run",
                str(tmp_path / "p.pbtxt"),
                "--init",
                str(tmp_path / "i.pb"),
                "--inputs",
                str(root / "mlp_input.npz"),
                "--outputs",
                str(tmp_path / "o.npz"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "run",
                str(root / "mlp_predict.pbtxt"),
                "--init",
                str(root / "mlp_init.pbtxt"),
                "--inputs",
                str(root / "mlp_input.npz"),
                "--outputs",
                str(tmp_path / "ref.npz"),
            ]
        )
        == 0
    )
    np.testing.assert_allclose(np.load(tmp_path / "o.npz")["prob"], np.load(tmp_path / "ref.npz")["prob"], rtol=1e-6)
    capsys.readouterr()


def test_cli_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "from-onnx",
                str(tmp_path / "missing.onnx"),
                "-o",
                str(tmp_path / "p.pb"),
                "--init",
                str(tmp_path / "i.pb"),
            ]
        )
        == 1
    )
    assert "missing.onnx: no such file" in capsys.readouterr().err
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x01garbage\xff\xff")
    assert main(["from-onnx", str(junk), "-o", str(tmp_path / "p.pb"), "--init", str(tmp_path / "i.pb")]) == 1
    assert "junk.onnx" in capsys.readouterr().err
    net = pb.NetDef(name="d", external_input=["x"])
    net.op.add(type="SumElements", input=["x"], output=["z"])
    write_message(net, tmp_path / "d.pbtxt")
    assert main(["to-onnx", str(tmp_path / "d.pbtxt"), "-o", str(tmp_path / "d.onnx")]) == 1
    assert "SumElements" in capsys.readouterr().err
    assert main(["to-onnx", str(tmp_path / "d.pbtxt"), "-o", str(tmp_path / "d.onnx"), "--opset", "5"]) == 1
    assert "opset 5" in capsys.readouterr().err


def test_corpus_has_light_models() -> None:
    if not REALNETS.exists():
        pytest.skip("real-net corpus absent")
    assert len(list((REALNETS / "onnx_light_models").glob("*.onnx"))) == len(LIGHT)


@pytest.mark.timeout(300)
def test_mutated_models_raise_only_library_errors() -> None:
    """Structured mutations of onnx's node-test models: attributes, inputs, op types, shapes."""
    import random

    from asyncnet.errors import AsyncNetError
    from asyncnet.onnx.importer import TRANSLATORS
    from tests.tools.onnx_node_cases import _array

    rng = random.Random(0)
    cases = [c for c in mapped_cases() if len(c.model.graph.node) == 1 and c.data_sets]
    op_types = sorted(TRANSLATORS)
    outcomes = {"ok": 0, "refused": 0}
    for i in range(250):
        case = rng.choice(cases)
        model = onnx.ModelProto()
        model.CopyFrom(case.model)
        node = model.graph.node[0]
        kind = rng.randrange(5)
        if kind == 0 and node.attribute:
            attr = rng.choice(list(node.attribute))
            if attr.ints:
                attr.ints[rng.randrange(len(attr.ints))] = rng.choice([-(2**40), -3, -1, 0, 7, 2**40])
            elif attr.HasField("i"):
                attr.i = rng.choice([-(2**40), -5, 0, 3, 2**40])
            elif attr.HasField("f"):
                attr.f = rng.choice([float("nan"), float("inf"), -1.0, 0.0])
        elif kind == 1 and len(node.input) > 1:
            del node.input[rng.randrange(len(node.input))]
        elif kind == 2:
            node.op_type = rng.choice(op_types)
        elif kind == 3:
            del node.output[:]
        else:
            for vi in model.graph.input:
                for d in vi.type.tensor_type.shape.dim:
                    d.dim_value = rng.choice([0, 1, 3, 2**31])
        try:
            init, predict = import_onnx(model)
            ws = Workspace()
            ws.run_net_once(init)
            inputs, _ = case.data_sets[0]
            names = [n.name for n in model.graph.input if n.name not in {t.name for t in model.graph.initializer}]
            for name, value in zip(names, inputs):
                ws.feed(name, _array(value))
            ws.run_net_once(predict)
            outcomes["ok"] += 1
        except AsyncNetError:
            outcomes["refused"] += 1
        except Exception as e:  # noqa: BLE001 - the point of the test
            pytest.fail(f"mutation {i} of {case.name} ({kind}) escaped as {type(e).__name__}: {e}")
    assert outcomes["ok"] > 20 and outcomes["refused"] > 20, outcomes
