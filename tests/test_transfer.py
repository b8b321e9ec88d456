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


# The `transfer` visual variant (models/visual.py): the frozen backbone, a learnt embedding and
# this layer keyed by the ad's category give x_v; the offline table holds x_v per ad.

SIZE, CATS = 16, 6


def _transfer_model():
  from models.ctr import build_model
  from models.dcn import DCNConfig
  from models.visual import VisualConfig
  from spec import features as F
  dcn = DCNConfig(deep_units=(16, 8, 4), output_units=(4,))
  visual = VisualConfig("transfer", "light", image_size=SIZE, transfer_dim=8, transfer_experts=3)
  return build_model(F.DEFAULT_SPEC, {f.name: CATS for f in F.DEFAULT_SPEC.features}, dcn, visual), dcn


def _inputs(ad_categories, ad_rows, seed=0):
  """Impressions of the ads ``ad_rows`` (indices into ``ad_categories``): random ids for every
  feature but the category, which is the ad's, and the ad's image and key."""
  from spec import features as F
  rng = np.random.default_rng(seed)
  n, ad_rows = len(ad_rows), np.asarray(ad_rows)
  images = rng.uniform(0, 255, size=(len(ad_categories), SIZE, SIZE, 3)).astype(np.float32)
  x = {F.transformed_name(f.name): rng.integers(0, CATS, size=(n,) + f.shape) for f in F.DEFAULT_SPEC.features}
  x[F.transformed_name(F.DEFAULT_SPEC.category)] = np.asarray(ad_categories)[ad_rows]
  x["image"], x["image_key"] = images[ad_rows], 100 + ad_rows.astype(np.int64)
  return x, images


def _skew_gates(tower, seed=1):
  """Gives every category its own non-uniform gate (a fresh gate is the mean of the experts)."""
  layer = tower.get_layer("transfer")
  rng = np.random.default_rng(seed)
  layer.gate_kernel.assign(rng.normal(size=layer.gate_kernel.shape).astype(np.float32))
  layer.gate_bias.assign(3 * rng.normal(size=layer.gate_bias.shape).astype(np.float32))


def test_the_transfer_variant_trains_its_head_and_never_the_backbone():
  model, _ = _transfer_model()
  tower = model.get_layer("visual").tower
  assert isinstance(tower.get_layer("transfer"), CategoryGatedTransfer)
  assert tower.get_layer("transfer").num_categories == CATS and tower.output.shape[-1] == 150
  assert tower.get_layer("transfer_embed").units == 8 and "x_v" not in {layer.name for layer in tower.layers}
  assert {w.path.split("/")[0] for w in tower.trainable_weights} == {"transfer_embed", "transfer"}
  head = ("transfer_embed", "transfer")
  before = {w.path: np.array(w) for w in tower.weights}
  x, _ = _inputs([0, 1, 2, 3], [0, 1, 2, 3, 0, 1, 2, 3])
  model.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy")
  model.train_on_batch(x, np.array([1, 0, 1, 0, 0, 1, 1, 0], np.float32)[:, None])
  changed = {w.path for w in tower.weights if not np.array_equal(np.array(w), before[w.path])}
  assert changed, "nothing in the tower learnt"
  assert all(path.split("/")[0] in head for path in changed), sorted(changed)   # BN statistics too
  assert {path.split("/")[0] for path in changed} == set(head)


def test_the_transfer_variant_saves_and_loads_with_identical_predictions(tmp_path):
  model, _ = _transfer_model()
  _skew_gates(model.get_layer("visual").tower)
  x, _ = _inputs([0, 1, 5], [0, 1, 2, 2, 1])
  before = np.asarray(model(x))
  model.save(str(tmp_path / "m.keras"))
  again = keras.models.load_model(str(tmp_path / "m.keras"))
  np.testing.assert_array_equal(np.asarray(again(x)), before)


def test_x_v_of_the_transfer_variant_depends_on_the_category_through_the_gate():
  model, _ = _transfer_model()
  tower = model.get_layer("visual").tower
  image = np.random.default_rng(0).uniform(0, 255, size=(1, SIZE, SIZE, 3)).astype(np.float32)
  both = {"image": np.repeat(image, 2, axis=0), "category": np.array([1, 4])}
  even = np.asarray(tower(both))
  np.testing.assert_allclose(even[0], even[1], rtol=0, atol=1e-6)   # an untrained gate: the experts' mean
  _skew_gates(tower)
  skewed = np.asarray(tower(both))
  assert np.abs(skewed[0] - skewed[1]).max() > 1e-3


