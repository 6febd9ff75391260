"""torch.ops._caffe2.<Op> backed by asyncnet kernels (asyncnet.compat.torch_ops)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from asyncnet.compat.torch_ops import TORCH_OPS, register_torch_ops  # noqa: E402
from tests.ops.run_util import run_op  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def registered() -> None:
    register_torch_ops()


def test_registration_is_idempotent_and_covers_the_table() -> None:
    assert register_torch_ops() == []
    for name in TORCH_OPS:
        assert hasattr(torch.ops._caffe2, name)


def test_results_equal_the_asyncnet_kernels() -> None:
    x = np.array([[1.0, -2.0], [0.5, 3.0], [4.0, 0.0]], np.float32)
    lengths = np.array([2, 1], np.int32)
    got = torch.ops._caffe2.LengthsMax(torch.tensor(x), torch.tensor(lengths))
    np.testing.assert_array_equal(got.numpy(), run_op("LengthsMax", [x, lengths])[0])
    got = torch.ops._caffe2.Gelu(torch.tensor(x), True)
    np.testing.assert_allclose(got.numpy(), run_op("Gelu", [x], fast_gelu=1)[0])
    # Arguments left out keep the operator's defaults: modulo given, seed default.
    idx = np.array([3, 99, 12345], np.int64)
    got = torch.ops._caffe2.IndexHash(torch.tensor(idx), modulo=100)
    np.testing.assert_array_equal(got.numpy(), run_op("IndexHash", [idx], modulo=100)[0])


def test_tensor_lists_optional_tensors_and_variable_outputs() -> None:
    lv = [torch.tensor([1, 1], dtype=torch.int32), torch.tensor([5, 7]), torch.tensor([1, 0], dtype=torch.int32)]
    lv.append(torch.tensor([6]))
    lengths, values = torch.ops._caffe2.MergeIdLists(lv)
    assert lengths.tolist() == [2, 1] and values.tolist() == [5, 6, 7]
    data, ranges, key = torch.arange(8), torch.tensor([[[2, 4]], [[0, 0]]]), torch.tensor([0, 1, 3, 2, 1, 0, 1, 0])
    (out,) = torch.ops._caffe2.GatherRangesToDense(data, ranges, key, lengths=[4])
    assert out.tolist() == [[5, 4, 3, 2], [0, 0, 0, 0]]  # sorted by key; the empty range is zeros
    packed, mask = torch.ops._caffe2.PackSegments(torch.tensor([1, 2], dtype=torch.int32), torch.ones(3, 2))
    assert packed.shape == (2, 2, 2) and mask.numel() == 0  # no presence mask asked: empty
    _, mask = torch.ops._caffe2.PackSegments(
        torch.tensor([1, 2], dtype=torch.int32), torch.ones(3, 2), return_presence_mask=True
    )
    assert mask.tolist() == [[True, False], [True, True]]


def test_errors_are_runtime_errors() -> None:
    with pytest.raises(RuntimeError, match="LengthsSum"):
        torch.ops._caffe2.LengthsSum(torch.ones(3), torch.tensor([5], dtype=torch.int32))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_layer_norm_with_and_without_affine_and_from_torchscript() -> None:
    x = np.random.default_rng(0).normal(size=(2, 3, 4)).astype(np.float32)
    norm, mean, std = torch.ops._caffe2.LayerNorm(torch.tensor(x), None, None, 2, 1e-5)
    want = run_op("LayerNorm", [x], 3, axis=2, epsilon=1e-5)
    for got, w in zip((norm, mean, std), want):
        np.testing.assert_allclose(got.numpy(), w, rtol=1e-5)
    g, b = np.full((4,), 2.0, np.float32), np.full((4,), 0.5, np.float32)
    norm2, _, _ = torch.ops._caffe2.LayerNorm(torch.tensor(x), torch.tensor(g), torch.tensor(b), 2, 1e-5, True)
    np.testing.assert_allclose(norm2.numpy(), want[0] * 2.0 + 0.5, rtol=1e-5, atol=1e-6)

    @torch.jit.script
    def scripted(t: torch.Tensor, axis: int) -> torch.Tensor:
        return torch.ops._caffe2.LayerNorm(t, None, None, axis, 1e-5)[0]

    np.testing.assert_allclose(scripted(torch.tensor(x), 2).numpy(), want[0], rtol=1e-5)


def test_logit_and_fpn_level_outputs() -> None:
    x = np.array([0.1, 0.5, 0.9], np.float32)
    got = torch.ops._caffe2.Logit(torch.tensor(x), 1e-6)
    np.testing.assert_allclose(got.numpy(), run_op("Logit", [x], eps=1e-6)[0], rtol=1e-6)
    rois = np.array([[0, 0, 0, 10, 10], [0, 0, 0, 300, 300], [0, 5, 5, 60, 60]], np.float32)
    outs = torch.ops._caffe2.DistributeFpnProposals(
        torch.tensor(rois), roi_canonical_scale=224, roi_canonical_level=4, roi_max_level=5, roi_min_level=2
    )
    assert len(outs) == 5  # levels 2..5 and the restore index
    want = run_op(
        "DistributeFpnProposals", [rois], 5, roi_canonical_scale=224, roi_canonical_level=4, roi_max_level=5,
        roi_min_level=2,
    )  # fmt: skip
    for got_t, w in zip(outs, want):
        np.testing.assert_array_equal(got_t.numpy(), w)


def test_alias_with_name_is_an_alias() -> None:
    x = torch.tensor([3.0, 4.0])
    y = torch.ops._caffe2.AliasWithName(x, "renamed")
    x[1] = 6.0
    assert y.tolist() == [3.0, 6.0]
