"""Caffe2's ``brew``: layer helpers that add parameters and ops to a ModelHelper.

Signatures and blob naming follow Caffe2's helpers: ``fc`` creates ``<out>_w`` and
``<out>_b`` with ``("XavierFill", {})`` / ``("ConstantFill", {})`` by default; the
model's ``arg_scope`` (order, use_cudnn, ...) is passed to helpers that accept it
or take ``**kwargs``, exactly as Caffe2 did (so e.g. FC ops carry ``order``).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from asyncnet.compat import core
from asyncnet.compat.initializers import ExternalInitializer, Initializer, update_initializer
from asyncnet.compat.model_helper import ModelHelper, ParameterTags
from asyncnet.compat.scope import CurrentDeviceScope
from asyncnet.errors import ArgumentError

F = TypeVar("F", bound=Callable[..., Any])


class _ScopeState(threading.local):
    def __init__(self) -> None:
        self.current: dict[str, dict[str, Any]] = {}


_scope = _ScopeState()
_helpers: dict[str, Callable[..., Any]] = {}


def get_current_scope() -> dict[str, dict[str, Any]]:
    return _scope.current


@contextlib.contextmanager
def arg_scope(helpers: Callable[..., Any] | Sequence[Callable[..., Any]], **kwargs: Any) -> Iterator[None]:
    """Default keyword arguments for the given helpers inside the block (nests)."""
    items = list(helpers) if isinstance(helpers, (list, tuple)) else [helpers]
    old = copy.deepcopy(_scope.current)
    for h in items:
        if not callable(h):
            raise ArgumentError(f"arg_scope takes helper functions, got {h!r}")
        _scope.current.setdefault(h.__name__, {}).update(kwargs)
    try:
        yield
    finally:
        _scope.current = old


def Register(helper: F) -> F:
    """Register ``helper`` (first argument: the model) with Caffe2's argument scoping."""
    name = helper.__name__
    spec = inspect.getfullargspec(helper)
    accepts_any = spec.varkw is not None
    names = set(spec.args) | set(spec.kwonlyargs)

    @functools.wraps(helper)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if args and isinstance(args[0], ModelHelper):
            model = args[0]
        elif isinstance(kwargs.get("model"), ModelHelper):
            model = kwargs["model"]
        else:
            raise ArgumentError(f"brew.{name}: the first argument must be the model (a ModelHelper)")
        merged = copy.deepcopy(model.arg_scope)
        if not accepts_any:
            merged = {k: v for k, v in merged.items() if k in names}
        merged.update(_scope.current.get(name, {}))
        merged.update(kwargs)
        return helper(*args, **merged)

    _helpers[name] = wrapper
    return wrapper  # type: ignore[return-value]


def has_helper(helper_or_name: str | Callable[..., Any]) -> bool:
    name = helper_or_name if isinstance(helper_or_name, str) else helper_or_name.__name__
    return name in _helpers


def _out(model: ModelHelper, blob_out: Any) -> Any:
    return blob_out or model.net.NextName()


def _param(model: ModelHelper, name: Any, shape: list[int], init: Initializer, tags: str) -> core.BlobReference:
    return model.create_param(param_name=name, shape=shape, initializer=init, tags=tags)


@Register
def fc(
    model: ModelHelper,
    blob_in: Any,
    blob_out: Any,
    dim_in: int,
    dim_out: int,
    weight_init: Any = None,
    bias_init: Any = None,
    WeightInitializer: Any = None,
    BiasInitializer: Any = None,
    **kwargs: Any,
) -> Any:
    """Fully connected: ``<out>_w`` [dim_out, dim_in] and ``<out>_b`` [dim_out]."""
    w_init = update_initializer(WeightInitializer, weight_init, ("XavierFill", {}))
    b_init = update_initializer(BiasInitializer, bias_init, ("ConstantFill", {}))
    if not model.init_params:
        w_init = b_init = ExternalInitializer()
    blob_out = _out(model, blob_out)
    weight = _param(model, blob_out + "_w", [dim_out, dim_in], w_init, ParameterTags.WEIGHT)
    bias = _param(model, blob_out + "_b", [dim_out], b_init, ParameterTags.BIAS)
    return model.net.FC([blob_in, weight, bias], blob_out, **kwargs)


