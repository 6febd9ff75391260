"""Issue 15 brought these golden op types into scope: they must stay registered, so that test_goldens runs
them against Caffe2's recorded outputs (an unregistered type would only be reported as not runnable)."""

from __future__ import annotations

import pytest

from asyncnet.registry import default_registry
from tests.conftest import realnets_path

NOW_IN_SCOPE = {
    "adadelta_test.test_adadelta.zip": "Adadelta",
    "adadelta_test.test_sparse_adadelta_empty.zip": "SparseAdadelta",
    "adagrad_test.test_sparse_adagrad_empty.zip": "SparseAdagrad",
    "adagrad_test.test_row_wise_sparse_adagrad_empty.zip": "RowWiseSparseAdagrad",
    "momentum_sgd_test.test_sparse_momentum_sgd.zip": "SparseMomentumSGDUpdate",
    "wngrad_test.test_wngrad_dense_base.zip": "Wngrad",
    "wngrad_test.test_sparse_wngrad_empty.zip": "SparseWngrad",
    "filler_ops_test.test_diagonal_fill_op_float.zip": "DiagonalFill",
    "sequence_ops_test.test_add_padding.zip": "AddPadding",
    "sequence_ops_test.test_gather_padding.zip": "GatherPadding",
    "boolean_mask_test.test_sequence_mask_with_lengths.zip": "SequenceMask",
    "piecewise_linear_transform_test.test_multi_predictions_params_from_arg.zip": "PiecewiseLinearTransform",
    "batch_box_cox_test.test_batch_box_cox.zip": "BatchBoxCox",
    "integral_image_ops_test.test_integral_image_ops.zip": "IntegralImage",
    "integral_image_ops_test.test_integral_image_gradient_ops.zip": "IntegralImageGradient",
    "channel_backprop_stats_op_test.testChannelBackpropStats.zip": "ChannelBackpropStats",
    "rank_loss_operator_test.test_pair_wise_loss_batch.zip": "PairWiseLoss",
    "string_ops_test.test_string_starts_with.zip": "StringStartsWith",
    "string_ops_test.test_string_ends_with.zip": "StringEndsWith",
    "ctc_greedy_decoder_op_test.test_ctc_greedy_decoder.zip": "CTCGreedyDecoder",
    "ctc_beam_search_decoder_op_test.test_ctc_beam_search_decoder.zip": "CTCBeamSearchDecoder",
    "collect_and_distribute_fpn_rpn_proposals_op_test.test_collect_and_dist.zip": "CollectAndDistributeFpnRpnProposals",
    "gather_ranges_op_test.test_gather_ranges_split.zip": "GatherRangesToDense",
    "index_hash_ops_test.test_index_hash_ops.zip": "IndexHash",
    "merge_id_lists_op_test.test_merge_id_lists_op.zip": "MergeIdLists",
    "learning_rate_adaption_op_test.test_learning_rate_adaption_op_normalization.zip": "LearningRateAdaption",
    "locally_connected_op_test.test_lc_2d.zip": "LC",
}


@pytest.mark.parametrize("golden,op_type", sorted(NOW_IN_SCOPE.items()))
def test_golden_op_type_is_registered(golden: str, op_type: str) -> None:
    realnets_path("caffe2_serialized_operator_tests", golden)
    assert default_registry().has(op_type)
