"""The Caffe -> Caffe2 translation driver: headers, phase rules, fusion, external blobs.

Decisions (documented in the CLI help too):

* The net is translated for inference in Caffe's TEST phase by default (``phase``),
  honouring layers' include/exclude rules like Caffe does.
* Data layers (Data, ImageData, HDF5Data, MemoryData, WindowData) become external inputs;
  their shapes come from ``input_shapes`` or, when unambiguous, from their parameters.
* Loss and Accuracy layers are training-only: they are dropped with a logged note
  unless ``include_loss`` is set, in which case SoftmaxWithLoss and Accuracy map to the
  Caffe2 ops of the same name and other loss layers are refused.
* BatchNorm followed by a Scale on its output is fused into one SpatialBN (as in the
  Caffe2 model zoo); otherwise BatchNorm -> SpatialBN (unit scale) and Scale -> Mul/Add.
* Without a caffemodel, parameters are created by seeded fill ops in the init net
  (the layer's filler when it names one, else Xavier for weights, zeros for biases).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncnet.caffe.elementwise  # noqa: F401  (registers translators)
import asyncnet.caffe.layers  # noqa: F401  (registers translators)
from asyncnet.caffe.context import TRANSLATORS, Emitted, LayerCtx, Names, Param, Shape
from asyncnet.caffe.layers import spatial_bn
from asyncnet.caffe.reader import CaffeNet, read_caffemodel, read_prototxt
from asyncnet.caffe.weights import build_init_net, pretrained_blobs
from asyncnet.errors import NetDefinitionError, UnsupportedError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.proto import caffe_pb2 as cpb

log = logging.getLogger(__name__)

# Translators of layers that carry learned blobs (a caffemodel should provide them).
_WEIGHTED = {TRANSLATORS[t] for t in ("Convolution", "Deconvolution", "InnerProduct", "BatchNorm", "Scale", "PReLU")}
DATA_LAYERS = frozenset({"Data", "ImageData", "HDF5Data", "MemoryData", "WindowData", "VideoData", "AnnotatedData"})


@dataclass
class Translation:
    """Result of a translation.

    Attributes:
        predict: the Caffe2 predict net (external inputs: data blobs, then parameters).
        init: the init net creating every parameter.
        input_shapes: data input name -> shape (what to feed the predict net).
        blob_shapes: every Caffe blob name -> shape, as Caffe computes it.
        params: the parameters, in init-net order.
        notes: human-readable remarks (dropped layers, missing pretrained weights).
    """

    predict: pb.NetDef
    init: pb.NetDef
    input_shapes: dict[str, Shape]
    blob_shapes: dict[str, Shape]
    params: list[Param] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _state_meets_rule(state: cpb.NetState, rule: cpb.NetStateRule) -> bool:
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    stages = set(state.stage)
    if any(s not in stages for s in rule.stage):
        return False
    return not any(s in stages for s in rule.not_stage)


def layer_included(state: cpb.NetState, layer: cpb.LayerParameter) -> bool:
    """Caffe's Net::FilterNet rule: included unless excluded; include rules must match one."""
    if layer.include:
        return any(_state_meets_rule(state, r) for r in layer.include)
    return not any(_state_meets_rule(state, r) for r in layer.exclude)


def _is_training_only(layer_type: str) -> bool:
    return layer_type.endswith("Loss") or layer_type == "Accuracy"


def _header_inputs(net: cpb.NetParameter, source: str) -> dict[str, Shape | None]:
    """Inputs declared by the legacy ``input:`` header with ``input_shape``/``input_dim``."""
    names = list(net.input)
    out: dict[str, Shape | None] = {n: None for n in names}
    if net.input_shape:
        if len(net.input_shape) != len(names):
            raise NetDefinitionError(f"{source}: {len(names)} input(s) but {len(net.input_shape)} input_shape entries")
        for n, s in zip(names, net.input_shape):
            out[n] = tuple(int(d) for d in s.dim)
    elif net.input_dim:
        dims = [int(d) for d in net.input_dim]
        if len(dims) != 4 * len(names):
            raise NetDefinitionError(
                f"{source}: {len(names)} input(s) need {4 * len(names)} input_dim values, found {len(dims)}"
            )
        for i, n in enumerate(names):
            out[n] = tuple(dims[4 * i : 4 * i + 4])
    return out


