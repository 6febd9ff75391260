"""AddPadding, RemovePadding, GatherPadding, PadEmptySamples, SequenceMask, Partition, LengthsPartition and
KeySplit against naive loops written from Caffe2's operator docs."""

from __future__ import annotations

import numpy as np
import pytest

from asyncnet.errors import AsyncNetError
from asyncnet.training.gradcheck import check_gradient
from tests.ops.run_util import make_op, run_op

RNG = np.random.default_rng(21)


def segments(lengths: list[int]) -> list[tuple[int, int]]:
    out, pos = [], 0
    for n in lengths:
        out.append((pos, pos + n))
        pos += n
    return out


def test_add_and_remove_padding_round_trip() -> None:
    data = RNG.normal(size=(5, 2)).astype(np.float32)
    lengths = np.array([2, 0, 3], np.int32)
    sp, ep = np.array([7.0, 7.0], np.float32), np.array([9.0, 9.0], np.float32)
    out, new_len = run_op("AddPadding", [data, lengths, sp, ep], 2, padding_width=2, end_padding_width=1)
    want = []
    for a, b in segments(lengths.tolist()):
        want += [sp, sp] + list(data[a:b]) + [ep]
    np.testing.assert_array_equal(out, np.array(want))
    assert new_len.tolist() == [5, 3, 6] and new_len.dtype == np.int32
    back, back_len = run_op("RemovePadding", [out, new_len], 2, padding_width=2, end_padding_width=1)
    np.testing.assert_array_equal(back, data)
    assert back_len.tolist() == lengths.tolist()
    (whole,) = run_op("AddPadding", [data], padding_width=1)
    assert whole.shape == (7, 2) and not whole[0].any() and not whole[-1].any()


def test_gather_padding_sums() -> None:
    data = np.arange(14, dtype=np.float64).reshape(7, 2)
    lengths = np.array([3, 4], np.int32)
    s, e = run_op("GatherPadding", [data, lengths], 2, padding_width=1, end_padding_width=2)
    ws, we = np.zeros(2), np.zeros(2)
    for a, b in segments([3, 4]):
        ws += data[a]
        we += data[b - 2] + data[b - 1]
    np.testing.assert_array_equal(s, ws)
    np.testing.assert_array_equal(e, we)
    (both,) = run_op("GatherPadding", [data, lengths], padding_width=1, end_padding_width=2)
    np.testing.assert_array_equal(both, ws + we)


def test_pad_empty_samples() -> None:
    lengths = np.array([0, 2, 0, 1], np.int32)
    f1 = np.array([1.0, 2.0, 3.0], np.float32)
    f2 = np.arange(6, dtype=np.int64).reshape(3, 2)
    ol, o1, o2 = run_op("PadEmptySamples", [lengths, f1, f2], 3)
    assert ol.tolist() == [1, 2, 1, 1]
    assert o1.tolist() == [0.0, 1.0, 2.0, 0.0, 3.0]
    assert o2.tolist() == [[0, 0], [0, 1], [2, 3], [0, 0], [4, 5]]


@pytest.mark.parametrize("mode", ["sequence", "window", "upper", "lower", "upperdiag", "lowerdiag"])
def test_sequence_mask_modes(mode: str) -> None:
    x = RNG.normal(size=(3, 4)).astype(np.float32)
    aux = np.array([1, 4, 0], np.int32) if mode == "sequence" else np.array([0, 2, 3], np.int32)
    ins = [x, aux] if mode in ("sequence", "window") else [x]
    (y,) = run_op("SequenceMask", ins, mode=mode, radius=1, fill_val=-5.0)
    for i in range(3):
        for j in range(4):
            masked = {
                "sequence": j >= aux[i],
                "window": abs(j - aux[i]) > 1,
                "upper": j > i,
                "lower": j < i,
                "upperdiag": j >= i,
                "lowerdiag": j <= i,
            }[mode]
            assert y[i, j] == (-5.0 if masked else x[i, j])


