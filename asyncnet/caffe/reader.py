"""Reading Caffe NetParameter files: prototxt with line numbers, caffemodels, V1 upgrade."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format
from google.protobuf.message import DecodeError

from asyncnet.errors import ParseError, UnsupportedError
from asyncnet.proto import caffe_pb2 as cpb
from asyncnet.serde import read_file_bytes

# V1 enum name -> today's layer type string (Caffe's own UpgradeV1LayerType table).
V1_TYPES: dict[str, str] = {
    "ABSVAL": "AbsVal",
    "ACCURACY": "Accuracy",
    "ARGMAX": "ArgMax",
    "BNLL": "BNLL",
    "CONCAT": "Concat",
    "CONTRASTIVE_LOSS": "ContrastiveLoss",
    "CONVOLUTION": "Convolution",
    "DATA": "Data",
    "DECONVOLUTION": "Deconvolution",
    "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData",
    "EUCLIDEAN_LOSS": "EuclideanLoss",
    "ELTWISE": "Eltwise",
    "EXP": "Exp",
    "FLATTEN": "Flatten",
    "HDF5_DATA": "HDF5Data",
    "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss",
    "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss",
    "INNER_PRODUCT": "InnerProduct",
    "LRN": "LRN",
    "MEMORY_DATA": "MemoryData",
    "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN",
    "POOLING": "Pooling",
    "POWER": "Power",
    "RELU": "ReLU",
    "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss",
    "SILENCE": "Silence",
    "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss",
    "SPLIT": "Split",
    "SLICE": "Slice",
    "TANH": "TanH",
    "WINDOW_DATA": "WindowData",
    "THRESHOLD": "Threshold",
}

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass
class CaffeNet:
    """A parsed Caffe net with every layer in today's ``LayerParameter`` form.

    Attributes:
        net: the NetParameter (V1 ``layers`` already upgraded into ``layer``).
        source: file name for messages.
        lines: 1-based line of each layer's block in the source text (0 when unknown).
        legacy_v1: whether the file used the V1 ``layers`` field.
    """

    net: cpb.NetParameter
    source: str = "<prototxt>"
    lines: list[int] = field(default_factory=list)
    legacy_v1: bool = False

    def where(self, index: int) -> str:
        """``deploy.prototxt:12`` for layer ``index``."""
        line = self.lines[index] if index < len(self.lines) else 0
        return f"{self.source}:{line}" if line else self.source


def layer_blocks(text: str) -> list[tuple[str, int, int]]:
    """Top-level ``layer``/``layers`` message blocks of a prototxt: (field, first line, last line).

    A tiny scanner (comments, quoted strings, braces) rather than the protobuf parser,
    so that it still works on files the parser rejects.
    """
    out: list[tuple[str, int, int]] = []
    depth = 0
    line = 1
    i = 0
    n = len(text)
    pending: tuple[str, int] | None = None
    last_ident: tuple[str, int] | None = None
    open_block: tuple[str, int] | None = None
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif c == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            i = j + 1
        elif c in "{<":
            if depth == 0:
                name = pending or last_ident
                open_block = name if name and name[0] in ("layer", "layers") else None
            depth += 1
            pending = last_ident = None
            i += 1
        elif c in "}>":
            depth -= 1
            if depth == 0 and open_block is not None:
                out.append((open_block[0], open_block[1], line))
                open_block = None
            i += 1
        elif c == ":":
            pending = last_ident
            i += 1
        else:
            m = _IDENT.match(text, i)
            if m:
                last_ident = (m.group(0), line)
                pending = None
                i = m.end()
            else:
                i += 1
    return out


def _block_summary(text: str, first: int, last: int) -> str:
    """``layer 'conv4_3_norm' (type Normalize)`` from the raw lines of a block."""
    lines = text.splitlines()[first - 1 : last]
    body = "\n".join(lines)
    name = re.search(r"\bname\s*:\s*[\"']([^\"']*)[\"']", body)
    typ = re.search(r"\btype\s*:\s*(?:[\"']([^\"']*)[\"']|([A-Z_0-9]+))", body)
    label = f"layer '{name.group(1)}'" if name else "layer"
    if typ:
        label += f" (type {typ.group(1) or typ.group(2)})"
    return label


def parse_prototxt(text: str, source: str = "<prototxt>") -> CaffeNet:
    """Parse a Caffe net definition (text format), upgrading V1 layers.

    Raises:
        ParseError: the text is not a valid ``caffe.NetParameter``; the message names the
            line, the field protobuf complains about and the enclosing layer.
    """
    net = cpb.NetParameter()
    blocks = layer_blocks(text)
    try:
        text_format.Parse(text, net)
    except text_format.ParseError as e:
        line = e.GetLine() if hasattr(e, "GetLine") else None
        where = ""
        if line:
            for _, first, last in blocks:
                if first <= line <= last:
                    where = f" in {_block_summary(text, first, last)} starting at line {first}"
                    break
        loc = f":{line}" if line else ""
        raise ParseError(
            f"{source}{loc}: not a valid BVLC Caffe NetParameter{where}: {e} "
            "(layers from Caffe forks, e.g. SSD's Normalize/PriorBox, are not supported)",
            source=source,
            line=line,
        ) from e
    v2_lines = [first for kind, first, _ in blocks if kind == "layer"]
    v1_lines = [first for kind, first, _ in blocks if kind == "layers"]
    result = CaffeNet(net=net, source=source)
    if net.layers:
        if net.layer:
            raise ParseError(
                f"{source}: mixes V1 'layers' and V2 'layer' fields; Caffe refuses such nets", source=source
            )
        upgrade_v1(net, source, v1_lines)
        result.legacy_v1 = True
        result.lines = v1_lines
    else:
        result.lines = v2_lines
    if len(result.lines) != len(net.layer):
        result.lines = [0] * len(net.layer)
    return result


def read_prototxt(path: str | os.PathLike[str]) -> CaffeNet:
    """Read a Caffe net definition file (``deploy.prototxt``, ``train_val.prototxt``)."""
    p = Path(path)
    data = read_file_bytes(p, "a Caffe prototxt")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError(
            f"{p}: not a text prototxt (binary data; a .caffemodel goes in the weights argument)", source=str(p)
        ) from None
    return parse_prototxt(text, str(p))


def read_caffemodel(path: str | os.PathLike[str]) -> cpb.NetParameter:
    """Read trained weights: a binary NetParameter (``.caffemodel``), V1 or V2 layers."""
    p = Path(path)
    data = read_file_bytes(p, "a .caffemodel")
    net = cpb.NetParameter()
    try:
        net.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise ParseError(f"{p}: not a valid binary caffemodel (caffe.NetParameter): {e}", source=str(p)) from e
    if not net.layer and not net.layers:
        raise ParseError(f"{p}: caffemodel holds no layers (is it a caffemodel?)", source=str(p))
    return net


def _v1_type_name(layer: cpb.V1LayerParameter) -> str:
    return cpb.V1LayerParameter.LayerType.Name(layer.type)


def upgrade_v1(net: cpb.NetParameter, source: str = "<prototxt>", lines: list[int] | None = None) -> None:
    """Move V1 ``layers`` into ``layer`` in place, the way Caffe's UpgradeV1Net does."""
    targets = {f.name for f in cpb.LayerParameter.DESCRIPTOR.fields}
    upgraded: list[cpb.LayerParameter] = []
    for i, old in enumerate(net.layers):
        where = f"{source}:{lines[i]}" if lines and i < len(lines) else source
        if old.HasField("layer"):
            raise UnsupportedError(
                f"{where}: layer '{old.name}' uses the V0 'layer' sub-message (pre-2014 Caffe); "
                "upgrade it with Caffe's upgrade_net_proto_text first"
            )
        kind = _v1_type_name(old)
        if kind not in V1_TYPES:
            raise UnsupportedError(f"{where}: layer '{old.name}' has V1 type {kind}, which has no V2 equivalent")
        new = cpb.LayerParameter(name=old.name, type=V1_TYPES[kind])
        new.bottom.extend(old.bottom)
        new.top.extend(old.top)
        new.blobs.extend(old.blobs)
        new.loss_weight.extend(old.loss_weight)
        new.include.extend(old.include)
        new.exclude.extend(old.exclude)
        for fd, value in old.ListFields():
            if fd.name.endswith("_param") and fd.name in targets and fd.message_type is not None:
                getattr(new, fd.name).CopyFrom(value)
        for j, lr in enumerate(old.blobs_lr):
            while len(new.param) <= j:
                new.param.add()
            new.param[j].lr_mult = lr
        for j, decay in enumerate(old.weight_decay):
            while len(new.param) <= j:
                new.param.add()
            new.param[j].decay_mult = decay
        for j, pname in enumerate(old.param):
            while len(new.param) <= j:
                new.param.add()
            new.param[j].name = pname
        upgraded.append(new)
    del net.layers[:]
    net.layer.extend(upgraded)