def _named_files(layer: cpb.LayerParameter) -> list[str]:
    """Paths a data layer names (sources, mean files). The translator opens none of them: only the
    prototxt and caffemodel the user names are read, so a net file cannot make it read anything else."""
    params = (
        layer.data_param,
        layer.image_data_param,
        layer.hdf5_data_param,
        layer.window_data_param,
        layer.transform_param,
    )
    found = [getattr(p, f) for p in params for f in ("source", "mean_file") if f in p.DESCRIPTOR.fields_by_name]
    return [f for f in found if f]


def _data_layer_shapes(layer: cpb.LayerParameter) -> list[Shape | None]:
    """Top shapes of a data layer when its parameters determine them (else None)."""
    tops = len(layer.top)
    data: Shape | None = None
    batch = 0
    if layer.type == "MemoryData":
        p = layer.memory_data_param
        batch = int(p.batch_size)
        data = (batch, int(p.channels), int(p.height), int(p.width))
    elif layer.type in ("Data", "ImageData", "WindowData"):
        batch = int(
            layer.data_param.batch_size
            if layer.type == "Data"
            else layer.image_data_param.batch_size
            if layer.type == "ImageData"
            else layer.window_data_param.batch_size
        )
        crop = int(layer.transform_param.crop_size)
        color = layer.image_data_param.is_color if layer.type == "ImageData" else True
        if crop and batch:
            data = (batch, 3 if color else 1, crop, crop)
    shapes: list[Shape | None] = [data]
    if tops > 1:
        shapes.append((batch,) if batch else None)
    return shapes + [None] * (tops - len(shapes))


def _can_fuse(layers: Sequence[cpb.LayerParameter], i: int, included: Sequence[bool]) -> bool:
    bn = layers[i]
    if i + 1 >= len(layers) or not included[i + 1]:
        return False
    sc = layers[i + 1]
    if sc.type != "Scale" or list(sc.bottom) != [bn.top[0]] or len(sc.top) != 1 or len(bn.top) != 1:
        return False
    if sc.scale_param.axis != 1 or sc.scale_param.num_axes != 1:
        return False
    if sc.top[0] == bn.top[0]:
        return True
    # Fusing hides BatchNorm's own output: only safe when nothing else reads it.
    return not any(bn.top[0] in lay.bottom for j, lay in enumerate(layers) if j > i + 1 and included[j])


