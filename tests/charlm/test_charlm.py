"""The character LSTM example: it learns, saves, reloads bit-exactly and samples; the CLI drives it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from asyncnet.charlm import CharLMConfig, bundled_text, load_charlm, train_charlm
from asyncnet.cli import main
from asyncnet.errors import ArgumentError, CheckpointError


def test_bundled_text_is_small_and_public_domain_sonnets() -> None:
    text = bundled_text()
    assert 4_000 < len(text.encode("utf-8")) < 50_000
    assert "Shall I compare thee to a summer's day?" in text


@pytest.mark.timeout(120)
def test_training_lowers_the_loss_and_the_model_round_trips(tmp_path: Path) -> None:
    model, result = train_charlm(CharLMConfig(steps=80, hidden=32, batch=8, seq_len=16, lr=0.01))
    assert result.steps_done == 80
    # Uniform guessing over the vocabulary costs log(V) nats per character.
    assert result.losses[0] == pytest.approx(np.log(len(model.vocab)), abs=0.1)
    assert result.mean_loss(10) < result.losses[0] - 0.8
    model.save(tmp_path)
    again = load_charlm(tmp_path)
    assert again.vocab == model.vocab
    for k, v in model.params.items():
        assert np.array_equal(again.params[k], v)
    text = model.sample(40, prime="Sha", seed=3)
    assert text.startswith("Sha") and len(text) == 43
    assert set(text) <= set(model.vocab)
    assert again.sample(40, prime="Sha", seed=3) == text


def test_threaded_and_sequential_training_agree_bitwise() -> None:
    cfg = {"steps": 5, "hidden": 16, "batch": 4, "seq_len": 8}
    a, ra = train_charlm(CharLMConfig(**cfg, threaded=True))  # type: ignore[arg-type]
    b, rb = train_charlm(CharLMConfig(**cfg, threaded=False))  # type: ignore[arg-type]
    assert ra.losses == rb.losses
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)


def test_bad_inputs_are_reported(tmp_path: Path) -> None:
    model, _ = train_charlm(CharLMConfig(steps=1, hidden=8, batch=2, seq_len=4))
    with pytest.raises(ArgumentError, match="unknown"):
        model.sample(5, prime="\u00e9")
    with pytest.raises(ArgumentError, match="too short"):
        train_charlm(CharLMConfig(steps=1, batch=4, seq_len=10), text="tiny text")
    with pytest.raises(CheckpointError, match="charlm.json"):
        load_charlm(tmp_path)


def test_cli_trains_saves_reloads_and_samples(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "t.txt"
    text.write_text("the cat sat on the mat. " * 40, encoding="utf-8")
    out = tmp_path / "model"
    argv = ["train-charlm", "--text", str(text), "--steps", "20", "--hidden", "16", "--batch", "4"]
    assert main([*argv, "--seq-len", "8", "--out", str(out), "--sample", "30", "--prime", "the"]) == 0
    first = capsys.readouterr().out
    assert "20 steps" in first and "saved to" in first
    assert main(["train-charlm", "--load", str(out), "--sample", "30", "--prime", "the"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == first.strip().splitlines()[-1]
    assert main(["train-charlm", "--load", str(tmp_path / "missing")]) == 1
    assert "charlm.json" in capsys.readouterr().err
