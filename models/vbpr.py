"""The light model of the paper's ablations (eq. 12, VBPR-style) and the pair-wise BPR loss
(eq. 14).

    y_hat(u, a) = alpha + beta_u + beta_a + gamma_u . gamma_a + theta_u . Phi(m_a, k_a)

Phi is any visual tower (image, category) -> R^{d_v} (CNN-F with CSCNN in the paper). Without
Phi it is BPR-MF (the first four terms). Train it point-wise (log loss on sigmoid(y_hat), eq. 1)
or pair-wise with `build_pairwise_model` + `bpr_loss` on (u, i, j) triplets.
"""

from __future__ import annotations

from typing import Optional

import keras
from keras import ops

from spec.names import CATEGORY_INPUT, IMAGE_INPUT

USER_INPUT = "user"
ITEM_INPUT = "item"


@keras.saving.register_keras_serializable(package="cscnn")
class VBPRScore(keras.layers.Layer):
  """alpha + beta_u + beta_a + <gamma_u, gamma_a> (+ <theta_u, phi>): inputs
  ``[beta_u, beta_a, gamma_u, gamma_a]`` or ``[..., theta_u, phi]``; returns (B,) scores."""

  def build(self, input_shape):
    self.alpha = self.add_weight(name="alpha", shape=(), initializer="zeros")

  def call(self, inputs):
    beta_u, beta_a, gamma_u, gamma_a = inputs[:4]
    score = self.alpha + ops.squeeze(beta_u, -1) + ops.squeeze(beta_a, -1) + ops.sum(gamma_u * gamma_a, -1)
    if len(inputs) == 6:
      theta_u, phi = inputs[4:]
      score = score + ops.sum(theta_u * phi, -1)
    return score

  def compute_output_shape(self, input_shape):
    return (input_shape[0][0],)


def build_vbpr(num_users: int, num_items: int, latent_dim: int = 10,
               visual: Optional[keras.Model] = None, image_size: Optional[int] = None,
               name: str = "vbpr") -> keras.Model:
  """Eq. 12 as a Keras model {user, item[, image, category]} -> y_hat (a logit, shape (B,))."""
  if num_users < 1 or num_items < 1 or latent_dim < 1:
    raise ValueError("num_users, num_items and latent_dim must be >= 1")
  user = keras.Input((), dtype="int64", name=USER_INPUT)
  item = keras.Input((), dtype="int64", name=ITEM_INPUT)
  inputs = {USER_INPUT: user, ITEM_INPUT: item}
  parts = [keras.layers.Embedding(num_users, 1, embeddings_initializer="zeros", name="beta_u")(user),
           keras.layers.Embedding(num_items, 1, embeddings_initializer="zeros", name="beta_a")(item),
           keras.layers.Embedding(num_users, latent_dim, name="gamma_u")(user),
           keras.layers.Embedding(num_items, latent_dim, name="gamma_a")(item)]
  if visual is not None:
    size = image_size or visual.inputs[0].shape[1]
    image = keras.Input((size, size, 3), dtype="float32", name=IMAGE_INPUT)
    category = keras.Input((), dtype="int64", name=CATEGORY_INPUT)
    inputs.update({IMAGE_INPUT: image, CATEGORY_INPUT: category})
    phi = visual({IMAGE_INPUT: image, CATEGORY_INPUT: category})
    parts += [keras.layers.Embedding(num_users, phi.shape[-1], name="theta_u")(user), phi]
  return keras.Model(inputs, VBPRScore(name="score")(parts), name=name)


def bpr_loss(y_true, diff):
  """Eq. 14 as a loss: -mean ln sigmoid(y_ui - y_uj); ``y_true`` is ignored."""
  del y_true
  return -ops.mean(ops.log_sigmoid(diff))


def build_pairwise_model(score_model: keras.Model, shared=(USER_INPUT,)) -> keras.Model:
  """Wraps a scoring model for (u, i, j) triplets: inputs ``pos_<name>`` / ``neg_<name>`` for
  every non-shared input, the shared ones (the user) once; output y_ui - y_uj."""
  pos, neg, inputs = {}, {}, {}
  for t in score_model.inputs:
    name = t.name
    spec = dict(shape=t.shape[1:], dtype=t.dtype)
    if name in shared:
      inputs[name] = pos[name] = neg[name] = keras.Input(name=name, **spec)
    else:
      inputs[f"pos_{name}"] = pos[name] = keras.Input(name=f"pos_{name}", **spec)
      inputs[f"neg_{name}"] = neg[name] = keras.Input(name=f"neg_{name}", **spec)
  diff = keras.layers.Subtract(name="diff")([score_model(pos), score_model(neg)])
  return keras.Model(inputs, diff, name=f"{score_model.name}_pairwise")
