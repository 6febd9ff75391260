"""InferenceLSTM against torch.nn.LSTM (an independent implementation) in every configuration."""

from __future__ import annotations

import numpy as np
import pytest

from tests.ops.run_util import run_op

torch = pytest.importorskip("torch")


@pytest.mark.parametrize(
    ("layers", "bias", "bidir", "batch_first"),
    [(1, True, False, False), (2, True, True, False), (2, False, True, True), (3, True, False, True)],
)
def test_inference_lstm_matches_torch(layers: int, bias: bool, bidir: bool, batch_first: bool) -> None:
    torch.manual_seed(layers)
    seq, batch, emb, hid = 5, 3, 4, 6
    lstm = torch.nn.LSTM(emb, hid, num_layers=layers, bias=bias, bidirectional=bidir, batch_first=batch_first)
    dirs = 2 if bidir else 1
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, seq, emb) if batch_first else (seq, batch, emb)).astype(np.float32)
    h0 = rng.normal(size=(layers * dirs, batch, hid)).astype(np.float32)
    c0 = rng.normal(size=(layers * dirs, batch, hid)).astype(np.float32)
    params = [p.detach().numpy() for p in lstm._flat_weights]
    out, h, c = run_op(
        "InferenceLSTM", [x, h0, c0, *params], 3, infer=False,
        num_layers=layers, has_biases=int(bias), batch_first=int(batch_first), bidirectional=int(bidir),
    )  # fmt: skip
    with torch.no_grad():
        want, (wh, wc) = lstm(torch.from_numpy(x), (torch.from_numpy(h0), torch.from_numpy(c0)))
    np.testing.assert_allclose(out, want.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(h, wh.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(c, wc.numpy(), rtol=1e-5, atol=1e-5)
