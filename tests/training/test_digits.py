"""The digits training example: the loss falls, saved parameters reload to identical predictions, the CLI works."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")

from asyncnet.cli import main  # noqa: E402
from asyncnet.errors import ArgumentError  # noqa: E402
from asyncnet.serde import read_net  # noqa: E402
from asyncnet.training import (  # noqa: E402
    DigitsConfig,
    build_nets,
    evaluate_saved,
    load_digits_split,
    predict,
    save_model,
    train_digits,
)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("model,steps", [("mlp", 200), ("lenet", 120)])
def test_short_training_run_learns_and_reloads(model: str, steps: int, tmp_path: Path) -> None:
    cfg = DigitsConfig(model=model, max_steps=steps, progress=False, executor="async_scheduling")
    result, params_net, predict_net = train_digits(cfg)
    assert result.steps == steps
    first, last = np.mean(result.losses[:10]), np.mean(result.losses[-10:])
    assert first > 2.0 and last < 0.35 * first, (first, last)
    assert result.test_accuracy > 0.85
    for binary in (False, True):
        init_path, predict_path = save_model(tmp_path / str(binary), params_net, predict_net, binary=binary)
        assert init_path.suffix == (".pb" if binary else ".pbtxt")
        reloaded = read_net(init_path)
        assert {op.type for op in reloaded.op} == {"GivenTensorFill"}
        acc, pred = evaluate_saved(init_path, predict_path, seed=cfg.seed)
        np.testing.assert_array_equal(pred, result.test_predictions)
        assert acc == result.test_accuracy


def test_train_net_structure() -> None:
    init, train, predict_net, params = build_nets(DigitsConfig(model="lenet"))
    types = [op.type for op in train.op]
    assert types[:3] == ["Conv", "Relu", "MaxPool"]
    for t in ("SoftmaxWithLossGradient", "ConvGradient", "MaxPoolGradient", "FCGradient", "MomentumSGDUpdate"):
        assert t in types
    assert params == ["conv1_w", "conv1_b", "conv2_w", "conv2_b", "fc1_w", "fc1_b", "fc2_w", "fc2_b"]
    assert predict_net.op[-1].type == "Softmax" and "label" not in predict_net.external_input
    produced = {o for op in init.op for o in op.output}
    assert set(params) <= produced and {f"{p}_momentum" for p in params} <= produced
    with pytest.raises(ArgumentError, match="unknown digits model"):
        build_nets(DigitsConfig(model="resnet"))


def test_split_and_predict_shapes() -> None:
    x_tr, y_tr, x_te, y_te = load_digits_split(0)
    assert x_tr.shape[1:] == (1, 8, 8) and x_tr.dtype == np.float32 and 0.0 <= x_tr.min() and x_tr.max() <= 1.0
    assert len(x_tr) + len(x_te) == 1797 and y_tr.dtype == np.int32
    init, _, predict_net, _ = build_nets(DigitsConfig(model="mlp"))
    probs = predict(init, predict_net, x_te[:5])
    assert probs.shape == (5, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.timeout(240)
def test_cli_train_digits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(
        [
            "train-digits",
            "--model",
            "mlp",
            "--max-steps",
            "60",
            "--no-progress",
            "--executor",
            "simple",
            "--out",
            str(tmp_path),
        ]
    )
    assert status == 0
    out = capsys.readouterr().out
    assert "60 steps" in out and "reloaded test accuracy" in out
    assert (tmp_path / "init_net.pbtxt").exists() and (tmp_path / "predict_net.pbtxt").exists()
