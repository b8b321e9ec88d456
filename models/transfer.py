"""The multimodal transfer layer of JD's recommender (seed jd_rec_multiobjective_sequence_multimodal,
"Multimodal Features"): a frozen image embedding mapped into the CTR model by shared experts whose
mixture is chosen by a gate of the item's category (multi-gate, multi-expert)."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="cscnn")
class CategoryGatedTransfer(keras.layers.Layer):
  """Shared experts mixed by a per-category gate (MMoE with one gate per category).

  Call with ``(x (B, d_in), category ids (B,))``. With K experts of ``units`` outputs,

      e_k    = act(x W_k + b_k)                       (B, units), k = 1..K, shared by all categories
      g(x,c) = softmax(x V_c + a_c)                   (B, K): the gate of category c
      out    = sum_k g_k(x, c) e_k                    (B, units)

  Category ids outside ``[0, num_categories)`` are clipped to the last id; give the OOV id the
  last place (the project's Transform ids do). A gate with zero kernels and biases mixes the
  experts evenly, so an untrained gate is the mean of the experts.
  """

  def __init__(self, units: int, num_experts: int, num_categories: int, activation="relu",
               kernel_initializer="glorot_uniform", gate_initializer="zeros", **kwargs):
    super().__init__(**kwargs)
    for name, v in (("units", units), ("num_experts", num_experts), ("num_categories", num_categories)):
      if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    self.units, self.num_experts, self.num_categories = units, num_experts, num_categories
    self.activation = keras.activations.get(activation)
    self.kernel_initializer = keras.initializers.get(kernel_initializer)
    self.gate_initializer = keras.initializers.get(gate_initializer)

  def build(self, input_shape):
    d_in = input_shape[0][-1]
    if d_in is None:
      raise ValueError("CategoryGatedTransfer needs a known input width")
    k, c = self.num_experts, self.num_categories
    self.expert_kernel = self.add_weight(name="expert_kernel", shape=(k, d_in, self.units),
                                         initializer=self.kernel_initializer)
    self.expert_bias = self.add_weight(name="expert_bias", shape=(k, self.units), initializer="zeros")
    self.gate_kernel = self.add_weight(name="gate_kernel", shape=(c, d_in, k), initializer=self.gate_initializer)
    self.gate_bias = self.add_weight(name="gate_bias", shape=(c, k), initializer=self.gate_initializer)

  def call(self, inputs):
    x, category = inputs
    ids = ops.clip(ops.reshape(ops.cast(category, "int32"), (-1,)), 0, self.num_categories - 1)
    experts = self.activation(ops.einsum("bd,kdu->bku", x, self.expert_kernel) + self.expert_bias)
    logits = ops.einsum("bd,bdk->bk", x, ops.take(self.gate_kernel, ids, axis=0)) + ops.take(self.gate_bias, ids,
                                                                                                axis=0)
    gate = ops.softmax(logits, axis=-1)
    return ops.sum(gate[..., None] * experts, axis=1)

  def compute_output_shape(self, input_shape):
    return (input_shape[0][0], self.units)

  def get_config(self):
    return {**super().get_config(), "units": self.units, "num_experts": self.num_experts,
            "num_categories": self.num_categories, "activation": keras.activations.serialize(self.activation),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "gate_initializer": keras.initializers.serialize(self.gate_initializer)}
