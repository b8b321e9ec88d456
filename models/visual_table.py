"""The precomputed visual feature column of paper 3.4.2-3.4.3: ad -> x_v, looked up at serving
time instead of running the CNN.

`VisualTable` holds the table as (non-trainable) weights of a Keras layer: sorted int64 keys
(fingerprints of ad ids), their x_v rows, a mean x_v per category and a global mean. Lookup is
a binary search (``searchsorted``), so the table is plain tensors: no lookup-table resource to
initialise, and it saves and loads with the model (Keras format and SavedModel alike).

Ads missing from the table (cold or new ads, ads dropped by frequency control) get the mean x_v
of their category (the global mean for a category without rows); the layer's second output is 1
for those impressions, so the fallback is visible in the served output.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="cscnn")
class VisualTable(keras.layers.Layer):
  """Call with ``(key int64 (B,), category id int64 (B,))`` -> ``(x_v (B, dim), fallback (B, 1))``."""

  def __init__(self, num_rows: int, dim: int, num_categories: int, **kwargs):
    super().__init__(**kwargs)
    if num_rows < 1 or dim < 1 or num_categories < 1:
      raise ValueError("num_rows, dim and num_categories must be >= 1")
    self.num_rows, self.dim, self.num_categories = num_rows, dim, num_categories

  def build(self, input_shape):
    self.keys = self.add_weight(name="keys", shape=(self.num_rows,), dtype="int64", trainable=False,
                                initializer="zeros")
    self.vectors = self.add_weight(name="vectors", shape=(self.num_rows, self.dim), trainable=False,
                                   initializer="zeros")
    self.category_mean = self.add_weight(name="category_mean", shape=(self.num_categories, self.dim),
                                         trainable=False, initializer="zeros")

  def call(self, inputs):
    key, category = inputs
    key = ops.reshape(ops.cast(key, "int64"), (-1,))
    pos = ops.minimum(ops.searchsorted(self.keys, key), self.num_rows - 1)
    found = ops.equal(ops.take(self.keys, pos, axis=0), key)
    category = ops.clip(ops.reshape(ops.cast(category, "int32"), (-1,)), 0, self.num_categories - 1)
    x_v = ops.where(found[:, None], ops.take(self.vectors, pos, axis=0),
                    ops.take(self.category_mean, category, axis=0))
    return x_v, ops.cast(ops.logical_not(found), "float32")[:, None]

  def compute_output_shape(self, input_shape):
    return (input_shape[0][0], self.dim), (input_shape[0][0], 1)

  def set_table(self, keys: np.ndarray, vectors: np.ndarray, categories: np.ndarray) -> None:
    """Fills the table; `categories` are the rows' category ids (the model's category input)."""
    keys = np.asarray(keys, dtype=np.int64)
    vectors = np.asarray(vectors, dtype=np.float32)
    if len(keys) != self.num_rows or vectors.shape != (self.num_rows, self.dim):
      raise ValueError(f"table must have {self.num_rows} rows of {self.dim}, got {vectors.shape}")
    if len(np.unique(keys)) != len(keys):
      raise ValueError("duplicate keys in the visual table")
    order = np.argsort(keys)
    global_mean = vectors.mean(axis=0)
    means = np.tile(global_mean, (self.num_categories, 1))
    categories = np.asarray(categories)
    for c in np.unique(categories):
      if 0 <= c < self.num_categories:
        means[c] = vectors[categories == c].mean(axis=0)
    if not self.built:
      self.build(None)
    self.keys.assign(keys[order])
    self.vectors.assign(vectors[order])
    self.category_mean.assign(means.astype(np.float32))

  def get_config(self):
    return {**super().get_config(), "num_rows": self.num_rows, "dim": self.dim,
            "num_categories": self.num_categories}
