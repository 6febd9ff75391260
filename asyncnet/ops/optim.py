"""Training ops: Iter, LearningRate, WeightedSum (+ gradient), MomentumSGD(Update), Adagrad, Adam.

As in Caffe2 the learning-rate blob carries the sign: optimizers that *add*
``lr * step`` (WeightedSum SGD, Adagrad, Adam) are given a negative base_lr;
MomentumSGDUpdate subtracts and takes a positive one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import info
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import register_op
from asyncnet.schema import REQUIRED, Arg, TensorInfo
from asyncnet.training.gradients import GradientContext, GradientSpec, register_gradient


def _scalar(v: Any, what: str) -> float:
    a = np.asarray(v)
    if a.size != 1:
        raise ArgumentError(f"{what} must hold exactly one value, got shape {a.shape}")
    return float(a.reshape(-1)[0])


@register_op(
    "Iter",
    inputs=(0, 1),
    outputs=1,
    enforce_inplace=[(0, 0)],
    infer=lambda op, ins: [info((1,), np.int64)],
    doc="Increment the int64 iteration counter (input 0, written in place); without an input the op counts itself.",
    input_names=("iter",),
    output_names=("iter",),
    aliases=("AtomicIter",),
)
def iter_op(op: OpInfo) -> Callable[..., Any]:
    state = {"count": -1}

    def run(*ins: Any) -> tuple[np.ndarray]:
        if ins:
            cur = np.asarray(ins[0])
            if cur.size != 1 or cur.dtype.kind not in "iu":
                raise ArgumentError(f"the iteration blob must be one integer, got {cur.dtype} {cur.shape}")
            value = int(cur.reshape(-1)[0]) + 1
        else:
            ws = op.workspace
            if state["count"] < 0:
                start = ws.fetch(op.outputs[0]) if ws is not None and ws.has(op.outputs[0]) else np.zeros(1)
                state["count"] = int(np.asarray(start).reshape(-1)[0])
            state["count"] += 1
            value = state["count"]
        return (np.array([value], dtype=np.int64),)

    return run


LR_ARGS = (
    Arg("base_lr", REQUIRED, "the base learning rate (negative for descent with WeightedSum/Adagrad/Adam)"),
    Arg(
        "policy",
        REQUIRED,
        "fixed, step, exp, inv, poly, multistep, linearWarmup, constantWarmup, pieceWarmup, alter, hill, slope, "
        "gate, composite",
    ),
    Arg("gamma", 0.0, "decay factor (step, exp, inv)"),
    Arg("stepsize", 0, "iterations per step (step)"),
    Arg("stepsizes", [], "iterations at which to multiply by gamma (multistep)"),
    Arg("power", 0.0, "exponent (inv, poly)"),
    Arg("max_iter", 0, "iterations until the rate reaches 0 (poly)"),
    Arg("start_multiplier", 0.0, "multiplier at iteration 0 (linearWarmup)"),
    Arg("multiplier", 0.5, "multiplier during warmup (constantWarmup)"),
    Arg("num_iter", 0, "warmup length (linearWarmup, constantWarmup)"),
    Arg("active_first", 1, "alter: start with the active period"),
    Arg("active_period", -1, "alter: active iterations per cycle"),
    Arg("inactive_period", -1, "alter: inactive iterations per cycle"),
    Arg("end_multiplier", 0.0, "hill: lower bound after the inverse decay"),
    Arg("num_iter_1", 0, "slope: iteration where the slope starts"),
    Arg("num_iter_2", 0, "slope: iteration where the slope ends"),
    Arg("multiplier_1", 0.0, "slope: multiplier up to num_iter_1; gate: multiplier before num_iter (default 1)"),
    Arg("multiplier_2", 0.0, "slope: multiplier from num_iter_2; gate: multiplier from num_iter (default 1)"),
    Arg("m1", 0.5, "pieceWarmup: multiplier before n1"),
    Arg("n1", 0, "pieceWarmup: first boundary"),
    Arg("m2", 0.5, "pieceWarmup: multiplier before n2"),
    Arg("n2", 0, "pieceWarmup: second boundary"),
    Arg("m3", 0.5, "pieceWarmup: multiplier from n2"),
    Arg("sub_policy_num_iters", [], "composite: iterations of each sub-policy (args sub_policy_<k>_<name>)"),
)


def lr_multiplier(op: OpInfo, prefix: str = "") -> Callable[[int], float]:
    """The multiplier function of iteration for op's `policy` (Caffe2's learning_rate_functors).

    ``prefix`` reads a composite policy's sub-policy arguments (``sub_policy_<i>_<name>``).
    """

    def f(name: str, default: float = 0.0) -> float:
        v = op.arg(prefix + name, default) if prefix else op.float_arg(name, default)
        return float(v)

    def i(name: str, default: int = 0) -> int:
        return int(op.arg(prefix + name, default)) if prefix else op.int_arg(name, default)

    policy = str(op.arg(prefix + "policy", "")) if prefix else op.str_arg("policy")
    gamma, power = f("gamma"), f("power")
    if policy == "fixed":
        return lambda it: 1.0
    if policy == "step":
        stepsize = i("stepsize")
        if stepsize <= 0:
            raise ArgumentError(f"{op.label()}: policy 'step' needs stepsize > 0, got {stepsize}")
        return lambda it: gamma ** (it // stepsize)
    if policy == "multistep":
        steps = sorted(op.ints_arg("stepsizes")) if not prefix else sorted(op.arg(prefix + "stepsizes", []))
        return lambda it: gamma ** sum(1 for s in steps if it >= s)
    if policy == "exp":
        return lambda it: gamma**it
    if policy == "inv":
        return lambda it: (1.0 + gamma * it) ** (-power)
    if policy == "poly":
        max_iter = i("max_iter")
        if max_iter <= 0:
            raise ArgumentError(f"{op.label()}: policy 'poly' needs max_iter > 0, got {max_iter}")
        return lambda it: max(0.0, 1.0 - it / max_iter) ** power
    if policy == "linearWarmup":
        start, n = f("start_multiplier"), i("num_iter")
        return lambda it: start + (1.0 - start) * it / n if it < n else 1.0
    if policy == "constantWarmup":
        mult, n = f("multiplier", 0.5), i("num_iter")
        return lambda it: mult if it < n else 1.0
    if policy == "alter":
        first = bool(i("active_first", 1))
        active, inactive = i("active_period", -1), i("inactive_period", -1)
        if active < 0 or inactive < 0 or active + inactive == 0:
            raise ArgumentError(f"{op.label()}: policy 'alter' needs active_period and inactive_period >= 0")
        if first:
            return lambda it: 1.0 if it % (active + inactive) < active else 0.0
        return lambda it: 1.0 if it % (active + inactive) >= inactive else 0.0
    if policy == "hill":
        # Linear warmup over num_iter, then inverse decay, bounded below by end_multiplier.
        n, start, end = i("num_iter"), f("start_multiplier"), f("end_multiplier")
        if n <= 0:
            raise ArgumentError(f"{op.label()}: policy 'hill' needs num_iter > 0, got {n}")
        return lambda it: start + (1.0 - start) * it / n if it < n else max(end, (1.0 + gamma * (it - n)) ** (-power))
    if policy == "slope":
        n1, m1, n2, m2 = i("num_iter_1"), f("multiplier_1"), i("num_iter_2"), f("multiplier_2")
        if not 0 < n1 < n2:
            raise ArgumentError(f"{op.label()}: policy 'slope' needs 0 < num_iter_1 < num_iter_2, got {n1}, {n2}")
        return lambda it: m1 if it < n1 else (m2 if it >= n2 else m1 + (m2 - m1) * (it - n1) / (n2 - n1))
    if policy == "gate":
        m1, m2, n = f("multiplier_1", 1.0), f("multiplier_2", 1.0), i("num_iter")
        return lambda it: m2 if it >= n else m1
    if policy == "pieceWarmup":
        pm1, pn1, pm2, pn2, pm3 = f("m1", 0.5), i("n1"), f("m2", 0.5), i("n2"), f("m3", 0.5)
        return lambda it: pm1 if it < pn1 else (pm2 if it < pn2 else pm3)
    if policy == "composite":
        if prefix:
            raise ArgumentError(f"{op.label()}: a composite policy cannot nest another composite policy")
        return _composite(op)
    raise ArgumentError(
        f"{op.label()}: unknown learning rate policy '{policy}' (known: fixed, step, multistep, exp, inv, "
        "poly, linearWarmup, constantWarmup, pieceWarmup, alter, hill, slope, gate, composite)"
    )


def _composite(op: OpInfo) -> Callable[[int], float]:
    # Sub-policy k covers sub_policy_num_iters[k] iterations, the first starting at iteration 1
    # (iteration 0 uses the first); each sees the global iteration and is scaled by its lr_scale.
    lengths = [int(n) for n in op.arg("sub_policy_num_iters", [])]
    if not lengths or any(n <= 0 for n in lengths):
        raise ArgumentError(
            f"{op.label()}: policy 'composite' needs sub_policy_num_iters with positive values, got {lengths}"
        )
    starts, fns, scales = [], [], []
    begin = 1
    for k, n in enumerate(lengths):
        pre = f"sub_policy_{k}_"
        starts.append(begin)
        fns.append(lr_multiplier(op, pre))
        scales.append(float(op.arg(pre + "lr_scale", 1.0)))
        begin += n

    def fn(it: int) -> float:
        k = max(0, sum(1 for s in starts if s <= it) - 1)
        return fns[k](it) * scales[k]

    return fn


@register_op(
    "LearningRate",
    inputs=1,
    outputs=1,
    args=LR_ARGS,
    infer=lambda op, ins: [info((), np.float32)],
    allow_unknown_args=True,
    doc="lr = base_lr * multiplier(iter) for the `policy`; output is a float32 scalar. A composite policy "
    "reads each sub-policy's arguments as sub_policy_<k>_<name> (policy, lr_scale, ...).",
    input_names=("iter",),
    output_names=("lr",),
)
def learning_rate(op: OpInfo) -> Callable[..., Any]:
    base = op.float_arg("base_lr")
    fn = lr_multiplier(op)

    def run(it: Any) -> tuple[np.ndarray]:
        return (np.array(base * fn(int(_scalar(it, "the iteration blob"))), dtype=np.float32),)

    return run


def _weighted_sum_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    return [ins[0]]


@register_op(
    "WeightedSum",
    inputs=(2, -1),
    outputs=1,
    allow_inplace=[(0, 0)],
    arity=lambda i, o: i % 2 == 0,
    arity_doc="inputs come in (X, weight) pairs",
    args=(Arg("grad_on_w", 0, "the gradient also covers the weights"),),
    infer=_weighted_sum_infer,
    doc="Y = sum_i X_i * w_i over inputs X_0, w_0, X_1, w_1, ...; each w_i holds one value.",
)
def weighted_sum(op: OpInfo) -> Callable[..., Any]:
    def run(*ins: Any) -> tuple[np.ndarray]:
        first = np.asarray(ins[0])
        out = first * np.asarray(_scalar(ins[1], "weight 0"), dtype=first.dtype)
        for k in range(2, len(ins), 2):
            x = np.asarray(ins[k])
            if x.shape != first.shape:
                raise ArgumentError(f"WeightedSum input {k} has shape {x.shape}, input 0 has {first.shape}")
            out = out + x * np.asarray(_scalar(ins[k + 1], f"weight {k // 2}"), dtype=first.dtype)
        return (out.astype(first.dtype, copy=False),)

    return run


@register_gradient("WeightedSum", copy_arguments=False)
def _weighted_sum_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    inputs = [g.GO(0), *(g.I(i) for i in range(len(op.input)))]
    outputs = [g.GI(i) for i in range(0, len(op.input), 2)]
    if g.arg("grad_on_w", 0):
        outputs += [g.GI(i + 1) for i in range(0, len(op.input), 2)]
    return g.spec([g.op_def("WeightedSumGradient", inputs, outputs)])


@register_op(
    "WeightedSumGradient",
    inputs=(3, -1),
    outputs=(1, -1),
    args=(Arg("grad_on_w", 0, "also output the weights' gradients"),),
    infer=lambda op, ins: [ins[0]] * len(op.outputs),
    doc="Inputs dY, X_0, w_0, ...; outputs dX_i = dY * w_i (then dw_i = sum(dY * X_i) when asked).",
)
def weighted_sum_gradient(op: OpInfo) -> Callable[..., Any]:
    def run(dy: Any, *ins: Any) -> list[np.ndarray]:
        dy = np.asarray(dy)
        xs, ws = ins[0::2], ins[1::2]
        out = [(dy * _scalar(w, "weight")).astype(dy.dtype, copy=False) for w in ws]
        out += [np.array([float((dy * np.asarray(x)).sum())], dtype=dy.dtype) for x in xs]
        return out

    return run


MOMENTUM_ARGS = (
    Arg("momentum", 0.0, "momentum factor"),
    Arg("nesterov", 0, "use Nesterov momentum"),
)


def _momentum_step(g: np.ndarray, m: np.ndarray, lr: float, mu: float, nesterov: bool) -> tuple[np.ndarray, np.ndarray]:
    new_m = mu * m + lr * g
    if nesterov:
        return (1.0 + mu) * new_m - mu * m, new_m
    return new_m, new_m


@register_op(
    "MomentumSGD",
    inputs=3,
    outputs=2,
    allow_inplace=[(0, 0), (1, 1)],
    args=MOMENTUM_ARGS,
    infer=lambda op, ins: [ins[0], ins[1]],
    doc="Inputs grad, moment, lr; outputs the adjusted gradient and the new moment (m' = momentum * m + lr * g).",
    input_names=("grad", "moment", "lr"),
    output_names=("output_grad", "output_moment"),
)
def momentum_sgd(op: OpInfo) -> Callable[..., Any]:
    mu, nesterov = op.float_arg("momentum"), op.bool_arg("nesterov")

    def run(g: Any, m: Any, lr: Any) -> tuple[np.ndarray, np.ndarray]:
        g, m = np.asarray(g), np.asarray(m)
        adj, new_m = _momentum_step(g, m, _scalar(lr, "lr"), mu, nesterov)
        return adj.astype(g.dtype, copy=False), new_m.astype(m.dtype, copy=False)

    return run


@register_op(
    "MomentumSGDUpdate",
    inputs=4,
    outputs=3,
    allow_inplace=[(0, 0), (1, 1), (3, 2)],
    args=MOMENTUM_ARGS,
    infer=lambda op, ins: [ins[0], ins[1], ins[3]],
    doc="Inputs grad, moment, lr, param; MomentumSGD, then param -= adjusted grad. Outputs grad, moment, param.",
    input_names=("grad", "moment", "lr", "param"),
    output_names=("output_grad", "output_moment", "output_param"),
)
def momentum_sgd_update(op: OpInfo) -> Callable[..., Any]:
    mu, nesterov = op.float_arg("momentum"), op.bool_arg("nesterov")

    def run(g: Any, m: Any, lr: Any, p: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        g, m, p = np.asarray(g), np.asarray(m), np.asarray(p)
        adj, new_m = _momentum_step(g, m, _scalar(lr, "lr"), mu, nesterov)
        return adj.astype(g.dtype, copy=False), new_m.astype(m.dtype, copy=False), (p - adj).astype(p.dtype, copy=False)

    return run


@register_op(
    "Adagrad",
    inputs=4,
    outputs=(2, 4),
    allow_inplace=[(0, 0), (1, 1)],
    args=(
        Arg("epsilon", 1e-5, "added to the root"),
        Arg("decay", 1.0, "moment decay"),
        Arg("weight_decay", 0.0, "L2 penalty: the gradient used is g + weight_decay * param"),
    ),
    infer=lambda op, ins: [ins[0], ins[1], ins[0], ins[0]][: len(op.outputs)],
    doc="Inputs param, moment, grad, lr: g' = g + weight_decay * param; m' = decay * m + g'^2; "
    "param' = param + lr * g' / (sqrt(m') + epsilon). Optional outputs 2 and 3: the effective lr and the update.",
    input_names=("param", "moment", "grad", "lr"),
    output_names=("output_param", "output_moment", "output_effective_lr", "output_update"),
)
def adagrad(op: OpInfo) -> Callable[..., Any]:
    eps, decay, wd = op.float_arg("epsilon"), op.float_arg("decay"), op.float_arg("weight_decay")

    def run(p: Any, m: Any, g: Any, lr: Any) -> tuple[np.ndarray, ...]:
        p, m, g = np.asarray(p), np.asarray(m), np.asarray(g)
        if wd != 0.0:
            g = g + np.asarray(wd, dtype=p.dtype) * p
        new_m = decay * m + g * g
        eff = _scalar(lr, "lr") / (np.sqrt(new_m) + eps)
        update = eff * g
        return (
            (p + update).astype(p.dtype, copy=False),
            new_m.astype(m.dtype, copy=False),
            eff.astype(p.dtype),
            update.astype(p.dtype),
        )

    return run


@register_op(
    "Adam",
    inputs=6,
    outputs=(3, 4),
    allow_inplace=[(0, 0), (1, 1), (2, 2)],
    args=(
        Arg("beta1", 0.9, "first moment decay"),
        Arg("beta2", 0.999, "second moment decay"),
        Arg("epsilon", 1e-5, "added to the root"),
    ),
    infer=lambda op, ins: [ins[0], ins[1], ins[2], ins[3]][: len(op.outputs)],
    doc="Inputs param, m1, m2, grad, lr, iter; bias-corrected Adam step param' = param + lr * step "
    "(t = iter + 1). Optional output 3: the step.",
    input_names=("param", "moment_1", "moment_2", "grad", "lr", "iter"),
    output_names=("output_param", "output_moment_1", "output_moment_2", "output_grad"),
)
def adam(op: OpInfo) -> Callable[..., Any]:
    b1, b2, eps = op.float_arg("beta1"), op.float_arg("beta2"), op.float_arg("epsilon")

    def run(p: Any, m1: Any, m2: Any, g: Any, lr: Any, it: Any) -> tuple[np.ndarray, ...]:
        p, m1, m2, g = np.asarray(p), np.asarray(m1), np.asarray(m2), np.asarray(g)
        t = int(_scalar(it, "iter")) + 1
        correction = math.sqrt(1.0 - b2**t) / (1.0 - b1**t)
        nm1 = b1 * m1 + (1.0 - b1) * g
        nm2 = b2 * m2 + (1.0 - b2) * g * g
        step = correction * nm1 / (np.sqrt(nm2) + eps)
        return (
            (p + _scalar(lr, "lr") * step).astype(p.dtype, copy=False),
            nm1.astype(m1.dtype, copy=False),
            nm2.astype(m2.dtype, copy=False),
            step.astype(g.dtype, copy=False),
        )

    return run