def test_the_serving_table_of_the_transfer_variant_scores_as_the_full_model():
  """The offline table (VisualEmbeddingGen: the tower on each ad's image with its category) in
  place of the CNN gives the end-to-end model's score, the category-gated head included."""
  from spec import features as F
  from tfx_pipeline.serving_model import build_serving_model
  model, dcn = _transfer_model()
  tower = model.get_layer("visual").tower
  _skew_gates(tower)
  ad_categories = np.array([0, 3, 3, 5])
  x, images = _inputs(ad_categories, [0, 1, 2, 3, 3, 2, 1, 0, 2])
  vectors = np.asarray(tower({"image": images, "category": ad_categories}, training=False))
  assert np.abs(vectors[1] - np.asarray(tower({"image": images[1:2], "category": np.array([0])}))).max() > 1e-3
  serving = build_serving_model(model, F.DEFAULT_SPEC, dcn, {f.name: CATS for f in F.DEFAULT_SPEC.features},
                                100 + np.arange(len(ad_categories)), vectors, ad_categories)
  assert not any("conv" in layer.name for layer in serving.layers)
  out = serving({t.name: x[t.name] for t in serving.inputs})
  assert np.all(np.asarray(out["visual_fallback"]) == 0)
  np.testing.assert_allclose(np.asarray(out["ctr"]), np.asarray(model(x, training=False)), atol=1e-6, rtol=0)


def test_the_transfer_variant_starts_its_frozen_backbone_from_a_weights_file(tmp_path):
  """--visual-init PATH / catalogue: the file CataloguePretrain writes (save_backbone_weights of a
  tower without attention) loads into the transfer tower's backbone."""
  from models.attention import AttentionConfig
  from models.backbones import BackboneConfig, backbone_layers, build_visual_tower, save_backbone_weights
  from models.visual import VisualConfig, build_tower
  keras.utils.set_random_seed(7)
  source = build_visual_tower(BackboneConfig("light", SIZE), AttentionConfig("none"), name="pretrained")
  path = str(tmp_path / "backbone.weights.h5")
  save_backbone_weights(source, path)
  keras.utils.set_random_seed(8)
  tower = build_tower(VisualConfig("transfer", "light", image_size=SIZE, backbone_weights=path), CATS)
  layers = backbone_layers(source)
  assert len(layers) > 5
  for layer in layers:
    for a, b in zip(tower.get_layer(layer.name).get_weights(), layer.get_weights()):
      np.testing.assert_array_equal(a, b)
  assert not tower.get_layer(layers[0].name).trainable


@pytest.mark.parametrize("variant", ["cbam", "cscnn"])
def test_attention_variants_start_from_a_weights_file_as_the_pretrained_tower(tmp_path, variant):
  """--visual-init PATH / catalogue with attention: the modules start as the identity, so the
  tower's features (the projection's input) are the pretrained tower's; from scratch the gates
  are the paper's sigmoid."""
  from models.attention import AttentionConfig, ConvAttention
  from models.backbones import BackboneConfig, build_visual_tower, save_backbone_weights
  from models.pretrain import embed, feature_model
  from models.visual import VisualConfig, build_tower
  keras.utils.set_random_seed(7)
  source = build_visual_tower(BackboneConfig("light", SIZE), AttentionConfig("none"), name="pretrained")
  path = str(tmp_path / "backbone.weights.h5")
  save_backbone_weights(source, path)
  images = np.random.default_rng(0).uniform(0, 255, (5, SIZE, SIZE, 3)).astype("float32")
  tower = build_tower(VisualConfig(variant, "light", image_size=SIZE, backbone_weights=path), CATS)
  modules = [layer for layer in tower.layers if isinstance(layer, ConvAttention)]
  assert modules and all(m.spec.identity_start for m in modules)
  np.testing.assert_array_equal(embed(feature_model(tower), images), embed(feature_model(source), images))
  scratch = build_tower(VisualConfig(variant, "light", image_size=SIZE), CATS)
  assert not any(m.spec.identity_start for m in scratch.layers if isinstance(m, ConvAttention))


# Frozen backbones train on features computed once (models.visual.split_frozen_tower, the
# Trainer's feature index): the head-only twin must learn exactly what the image model learns.

def _image_model(variant, seed, **visual_args):
  from models.ctr import build_model
  from models.dcn import DCNConfig
  from models.visual import VisualConfig
  from spec import features as F
  keras.utils.set_random_seed(seed)
  visual = VisualConfig(variant, "light", image_size=SIZE, transfer_dim=8, transfer_experts=3, **visual_args)
  dcn = DCNConfig(deep_units=(16, 8, 4), output_units=(4,))
  return build_model(F.DEFAULT_SPEC, {f.name: CATS for f in F.DEFAULT_SPEC.features}, dcn, visual), dcn, visual


