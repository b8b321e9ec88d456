"""The multimodal transfer layer (models/transfer.py): exact numbers, the gate per category,
serialization."""

import keras
import numpy as np
import pytest

from models.transfer import CategoryGatedTransfer


def _layer():
  layer = CategoryGatedTransfer(units=1, num_experts=2, num_categories=2)
  layer((np.zeros((1, 2), np.float32), np.zeros((1,), np.int64)))
  # expert 1 reads x_1, expert 2 reads x_2; category 0's gate is even, category 1's is
  # softmax([x_1 + ln 3, 0])
  layer.set_weights([np.array([[[1.0], [0.0]], [[0.0], [1.0]]], np.float32), np.zeros((2, 1), np.float32),
                     np.array([[[0, 0], [0, 0]], [[1, 0], [0, 0]]], np.float32),
                     np.array([[0, 0], [np.log(3.0), 0]], np.float32)])
  return layer


def test_experts_mixed_by_the_gate_of_the_category():
  layer = _layer()
  x = np.array([[2.0, 4.0], [2.0, 4.0], [0.0, 4.0], [-1.0, 4.0]], np.float32)
  out = np.asarray(layer((x, np.array([0, 1, 1, 7]))))
  # row 0: 0.5 * 2 + 0.5 * 4; row 1: logits [2 + ln 3, 0] -> 3e^2 / (3e^2 + 1);
  # row 2: [ln 3, 0] -> 0.75 * 0 + 0.25 * 4; row 3 (id 7 clipped to 1): relu(-1) = 0, [ln 3 - 1, 0]
  g1 = 3 * np.e ** 2 / (3 * np.e ** 2 + 1)
  g3 = 3 / np.e / (3 / np.e + 1)
  np.testing.assert_allclose(out.ravel(), [3.0, g1 * 2 + (1 - g1) * 4, 1.0, (1 - g3) * 4], rtol=1e-6)


def test_an_untrained_gate_is_the_mean_of_the_experts_and_it_learns():
  layer = CategoryGatedTransfer(units=3, num_experts=4, num_categories=5)
  x, c = np.random.default_rng(0).normal(size=(6, 8)).astype(np.float32), np.arange(6) % 5
  out = np.asarray(layer((x, c)))
  kernel, bias = (np.asarray(w) for w in layer.weights[:2])
  experts = np.maximum(np.einsum("bd,kdu->bku", x, kernel) + bias, 0)
  np.testing.assert_allclose(out, experts.mean(axis=1), rtol=1e-5, atol=1e-6)
  import tensorflow as tf
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(layer((x, c)) * np.arange(3, dtype=np.float32))
  grads = tape.gradient(loss, layer.trainable_weights)
  assert all(g is not None for g in grads) and np.abs(np.asarray(tf.convert_to_tensor(grads[2]))).sum() > 0


def test_save_and_load_give_identical_outputs(tmp_path):
  layer = _layer()
  inputs = (keras.Input((2,)), keras.Input((), dtype="int64"))
  model = keras.Model(inputs, layer(inputs))
  x, c = np.array([[0.3, -0.2], [1.5, 0.7]], np.float32), np.array([1, 0])
  model.save(str(tmp_path / "m.keras"))
  again = keras.models.load_model(str(tmp_path / "m.keras"))
  np.testing.assert_array_equal(np.asarray(again((x, c))), np.asarray(model((x, c))))
  assert again.layers[-1].get_config()["num_categories"] == 2


def test_arguments_are_checked():
  for bad in ({"units": 0}, {"num_experts": 0}, {"num_categories": 1.5}):
    with pytest.raises(ValueError, match=next(iter(bad))):
      CategoryGatedTransfer(**{"units": 2, "num_experts": 2, "num_categories": 2, **bad})
