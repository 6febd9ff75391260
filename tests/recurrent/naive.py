"""Deliberately naive numpy references for LSTM/GRU stacks, written from Caffe2's documented semantics.

Loops over timesteps, rows and units; no vectorised gate maths, nothing shared with asyncnet.
"""

from __future__ import annotations

import math

import numpy as np


def _sig(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def _fc(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """y[n, j] = sum_k x[n, k] w[j, k] + b[j] by loops."""
    n_rows, k_in = x.shape
    out = np.zeros((n_rows, w.shape[0]))
    for n in range(n_rows):
        for j in range(w.shape[0]):
            s = float(b[j])
            for k in range(k_in):
                s += float(x[n, k]) * float(w[j, k])
            out[n, j] = s
    return out


def lstm_stack(
    x: np.ndarray,
    lengths: np.ndarray,
    init: list[tuple[np.ndarray, np.ndarray]],
    params: dict[str, np.ndarray],
    scope: str,
    forget_bias: float = 0.0,
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Per layer: hidden for every step (T, N, H), final hidden (N, H), final cell (N, H)."""
    t_len, n_rows, _ = x.shape
    layers = len(init)
    h = [np.array(i[0], np.float64).reshape(n_rows, -1) for i in init]
    c = [np.array(i[1], np.float64).reshape(n_rows, -1) for i in init]
    all_h = [np.zeros((t_len, n_rows, h[k].shape[1])) for k in range(layers)]
    for t in range(t_len):
        below = np.array(x[t], np.float64)
        for k in range(layers):
            p = f"{scope}/layer{k}"
            gx = _fc(below, params[f"{p}/i2h_w"], params[f"{p}/i2h_b"])
            gh = _fc(h[k], params[f"{p}/gates_w"], params[f"{p}/gates_b"])
            d = h[k].shape[1]
            new_h = h[k].copy()
            new_c = c[k].copy()
            for n in range(n_rows):
                if t >= lengths[n]:
                    continue  # finished rows keep their state
                for j in range(d):
                    gi = _sig(gx[n, j] + gh[n, j])
                    gf = _sig(gx[n, d + j] + gh[n, d + j] + forget_bias)
                    go = _sig(gx[n, 2 * d + j] + gh[n, 2 * d + j])
                    gg = math.tanh(gx[n, 3 * d + j] + gh[n, 3 * d + j])
                    new_c[n, j] = gf * c[k][n, j] + gi * gg
                    new_h[n, j] = go * math.tanh(new_c[n, j])
            h[k], c[k] = new_h, new_c
            all_h[k][t] = new_h
            below = new_h
    return all_h, h, c


def gru_stack(
    x: np.ndarray, lengths: np.ndarray, init: list[np.ndarray], params: dict[str, np.ndarray], scope: str
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per layer: hidden for every step (T, N, H) and final hidden (N, H)."""
    t_len, n_rows, _ = x.shape
    layers = len(init)
    h = [np.array(i, np.float64).reshape(n_rows, -1) for i in init]
    all_h = [np.zeros((t_len, n_rows, h[k].shape[1])) for k in range(layers)]
    for t in range(t_len):
        below = np.array(x[t], np.float64)
        for k in range(layers):
            p = f"{scope}/layer{k}"
            d = h[k].shape[1]
            gx = _fc(below, params[f"{p}/i2h_w"], params[f"{p}/i2h_b"])
            ru = _fc(h[k], params[f"{p}/gates_w"], params[f"{p}/gates_b"])
            new_h = h[k].copy()
            for n in range(n_rows):
                if t >= lengths[n]:
                    continue
                r = [_sig(ru[n, j] + gx[n, j]) for j in range(d)]
                rh = np.array([[r[j] * h[k][n, j] for j in range(d)]])
                oh = _fc(rh, params[f"{p}/output_w"], params[f"{p}/output_b"])[0]
                for j in range(d):
                    u = _sig(ru[n, d + j] + gx[n, d + j])
                    o = math.tanh(oh[j] + gx[n, 2 * d + j])
                    new_h[n, j] = h[k][n, j] * u + o * (1.0 - u)
            h[k] = new_h
            all_h[k][t] = new_h
            below = new_h
    return all_h, h