@Register
def conv(
    model: ModelHelper,
    blob_in: Any,
    blob_out: Any,
    dim_in: int,
    dim_out: int,
    kernel: int | list[int],
    weight_init: Any = None,
    bias_init: Any = None,
    WeightInitializer: Any = None,
    BiasInitializer: Any = None,
    group: int = 1,
    transform_inputs: Any = None,
    use_cudnn: bool = False,
    order: str = "NCHW",
    cudnn_exhaustive_search: bool = False,
    ws_nbytes_limit: int | None = None,
    float16_compute: bool = False,
    **kwargs: Any,
) -> Any:
    """2-D convolution: ``<out>_w`` [dim_out, dim_in/group, kh, kw] (NCHW) and ``<out>_b``."""
    if isinstance(kernel, (list, tuple)):
        if len(kernel) != 2:
            raise ArgumentError(f"brew.conv: kernel must be an int or 2 ints, got {kernel!r}")
        kernels = [int(k) for k in kernel]
    else:
        kernels = [int(kernel)] * 2
    engine = kwargs.get("engine")
    if engine is not None and use_cudnn != (engine == "CUDNN"):
        raise ArgumentError(f"brew.conv: engine '{engine}' contradicts use_cudnn={use_cudnn}")
    if use_cudnn:
        kwargs["engine"] = "CUDNN"
        kwargs["exhaustive_search"] = cudnn_exhaustive_search
        if ws_nbytes_limit:
            kwargs["ws_nbytes_limit"] = ws_nbytes_limit
    use_bias = not kwargs.pop("no_bias", False)
    blob_out = _out(model, blob_out)
    if order == "NCHW":
        w_shape = [dim_out, int(dim_in / group), *kernels]
    else:
        w_shape = [dim_out, *kernels, int(dim_in / group)]
    w_init = update_initializer(WeightInitializer, weight_init, ("XavierFill", {}))
    b_init = update_initializer(BiasInitializer, bias_init, ("ConstantFill", {}))
    if not model.init_params:
        w_init = b_init = ExternalInitializer()
    weight = _param(model, blob_out + "_w", w_shape, w_init, ParameterTags.WEIGHT)
    inputs = [blob_in, weight]
    if use_bias:
        inputs.append(_param(model, blob_out + "_b", [dim_out], b_init, ParameterTags.BIAS))
    if transform_inputs is not None:
        transform_inputs(model, blob_out, inputs)
    if float16_compute:
        kwargs["float16_compute"] = True
    if group != 1:
        kwargs["group"] = group
    if isinstance(kernel, (list, tuple)):
        return model.net.Conv(inputs, blob_out, kernel_h=kernels[0], kernel_w=kernels[1], order=order, **kwargs)
    return model.net.Conv(inputs, blob_out, kernel=kernels[0], order=order, **kwargs)


def _cudnn(kwargs: dict[str, Any], use_cudnn: bool) -> dict[str, Any]:
    if use_cudnn:
        kwargs["engine"] = "CUDNN"
    return kwargs


@Register
def relu(
    model: ModelHelper, blob_in: Any, blob_out: Any, use_cudnn: bool = False, order: str = "NCHW", **kwargs: Any
) -> Any:
    return model.net.Relu(blob_in, blob_out, order=order, **_cudnn(kwargs, use_cudnn))


@Register
def sigmoid(model: ModelHelper, blob_in: Any, blob_out: Any, use_cudnn: bool = False, **kwargs: Any) -> Any:
    return model.net.Sigmoid(blob_in, blob_out, **_cudnn(kwargs, use_cudnn))


@Register
def tanh(
    model: ModelHelper, blob_in: Any, blob_out: Any, use_cudnn: bool = False, order: str = "NCHW", **kwargs: Any
) -> Any:
    return model.net.Tanh(blob_in, blob_out, **_cudnn(kwargs, use_cudnn))


@Register
def softmax(model: ModelHelper, blob_in: Any, blob_out: Any = None, use_cudnn: bool = False, **kwargs: Any) -> Any:
    kwargs = _cudnn(kwargs, use_cudnn)
    if blob_out is not None:
        return model.net.Softmax(blob_in, blob_out, **kwargs)
    return model.net.Softmax(blob_in, **kwargs)


@Register
def max_pool(
    model: ModelHelper, blob_in: Any, blob_out: Any, use_cudnn: bool = False, order: str = "NCHW", **kwargs: Any
) -> Any:
    return model.net.MaxPool(blob_in, blob_out, order=order, **_cudnn(kwargs, use_cudnn))


