"""Caffe2's ``model_helper.ModelHelper``: a net, its parameter init net and parameters."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from asyncnet.compat import core
from asyncnet.compat.initializers import Initializer, update_initializer
from asyncnet.compat.scope import CurrentNameScope
from asyncnet.errors import ArgumentError, NetDefinitionError
from asyncnet.proto import caffe2_pb2 as pb

log = logging.getLogger(__name__)


class ParameterTags:
    """Tags of ModelHelper.create_param (as Caffe2's parameter_info.ParameterTags)."""

    BIAS = "BIAS"
    WEIGHT = "WEIGHT"
    COMPUTED_PARAM = "COMPUTED_PARAM"


# Ops Caffe2's ModelHelper used without a warning when called as model.<Op>(...).
_KNOWN_WORKING_OPS = frozenset(
    "Accuracy Adam Add Adagrad SparseAdagrad Adadelta SparseAdadelta AveragedLoss Cast Checkpoint ConstantFill Copy "
    "CopyGPUToCPU CopyCPUToGPU DequeueBlobs EnsureCPUOutput ExpandDims Flatten FlattenToVec LabelCrossEntropy "
    "LearningRate MakeTwoClass MatMul NCCLAllreduce NHWC2NCHW PackSegments Print PRelu ReduceFrontSum Scale "
    "ScatterWeightedSum Sigmoid SortedSegmentSum Snapshot Softmax SoftmaxWithLoss SquaredL2Distance Squeeze "
    "StopGradient Summarize Tanh Transpose UnpackSegments WeightedSum YellowFin".split()
)
_warned: set[str] = set()


class ModelHelper:
    """Caffe2's ModelHelper: ``net``, ``param_init_net``, ``params`` and brew's arg scope.

    Args:
        name: model name; the net is called ``name`` and the init net ``name_init``.
        init_params: whether brew helpers add parameter fills to ``param_init_net``.
        arg_scope: defaults passed to brew helpers (``order``, ``use_cudnn``, ...).
    """

    def __init__(
        self,
        name: str | None = None,
        init_params: bool = True,
        allow_not_known_ops: bool = True,
        skip_sparse_optim: bool = False,
        param_model: ModelHelper | None = None,
        arg_scope: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name or "model"
        self.net = core.Net(self.name)
        if param_model is not None:
            self.param_init_net: core.Net = param_model.param_init_net
            self.param_to_grad: dict[Any, Any] = param_model.param_to_grad
            self.params: list[core.BlobReference] = param_model.params
            self._param_shapes: dict[str, list[int]] = param_model._param_shapes
            self._computed_params: list[core.BlobReference] = param_model._computed_params
        else:
            self.param_init_net = core.Net(self.name + "_init")
            self.param_to_grad = {}
            self.params = []
            self._param_shapes = {}
            self._computed_params = []
        self.gradient_ops_added = False
        self.grad_map: dict[str, core.BlobReference] = {}
        self.init_params = init_params
        self.allow_not_known_ops = allow_not_known_ops
        self.skip_sparse_optim = skip_sparse_optim
        self.weights: list[core.BlobReference] = []
        self.biases: list[core.BlobReference] = []
        self._arg_scope: dict[str, Any] = {"order": "NCHW", "use_cudnn": True, "cudnn_exhaustive_search": False}
        if arg_scope is not None:
            self._arg_scope.update(arg_scope)

    @property
    def arg_scope(self) -> dict[str, Any]:
        return self._arg_scope

    def get_name(self) -> str:
        return self.name

    # -- parameters ------------------------------------------------------------------

    def create_param(
        self,
        param_name: str | core.BlobReference,
        shape: list[int],
        initializer: Initializer | tuple[str, Mapping[str, Any]],
        tags: Any = None,
    ) -> core.BlobReference:
        """Create a parameter blob (a string name gets the current NameScope)."""
        if isinstance(param_name, core.BlobReference):
            name = str(param_name)
        elif isinstance(param_name, str):
            name = CurrentNameScope() + param_name
        else:
            raise ArgumentError(f"param_name must be a string or a BlobReference, got {type(param_name).__name__}")
        if name in self._param_shapes:
            if self._param_shapes[name] != list(shape):
                raise NetDefinitionError(
                    f"parameter '{name}' exists with shape {self._param_shapes[name]}, asked for {list(shape)}"
                )
            return next(p for p in (*self.params, *self._computed_params) if str(p) == name)
        init = (
            initializer if isinstance(initializer, Initializer) else update_initializer(None, initializer, initializer)
        )
        blob = init.create_param(core.BlobReference(name), self.param_init_net, shape)
        self._param_shapes[name] = list(shape)
        self.AddParameter(blob, tags)
        return blob

    @staticmethod
    def _normalize_tags(tags: Any) -> set[str]:
        if not tags:
            return set()
        return set(tags) if isinstance(tags, (list, tuple, set)) else {tags}

    def AddParameter(self, param: core.BlobReference, tags: Any = None) -> None:
        if not isinstance(param, core.BlobReference):
            raise ArgumentError(f"parameter {param!r} must be a BlobReference")
        tagset = self._normalize_tags(tags)
        if ParameterTags.COMPUTED_PARAM in tagset:
            self._computed_params.append(param)
        else:
            self.params.append(param)
        if ParameterTags.WEIGHT in tagset:
            self.weights.append(param)
        if ParameterTags.BIAS in tagset:
            self.biases.append(param)

    @staticmethod
    def _NormalizeNamescope(namescope: str | None) -> str:
        if namescope is None:
            return CurrentNameScope()
        if namescope == "" or namescope.endswith("/"):
            return namescope
        return namescope + "/"

    def GetParams(self, namescope: str | None = None, top_scope: bool = False) -> list[core.BlobReference]:
        """The parameters under ``namescope`` (default: the current NameScope)."""
        scope = self._NormalizeNamescope(namescope)
        if scope == "":
            return self.params[:]
        return [p for p in self.params if p.GetNameScope().startswith(scope)]

    def GetComputedParams(self, namescope: str | None = None) -> list[core.BlobReference]:
        """Parameters computed from data rather than trained (e.g. SpatialBN running stats)."""
        scope = self._NormalizeNamescope(namescope)
        if scope == "":
            return self._computed_params[:]
        return [p for p in self._computed_params if p.GetNameScope().startswith(scope)]

    def GetAllParams(self, namescope: str | None = None) -> list[core.BlobReference]:
        return self.GetParams(namescope) + self.GetComputedParams(namescope)

    def Validate(self) -> None:
        """Refuse duplicate parameters."""
        names = [str(p) for p in self.params]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise NetDefinitionError(f"model '{self.name}': duplicate params: {dupes}")

    # -- nets ----------------------------------------------------------------------

    def Proto(self) -> Any:
        return self.net.Proto()

    def InitProto(self) -> Any:
        return self.param_init_net.Proto()

    def RunAllOnGPU(self, *args: Any, **kwargs: Any) -> None:
        self.param_init_net.RunAllOnGPU(*args, **kwargs)
        self.net.RunAllOnGPU(*args, **kwargs)

    def AddGradientOperators(self, *args: Any, **kwargs: Any) -> dict[str, core.BlobReference]:
        """Append the backward pass to ``net``; fills ``param_to_grad``. Only once per model."""
        if self.gradient_ops_added:
            raise core.CompatError(f"model '{self.name}': AddGradientOperators was already called")
        self.Validate()
        self.gradient_ops_added = True
        self.grad_map = self.net.AddGradientOperators(*args, **kwargs)
        self.param_to_grad = self.get_param_to_grad(self.params)
        return self.grad_map

    def get_param_to_grad(self, params: list[core.BlobReference]) -> dict[core.BlobReference, core.BlobReference]:
        """param -> gradient blob for the given parameters (after AddGradientOperators)."""
        if not self.gradient_ops_added:
            raise core.CompatError(f"model '{self.name}': call AddGradientOperators first")
        return {p: self.grad_map[str(p)] for p in params if str(p) in self.grad_map}

    def __getattr__(self, op_type: str) -> Callable[..., Any]:
        """``model.Op(...)`` adds Op to ``model.net`` (ops without parameters)."""
        if op_type.startswith("_") or "net" not in self.__dict__:
            # The second test guards half-built objects (e.g. while unpickling).
            raise AttributeError(op_type)
        if not core.IsOperator(op_type):
            missing: Callable[..., Any] = getattr(self.net, op_type)  # raises with did-you-mean
            return missing
        if op_type not in _KNOWN_WORKING_OPS:
            if not self.allow_not_known_ops:
                raise AttributeError(f"operator {op_type} is not known to be safe on a ModelHelper")
            if op_type not in _warned:
                _warned.add(op_type)
                log.warning("You are creating an op that the ModelHelper does not recognize: %s.", op_type)
        fn: Callable[..., Any] = getattr(self.net, op_type)
        return fn

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self.net.__dir__()))


