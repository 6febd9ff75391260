"""``torch.ops._caffe2.<Op>``: asyncnet kernels as torch operators, as Caffe2-enabled torch builds had.

Caffe2 exported some of its CPU operators to PyTorch's dispatcher (``torch.ops._caffe2.Gelu(x,
fast_gelu)`` ...). :func:`register_torch_ops` defines the same names with ``torch.library``; each
call converts the tensors to numpy, runs the asyncnet kernel once and returns torch tensors.
Needs the optional ``torch`` dependency (imported only here). The schemas below follow the
argument order and names of Caffe2's exports (tensors first, then the operator's arguments); an
argument left at ``None`` is not set, so asyncnet's (= Caffe2's) default applies.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from asyncnet.errors import AsyncNetError, UnsupportedError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import make_argument

__all__ = ["TORCH_OPS", "register_torch_ops"]


def _levels(args: dict[str, Any]) -> int:
    """FPN levels roi_min_level .. roi_max_level (Caffe2's defaults 2 and 5)."""
    hi = 5 if args.get("roi_max_level") is None else int(args["roi_max_level"])
    lo = 2 if args.get("roi_min_level") is None else int(args["roi_min_level"])
    return hi - lo + 1


# name -> (schema, number of outputs; a callable computes it from the arguments for Tensor[] results)
TORCH_OPS: dict[str, tuple[str, int | Callable[[dict[str, Any]], int]]] = {
    "Gelu": ("(Tensor X, bool? fast_gelu=None) -> Tensor", 1),
    "LayerNorm": (
        "(Tensor input, Tensor? gamma=None, Tensor? beta=None, int? axis=None, float? epsilon=None, "
        "bool? elementwise_affine=None) -> (Tensor, Tensor, Tensor)",
        3,
    ),
    "LengthsSum": ("(Tensor data, Tensor lengths) -> Tensor", 1),
    "LengthsMean": ("(Tensor data, Tensor lengths) -> Tensor", 1),
    "LengthsMax": ("(Tensor data, Tensor lengths) -> Tensor", 1),
    "ResizeNearest": (
        "(Tensor X, str? order=None, float? width_scale=None, float? height_scale=None) -> Tensor",
        1,
    ),
    "PiecewiseLinearTransform": (
        "(Tensor predictions, float[] bounds, float[] slopes, float[] intercepts, bool? binary=None) -> Tensor",
        1,
    ),
    "IndexHash": ("(Tensor indices, int? seed=None, int? modulo=None) -> Tensor", 1),
    "Bucketize": ("(Tensor X, float[] boundaries) -> Tensor", 1),
    "BatchBucketOneHot": ("(Tensor data, Tensor lengths, Tensor boundaries) -> Tensor", 1),
    "Percentile": ("(Tensor original_values, Tensor value_to_pct, Tensor lengths) -> Tensor", 1),
    "MergeIdLists": ("(Tensor[] lengths_values) -> (Tensor, Tensor)", 2),
    "PackSegments": (
        "(Tensor lengths, Tensor tensor, int? max_length=None, bool? pad_minf=None, "
        "bool? return_presence_mask=None) -> (Tensor, Tensor)",
        2,
    ),
    "UnpackSegments": ("(Tensor lengths, Tensor tensor, int? max_length=None) -> Tensor", 1),
    "LearningRate": (
        "(Tensor iterations, float base_lr, str policy, float? power=None, float? gamma=None, "
        "int? stepsize=None, float? max_lr=None, int? max_iter=None, int? num_iter=None, "
        "float? start_multiplier=None, float? end_multiplier=None, float? multiplier=None) -> Tensor",
        1,
    ),
    "GatherRangesToDense": (
        "(Tensor data, Tensor ranges, Tensor? key=None, int[] lengths=[], int? min_observation=None, "
        "float? max_mismatched_ratio=None, float? max_empty_ratio=None) -> Tensor[]",
        lambda a: len(a["lengths"]),
    ),
    "Logit": ("(Tensor X, float? eps=None) -> Tensor", 1),
    "InferenceLSTM": (
        "(Tensor[] input_list, int? num_layers=None, bool? has_biases=None, bool? batch_first=None, "
        "bool? bidirectional=None) -> (Tensor, Tensor, Tensor)",
        3,
    ),
    "CollectRpnProposals": (
        "(Tensor[] input_list, int? rpn_max_level=None, int? rpn_min_level=None, "
        "int? rpn_post_nms_topN=None) -> Tensor",
        1,
    ),
    # RoIs per level (roi_min_level .. roi_max_level, Caffe2's defaults 2 .. 5) and the restore index.
    "DistributeFpnProposals": (
        "(Tensor rois, int? roi_canonical_scale=None, int? roi_canonical_level=None, int? roi_max_level=None, "
        "int? roi_min_level=None, bool? legacy_plus_one=None) -> Tensor[]",
        lambda a: _levels(a) + 1,
    ),
    "CollectAndDistributeFpnRpnProposals": (
        "(Tensor[] input_list, int? roi_canonical_scale=None, int? roi_canonical_level=None, "
        "int? roi_max_level=None, int? roi_min_level=None, int? rpn_max_level=None, int? rpn_min_level=None, "
        "int? rpn_post_nms_topN=None, bool? legacy_plus_one=None) -> Tensor[]",
        lambda a: _levels(a) + 2,
    ),
    "Fused8BitRowwiseQuantizedToFloat": ("(Tensor scale_bias_quantized_input) -> Tensor", 1),
    "SparseToDenseMask": (
        "(Tensor indices, Tensor values, Tensor default_value, Tensor? lengths, int[] mask, "
        "bool? return_presence_mask=None, int? max_skipped_indices=None) -> (Tensor, Tensor)",
        2,
    ),
    "RoIAlign": (
        "(Tensor features, Tensor rois, str? order=None, float? spatial_scale=None, int? pooled_h=None, "
        "int? pooled_w=None, int? sampling_ratio=None, bool? aligned=None) -> Tensor",
        1,
    ),
    "RoIAlignRotated": (
        "(Tensor features, Tensor rois, str? order=None, float? spatial_scale=None, int? pooled_h=None, "
        "int? pooled_w=None, int? sampling_ratio=None, bool? aligned=None) -> Tensor",
        1,
    ),
    "BBoxTransform": (
        "(Tensor rois, Tensor deltas, Tensor im_info, float[] weights, bool apply_scale, bool rotated, "
        "bool angle_bound_on, int angle_bound_lo, int angle_bound_hi, float clip_angle_thresh, "
        "bool legacy_plus_one) -> (Tensor, Tensor)",
        2,
    ),
    "GenerateProposals": (
        "(Tensor scores, Tensor bbox_deltas, Tensor im_info, Tensor anchors, float spatial_scale, "
        "int pre_nms_topN, int post_nms_topN, float nms_thresh, float min_size, bool angle_bound_on, "
        "int angle_bound_lo, int angle_bound_hi, float clip_angle_thresh, bool legacy_plus_one) "
        "-> (Tensor, Tensor)",
        2,
    ),
}

# Ops whose export is a plain tensor operation: AliasWithName returns its input itself (an alias
# that sees later in-place changes, as Caffe2's export).
_DIRECT: dict[str, tuple[str, Callable[..., Any]]] = {
    "AliasWithName": ("(Tensor(a) input, str name, bool is_backward=False) -> Tensor(a)", lambda *a: a[0]),
}

# Outputs that exist only when an argument asks for them (the export always returns them, empty).
_OPTIONAL_LAST_OUTPUT = {"PackSegments": "return_presence_mask", "SparseToDenseMask": "return_presence_mask"}

_PARAM = re.compile(r"^\s*(?P<type>[\w\[\]?]+)\s+(?P<name>\w+)(?:\s*=\s*(?P<default>.+?))?\s*$")
_lock = threading.Lock()
_library: Any = None
_defined: set[str] = set()


def _params(schema: str) -> list[tuple[str, str, Any]]:
    """(type, name, default) of each parameter of ``schema`` (defaults: None, [] or required)."""
    inner = schema[schema.index("(") + 1 : schema.index(") ->")]
    out: list[tuple[str, str, Any]] = []
    for part in inner.split(","):
        m = _PARAM.match(part)
        if m is None:
            raise UnsupportedError(f"torch_ops: cannot parse the parameter '{part.strip()}' of {schema}")
        default = m.group("default")
        out.append((m.group("type"), m.group("name"), [] if default == "[]" else None))
    return out


def _run(op_type: str, params: list[tuple[str, str, Any]], n_out: Any, args: Sequence[Any]) -> Any:
    import torch

    from asyncnet.workspace import Workspace

    values = {name: (args[i] if i < len(args) else default) for i, (_, name, default) in enumerate(params)}
    op = pb.OperatorDef(type=op_type)
    feeds: dict[str, np.ndarray] = {}
    for typ, name, _ in params:
        v = values[name]
        if typ.startswith("Tensor"):
            tensors = v if typ.startswith("Tensor[]") else [v]
            for k, t in enumerate(tensors):
                if t is None:
                    continue
                blob = f"{name}_{k}"
                feeds[blob] = t.detach().cpu().numpy()
                op.input.append(blob)
        elif v is not None:
            op.arg.append(make_argument(name, list(v) if isinstance(v, (list, tuple)) else v))
    count = n_out(values) if callable(n_out) else n_out
    flag = _OPTIONAL_LAST_OUTPUT.get(op_type)
    produced = count - 1 if flag is not None and not values.get(flag) else count
    op.output.extend(f"out_{k}" for k in range(produced))
    with Workspace(f"torch_ops.{op_type}") as ws:
        for blob, arr in feeds.items():
            ws.feed(blob, arr)
        try:
            ws.run_operator_once(op)
        except AsyncNetError as e:
            raise RuntimeError(str(e)) from e
        outs = [torch.from_numpy(np.ascontiguousarray(ws.fetch(f"out_{k}"))) for k in range(produced)]
    outs += [torch.empty(0)] * (count - produced)
    if callable(n_out):
        return outs
    return outs[0] if count == 1 else tuple(outs)


def register_torch_ops(names: Sequence[str] | None = None) -> list[str]:
    """Define ``torch.ops._caffe2.<name>`` for the operators of :data:`TORCH_OPS` and AliasWithName
    (all by default).

    Idempotent; returns the names defined by this call. Raises UnsupportedError without torch.
    """
    global _library
    try:
        import torch
    except ImportError as e:
        raise UnsupportedError(
            "torch.ops._caffe2 needs PyTorch: pip install 'asyncnet[distributed]' (the extra that brings torch)"
        ) from e
    done: list[str] = []
    with _lock:
        if _library is None:
            _library = torch.library.Library("_caffe2", "FRAGMENT")  # type: ignore[no-untyped-call]
        for name in names or [*TORCH_OPS, *_DIRECT]:
            if name in _defined:
                continue
            if name in _DIRECT:
                schema, direct = _DIRECT[name]
                _library.define(name + schema)
                _library.impl(name, direct, "CPU")
                _defined.add(name)
                done.append(name)
                continue
            schema, n_out = TORCH_OPS[name]
            _library.define(name + schema)
            params = _params(schema)

            def impl(*args: Any, _t: str = name, _p: Any = params, _n: Any = n_out) -> Any:
                return _run(_t, _p, _n, args)

            _library.impl(name, impl, "CPU")
            _defined.add(name)
            done.append(name)
    return done
