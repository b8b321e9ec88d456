"""Serializable Keras layers of the modified DCN (paper eq. 3-7)."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="cscnn")
class Cross(keras.layers.Layer):
  """One DCN-v1 cross layer (paper eq. 5): z_{l+1} = z_0 (z_l^T w_l) + b_l + z_l.

  ``w_l`` and ``b_l`` are vectors of the input width (a weight *vector* per layer, as in the
  paper and the original DCN; TF Recommenders' ``Cross`` is DCN-v2 with a full matrix).

  Call with ``(z0, zl)``, or with a single tensor for the first layer (z_l = z_0).
  """

  def __init__(self, kernel_initializer="glorot_uniform", bias_initializer="zeros",
               kernel_regularizer=None, **kwargs):
    super().__init__(**kwargs)
    self.kernel_initializer = keras.initializers.get(kernel_initializer)
    self.bias_initializer = keras.initializers.get(bias_initializer)
    self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

  def build(self, input_shape):
    z0_shape = input_shape[0] if isinstance(input_shape, (list, tuple)) and isinstance(
        input_shape[0], (list, tuple)) else input_shape
    dim = z0_shape[-1]
    if dim is None:
      raise ValueError("Cross needs a known last dimension")
    self.kernel = self.add_weight(name="kernel", shape=(dim,), initializer=self.kernel_initializer,
                                  regularizer=self.kernel_regularizer)
    self.bias = self.add_weight(name="bias", shape=(dim,), initializer=self.bias_initializer)

  def call(self, inputs):
    if isinstance(inputs, (list, tuple)):
      z0, zl = inputs
    else:
      z0 = zl = inputs
    # z_l^T w_l is a scalar per example: (B, D) . (D,) -> (B, 1).
    return z0 * ops.expand_dims(ops.sum(zl * self.kernel, axis=-1), -1) + self.bias + zl

  def compute_output_shape(self, input_shape):
    if isinstance(input_shape, (list, tuple)) and isinstance(input_shape[0], (list, tuple)):
      return tuple(input_shape[0])
    return tuple(input_shape)

  def get_config(self):
    return {
        **super().get_config(),
        "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
    }


@keras.saving.register_keras_serializable(package="cscnn")
class CrossNet(keras.layers.Layer):
  """``num_layers`` stacked DCN-v1 cross layers on z_0 = x_nv (paper eq. 5, 3 layers)."""

  def __init__(self, num_layers: int = 3, kernel_initializer="glorot_uniform",
               bias_initializer="zeros", **kwargs):
    super().__init__(**kwargs)
    if not isinstance(num_layers, int) or num_layers < 1:
      raise ValueError(f"num_layers must be a positive int, got {num_layers!r}")
    self.num_layers = num_layers
    self.kernel_initializer = keras.initializers.get(kernel_initializer)
    self.bias_initializer = keras.initializers.get(bias_initializer)

  def build(self, input_shape):
    self.cross_layers = []
    for i in range(self.num_layers):
      layer = Cross(kernel_initializer=keras.initializers.get(
                        keras.initializers.serialize(self.kernel_initializer)),
                    bias_initializer=keras.initializers.get(
                        keras.initializers.serialize(self.bias_initializer)),
                    name=f"cross_{i}")
      layer.build((input_shape, input_shape))
      self.cross_layers.append(layer)

  def call(self, z0):
    z = z0
    for layer in self.cross_layers:
      z = layer((z0, z))
    return z

  def compute_output_shape(self, input_shape):
    return tuple(input_shape)

  def get_config(self):
    return {
        **super().get_config(),
        "num_layers": self.num_layers,
        "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        "bias_initializer": keras.initializers.serialize(self.bias_initializer),
    }


@keras.saving.register_keras_serializable(package="cscnn")
class IdDropout(keras.layers.Layer):
  """Replaces each id by ``replacement_id`` with probability ``rate`` while training; the
  identity at inference. With the replacement the id of ads the vocabulary does not know, the
  rows it hits teach the model to rank an ad by its content alone, as it must rank a new ad
  (DropoutNet, Volkovs et al. 2017, applied to the item id)."""

  def __init__(self, rate: float, replacement_id: int, seed=None, **kwargs):
    super().__init__(**kwargs)
    if not 0.0 <= rate < 1.0:
      raise ValueError(f"rate must be in [0, 1), got {rate}")
    if replacement_id < 0:
      raise ValueError(f"replacement_id must be >= 0, got {replacement_id}")
    self.rate, self.replacement_id, self.seed = float(rate), int(replacement_id), seed
    self.seed_generator = keras.random.SeedGenerator(seed)

  def call(self, ids, training=None):
    if not training or self.rate == 0.0:
      return ids
    hit = keras.random.uniform(ops.shape(ids), seed=self.seed_generator) < self.rate
    return ops.where(hit, ops.cast(self.replacement_id, ids.dtype), ids)

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    return {**super().get_config(), "rate": self.rate, "replacement_id": self.replacement_id, "seed": self.seed}


@keras.saving.register_keras_serializable(package="cscnn")
class PooledEmbedding(keras.layers.Layer):
  """Embedding of a multi-hot feature (paper eq. 7 with x_hot multi-hot): the mean of the
  embeddings of its tokens. Id ``padding_id`` marks padding and is ignored; an impression with
  no tokens gets the zero vector."""

  def __init__(self, input_dim: int, output_dim: int, padding_id: int = 0,
               embeddings_initializer="uniform", **kwargs):
    super().__init__(**kwargs)
    if input_dim < 1 or output_dim < 1:
      raise ValueError(f"input_dim and output_dim must be >= 1, got {input_dim}, {output_dim}")
    self.input_dim = input_dim
    self.output_dim = output_dim
    self.padding_id = padding_id
    self.embeddings_initializer = keras.initializers.get(embeddings_initializer)

  def build(self, input_shape):
    self.embeddings = self.add_weight(name="embeddings", shape=(self.input_dim, self.output_dim),
                                      initializer=self.embeddings_initializer)

  def call(self, ids):
    ids = ops.cast(ids, "int32")
    mask = ops.cast(ops.not_equal(ids, self.padding_id), self.compute_dtype)[..., None]
    emb = ops.take(self.embeddings, ids, axis=0)
    total = ops.sum(emb * mask, axis=-2)
    count = ops.maximum(ops.sum(mask, axis=-2), 1.0)
    return total / count

  def compute_output_shape(self, input_shape):
    return tuple(input_shape[:-1]) + (self.output_dim,)

  def get_config(self):
    return {
        **super().get_config(),
        "input_dim": self.input_dim,
        "output_dim": self.output_dim,
        "padding_id": self.padding_id,
        "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
    }


@keras.saving.register_keras_serializable(package="cscnn")
class TargetAttention(keras.layers.Layer):
  """Candidate-aware pooling of a user's history (DIN's activation unit, Zhou et al. 2018).

  Call with ``(query ids (B,), history ids (B, L))``: the candidate (e.g. the ad's category) and
  the user's past items of the same kind (e.g. the categories of their clicks; ``padding_id``
  marks padding). With q, k_i their embeddings (own tables, ``dim`` each),

      w_i = v^T ReLU(W [q, k_i, q * k_i, q - k_i] + b) + c      (0 for padding)
      out = [sum_i w_i k_i, max_i w_i]                           (B, dim + 1)

  The weights are not normalised (as in DIN), so the output keeps how strongly the history
  matches the candidate: "the candidate's category is among the user's past categories" is
  ``max_i w_i`` once the unit has learned to match, which a mean-pooled history concatenated
  with the candidate does not give a DCN with small embeddings (`docs/results.md`).
  """

  def __init__(self, query_vocab: int, history_vocab: int, dim: int = 8, hidden_units: int = 32,
               padding_id: int = 0, **kwargs):
    super().__init__(**kwargs)
    for name, v in (("query_vocab", query_vocab), ("history_vocab", history_vocab), ("dim", dim),
                    ("hidden_units", hidden_units)):
      if v < 1:
        raise ValueError(f"{name} must be >= 1, got {v}")
    self.query_vocab, self.history_vocab = query_vocab, history_vocab
    self.dim, self.hidden_units, self.padding_id = dim, hidden_units, padding_id

  def build(self, input_shape):
    self.query_embeddings = self.add_weight(name="query_embeddings", shape=(self.query_vocab, self.dim),
                                            initializer="uniform")
    self.history_embeddings = self.add_weight(name="history_embeddings",
                                              shape=(self.history_vocab, self.dim), initializer="uniform")
    self.hidden = keras.layers.Dense(self.hidden_units, activation="relu", name="hidden")
    self.hidden.build((None, None, 4 * self.dim))
    self.score = keras.layers.Dense(1, name="score")
    self.score.build((None, None, self.hidden_units))

  def call(self, inputs):
    query_ids, history_ids = inputs
    q = ops.take(self.query_embeddings, ops.reshape(ops.cast(query_ids, "int32"), (-1,)), axis=0)
    ids = ops.cast(history_ids, "int32")
    k = ops.take(self.history_embeddings, ids, axis=0)                       # (B, L, d)
    q = ops.broadcast_to(q[:, None, :], ops.shape(k))
    w = self.score(self.hidden(ops.concatenate([q, k, q * k, q - k], axis=-1)))[..., 0]
    mask = ops.cast(ops.not_equal(ids, self.padding_id), w.dtype)
    w = w * mask
    pooled = ops.sum(w[..., None] * k, axis=1)
    strongest = ops.max(w - (1.0 - mask) * 1e9, axis=1, keepdims=True)
    strongest = ops.where(ops.sum(mask, axis=1, keepdims=True) > 0, strongest, ops.zeros_like(strongest))
    return ops.concatenate([pooled, strongest], axis=-1)

  def compute_output_shape(self, input_shape):
    return (input_shape[0][0], self.dim + 1)

  def get_config(self):
    return {**super().get_config(), "query_vocab": self.query_vocab, "history_vocab": self.history_vocab,
            "dim": self.dim, "hidden_units": self.hidden_units, "padding_id": self.padding_id}


@keras.saving.register_keras_serializable(package="cscnn")
class HistoryMatch(keras.layers.Layer):
  """How well a candidate matches the items of a user's history: FISM's score (Kabbur et al.
  2013), the learned counterpart of item-to-item co-occurrence (item kNN).

  Call with ``(query ids (B,), history ids (B, L))``: the candidate (e.g. the ad) and the user's
  past items of the same kind (e.g. the ads they clicked; ``padding_id`` marks padding). With
  their own tables Q (query) and H (history), ``dim`` columns each,

      m   = mean of H[h_i] over the non-padding h_i      (0 for an empty history)
      out = [m, Q[query] . m]                            (B, dim + 1)

  Measured on MovieLens-1M (`docs/results.md`), this dot product pools a history of clicked
  ads better than target attention does.
  """

  def __init__(self, query_vocab: int, history_vocab: int, dim: int = 16, padding_id: int = 0,
               embeddings_initializer="uniform", **kwargs):
    super().__init__(**kwargs)
    for name, v in (("query_vocab", query_vocab), ("history_vocab", history_vocab), ("dim", dim)):
      if v < 1:
        raise ValueError(f"{name} must be >= 1, got {v}")
    if not 0 <= padding_id < history_vocab:
      raise ValueError(f"padding_id must be an id of the history vocabulary [0, {history_vocab}), got {padding_id}")
    self.query_vocab, self.history_vocab, self.dim, self.padding_id = query_vocab, history_vocab, dim, padding_id
    self.embeddings_initializer = keras.initializers.get(embeddings_initializer)

  def build(self, input_shape):
    self.query_embeddings = self.add_weight(name="query_embeddings", shape=(self.query_vocab, self.dim),
                                            initializer=self.embeddings_initializer)
    self.history_embeddings = self.add_weight(name="history_embeddings", shape=(self.history_vocab, self.dim),
                                              initializer=self.embeddings_initializer)

  def call(self, inputs):
    query_ids, history_ids = inputs
    q = ops.take(self.query_embeddings, ops.reshape(ops.cast(query_ids, "int32"), (-1,)), axis=0)
    ids = ops.cast(history_ids, "int32")
    mask = ops.cast(ops.not_equal(ids, self.padding_id), self.compute_dtype)[..., None]
    k = ops.take(self.history_embeddings, ids, axis=0)                       # (B, L, d)
    m = ops.sum(k * mask, axis=1) / ops.maximum(ops.sum(mask, axis=1), 1.0)
    return ops.concatenate([m, ops.sum(q * m, axis=-1, keepdims=True)], axis=-1)

  def compute_output_shape(self, input_shape):
    return (input_shape[0][0], self.dim + 1)

  def get_config(self):
    return {**super().get_config(), "query_vocab": self.query_vocab, "history_vocab": self.history_vocab,
            "dim": self.dim, "padding_id": self.padding_id,
            "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer)}
