"""String ops (StringPrefix, StringSuffix, StringStartsWith, StringEndsWith, StringEquals, StringJoin),
the ranking loss PairWiseLoss (+ gradient) and CTCGreedyDecoder.

Strings are object arrays of bytes (as GivenTensorStringFill makes them); str items are accepted and
encoded as UTF-8.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError
from asyncnet.opinfo import OpInfo
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo
from asyncnet.training.gradients import GradientContext, GradientSpec, register_gradient

OBJ = np.dtype(object)
BOOL = np.dtype(np.bool_)


def _b(v: Any) -> bytes:
    return v if isinstance(v, bytes) else str(v).encode("utf-8")


def _arg_bytes(op: OpInfo, name: str) -> bytes:
    return _b(op.arg(name, b""))


def _map(op: OpInfo, x: Any, fn: Callable[[bytes], Any], dtype: Any) -> np.ndarray:
    a = np.asarray(x, dtype=object)
    out = np.empty(a.shape, dtype=dtype)
    flat = out.reshape(-1)
    for i, v in enumerate(a.reshape(-1).tolist()):
        flat[i] = fn(_b(v))
    return out


def _string_op(name: str, arg: Arg, fn: Callable[[bytes, Any], Any], out_dtype: np.dtype[Any], doc: str) -> None:
    def factory(op: OpInfo) -> Callable[..., Any]:
        param = op.int_arg(arg.name) if isinstance(arg.default, int) else _arg_bytes(op, arg.name)
        return lambda x: (_map(op, x, lambda s: fn(s, param), out_dtype),)

    register_op(
        name,
        args=(arg,),
        infer=lambda op, ins: [TensorInfo(ins[0].shape, out_dtype)],
        doc=doc,
        input_names=("strings",),
        output_names=("bools" if out_dtype == BOOL else "prefixes",),
    )(factory)


_string_op(
    "StringPrefix", Arg("length", 0, "bytes kept"), lambda s, n: s[:n], OBJ, "The first `length` bytes of each string."
)
_string_op(
    "StringSuffix",
    Arg("length", 0, "bytes kept"),
    lambda s, n: s[-n:] if n else b"",
    OBJ,
    "The last `length` bytes of each string.",
)
_string_op(
    "StringStartsWith",
    Arg("prefix", "", "the prefix"),
    lambda s, p: s.startswith(p),
    BOOL,
    "Whether each string starts with `prefix`.",
)
_string_op(
    "StringEndsWith",
    Arg("suffix", "", "the suffix"),
    lambda s, p: s.endswith(p),
    BOOL,
    "Whether each string ends with `suffix`.",
)
_string_op("StringEquals", Arg("text", "", "the text"), lambda s, t: s == t, BOOL, "Whether each string equals `text`.")


def _to_text(v: Any) -> bytes:
    if isinstance(v, (bytes, str)):
        return _b(v)
    if isinstance(v, float):
        return f"{v:f}".encode()  # std::to_string's six decimals
    return str(v).encode()


@register_op(
    "StringJoin",
    args=(Arg("delimiter", ",", "placed between the items"), Arg("axis", 0, "the rows are along this axis (0 or 1)")),
    infer=lambda op, ins: [TensorInfo((None,), OBJ)],
    doc="Join the items of each row of a 1-D or 2-D tensor (axis 0: rows are input rows) into one string "
    "(numbers printed as C++ to_string does).",
    input_names=("input",),
    output_names=("strings",),
)
def string_join(op: OpInfo) -> Callable[..., Any]:
    delim, axis = _arg_bytes(op, "delimiter"), op.int_arg("axis")

    def run(x: Any) -> tuple[np.ndarray]:
        a = np.asarray(x)
        if a.ndim not in (1, 2) or axis not in (0, 1):
            raise ArgumentError(f"{op.label()}: input must be 1-D or 2-D and axis 0 or 1, got {a.shape}, axis {axis}")
        rows = a.reshape(-1, 1) if a.ndim == 1 else (a if axis == 0 else a.T)
        out = np.empty(rows.shape[0], dtype=object)
        out[:] = [delim.join(_to_text(v) for v in r.tolist()) for r in rows]
        return (out,)

    return run


# -- PairWiseLoss -----------------------------------------------------------------------------------------

_MIN_LOG = math.log(float(np.finfo(np.float32).eps))


def _log_logit(v: float) -> float:
    if v < _MIN_LOG:
        return 0.0
    if v > -_MIN_LOG:
        return v
    return math.log(math.exp(v) + 1.0)


def _sessions(op: OpInfo, x: Any, label: Any, lengths: Any) -> tuple[np.ndarray, np.ndarray, list[int]]:
    xs, ls = np.asarray(x).reshape(-1), np.asarray(label).reshape(-1)
    if xs.size != ls.size:
        raise ArgumentError(f"{op.label()}: X has {xs.size} values, label {ls.size}")
    lens = [xs.size] if lengths is None else np.asarray(lengths).reshape(-1).astype(np.int64).tolist()
    if sum(lens) != xs.size or any(n < 0 for n in lens):
        raise ArgumentError(f"{op.label()}: lengths {lens} must be nonnegative and sum to {xs.size}")
    return xs.astype(np.float64), ls.astype(np.float64), lens


@register_op(
    "PairWiseLoss",
    inputs=(2, 3),
    infer=lambda op, ins: [TensorInfo((None,), ins[0].dtype)],
    doc="Per session (cut by lengths): the mean over pairs with different labels of log(1 + exp(s (X_j - X_i))), "
    "s = 1 when label_i > label_j else -1 (0 without pairs).",
    input_names=("X", "label", "lengths"),
    output_names=("Y",),
)
def pair_wise_loss(op: OpInfo) -> Callable[..., Any]:
    def run(x: Any, label: Any, lengths: Any = None) -> tuple[np.ndarray]:
        xs, ls, lens = _sessions(op, x, label, lengths)
        out = np.zeros(len(lens), np.asarray(x).dtype)
        off = 0
        for s, n in enumerate(lens):
            total, pairs = 0.0, 0
            for i in range(off, off + n):
                for j in range(off, i):
                    if abs(ls[i] - ls[j]) < 1e-5:
                        continue
                    pairs += 1
                    sign = 1.0 if ls[i] > ls[j] else -1.0
                    total += _log_logit(sign * (xs[j] - xs[i]))
            out[s] = total / pairs if pairs else 0.0
            off += n
        return (out,)

    return run


@register_gradient("PairWiseLoss")
def _pair_wise_loss_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    ins = [g.I(0), g.I(1), g.GO(0)] + ([g.I(2)] if len(op.input) > 2 else [])
    return g.spec([g.op_def("PairWiseLossGradient", ins, [g.GI(0)])])


@register_op(
    "PairWiseLossGradient",
    inputs=(3, 4),
    infer=lambda op, ins: [ins[0]],
    doc="Gradient of PairWiseLoss: inputs X, label, dY, [lengths]; output dX.",
    input_names=("X", "label", "dY", "lengths"),
    output_names=("dX",),
)
def pair_wise_loss_gradient(op: OpInfo) -> Callable[..., Any]:
    def run(x: Any, label: Any, dy: Any, lengths: Any = None) -> tuple[np.ndarray]:
        xs, ls, lens = _sessions(op, x, label, lengths)
        d = np.asarray(dy, np.float64).reshape(-1)
        dx = np.zeros(xs.size)
        off = 0
        for s, n in enumerate(lens):
            pairs = sum(1 for i in range(off, off + n) for j in range(off, i) if abs(ls[i] - ls[j]) >= 1e-5)
            for i in range(off, off + n):
                for j in range(off, i):
                    if abs(ls[i] - ls[j]) < 1e-5:
                        continue
                    sign = 1.0 if ls[i] > ls[j] else -1.0
                    v = sign * (xs[j] - xs[i])
                    # d/dv log(1 + e^v), with the forward's clamps.
                    slope = 0.0 if v < _MIN_LOG else (1.0 if v > -_MIN_LOG else 1.0 / (1.0 + math.exp(-v)))
                    dx[j] += d[s] * slope * sign / pairs
                    dx[i] -= d[s] * slope * sign / pairs
            off += n
        xa = np.asarray(x)
        return (dx.reshape(xa.shape).astype(xa.dtype),)

    return run


# -- CTCGreedyDecoder ----------------------------------------------------------------------------------------


@register_op(
    "CTCGreedyDecoder",
    inputs=(1, 2),
    outputs=2,
    args=(Arg("merge_repeated", 1, "drop a label equal to the previous step's"),),
    infer=lambda op, ins: [
        TensorInfo(None if ins[0].shape is None else (ins[0].shape[1],), np.dtype(np.int32)),
        TensorInfo((None,), np.dtype(np.int32)),
    ],
    doc="Greedy CTC decoding of INPUTS (T, N, C) (class 0 is the blank), each sequence over its first "
    "SEQ_LEN[n] steps: the argmax class per step, blanks dropped (and repeats when merge_repeated). "
    "Outputs the decoded lengths and the concatenated labels (int32).",
    input_names=("INPUTS", "SEQ_LEN"),
    output_names=("OUTPUT_LEN", "VALUES"),
)
def ctc_greedy_decoder(op: OpInfo) -> Callable[..., Any]:
    merge = op.bool_arg("merge_repeated")

    def run(inputs: Any, seq_len: Any = None) -> tuple[np.ndarray, np.ndarray]:
        a = np.asarray(inputs)
        if a.ndim != 3:
            raise ArgumentError(f"{op.label()}: INPUTS must be (T, N, C), got {a.shape}")
        t_max, n = a.shape[0], a.shape[1]
        lens = np.full(n, t_max) if seq_len is None else np.asarray(seq_len).reshape(-1).astype(np.int64)
        if lens.size != n or np.any(lens < 0) or np.any(lens > t_max):
            raise ArgumentError(f"{op.label()}: SEQ_LEN must hold {n} values in [0, {t_max}]")
        best = a.argmax(axis=2) if a.size else np.zeros((t_max, n), np.int64)
        out_len, values = [], []
        for b in range(n):
            prev, got = 0, 0
            for t in range(int(lens[b])):
                k = int(best[t, b])
                if k != 0 and not (merge and k == prev):
                    values.append(k)
                    got += 1
                prev = k
            out_len.append(got)
        return np.array(out_len, np.int32), np.array(values, np.int32)

    return run


# -- CTCBeamSearchDecoder ---------------------------------------------------------------------------------


def _beam_search(probs: np.ndarray, steps: int, beam: int, prune: float) -> tuple[dict[Any, Any], list[Any]]:
    """Caffe2's prefix beam search on one sequence (float32 arithmetic, std::map visiting order).

    Returns the final (Pb + Pnb) table and the ranked prefixes of the last step.
    """
    f32 = np.float32
    zero = f32(0.0)
    pb_prev: dict[tuple[int, ...], Any] = {(): f32(1.0)}
    pnb_prev: dict[tuple[int, ...], Any] = {(): zero}
    a_prev: list[tuple[int, ...]] = [()]
    ranked: list[tuple[int, ...]] = []
    pb_next: dict[tuple[int, ...], Any] = pb_prev
    pnb_next: dict[tuple[int, ...], Any] = pnb_prev
    for t in range(steps):
        ctc = [f32(v) for v in probs[t].tolist()]
        alpha = [c for c, v in enumerate(ctc) if v > prune] or list(range(len(ctc)))
        pb_next, pnb_next = {}, {}
        prev_set = set(a_prev)
        for lp in sorted(a_prev):  # std::set order
            for c in alpha:
                if c == 0:
                    pb_next[lp] = pb_next.get(lp, zero) + ctc[0] * (pb_prev.get(lp, zero) + pnb_prev.get(lp, zero))
                    continue
                plus = (*lp, c)
                if lp and c == lp[-1]:
                    pnb_next[plus] = pnb_next.get(plus, zero) + ctc[c] * pb_prev.get(lp, zero)
                    pnb_next[lp] = pnb_next.get(lp, zero) + ctc[c] * pnb_prev.get(lp, zero)
                else:
                    pnb_next[plus] = pnb_next.get(plus, zero) + ctc[c] * (
                        pb_prev.get(lp, zero) + pnb_prev.get(lp, zero)
                    )
                if plus not in prev_set:
                    pb_next[plus] = pb_next.get(plus, zero) + ctc[0] * (
                        pb_prev.get(plus, zero) + pnb_prev.get(plus, zero)
                    )
                    pnb_next[plus] = pnb_next.get(plus, zero) + ctc[c] * pnb_prev.get(plus, zero)
        total = dict(pb_next)
        for k, v in pnb_next.items():
            total[k] = total.get(k, zero) + v
        # std::multimap<float, prefix, greater>: by probability, ties in key (lexicographic) order.
        ranked = [k for k, _ in sorted(sorted(total.items()), key=lambda kv: -float(kv[1]))]
        a_prev = ranked[:beam]
        pb_prev, pnb_prev = pb_next, pnb_next
    final = {k: pb_next.get(k, zero) + pnb_next.get(k, zero) for k in ranked}
    return final, ranked


@register_op(
    "CTCBeamSearchDecoder",
    inputs=(1, 2),
    outputs=(2, 3),
    args=(
        Arg("beam_width", 10, "prefixes kept per step"),
        Arg("prune_threshold", 0.001, "classes with probability at or below it are skipped at a step"),
        Arg("num_candidates", 1, "decodings output per sequence"),
    ),
    infer=lambda op, ins: [
        TensorInfo((None,), np.dtype(np.int32)),
        TensorInfo((None,), np.dtype(np.int32)),
        TensorInfo((None,), np.dtype(np.float32)),
    ][: len(op.outputs)],
    doc="CTC prefix beam search over INPUTS (T, N, C) probabilities (class 0 is the blank) as Caffe2 "
    "runs it: outputs per sequence and candidate the decoded length, the concatenated labels and "
    "(optionally) the candidate's probability.",
    input_names=("INPUTS", "SEQ_LEN"),
    output_names=("OUTPUT_LEN", "VALUES", "OUTPUT_PROB"),
)
def ctc_beam_search_decoder(op: OpInfo) -> Callable[..., Any]:
    beam, prune, cands = op.int_arg("beam_width"), op.float_arg("prune_threshold"), op.int_arg("num_candidates")
    if beam < 1 or cands < 1:
        raise ArgumentError(f"{op.label()}: beam_width and num_candidates must be positive")

    def run(inputs: Any, seq_len: Any = None) -> tuple[np.ndarray, ...]:
        a = np.asarray(inputs, np.float32)
        if a.ndim != 3:
            raise ArgumentError(f"{op.label()}: INPUTS must be (T, N, C), got {a.shape}")
        t_max, n = a.shape[0], a.shape[1]
        lens = np.full(n, t_max) if seq_len is None else np.asarray(seq_len).reshape(-1).astype(np.int64)
        if lens.size != n or np.any(lens < 0) or np.any(lens > t_max):
            raise ArgumentError(f"{op.label()}: SEQ_LEN must hold {n} values in [0, {t_max}]")
        out_len = np.zeros(n * cands, np.int32)
        out_prob = np.zeros(n * cands, np.float32)
        values: list[int] = []
        for b in range(n):
            final, ranked = _beam_search(a[:, b, :], int(lens[b]), beam, prune)
            for k, cand in enumerate(ranked[:cands]):
                out_len[b * cands + k] = len(cand)
                out_prob[b * cands + k] = final[cand]
                values.extend(cand)
        return out_len, np.array(values, np.int32), out_prob

    return run
