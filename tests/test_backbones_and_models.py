"""Backbones, placement of attention, de-duplication, the CTR variants, VBPR/BPR and cost."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

import keras

from models.attention import AttentionConfig, ConvAttention
from models.backbones import BackboneConfig, attention_layers, attention_maps_model, build_visual_tower
from models.cost import cost_report
from models.ctr import build_model
from models.dcn import DCNConfig
from models.vbpr import bpr_loss, build_pairwise_model, build_vbpr
from models.visual import DedupApply, VisualConfig
from spec import features as F
S = F.DEFAULT_SPEC


def _images(n, size, seed=0):
  return np.random.default_rng(seed).uniform(0, 255, size=(n, size, size, 3)).astype("float32")


@pytest.mark.parametrize("cfg, n_modules, first", [
    (BackboneConfig("resnet18", 32, placement="per-conv"), 16, "attention_res1_0_a"),
    (BackboneConfig("resnet18", 32, placement="per-block"), 8, "attention_res1_0"),
    (BackboneConfig("cnnf", 64, cnnf_fc_units=(64, 64)), 4, "attention_conv2"),
    (BackboneConfig("light", 32), 3, "attention_conv1"),
    (BackboneConfig("light", 32, attention_layers=2), 2, "attention_conv2"),
    (BackboneConfig("cnnf", 64, cnnf_fc_units=(64,), attention_layers=9), 4, "attention_conv2"),
])
def test_attention_placement(cfg, n_modules, first):
  tower = build_visual_tower(cfg, AttentionConfig("cscnn", 4, 3), num_categories=5)
  layers = attention_layers(tower)
  assert len(layers) == n_modules and layers[0].name == first
  producers = {layer.input[0]._keras_history.operation.name for layer in layers}
  assert not producers & {"stem_conv", "stem_bn", "stem_relu", "conv1"}, producers   # never the first conv
  out = tower({"image": _images(2, cfg.image_size), "category": np.array([0, 4])})
  assert tuple(out.shape) == (2, 150)


@pytest.mark.parametrize("cfg, block, last_bn, shortcut", [
    (BackboneConfig("resnet18", 32, placement="per-block"), "res1_0", "res1_0_b_bn", "stem_pool"),
    (BackboneConfig("light", 32), "conv1", "conv1_bn", "conv1_down_bn"),      # projection shortcut
    (BackboneConfig("light", 32), "conv3", "conv3_bn", "conv2_relu"),         # identity shortcut
])
def test_attention_sits_on_the_residual_branch_before_the_addition(cfg, block, last_bn, shortcut):
  tower = build_visual_tower(cfg, AttentionConfig("cbam"), 1)
  producers = {t._keras_history.operation.name for t in tower.get_layer(f"{block}_add").input}
  assert producers == {f"attention_{block}", shortcut}
  att = tower.get_layer(f"attention_{block}")
  assert att.input[0]._keras_history.operation.name == last_bn   # after the last BN


def test_freeze_fixes_backbone_but_not_projection():
  tower = build_visual_tower(BackboneConfig("light", 32, freeze=True), AttentionConfig("none"), 1)
  trainable = {w.path.split("/")[0] for w in tower.trainable_weights}
  assert trainable == {"x_v"}


def test_attention_maps_model_gives_one_map_per_module():
  tower = build_visual_tower(BackboneConfig("light", 32), AttentionConfig("cscnn", 4, 3), 3)
  maps = attention_maps_model(tower)({"image": _images(2, 32), "category": np.array([0, 2])})
  assert sorted(maps) == ["attention_conv1", "attention_conv2", "attention_conv3"]
  assert tuple(maps["attention_conv1"].shape) == (2, 16, 16, 1)


def test_tower_saves_to_keras_and_savedmodel_with_identical_outputs(tmp_path):
  tower = build_visual_tower(BackboneConfig("light", 32), AttentionConfig("cscnn", 4, 3), 3)
  x = {"image": _images(3, 32), "category": np.array([0, 1, 2])}
  before = np.asarray(tower(x))
  tower.save(str(tmp_path / "t.keras"))
  np.testing.assert_array_equal(np.asarray(keras.models.load_model(str(tmp_path / "t.keras"))(x)), before)
  tower.export(str(tmp_path / "sm"), format="tf_saved_model")
  loaded = tf.saved_model.load(str(tmp_path / "sm"))
  out = loaded.serve({"image": tf.constant(x["image"]), "category": tf.constant(x["category"], tf.int64)})
  np.testing.assert_allclose(np.asarray(out), before, rtol=1e-5, atol=1e-6)


class _CountingTower(keras.Model):
  """Wraps a tower and records the batch size it was called with (eager calls)."""

  def __init__(self, tower):
    super().__init__(name="counting_tower")
    self.tower = tower
    self.seen = []

  def call(self, inputs, training=None):
    self.seen.append(int(inputs["image"].shape[0]))
    return self.tower(inputs, training=training)


def test_dedup_runs_cnn_once_per_unique_ad_with_identical_outputs_and_gradients():
  tower = build_visual_tower(BackboneConfig("light", 16), AttentionConfig("cscnn", 4, 3), 3)
  counting = _CountingTower(tower)
  on, off = DedupApply(counting, enabled=True), DedupApply(counting, enabled=False)
  keys = np.array([7, 3, 7, 7, 9, 3], "int64")                 # 3 unique ads, 6 impressions
  ads = {7: 0, 3: 1, 9: 2}
  ad_images, ad_cats = _images(3, 16), np.array([0, 1, 2])
  x = {"image": ad_images[[ads[k] for k in keys]], "category": ad_cats[[ads[k] for k in keys]], "key": keys}
  weights = np.random.default_rng(0).normal(size=(6, 150)).astype("float32")

  def loss_and_grads(layer):
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(layer(x, training=False) * weights)
    return loss, tape.gradient(loss, tower.trainable_weights)

  counting.seen.clear()
  l_on, g_on = loss_and_grads(on)
  assert counting.seen == [3]
  l_off, g_off = loss_and_grads(off)
  assert counting.seen == [3, 6]
  np.testing.assert_allclose(float(l_on), float(l_off), rtol=1e-5)
  for a, b in zip(g_on, g_off):
    np.testing.assert_allclose(tf.convert_to_tensor(a).numpy(), tf.convert_to_tensor(b).numpy(),
                               rtol=1e-4, atol=1e-5)


def _id_space():
  return {f.name: 6 for f in S.features}


def _ctr_inputs(n=4, size=16, seed=0):
  rng = np.random.default_rng(seed)
  x = {F.transformed_name(f.name): rng.integers(0, 6, size=(n,) + f.shape) for f in S.features}
  x["image"] = _images(n, size, seed)
  x["image_key"] = rng.integers(0, 3, size=n)
  return x


SMALL_DCN = DCNConfig(deep_units=(16, 8, 4), output_units=(4,))


@pytest.mark.parametrize("variant", ["none", "fixed", "finetune", "cbam", "cscnn"])
def test_table8_variants(variant):
  model = build_model(S, _id_space(), SMALL_DCN,
                      VisualConfig(variant, "light", image_size=16, channel_prior=4, spatial_prior=3))
  names = {t.name for t in model.inputs}
  assert ("image" in names) == (variant != "none")
  x = {k: v for k, v in _ctr_inputs().items() if k in names}
  p = np.asarray(model(x))
  assert p.shape == (4, 1) and np.all((p > 0) & (p < 1))
  kinds = {layer.spec.kind for layer in model.get_layer("visual").tower.layers if isinstance(layer, ConvAttention)} \
      if variant != "none" else set()
  assert kinds == ({"cbam"} if variant == "cbam" else {"cscnn"} if variant == "cscnn" else set())
  if variant != "none":
    assert model.get_layer("h1").output.shape[-1] == 150 + 16


def test_full_ctr_model_round_trip(tmp_path):
  model = build_model(S, _id_space(), SMALL_DCN,
                      VisualConfig("cscnn", "light", image_size=16, channel_prior=4, spatial_prior=3))
  x = _ctr_inputs()
  before = np.asarray(model(x))
  model.save(str(tmp_path / "m.keras"))
  np.testing.assert_array_equal(np.asarray(keras.models.load_model(str(tmp_path / "m.keras"))(x)), before)


def test_vbpr_score_by_hand():
  # eq. 12 with alpha = 0.5, beta_u = 1, beta_a = 2, gamma_u = [1, 1], gamma_a = [2, 3],
  # theta_u = [1, 0, ...], Phi = fixed tower output -> 0.5 + 1 + 2 + 5 + Phi_0
  phi_in = keras.Input((4, 4, 3), name="image")
  cat_in = keras.Input((), dtype="int64", name="category")
  phi_out = keras.layers.Lambda(lambda t: keras.ops.mean(t, axis=(1, 2)))(phi_in)  # test-only stand-in Phi
  phi = keras.Model({"image": phi_in, "category": cat_in}, phi_out)
  m = build_vbpr(2, 2, latent_dim=2, visual=phi, image_size=4)
  m.get_layer("score").alpha.assign(0.5)
  m.get_layer("beta_u").embeddings.assign([[1.0], [1.0]])
  m.get_layer("beta_a").embeddings.assign([[2.0], [2.0]])
  m.get_layer("gamma_u").embeddings.assign([[1.0, 1.0], [1.0, 1.0]])
  m.get_layer("gamma_a").embeddings.assign([[2.0, 3.0], [2.0, 3.0]])
  m.get_layer("theta_u").embeddings.assign([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
  img = np.zeros((1, 4, 4, 3), "float32")
  img[..., 0] = 10.0
  y = m({"user": np.array([0]), "item": np.array([1]), "image": img, "category": np.array([0])})
  np.testing.assert_allclose(np.asarray(y), [0.5 + 1 + 2 + 5 + 10], rtol=1e-6)


def test_bpr_loss_and_pairwise_model():
  np.testing.assert_allclose(float(bpr_loss(None, np.zeros(3, "float32"))), np.log(2), rtol=1e-6)
  np.testing.assert_allclose(float(bpr_loss(None, np.array([2.0], "float32"))), np.log1p(np.exp(-2.0)), rtol=1e-6)
  score = build_vbpr(3, 4, latent_dim=2)
  pair = build_pairwise_model(score)
  assert {t.name for t in pair.inputs} == {"user", "pos_item", "neg_item"}
  u, i, j = np.array([0, 2]), np.array([1, 3]), np.array([0, 0])
  diff = np.asarray(pair({"user": u, "pos_item": i, "neg_item": j}))
  ref = np.asarray(score({"user": u, "item": i})) - np.asarray(score({"user": u, "item": j}))
  np.testing.assert_allclose(diff, ref, rtol=1e-6)


def test_cost_matches_paper_formula_at_production_settings():
  """Paper 3.3.4 at 224x224, |K| = 3310, C' = 20, H' = W' = 6, r = 4, ResNet18 per conv layer."""
  K, Cp, Hp = 3310, 20, 6
  cbam = cost_report(BackboneConfig("resnet18", 224), AttentionConfig("cbam", Cp, Hp), K)
  cscnn = cost_report(BackboneConfig("resnet18", 224), AttentionConfig("cscnn", Cp, Hp), K)
  plain = cost_report(BackboneConfig("resnet18", 224), AttentionConfig("none"), K)
  assert cscnn["attention_modules"] == 16
  for m in cscnn["modules"]:
    C = m["channels"]
    assert m["channel"] == C * C // 4 + (C + Cp) * C // 4 + Cp * K
    assert m["spatial"] == Hp * Hp * K + 7 * 7 * 3
  for m in cbam["modules"]:
    assert m["channel"] == 2 * C * C // 4 if (C := m["channels"]) else False
  added = cscnn["params"] - cbam["params"]
  assert abs(added - 3.0e6) / 3.0e6 < 0.01, added                       # "about 3.0M"
  assert (cscnn["flops"] - cbam["flops"]) / cbam["flops"] < 0.001       # paper: 0.03%
  assert abs(plain["flops"] - 1.82e9) / 1.82e9 < 0.01                   # Table 2: 1.82 GFLOPs