def test_sequence_mask_axis_and_gradient() -> None:
    x = RNG.normal(size=(2, 3, 2))
    lengths = np.array([4, 1], np.int32)
    (y,) = run_op("SequenceMask", [x, lengths], axis=1, fill_val=0.0)
    flat = x.reshape(2, 6)
    np.testing.assert_array_equal(y.reshape(2, 6), np.where(np.arange(6)[None, :] < lengths[:, None], flat, 0.0))
    res = check_gradient(make_op("SequenceMask", ["X", "L"], ["Y"], axis=1, fill_val=-3.0), {"X": x, "L": lengths})
    assert res.ok, res.describe()


@pytest.mark.parametrize("mode", ["sequence", "window", "upper", "lowerdiag"])
def test_sequence_mask_batch_form(mode: str) -> None:
    # batch=1, axis=3 on (2, 3, 2, 4): dims 0..1 are the batch (6 entries), dim 2 the rows, 3 the columns;
    # every batch entry gets the same (rows, cols) mask.
    x = RNG.normal(size=(2, 3, 2, 4))
    aux = np.array([1, 3], np.int32)
    ins = [x, aux] if mode in ("sequence", "window") else [x]
    (y,) = run_op("SequenceMask", ins, mode=mode, axis=3, batch=1, radius=1, fill_val=-7.0)
    for b0 in range(2):
        for b1 in range(3):
            for i in range(2):
                for j in range(4):
                    masked = {
                        "sequence": j >= aux[i],
                        "window": j > aux[i] + 1 or j < aux[i] - 1,
                        "upper": j > i,
                        "lowerdiag": j <= i,
                    }[mode]
                    assert y[b0, b1, i, j] == (-7.0 if masked else x[b0, b1, i, j])
    if mode == "sequence":
        op = make_op("SequenceMask", ["X", "L"], ["Y"], axis=3, batch=1, fill_val=-1.0)
        res = check_gradient(op, {"X": x, "L": aux})
        assert res.ok, res.describe()


def test_sequence_mask_repeat_from_axis() -> None:
    # Caffe2 turns the repeated form on by the argument's presence: repeat_from_axis=-1 repeats the last
    # dim, so with axis=1 on (3, 4, 2) each of the 4 positions of row i is masked as a whole.
    x = RNG.normal(size=(3, 4, 2))
    lengths = np.array([0, 2, 4], np.int32)
    (y,) = run_op("SequenceMask", [x, lengths], axis=1, repeat_from_axis=-1, fill_val=9.0)
    for i in range(3):
        for j in range(4):
            for k in range(2):
                assert y[i, j, k] == (9.0 if j >= lengths[i] else x[i, j, k])
    op = make_op("SequenceMask", ["X", "L"], ["Y"], axis=1, repeat_from_axis=-1, fill_val=0.5)
    res = check_gradient(op, {"X": x, "L": lengths})
    assert res.ok, res.describe()
    with pytest.raises(AsyncNetError, match="repeat_from_axis"):
        run_op("SequenceMask", [x], mode="upper", axis=1, repeat_from_axis=2)