def ExtractPredictorNet(
    net_proto: pb.NetDef,
    input_blobs: Sequence[Any],
    output_blobs: Sequence[Any],
    device: pb.DeviceOption | None = None,
    renames: Mapping[str, str] | None = None,
    disabled_inputs: Sequence[Any] | None = None,
) -> tuple[core.Net, list[str]]:
    """Cut a predict net out of a (test-mode) model net, as Caffe2's helper did.

    Keeps the ops from the first reader of ``input_blobs`` to the last producer of
    ``output_blobs`` whose inputs are available, renames blobs by ``renames`` and
    returns the net and the blobs it needs besides the inputs (the parameters).
    """
    inputs = {str(b) for b in input_blobs}
    outputs = {str(b) for b in output_blobs}
    renames = dict(renames or {})
    orig_inputs = set(net_proto.external_input)
    orig_outputs = set(net_proto.external_output)
    known = orig_inputs | inputs
    if disabled_inputs is not None:
        known -= {str(b) for b in disabled_inputs}
    ext_in, ext_out = set(inputs), set(outputs)
    ops = list(net_proto.op)
    readers = [j for j, op in enumerate(ops) if inputs & set(op.input) and op.type != "StopGradient"]
    producers = [j for j, op in enumerate(ops) if outputs & set(op.output)]
    if not readers:
        raise NetDefinitionError(f"net '{net_proto.name}': no operator reads any of {sorted(inputs)}")
    if not producers:
        raise NetDefinitionError(f"net '{net_proto.name}': no operator produces any of {sorted(outputs)}")
    predict = core.Net(net_proto.name + "_predict")
    proto = predict.Proto()
    for src in ops[min(readers) : max(producers) + 1]:
        if not known.issuperset(src.input):
            log.debug("ExtractPredictorNet: skipping %s, unknown inputs %s", src.type, set(src.input) - known)
            continue
        op = pb.OperatorDef()
        op.CopyFrom(src)
        if any(a.name == "is_test" and a.i == 0 for a in op.arg):
            raise NetDefinitionError(
                f"{op.type} '{op.output[0] if op.output else op.type}' has is_test=0: extract the predictor "
                "from a test-mode model (is_test=1), not a training one"
            )
        if device is not None:
            op.device_option.device_type = device.device_type
            op.device_option.device_id = device.device_id
        proto.op.append(op)
        known.update(op.output)
        ext_in.update(set(op.input) & orig_inputs)
        ext_out.update(set(op.output) & orig_outputs)

    def renamed(names: Any) -> list[str]:
        return [renames.get(n, n) for n in names]

    proto.external_input.extend(renamed(sorted(ext_in)))
    proto.external_output.extend(renamed(sorted(ext_out)))
    for op in proto.op:
        new_in, new_out = renamed(op.input), renamed(op.output)
        del op.input[:], op.output[:]
        op.input.extend(new_in)
        op.output.extend(new_out)
    renamed_inputs = set(renamed(inputs))
    return predict, sorted(set(proto.external_input) - renamed_inputs)