@pytest.mark.slow  # trains twice: mixed_float16 ~24 s, mirrored ~10 s
@pytest.mark.parametrize("setting", ["mixed_float16", "mirrored"])
def test_trains_under_mixed_precision_and_a_distribution_strategy(setting):
  from tfx_pipeline.trainer import _strategy
  cfg = VisualConfig("cscnn", "light", image_size=16, channel_prior=4, spatial_prior=3)
  if setting == "mixed_float16":
    keras.mixed_precision.set_global_policy("mixed_float16")
  try:
    with _strategy("mirrored" if setting == "mirrored" else "default").scope():
      model = build_model(S, _id_space(), SMALL_DCN, cfg)
    x = _ctr_inputs(n=8, size=16)
    loss = model.train_on_batch(x, np.ones((8, 1), "float32"))
    assert np.isfinite(loss[0] if isinstance(loss, list) else loss)
    assert model(x).dtype == "float32"                         # P(click) stays float32
  finally:
    keras.mixed_precision.set_global_policy("float32")


def test_visual_table_frequency_control():
  from components.visual_embedding_gen import select_rows
  ads = ["a", "b", "c", "d"]
  counts = {"a": 10, "b": 2, "c": 7}
  assert select_rows(ads, counts, 0, 0) == [0, 2, 1, 3]          # most shown first, all kept
  assert select_rows(ads, counts, 5, 0) == [0, 2]                # at least 5 impressions
  assert select_rows(ads, counts, 0, 2) == [0, 2]                # top-2
  assert select_rows(ads, counts, 3, 1) == [0]


