"""``caffe2.proto.caffe2_pb2`` stand-in: asyncnet's generated messages plus Caffe2's device constants."""

from __future__ import annotations

from asyncnet.proto.caffe2_pb2 import *  # noqa: F403 - re-export every message, as Caffe2's module did
from asyncnet.proto.caffe2_pb2 import PROTO_CPU, PROTO_CUDA, PROTO_HIP, PROTO_IDEEP, PROTO_MKLDNN

CPU = PROTO_CPU
CUDA = PROTO_CUDA
HIP = PROTO_HIP
MKLDNN = PROTO_MKLDNN
IDEEP = PROTO_IDEEP