def translate(
    cnet: CaffeNet,
    weights: cpb.NetParameter | None = None,
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    phase: str = "TEST",
    stages: Sequence[str] = (),
    level: int = 0,
    include_loss: bool = False,
    fuse_batchnorm: bool = True,
    remove_legacy_pad: bool = False,
    seed: int = 0,
    name: str | None = None,
) -> Translation:
    """Translate a parsed Caffe net (and optional caffemodel) to Caffe2 predict + init nets.

    Args:
        cnet: the net from :func:`asyncnet.caffe.read_prototxt`.
        weights: a caffemodel from :func:`asyncnet.caffe.read_caffemodel`, or None for
            seeded random parameters.
        input_shapes: shapes for input blobs, overriding (or supplying) the header's.
        phase: "TEST" (default, inference) or "TRAIN": selects layers by include/exclude.
        stages, level: the rest of Caffe's NetState.
        include_loss: keep SoftmaxWithLoss/Accuracy layers instead of dropping them.
        fuse_batchnorm: fold BatchNorm + Scale pairs into SpatialBN.
        remove_legacy_pad: give ceil-rounded pooling explicit extra padding instead of
            Caffe2's ``legacy_pad`` argument (what the Caffe2 model zoo nets carry).
        seed: first random seed of the generated fill ops.
        name: the predict net's name (default: the prototxt's, else the file stem).

    Raises:
        UnsupportedError: a layer type (or a setting of it) has no Caffe2 translation;
            the message names the layer, its type and line.
        NetDefinitionError: inputs/bottoms do not fit together.
    """
    net = cnet.net
    source = cnet.source
    if phase not in ("TEST", "TRAIN"):
        raise NetDefinitionError(f"phase must be TEST or TRAIN, got '{phase}'")
    state = cpb.NetState(phase=cpb.TEST if phase == "TEST" else cpb.TRAIN, level=level, stage=list(stages))
    overrides = {k: tuple(int(d) for d in v) for k, v in (input_shapes or {}).items()}
    pretrained = pretrained_blobs(weights) if weights is not None else {}
    layers = list(net.layer)
    included = [layer_included(state, lay) for lay in layers]

    shapes: dict[str, Shape] = {}
    inputs: list[str] = []
    notes: list[str] = []
    unknown_inputs: list[str] = []

    def add_input(blob: str, shape: Shape | None, origin: str) -> None:
        shape = overrides.get(blob, shape)
        if shape is None:
            unknown_inputs.append(f"'{blob}' ({origin})")
            return
        shapes[blob] = shape
        inputs.append(blob)

    for blob, shape in _header_inputs(net, source).items():
        add_input(blob, shape, f"net input of {source}")

    names = Names([t for lay in layers for t in (*lay.top, *lay.bottom)])
    names.taken.update(shapes)
    ops: list[pb.OperatorDef] = []
    params: list[Param] = []
    skip_next = False
    produced: list[str] = []
    for i, layer in enumerate(layers):
        where = cnet.where(i)
        label = f"layer '{layer.name}' (type {layer.type}) at {where}"
        if skip_next:
            skip_next = False
            continue
        if not included[i]:
            log.info("%s: excluded in phase %s", label, phase)
            continue
        if layer.type == "Input":
            p = layer.input_param
            given = [tuple(int(d) for d in s.dim) for s in p.shape]
            if len(given) == 1:
                given = given * len(layer.top)
            for j, top in enumerate(layer.top):
                add_input(top, given[j] if j < len(given) else None, label)
            continue
        if layer.type in DATA_LAYERS:
            for top, shape in zip(layer.top, _data_layer_shapes(layer)):
                add_input(top, shape, label)
            files = _named_files(layer)
            unread = f"; the file(s) it names are never read: {', '.join(files)}" if files else ""
            notes.append(f"{label}: data layer -> external input(s) {list(layer.top)}{unread}")
            continue
        if layer.type == "Python":
            py = layer.python_param
            raise UnsupportedError(
                f"{label}: Python layers run user code (module '{py.module}', class '{py.layer}') "
                "and cannot be translated"
            )
        if _is_training_only(layer.type) and not include_loss:
            note = f"{label}: training-only layer dropped (use include_loss / --include-loss to keep it)"
            log.info(note)
            notes.append(note)
            continue
        fn = TRANSLATORS.get(layer.type)
        if fn is None:
            raise UnsupportedError(
                f"{label}: no translation for Caffe layer type '{layer.type}'; supported: "
                + ", ".join(sorted({*TRANSLATORS, "Input", *DATA_LAYERS}))
            )
        if unknown_inputs:
            raise NetDefinitionError(
                f"{source}: the shape of input(s) {', '.join(unknown_inputs)} is unknown; "
                "give it with input_shapes / --input-shape NAME=D0,D1,..."
            )
        missing = [b for b in layer.bottom if b not in shapes]
        if missing:
            hidden = [lay.name for j, lay in enumerate(layers[:i]) if not included[j] and set(lay.top) & set(missing)]
            hint = f" (layers {hidden} that produce them are excluded in phase {phase}, stages {list(stages)})"
            raise NetDefinitionError(
                f"{label}: bottom blob(s) {missing} are not produced by any earlier layer nor net inputs"
                + (hint if hidden else "")
            )
        blobs = pretrained.get(layer.name, [])
        if weights is not None and not blobs and fn in _WEIGHTED:
            notes.append(f"{label}: not in the caffemodel; its parameters are generated")
        ctx = LayerCtx(layer, i, where, [shapes[b] for b in layer.bottom], blobs, names)
        ctx.remove_legacy_pad = remove_legacy_pad
        if layer.type == "BatchNorm" and fuse_batchnorm and _can_fuse(layers, i, included):
            scale_layer = layers[i + 1]
            emitted: Emitted = spatial_bn(
                ctx, layer, scale_layer.top[0], scale_layer, pretrained.get(scale_layer.name, [])
            )
            tops = list(scale_layer.top)
            skip_next = True
        else:
            emitted = fn(ctx)
            tops = list(layer.top)
        if len(emitted.shapes) != len(tops):
            raise UnsupportedError(f"{label}: translator gave {len(emitted.shapes)} shapes for {len(tops)} tops")
        for top, shape in zip(tops, emitted.shapes):
            shapes[top] = shape
            produced.append(top)
        ops.extend(emitted.ops)
        params.extend(emitted.params)

    if unknown_inputs:
        raise NetDefinitionError(
            f"{source}: the shape of input(s) {', '.join(unknown_inputs)} is unknown; "
            "give it with input_shapes / --input-shape NAME=D0,D1,..."
        )
    stray = sorted(set(overrides) - set(inputs))
    if stray:
        raise NetDefinitionError(f"{source}: --input-shape names {stray}, which are not inputs; inputs: {inputs}")

    read = {b for op in ops for b in op.input}
    used_inputs = [b for b in inputs if b in read]
    for b in inputs:
        if b not in read:
            notes.append(f"input '{b}' is read by no translated layer; left out of the net's inputs")
    outputs = _final_outputs(ops, produced)
    net_name = name or net.name or Path(source).stem
    predict = pb.NetDef(name=net_name)
    predict.op.extend(ops)
    predict.external_input.extend(used_inputs)
    predict.external_input.extend(p.name for p in params)
    predict.external_output.extend(outputs)
    init = build_init_net(params, f"{net_name}_init", seed)
    return Translation(
        predict=predict,
        init=init,
        input_shapes={b: shapes[b] for b in used_inputs},
        blob_shapes=dict(shapes),
        params=params,
        notes=notes,
    )