@Register
def average_pool(
    model: ModelHelper, blob_in: Any, blob_out: Any, use_cudnn: bool = False, order: str = "NCHW", **kwargs: Any
) -> Any:
    return model.net.AveragePool(blob_in, blob_out, order=order, **_cudnn(kwargs, use_cudnn))


@Register
def spatial_bn(
    model: ModelHelper,
    blob_in: Any,
    blob_out: Any,
    dim_in: int,
    init_scale: float = 1.0,
    init_bias: float = 0.0,
    ScaleInitializer: Any = None,
    BiasInitializer: Any = None,
    RunningMeanInitializer: Any = None,
    RunningVarianceInitializer: Any = None,
    order: str = "NCHW",
    **kwargs: Any,
) -> Any:
    """Spatial batch norm: scale ``_s``, bias ``_b``, running mean ``_rm`` and inverse var ``_riv``."""
    blob_out = _out(model, blob_out)
    inits: list[Initializer] = [
        update_initializer(ScaleInitializer, ("ConstantFill", {"value": init_scale}), ("ConstantFill", {})),
        update_initializer(BiasInitializer, ("ConstantFill", {"value": init_bias}), ("ConstantFill", {})),
        update_initializer(RunningMeanInitializer, ("ConstantFill", {"value": 0.0}), ("ConstantFill", {})),
        update_initializer(RunningVarianceInitializer, ("ConstantFill", {"value": 1.0}), ("ConstantFill", {})),
    ]
    if not model.init_params:
        inits = [ExternalInitializer()] * 4
    scale = _param(model, blob_out + "_s", [dim_in], inits[0], ParameterTags.WEIGHT)
    bias = _param(model, blob_out + "_b", [dim_in], inits[1], ParameterTags.BIAS)
    rm = _param(model, blob_out + "_rm", [dim_in], inits[2], ParameterTags.COMPUTED_PARAM)
    riv = _param(model, blob_out + "_riv", [dim_in], inits[3], ParameterTags.COMPUTED_PARAM)
    ins = [blob_in, scale, bias, rm, riv]
    if kwargs.get("is_test"):
        return model.net.SpatialBN(ins, [blob_out], order=order, **kwargs)
    outs = [blob_out, rm, riv, blob_out + "_sm", blob_out + "_siv"]
    return model.net.SpatialBN(ins, outs, order=order, **kwargs)[0]


@Register
def dropout(model: ModelHelper, blob_in: Any, blob_out: Any, use_cudnn: bool = False, **kwargs: Any) -> Any:
    """Dropout; ``is_test`` is required, as in Caffe2."""
    kwargs["engine"] = "CUDNN" if use_cudnn else "DEFAULT"
    if "is_test" not in kwargs:
        raise ArgumentError("brew.dropout: argument 'is_test' is required")
    return model.net.Dropout(blob_in, [blob_out, "_" + str(blob_out) + "_mask"], **kwargs)[0]


@Register
def concat(model: ModelHelper, blobs_in: Any, blob_out: Any, **kwargs: Any) -> Any:
    """Concatenate along ``axis`` (or the channel of ``order``); returns the output."""
    if kwargs.get("order") and kwargs.get("axis") is not None:
        kwargs.pop("order")
    return model.net.Concat(blobs_in, [blob_out, "_" + str(blob_out) + "_concat_dims"], **kwargs)[0]


@Register
def depth_concat(model: ModelHelper, blobs_in: Any, blob_out: Any, **kwargs: Any) -> Any:
    return concat(model, blobs_in, blob_out, **kwargs)


@Register
def sum(model: ModelHelper, blob_in: Any, blob_out: Any, **kwargs: Any) -> Any:  # noqa: A001 - Caffe2's name
    return model.net.Sum(blob_in, blob_out, **kwargs)


@Register
def transpose(model: ModelHelper, blob_in: Any, blob_out: Any, use_cudnn: bool = False, **kwargs: Any) -> Any:
    return model.net.Transpose(blob_in, blob_out, **_cudnn(kwargs, use_cudnn))


@Register
def mat_mul(model: ModelHelper, blob_in: Any, blob_out: Any, **kwargs: Any) -> Any:
    return model.net.MatMul(blob_in, blob_out, **kwargs)


