"""The CTR model of eq. 3-6 against an independent numpy forward pass."""

import dataclasses

import numpy as np
import pytest

import keras

from models.dcn import DCNConfig, build_ctr_model
from spec import features as F
S = F.DEFAULT_SPEC

SMALL = DCNConfig(embedding_dim=3, cross_layers=3, deep_units=(8, 6, 5), output_units=(4,))


def _id_space():
  return {f.name: 7 for f in S.features}


def _random_inputs(rng, n=4):
  x = {}
  for f in S.features:
    shape = (n,) + f.shape
    x[F.transformed_name(f.name)] = rng.integers(0 if f.kind == F.MULTI else 0, 7, size=shape)
  return x


def _relu(v):
  return np.maximum(v, 0)


def _mean_pool(table, ids):
  mask = (ids != 0).astype("float32")[..., None]
  return (table[ids] * mask).sum(1) / np.maximum(mask.sum(1), 1)


def _numpy_forward(model, x, visual=None, history_match=()):
  """Eq. 7, 3, 4, 5, 6 written out in numpy from the model's weights."""
  parts = []
  for f in S.features:
    table = model.get_layer(f"emb_{f.name}").get_weights()[0]
    ids = x[F.transformed_name(f.name)]
    parts.append(_mean_pool(table, ids) if f.kind == F.MULTI else table[ids])
  for query, history in history_match:                        # [m, q . m], m the mean history
    q_table, h_table = model.get_layer(f"history_match_{query}_{history}").get_weights()
    m = _mean_pool(h_table, x[F.transformed_name(history)])
    q = q_table[x[F.transformed_name(query)]]
    parts += [m, (q * m).sum(1, keepdims=True)]
  x_nv = np.concatenate(parts, axis=1)
  w, b = model.get_layer("deep_0").get_weights()
  h = _relu(x_nv @ w + b)
  if visual is not None:
    h = np.concatenate([visual, h], axis=1)                   # eq. 3
  for i in (1, 2):
    w, b = model.get_layer(f"deep_{i}").get_weights()
    h = _relu(h @ w + b)                                      # eq. 4
  cw = model.get_layer("cross_net").get_weights()
  z = x_nv
  for li in range(3):
    z = x_nv * (z @ cw[2 * li])[:, None] + cw[2 * li + 1] + z   # eq. 5
  o = np.concatenate([h, z], axis=1)
  w, b = model.get_layer("output_0").get_weights()
  o = _relu(o @ w + b)
  w, b = model.get_layer("logit").get_weights()
  return 1 / (1 + np.exp(-(o @ w + b)))                        # eq. 6


def _randomise(model, rng):
  model.set_weights([rng.normal(0, 0.3, size=w.shape).astype("float32") for w in model.get_weights()])


def test_dcn_matches_numpy_forward_pass():
  rng = np.random.default_rng(0)
  model = build_ctr_model(S.features, _id_space(), SMALL)
  _randomise(model, rng)
  x = _random_inputs(rng)
  np.testing.assert_allclose(np.asarray(model(x)), _numpy_forward(model, x), rtol=1e-4, atol=1e-6)


def test_paper_dimensions():
  model = build_ctr_model(S.features, _id_space(), DCNConfig())
  d_nv = 4 * len(S.features)                                   # d_e = 4 per feature
  assert model.get_layer("x_nv").output.shape[-1] == d_nv
  assert [model.get_layer(f"deep_{i}").units for i in range(3)] == [1024, 512, 256]
  assert [tuple(w.shape) for w in model.get_layer("cross_net").weights] == [(d_nv,)] * 6


def test_visual_seam_joins_h1():
  """A visual tower's x_v is concatenated into h1 (eq. 3): [x_v, MLP(x_nv)]."""
  def tower(inputs):
    image = keras.Input((150,), name="x_v_in")
    return {"x_v_in": image}, image

  rng = np.random.default_rng(1)
  model = build_ctr_model(S.features, _id_space(), SMALL, visual_tower=tower)
  assert model.get_layer("h1").output.shape[-1] == 150 + SMALL.deep_units[0]
  _randomise(model, rng)
  x = _random_inputs(rng)
  x["x_v_in"] = rng.normal(size=(4, 150)).astype("float32")
  np.testing.assert_allclose(np.asarray(model(x)), _numpy_forward(model, x, x["x_v_in"]),
                             rtol=1e-4, atol=1e-6)