def test_visual_table_lookup_and_category_mean_fallback(tmp_path):
  from models.visual_table import VisualTable
  table = VisualTable(3, 2, num_categories=3)
  table.set_table(keys=[5, 1, 9], vectors=[[1, 2], [3, 4], [10, 20]], categories=[0, 0, 1])
  x_v, fallback = table((np.array([9, 1, 7, 8]), np.array([1, 0, 0, 2])))
  np.testing.assert_allclose(np.asarray(x_v), [[10, 20], [3, 4], [2, 3], [14 / 3, 26 / 3]], rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(fallback).ravel(), [0, 0, 1, 1])
  inp = (keras.Input((), dtype="int64"), keras.Input((), dtype="int64"))
  model = keras.Model(inp, table(inp))
  model.save(str(tmp_path / "t.keras"))
  again = keras.models.load_model(str(tmp_path / "t.keras"))((np.array([9, 7]), np.array([1, 0])))
  np.testing.assert_allclose(np.asarray(again[0]), [[10, 20], [2, 3]], rtol=1e-6)
  with pytest.raises(ValueError, match="duplicate"):
    VisualTable(2, 2, 1).set_table([1, 1], [[0, 0], [1, 1]], [0, 0])


def test_a_sequence_of_the_spec_is_read_against_the_candidate_ad():
  from models.ctr import with_sequences
  from models.dcn import DCNConfig as Config
  spec = dataclasses.replace(S, features=S.features + (F.Feature("recent_ads", F.SEQUENCE, str, max_len=3),))
  assert with_sequences(Config(), spec).history_match == (("ad_id", "recent_ads"),)
  assert with_sequences(Config(match_sequences=False), spec).history_match == ()
  assert with_sequences(Config(), S) == Config()                      # no sequence: the paper's DCN
  sizes = {**_id_space(), "recent_ads": 6}
  model = build_model(spec, sizes, SMALL_DCN, VisualConfig("none"))
  assert model.get_layer("history_match_ad_id_recent_ads") is not None


def test_a_sequence_is_read_against_the_candidate_feature_it_names():
  from models.ctr import with_sequences
  from models.dcn import DCNConfig as Config
  spec = dataclasses.replace(S, features=S.features + (
      F.Feature("recent_ads", F.SEQUENCE, str, max_len=3),
      F.Feature("recent_categories", F.SEQUENCE, str, max_len=3, against="category_id")))
  assert with_sequences(Config(), spec).history_match == (("ad_id", "recent_ads"),
                                                          ("category_id", "recent_categories"))
  model = build_model(spec, {**_id_space(), "recent_ads": 6, "recent_categories": 5}, SMALL_DCN,
                      VisualConfig("none"))
  layer = model.get_layer("history_match_category_id_recent_categories")
  assert layer.query_vocab == _id_space()["category_id"] and layer.history_vocab == 5