def test_partition_and_lengths_partition() -> None:
    keys = np.array([4, 7, 2, 9, 6], np.int64)
    vals = np.arange(10, dtype=np.float32).reshape(5, 2)
    k0, v0, k1, v1, k2, v2 = run_op("Partition", [keys, vals], 6, pack_first_input=1)
    for p, (k, v) in enumerate(((k0, v0), (k1, v1), (k2, v2))):
        sel = [i for i in range(5) if keys[i] % 3 == p]
        assert k.tolist() == [int(keys[i]) // 3 for i in sel]
        np.testing.assert_array_equal(v, vals[sel])
    lengths = np.array([2, 3], np.int32)
    outs = run_op("LengthsPartition", [lengths, keys, vals], 6)
    for p in range(2):
        ln, k, v = outs[3 * p : 3 * p + 3]
        sel = [i for i in range(5) if keys[i] % 2 == p]
        assert k.tolist() == keys[sel].tolist()
        np.testing.assert_array_equal(v, vals[sel])
        assert ln.tolist() == [sum(1 for i in sel if a <= i < b) for a, b in segments([2, 3])]


def test_key_split() -> None:
    keys = np.array([2, 0, 2, 1, 0], np.int64)
    outs = run_op("KeySplit", [keys], 3, categorical_limit=3)
    assert [o.tolist() for o in outs] == [[1, 4], [3], [0, 2]]


def test_padding_and_prepend_dim_gradients() -> None:
    data = RNG.normal(size=(5, 2))
    lengths = np.array([2, 3], np.int32)
    sp, ep = RNG.normal(size=2), RNG.normal(size=2)
    op = make_op("AddPadding", ["D", "L", "S", "E"], ["Y", "YL"], padding_width=2, end_padding_width=1)
    res = check_gradient(op, {"D": data, "L": lengths, "S": sp, "E": ep}, check=[0, 2, 3])
    assert res.ok, res.describe()
    padded = RNG.normal(size=(9, 2))
    op = make_op("RemovePadding", ["P", "L"], ["Y", "YL"], padding_width=1, end_padding_width=1)
    res = check_gradient(op, {"P": padded, "L": np.array([4, 5], np.int32)}, check=[0])
    assert res.ok, res.describe()
    res = check_gradient(make_op("PrependDim", ["X"], ["Y"], dim_size=2), {"X": RNG.normal(size=(4, 3))})
    assert res.ok, res.describe()
    (m,) = run_op("MergeDim", [np.zeros((2, 3, 4))])
    assert m.shape == (6, 4)


@pytest.mark.parametrize("lengths", [None, np.array([2, 0, 3], np.int32)])
@pytest.mark.parametrize("op_type", ["AddPadding", "RemovePadding"])
def test_padding_shape_inference_is_exact(op_type: str, lengths: np.ndarray | None) -> None:
    from asyncnet.proto import caffe2_pb2 as pb
    from asyncnet.shapes import infer_shapes, info_of

    data = np.zeros((14, 2), np.float32)  # lengths + 3 sum to 14
    ins = {"d": data} if lengths is None else {"d": data, "l": lengths + 3}
    op = make_op(op_type, list(ins), ["o", "lo"], padding_width=1, end_padding_width=2)
    net = pb.NetDef(name="n")
    net.op.append(op)
    got = infer_shapes(net, {k: info_of(v) for k, v in ins.items()}).blobs
    out, lens = run_op(op_type, list(ins.values()), 2, padding_width=1, end_padding_width=2)
    # Every dimension is known without running (Caffe2's inference knew them too).
    assert got["o"].shape == out.shape and got["lo"].shape == lens.shape
    assert got["lo"].dtype == lens.dtype == np.int32


def test_sequence_mask_batch_form_matches_naive_loop() -> None:
    # batch=0, axis=2 on (2, 3, 4): 2 batches of a (3 rows x 4 cols) view; lengths per row, shared.
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    lengths = np.array([1, 4, 0], np.int32)
    (y,) = run_op("SequenceMask", [x, lengths], axis=2, batch=0, fill_val=-1.0)
    want = x.copy()
    for b in range(2):
        for i in range(3):
            for j in range(4):
                if j >= lengths[i]:
                    want[b, i, j] = -1.0
    np.testing.assert_array_equal(y, want)
    (u,) = run_op("SequenceMask", [x], mode="upper", axis=2, batch=0, fill_val=0.0)
    np.testing.assert_array_equal(u, np.where(np.arange(4)[None, :] > np.arange(3)[:, None], 0.0, x))


def test_sequence_mask_repeat_from_axis_masks_whole_trailing_rows() -> None:
    # axis=1, repeat_from_axis=-1 on (2, 3, 2): columns are dim 1 only; each masked column is a whole
    # trailing row of 2 values.
    x = np.arange(12, dtype=np.float32).reshape(2, 3, 2)
    lengths = np.array([2, 0], np.int32)
    (y,) = run_op("SequenceMask", [x, lengths], axis=1, repeat_from_axis=-1, fill_val=9.0)
    want = x.copy()
    for i in range(2):
        for j in range(3):
            if j >= lengths[i]:
                want[i, j, :] = 9.0
    np.testing.assert_array_equal(y, want)


def test_sequence_mask_batch_form_gradient() -> None:
    x = RNG.normal(size=(2, 3, 4))
    op = make_op("SequenceMask", ["x", "l"], ["y"], axis=2, batch=0, fill_val=1e-9)
    res = check_gradient(op, {"x": x, "l": np.array([1, 4, 0], np.int32)}, check=[0])
    assert res.ok, res.describe()
