"""Int8Tensor: Caffe2's affinely quantized tensor (uint8 data, or int32 for biases)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Int8Tensor:
    """A quantized blob value: ``real = (data - zero_point) * scale``.

    Attributes:
        data: uint8 values (int32 for quantized biases), any shape; NHWC for images.
        scale: the real value of one quantization step.
        zero_point: the stored value that represents real 0.
    """

    data: np.ndarray
    scale: float
    zero_point: int

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return int(self.data.ndim)

    @property
    def size(self) -> int:
        return int(self.data.size)

    def dequantize(self) -> np.ndarray:
        """The real values as float32."""
        out: np.ndarray = (self.data.astype(np.float32) - np.float32(self.zero_point)) * np.float32(self.scale)
        return out.astype(np.float32, copy=False)

    @classmethod
    def quantize(cls, x: Any, scale: float, zero_point: int) -> Int8Tensor:
        """uint8 quantization as Caffe2 did it: round half to even of ``x / scale``, plus the
        zero point, saturated to [0, 255]."""
        q = np.rint(np.asarray(x, dtype=np.float32) / np.float32(scale)).astype(np.int64) + int(zero_point)
        return cls(np.clip(q, 0, 255).astype(np.uint8), float(scale), int(zero_point))

    def __repr__(self) -> str:
        return f"Int8Tensor(shape={self.shape}, dtype={self.dtype}, scale={self.scale:g}, zero_point={self.zero_point})"
