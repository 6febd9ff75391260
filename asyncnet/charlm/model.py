"""Training, saving, reloading and sampling the character LSTM (see :mod:`asyncnet.charlm`)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from asyncnet.compat import brew, model_helper, optimizer, rnn_cell
from asyncnet.errors import ArgumentError, CheckpointError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.recurrent.timesteps import one_blas_thread
from asyncnet.serde import read_net, write_message
from asyncnet.workspace import Workspace

SCOPE = "charlm"


def bundled_text() -> str:
    """The bundled training text (14 Shakespeare sonnets, public domain, about 8 KB)."""
    return (Path(__file__).parent / "sonnets.txt").read_text(encoding="utf-8")


@dataclass
class CharLMConfig:
    """Hyper-parameters of :func:`train_charlm`."""

    hidden: int = 128
    seq_len: int = 25
    batch: int = 16
    lr: float = 0.005
    steps: int = 1500
    seed: int = 0
    threaded: bool = True
    progress: bool = False


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def steps_done(self) -> int:
        return len(self.losses)

    def mean_loss(self, last: int = 50) -> float:
        """Mean training loss (nats per character) over the last ``last`` steps."""
        tail = self.losses[-last:]
        return float(np.mean(tail)) if tail else float("nan")


def _model(name: str, vocab: int, hidden: int, *, train: bool) -> model_helper.ModelHelper:
    """The LSTM language model; the sampling copy shares parameter names but fills none."""
    model = model_helper.ModelHelper(name=name, init_params=train)
    _h_all, _h_last, _c_all, _c_last = rnn_cell.LSTM(
        model,
        "input_one_hot",
        "seq_lengths",
        ["hidden_init", "cell_init"],
        dim_in=vocab,
        dim_out=hidden,
        scope=SCOPE,
        forward_only=not train,
    )
    logits = brew.fc(model, _h_all, "logits", dim_in=hidden, dim_out=vocab, axis=2)
    flat, _ = model.net.Reshape([logits], ["logits_2d", "logits_old_shape"], shape=[-1, vocab])
    if train:
        _softmax, loss = model.net.SoftmaxWithLoss([flat, "target"], ["softmax", "loss"])
        model.AddGradientOperators([loss])
    else:
        model.net.Softmax([flat], ["softmax"])
    return model


class CharLM:
    """A trained (or loaded) model: its vocabulary, parameters and a sampling net."""

    def __init__(self, vocab: list[str], hidden: int, params: dict[str, np.ndarray]) -> None:
        self.vocab = vocab
        self.hidden = hidden
        self.params = params
        self._index = {c: i for i, c in enumerate(vocab)}
        self._sample_net = _model("charlm_sample", len(vocab), hidden, train=False).net.Proto()

    def sample(self, length: int, *, prime: str = "\n", temperature: float = 1.0, seed: int = 0) -> str:
        """Generate ``length`` characters after ``prime`` (one timestep per character)."""
        if temperature <= 0:
            raise ArgumentError(f"temperature must be positive, got {temperature}")
        unknown = sorted({c for c in prime if c not in self._index})
        if unknown or not prime:
            raise ArgumentError(f"prime must be non-empty and use the model's characters; unknown: {unknown}")
        rng = np.random.default_rng(seed)
        v = len(self.vocab)
        with Workspace("charlm_sample") as ws:
            for k, arr in self.params.items():
                ws.feed(k, arr)
            ws.feed("seq_lengths", np.array([1], np.int32))
            ws.feed("hidden_init", np.zeros((1, 1, self.hidden), np.float32))
            ws.feed("cell_init", np.zeros((1, 1, self.hidden), np.float32))
            net = ws.create_net(self._sample_net)
            out: list[str] = []
            char = self._index[prime[0]]
            for step in range(len(prime) - 1 + length):
                x = np.zeros((1, 1, v), np.float32)
                x[0, 0, char] = 1.0
                ws.feed("input_one_hot", x)
                net.run()
                ws.feed("hidden_init", np.array(ws.fetch(f"{SCOPE}/layer0/hidden_t_last")))
                ws.feed("cell_init", np.array(ws.fetch(f"{SCOPE}/layer0/cell_t_last")))
                if step + 1 < len(prime):
                    char = self._index[prime[step + 1]]
                    continue
                logits = np.log(np.asarray(ws.fetch("softmax"), np.float64)[0] + 1e-12) / temperature
                p = np.exp(logits - logits.max())
                char = int(rng.choice(v, p=p / p.sum()))
                out.append(self.vocab[char])
        return prime + "".join(out)

    def save(self, out_dir: str | Path) -> Path:
        """Write ``init_net.pb`` (the parameters), ``predict_net.pb`` (sampling) and ``charlm.json``."""
        from asyncnet.training.digits import params_init_net

        d = Path(out_dir)
        d.mkdir(parents=True, exist_ok=True)
        write_message(params_init_net(self.params, name="charlm_params"), d / "init_net.pb")
        write_message(self._sample_net, d / "predict_net.pb")
        (d / "charlm.json").write_text(json.dumps({"vocab": self.vocab, "hidden": self.hidden}), encoding="utf-8")
        return d


def load_charlm(path: str | Path) -> CharLM:
    """Reload a model written by :meth:`CharLM.save`."""
    d = Path(path)
    try:
        meta = json.loads((d / "charlm.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"'{d}' holds no readable charlm.json (written by CharLM.save): {e}") from e
    init = read_net(d / "init_net.pb")
    with Workspace("charlm_load") as ws:
        ws.run_net_once(init)
        params = {name: np.array(ws.fetch(name)) for name in init.external_output}
    return CharLM(list(meta["vocab"]), int(meta["hidden"]), params)


def _batches(codes: np.ndarray, cfg: CharLMConfig) -> tuple[np.ndarray, np.ndarray, int]:
    """(inputs, targets, steps per pass): ``batch`` parallel streams through the text."""
    stream = (len(codes) - 1) // cfg.batch
    if stream < cfg.seq_len + 1:
        raise ArgumentError(
            f"text of {len(codes)} characters is too short for batch {cfg.batch} x seq_len {cfg.seq_len}"
        )
    starts = np.arange(cfg.batch) * stream
    idx = starts[None, :] + np.arange(stream)[:, None]  # (stream, N)
    return codes[idx], codes[idx + 1], stream // cfg.seq_len


def train_charlm(cfg: CharLMConfig, text: str | None = None) -> tuple[CharLM, TrainResult]:
    """Train the model on ``text`` (default: the bundled sonnets)."""
    text = bundled_text() if text is None else text
    vocab = sorted(set(text))
    codes = np.array([vocab.index(c) for c in text], np.int64)
    v, h, n, t_len = len(vocab), cfg.hidden, cfg.batch, cfg.seq_len
    xs, ys, per_pass = _batches(codes, cfg)
    model = _model("charlm", v, h, train=True)
    optimizer.build_adam(model, base_learning_rate=cfg.lr)
    train_def: pb.NetDef = model.net.Proto()
    if not cfg.threaded:
        for op in train_def.op:
            for a in op.arg:
                if a.name == "enable_rnn_executor":
                    a.i = 0
    init_def = pb.NetDef()
    init_def.CopyFrom(model.param_init_net.Proto())
    for i, op in enumerate(init_def.op):
        op.device_option.random_seed = cfg.seed * 1000 + i  # fills are seeded per op, as in Caffe2
    eye = np.eye(v, dtype=np.float32)
    result = TrainResult()
    bar = _progress(cfg.steps, cfg.progress)
    with one_blas_thread(), Workspace("charlm_train") as ws:
        ws.run_net_once(init_def)
        ws.feed("seq_lengths", np.full(n, t_len, np.int32))
        zeros = np.zeros((1, n, h), np.float32)
        ws.feed("hidden_init", zeros)
        ws.feed("cell_init", zeros)
        net = ws.create_net(train_def)
        t0 = time.perf_counter()
        for step in range(cfg.steps):
            k = step % per_pass
            if k == 0:
                ws.feed("hidden_init", zeros)
                ws.feed("cell_init", zeros)
            rows = slice(k * t_len, (k + 1) * t_len)
            ws.feed("input_one_hot", eye[xs[rows]])
            ws.feed("target", ys[rows].reshape(-1).astype(np.int32))
            net.run()
            # Truncated BPTT: the next batch continues from where this one ended.
            ws.feed("hidden_init", np.array(ws.fetch(f"{SCOPE}/layer0/hidden_t_last")))
            ws.feed("cell_init", np.array(ws.fetch(f"{SCOPE}/layer0/cell_t_last")))
            loss = float(ws.fetch("loss"))
            result.losses.append(loss)
            if bar is not None:
                bar.update(1)
                if step % 10 == 0:
                    bar.set_postfix(loss=f"{result.mean_loss(20):.3f}")
        result.seconds = time.perf_counter() - t0
        params = {str(p): np.array(ws.fetch(str(p))) for p in model.params}
    if bar is not None:
        bar.close()
    return CharLM(vocab, h, params), result


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="step", leave=False, dynamic_ncols=True)