@pytest.mark.parametrize("variant", ["fixed", "transfer"])
def test_training_on_precomputed_features_equals_training_on_images(variant):
  from models.ctr import build_model, copy_weights
  from models.pretrain import embed
  from models.visual import split_frozen_tower
  from spec import features as F
  direct, dcn, visual = _image_model(variant, seed=3)
  twin_of, _, _ = _image_model(variant, seed=3)
  for a, b in zip(direct.weights, twin_of.weights):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  features, head = split_frozen_tower(twin_of.get_layer("visual").tower, visual)
  twin = build_model(F.DEFAULT_SPEC, {f.name: CATS for f in F.DEFAULT_SPEC.features}, dcn, visual, visual_head=head)
  assert copy_weights(twin_of, twin, skip=("visual",)) >= 6   # embeddings, deep, cross, output layers

  ad_categories = np.array([0, 3, 3, 5])
  x, images = _inputs(ad_categories, [0, 1, 2, 3, 3, 2, 1, 0, 2])
  table = embed(features, images)
  assert table.shape == (4, features.output.shape[-1])
  x_twin = {**x, "image": table[x["image_key"] - 100]}
  y = np.array([1, 0, 1, 0, 0, 1, 1, 0, 1], np.float32)[:, None]
  head_before = [np.asarray(w).copy() for w in head.weights]
  for model in (direct, twin):
    model.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy")
  for _ in range(3):
    direct.train_on_batch(x, y)
    twin.train_on_batch(x_twin, y)
  # the twin's head is the image model's own layers: they learnt in place
  assert any(not np.array_equal(np.asarray(w), b) for w, b in zip(head.weights, head_before))
  assert {id(w) for w in head.weights} <= {id(w) for w in twin_of.get_layer("visual").tower.weights}
  copy_weights(twin, twin_of, skip=("visual",))
  np.testing.assert_allclose(np.asarray(twin_of(x, training=False)), np.asarray(direct(x, training=False)),
                             atol=1e-5, rtol=0)
  np.testing.assert_allclose(np.asarray(twin(x_twin, training=False)), np.asarray(direct(x, training=False)),
                             atol=1e-5, rtol=0)


def test_only_a_tower_frozen_up_to_its_head_is_split():
  from models.visual import split_frozen_tower
  for variant, extra in (("finetune", {}), ("cscnn", {}), ("fixed", {"attention": "cbam"})):
    model, _, visual = _image_model(variant, seed=0, **extra)
    assert split_frozen_tower(model.get_layer("visual").tower, visual) is None, (variant, extra)


def test_copy_weights_names_the_layer_that_does_not_fit():
  from models.ctr import copy_weights
  small, _, _ = _image_model("none", seed=0)
  from models.ctr import build_model
  from models.dcn import DCNConfig
  from models.visual import VisualConfig
  from spec import features as F
  wide = build_model(F.DEFAULT_SPEC, {f.name: CATS for f in F.DEFAULT_SPEC.features},
                     DCNConfig(deep_units=(32, 8, 4), output_units=(4,)), VisualConfig("none"))
  with pytest.raises(ValueError, match=r"layer 'deep_0': shapes .*\(16,\).* \(32,\)"):
    copy_weights(small, wide)
  with_images, _, _ = _image_model("fixed", seed=0)
  with pytest.raises(ValueError, match="layer 'visual' .* no counterpart"):
    copy_weights(small, with_images)


def test_the_feature_index_finds_each_ads_features_and_the_blank_images_for_unknown_ads():
  """The Trainer's index of a frozen backbone: per-ad feature rows found by the ad's fingerprint,
  and the blank image's features for an ad missing from the catalogue."""
  from models.pretrain import embed
  from models.visual import split_frozen_tower
  from tfx_pipeline.preprocessing import fingerprint
  from tfx_pipeline.trainer import _feature_index, blank_image
  model, _, visual = _image_model("fixed", seed=0)
  features, _ = split_frozen_tower(model.get_layer("visual").tower, visual)
  images = np.random.default_rng(0).integers(0, 256, size=(3, SIZE, SIZE, 3)).astype(np.uint8)
  index = _feature_index(features, ["b", "a", "c"], images)
  found = np.asarray(index.lookup(fingerprint(["c", "zz", "b"])))
  np.testing.assert_allclose(found[0], embed(features, images[2:3])[0], atol=1e-6)
  np.testing.assert_allclose(found[1], embed(features, blank_image(images))[0], atol=1e-6)
  np.testing.assert_allclose(found[2], embed(features, images[:1])[0], atol=1e-6)
  assert np.abs(found[0] - found[2]).max() > 1e-4