@Register
def prelu(
    model: ModelHelper, blob_in: Any, blob_out: Any, num_channels: int = 1, slope_init: Any = None, **kwargs: Any
) -> Any:
    init = update_initializer(None, slope_init, ("ConstantFill", {"value": 0.25}))
    if not model.init_params:
        init = ExternalInitializer()
    slope = _param(model, str(blob_out) + "_slope", [num_channels], init, ParameterTags.WEIGHT)
    return model.net.PRelu([blob_in, slope], [blob_out])


@Register
def accuracy(model: ModelHelper, blob_in: Any, blob_out: Any, **kwargs: Any) -> Any:
    """Top-k accuracy of predictions against labels (only ``top_k`` is passed on, as in Caffe2)."""
    dev = kwargs.get("device_option", CurrentDeviceScope())
    extra = {"top_k": kwargs["top_k"]} if "top_k" in kwargs else {}
    if dev is not None:
        extra["device_option"] = dev
    return model.net.Accuracy(blob_in, blob_out, **extra)


@Register
def iter(model: ModelHelper, blob_out: Any, **kwargs: Any) -> Any:  # noqa: A001 - Caffe2's name
    """An int64 iteration counter, zeroed by the init net and incremented by the net."""
    kwargs.pop("device_option", None)
    model.param_init_net.ConstantFill(
        [],
        blob_out,
        shape=[1],
        value=0,
        dtype=core.DataType.INT64,
        device_option=core.DeviceOption(0, 0),
        **kwargs,
    )
    return model.net.Iter(blob_out, blob_out, **kwargs)


@Register
def lrn(
    model: ModelHelper, blob_in: Any, blob_out: Any, order: str = "NCHW", use_cudnn: bool = False, **kwargs: Any
) -> Any:
    cudnn = use_cudnn and not kwargs.get("is_test")
    if cudnn:
        kwargs["engine"] = "CUDNN"
        return model.net.LRN(blob_in, blob_out, order=order, **kwargs)
    return model.net.LRN(blob_in, [blob_out, "_" + str(blob_out) + "_scale"], order=order, **kwargs)[0]


@Register
def layer_norm(
    model: ModelHelper,
    blob_in: Any,
    blob_out: Any,
    dim_in: Any,
    axis: int = 1,
    epsilon: float = 1e-4,
    initial_scale: float = 1.0,
    initial_bias: float = 0.0,
) -> Any:
    """LayerNorm, then a learned scale ``_scale`` and bias ``_bias`` (broadcast from ``axis``);
    returns (output, mean, std) as Caffe2's helper does."""
    blob_out = _out(model, blob_out)
    shape = [dim_in] if isinstance(dim_in, int) else list(dim_in)
    scale = _param(
        model, f"{blob_out}_scale", shape, Initializer("ConstantFill", value=initial_scale), ParameterTags.WEIGHT
    )
    bias = _param(model, f"{blob_out}_bias", shape, Initializer("ConstantFill", value=initial_bias), ParameterTags.BIAS)
    normalized, mean, std = model.net.LayerNorm(
        [blob_in], [blob_out, blob_out + "_mean", blob_out + "_std"], axis=axis, epsilon=epsilon
    )
    scaled = model.net.Mul([normalized, scale], [blob_out + "_scaled"], broadcast=1, axis=axis)
    biased = model.net.Add([scaled, bias], [blob_out + "_biased"], broadcast=1, axis=axis)
    return biased, mean, std


@Register
def instance_norm(
    model: ModelHelper, blob_in: Any, blob_out: Any, dim_in: int, order: str = "NCHW", **kwargs: Any
) -> Any:
    """InstanceNorm with a scale ``_s`` (ones) and bias ``_b`` (zeros); training also outputs
    ``_sm`` and ``_siv``."""
    blob_out = _out(model, blob_out)
    scale = _param(model, blob_out + "_s", [dim_in], Initializer("ConstantFill", value=1.0), ParameterTags.WEIGHT)
    bias = _param(model, blob_out + "_b", [dim_in], Initializer("ConstantFill", value=0.0), ParameterTags.BIAS)
    if kwargs.get("is_test"):
        return model.net.InstanceNorm([blob_in, scale, bias], [blob_out], order=order, **kwargs)
    outs = model.net.InstanceNorm(
        [blob_in, scale, bias], [blob_out, blob_out + "_sm", blob_out + "_siv"], order=order, **kwargs
    )
    return outs[0]