def _final_outputs(ops: Sequence[pb.OperatorDef], produced: Sequence[str]) -> list[str]:
    """Layer tops that no op reads after their last write (the net's results)."""
    last_write: dict[str, int] = {}
    last_read: dict[str, int] = {}
    for i, op in enumerate(ops):
        for b in op.input:
            last_read[b] = i
        for b in op.output:
            last_write[b] = i
    # An in-place op reads and writes at the same index: its result is still unread.
    return [b for b in dict.fromkeys(produced) if b in last_write and last_read.get(b, -1) <= last_write[b]]


def translate_files(
    prototxt: str | os.PathLike[str], caffemodel: str | os.PathLike[str] | None = None, **kwargs: object
) -> Translation:
    """Read ``prototxt`` (and ``caffemodel``) and translate; keyword arguments as :func:`translate`."""
    cnet = read_prototxt(prototxt)
    weights = read_caffemodel(caffemodel) if caffemodel is not None else None
    return translate(cnet, weights, **kwargs)  # type: ignore[arg-type]


def value_info(t: Translation) -> dict[str, list[object]]:
    """Model-zoo style ``value_info.json`` content: input -> [data type, shape]."""
    return {k: [int(pb.TensorProto.FLOAT), list(v)] for k, v in t.input_shapes.items()}
