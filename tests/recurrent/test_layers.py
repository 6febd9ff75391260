"""The idiomatic builder front end: lstm_layer / gru_layer on NetBuilder, and control flow via NetBuilder.op."""

from __future__ import annotations

import numpy as np

from asyncnet.builder import NetBuilder
from asyncnet.recurrent.layers import gru_layer, lstm_layer
from asyncnet.workspace import Workspace
from tests.recurrent.naive import gru_stack, lstm_stack

T, N, D, H = 4, 2, 3, 5


def run(b: NetBuilder, feeds: dict[str, np.ndarray]) -> Workspace:
    init_net, predict_net = b.build()
    ws = Workspace()
    ws.run_net_once(init_net)
    for k, v in feeds.items():
        ws.feed(k, v)
    ws.run_net_once(predict_net)
    return ws


def test_lstm_layer_in_a_name_scope_matches_naive() -> None:
    b = NetBuilder("lm")
    x, h0, c0, h1, c1 = b.inputs("x", "h0", "c0", "h1", "c1")
    with b.name_scope("enc"):
        out = lstm_layer(b, x, [(h0, c0), (h1, c1)], dim_in=D, dim_out=[H, H], scope="lstm")
    b.output(out.hidden_all, out.cell_last)
    assert str(out.hidden_all) == "enc/lstm/layer1/hidden_t_all"
    rng = np.random.default_rng(0)
    feeds = {k: rng.standard_normal((1, N, H)).astype(np.float32) for k in ("h0", "c0", "h1", "c1")}
    feeds["x"] = rng.standard_normal((T, N, D)).astype(np.float32)
    ws = run(b, feeds)
    params = {p: ws.fetch(p) for p in ws.blobs() if p.startswith("enc/lstm/layer") and p[-2:] in ("_w", "_b")}
    assert len(params) == 8
    init = [(feeds["h0"], feeds["c0"]), (feeds["h1"], feeds["c1"])]
    all_h, _, last_c = lstm_stack(feeds["x"], np.full(N, T), init, params, "enc/lstm")
    np.testing.assert_allclose(ws.fetch(out.hidden_all), all_h[1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ws.fetch(out.cell_last)[0], last_c[1], rtol=1e-5, atol=1e-5)


def test_gru_layer_with_sequence_lengths_matches_naive() -> None:
    b = NetBuilder("g")
    x, h0, lens = b.inputs("x", "h0", "lens")
    out = gru_layer(b, x, [h0], dim_in=D, dim_out=H, seq_lengths=lens)
    b.output(out.hidden_all)
    rng = np.random.default_rng(1)
    feeds = {"x": rng.standard_normal((T, N, D)).astype(np.float32), "h0": np.zeros((1, N, H), np.float32)}
    feeds["lens"] = np.array([4, 2], np.int32)
    ws = run(b, feeds)
    params = {p: ws.fetch(p) for p in ws.blobs() if p.startswith("gru/layer") and p[-2:] in ("_w", "_b")}
    all_h, _ = gru_stack(feeds["x"], feeds["lens"], [feeds["h0"]], params, "gru")
    np.testing.assert_allclose(ws.fetch(out.hidden_all), all_h[0], rtol=1e-5, atol=1e-5)


def test_builder_while_loop_with_a_sub_builder_body() -> None:
    body = NetBuilder("body")
    i, one, acc, two = body.inputs("i", "one", "acc", "two")
    body.op("Add", [i, one], ["i"])
    body.op("Mul", [acc, two], ["acc"])
    cond = NetBuilder("cond")
    cond.op("LT", cond.inputs("i", "n"), ["c"])
    b = NetBuilder("main")
    c, i, n, one, acc, two = b.inputs("c", "i", "n", "one", "acc", "two")
    b.op("While", [c, i, n, one, acc, two], ["i", "acc"], loop_net=body.build_predict(), cond_net=cond.build_predict())
    b.output("acc")
    feeds = {k: np.array(v, np.float32) for k, v in {"i": 0, "n": 5, "one": 1, "acc": 1, "two": 2}.items()}
    feeds["c"] = np.array(False)
    ws = run(b, feeds)
    assert float(ws.fetch("acc")) == 32.0
