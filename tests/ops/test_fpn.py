"""CollectRpnProposals, DistributeFpnProposals and CollectAndDistributeFpnRpnProposals against a naive
loop of Detectron's collect_and_distribute_fpn_rpn_proposals (the Caffe2 golden runs in test_goldens.py)."""

from __future__ import annotations

import math

import numpy as np

from tests.ops.run_util import run_op

RNG = np.random.default_rng(13)


def rois(n: int, size: float) -> np.ndarray:
    xy = RNG.uniform(0, 400, (n, 2))
    wh = RNG.uniform(1, size, (n, 2))
    return np.concatenate([np.zeros((n, 1)), xy, xy + wh], axis=1).astype(np.float32)


def test_collect_and_distribute_matches_naive() -> None:
    levels = [rois(6, 40), rois(5, 150), rois(4, 400)]
    scores = [RNG.uniform(size=len(r)).astype(np.float32) for r in levels]
    args = dict(rpn_min_level=2, rpn_max_level=4, roi_min_level=2, roi_max_level=5, rpn_post_nms_topN=10)
    outs = run_op("CollectAndDistributeFpnRpnProposals", [*levels, *scores], 6, **args)
    allr, alls = np.concatenate(levels), np.concatenate(scores)
    keep = sorted(range(len(alls)), key=lambda i: -alls[i])[:10]
    want_rois = allr[keep]
    np.testing.assert_array_equal(outs[0], want_rois)
    lv = []
    for r in want_rois:
        s = math.sqrt((r[3] - r[1] + 1) * (r[4] - r[2] + 1))
        lv.append(min(5, max(2, math.floor(4 + math.log2(s / 224 + 1e-6)))))
    order = []
    for k, lvl in enumerate(range(2, 6)):
        idx = [i for i in range(10) if lv[i] == lvl]
        np.testing.assert_array_equal(outs[1 + k], want_rois[idx].reshape(-1, 5))
        order += idx
    restore = outs[5]
    np.testing.assert_array_equal(np.concatenate(outs[1:5])[restore], want_rois)
    collected = run_op(
        "CollectRpnProposals", [*levels, *scores], 1, rpn_min_level=2, rpn_max_level=4, rpn_post_nms_topN=10
    )
    np.testing.assert_array_equal(collected[0], want_rois)
    dist = run_op("DistributeFpnProposals", [want_rois], 5, roi_min_level=2, roi_max_level=5)
    for a, b in zip(dist, outs[1:]):
        np.testing.assert_array_equal(a, b)


def test_rmac_regions_square_and_wide() -> None:
    (r,) = run_op("RMACRegions", [np.zeros((2, 1, 8, 8), np.float32)], scales=2)
    # Square input: scale 1 one 8x8 region, scale 2 a 2x2 grid of side 5 (2 * 8 // 3).
    want = [[0, 0, 0, 7, 7], [0, 0, 0, 4, 4], [0, 0, 3, 4, 7], [0, 3, 0, 7, 4], [0, 3, 3, 7, 7]]
    np.testing.assert_array_equal(r[:5], want)
    np.testing.assert_array_equal(r[5:, 1:], r[:5, 1:])
    assert r[5:, 0].tolist() == [1] * 5
    (wide,) = run_op("RMACRegions", [np.zeros((1, 1, 4, 10), np.float32)], scales=1)
    # Long side 10, short 4: |1 - b/4 - 0.4| with b = 6/step is smallest (0.1) for step 3 -> 4 regions of
    # side 4 every (10 - 4) / 3 = 2 columns.
    assert wide[:, 1].tolist() == [0, 2, 4, 6] and wide[:, 3].tolist() == [3, 5, 7, 9]
    assert np.all(wide[:, 2] == 0) and np.all(wide[:, 4] == 3)