def test_history_match_joins_x_nv():
  pairs = (("category_id", "clicked_categories"),)
  config = DCNConfig(embedding_dim=3, cross_layers=3, deep_units=(8, 6, 5), output_units=(4,),
                     history_match=pairs, history_match_dim=2)
  model = build_ctr_model(S.features, _id_space(), config)
  assert model.get_layer("x_nv").output.shape[-1] == 3 * len(S.features) + 2 + 1
  rng = np.random.default_rng(2)
  _randomise(model, rng)
  x = _random_inputs(rng)
  x[F.transformed_name("clicked_categories")][0] = 0              # an empty history
  np.testing.assert_allclose(np.asarray(model(x)), _numpy_forward(model, x, history_match=pairs),
                             rtol=1e-4, atol=1e-6)
  with pytest.raises(ValueError, match="'user_id' is not a token-list feature"):
    build_ctr_model(S.features, _id_space(), DCNConfig(history_match=(("ad_id", "user_id"),)))


def test_served_multiply_adds_per_row_of_the_paper_dcn_with_x_v():
  """What `bench serving` reports as the physical reference: multiply-adds per scored row,
  read from the variables (Keras paths here, "scope/kernel:0" names in a loaded SavedModel)."""
  import tensorflow as tf
  from models.cost import served_macs_per_row

  def tower(inputs):
    x_v = keras.Input((150,), name="x_v_in")
    return {"x_v_in": x_v}, x_v

  model = build_ctr_model(S.features, _id_space(), DCNConfig(), visual_tower=tower)
  d = 4 * len(S.features)                                      # x_nv: 44
  by_hand = d * 1024 + (150 + 1024) * 512 + 512 * 256 + (256 + d) * 128 + 128 * 1 + 3 * 2 * d
  cost = served_macs_per_row(model.variables)
  assert cost["macs"] == by_hand == 816_008
  assert cost["dense_kernels"] == [(d, 1024), (1174, 512), (512, 256), (300, 128), (128, 1)]
  as_loaded = [tf.Variable(np.zeros(v.shape, v.dtype), name=v.path) for v in model.variables]
  assert served_macs_per_row(as_loaded)["macs"] == by_hand


def test_config_validation():
  with pytest.raises(ValueError, match="embedding_dim"):
    DCNConfig(embedding_dim=0)
  with pytest.raises(ValueError, match="unknown model hyperparameters"):
    DCNConfig.from_dict({"embeding_dim": 4})
  assert DCNConfig.from_dict({"deep_units": [8, 4]}).deep_units == (8, 4)


@pytest.mark.slow  # trains two models: ~13 s
def test_target_attention_learns_candidate_in_history_where_the_dcn_does_not():
  """The diagnosis of scripts/diagnose_history_match.py, small: label = the candidate's category
  is among the user's past categories. With target attention the model learns the rule; the
  paper's DCN (d_e = 4, mean-pooled history) stays well short of it on the same rows."""
  import json
  import subprocess
  import sys
  from conftest import ROOT
  proc = subprocess.run([sys.executable, "scripts/diagnose_history_match.py", "--categories", "10",
                         "--history", "3", "--rows", "8000", "--epochs", "4", "--seeds", "1", "--json"],
                        cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  r = json.loads(proc.stdout)["results"]
  dcn, ta = r["dcn"]["final_auc_mean"], r["dcn + target attention"]["final_auc_mean"]
  assert ta > 0.97, r
  assert ta - dcn > 0.05, r


def test_ad_id_dropout_reads_the_ad_as_an_unknown_ad_while_training_only():
  """With rate ~1 every training row's ad id embeds as the OOV id's row (id_space - oov_buckets):
  the training output equals the inference output of the same rows with that id put in."""
  rate = 0.999999
  model = build_ctr_model(S.features, _id_space(), dataclasses.replace(SMALL, ad_id_dropout=rate), ad=S.ad)
  x = _random_inputs(np.random.default_rng(5), n=8)
  key = F.transformed_name(S.ad)
  oov = 7 - S.feature(S.ad).oov_buckets
  x[key] = np.where(x[key] == oov, oov - 1, x[key])   # no row starts with the OOV id
  as_unknown = {**x, key: np.full_like(x[key], oov)}
  trained = np.asarray(model(x, training=True))
  np.testing.assert_allclose(trained, np.asarray(model(as_unknown, training=False)), rtol=1e-5)
  assert not np.allclose(trained, np.asarray(model(x, training=False)), rtol=1e-3)   # the ad id matters
  np.testing.assert_allclose(np.asarray(model(x)), np.asarray(model(x, training=False)))    # default: inference
  with pytest.raises(ValueError, match="ad_id_dropout needs the ad feature"):
    build_ctr_model(S.features, _id_space(), DCNConfig(ad_id_dropout=0.2))           # no ad named
  with pytest.raises(ValueError, match="ad_id_dropout"):
    DCNConfig(ad_id_dropout=1.0)
