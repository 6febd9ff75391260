"""A character-level LSTM language model, written with the Caffe2-compatible API.

The model is Caffe2's ``char_rnn.py`` example: one-hot characters (T, N, V) into
``rnn_cell.LSTM`` (one RecurrentNetwork op), an FC to the vocabulary and SoftmaxWithLoss,
trained with Adam by truncated backpropagation through time (each batch starts from the
states the previous batch ended in). The bundled text is 14 of Shakespeare's sonnets
(public domain). ``asyncnet train-charlm`` drives it.
"""

from __future__ import annotations

from asyncnet.charlm.model import CharLM, CharLMConfig, TrainResult, bundled_text, load_charlm, train_charlm

__all__ = ["CharLM", "CharLMConfig", "TrainResult", "bundled_text", "load_charlm", "train_charlm"]
