"""Catalogue pretraining (models/pretrain.py, components/catalog_pretrain.py) and starting the
visual tower from its weights file (models/backbones.py: save_backbone_weights,
load_backbone_weights)."""

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from models.attention import AttentionConfig
from models.backbones import BackboneConfig, build_visual_tower, load_backbone_weights, save_backbone_weights
from models.pretrain import (PretrainConfig, augment, encode_titles, feature_model, is_heldout, pretrain,
                             word_vocabulary)
from spec.names import CATEGORY_INPUT, IMAGE_INPUT


def _sample_catalogue(out, ads):
  """The sample's catalogue with category backgrounds (a category shows in its images, as in
  real product photos), read as AdCatalogGen reads it."""
  from cscnn.data.sample import SampleConfig, generate
  from components.ad_catalog import read_catalog, read_titles
  generate(SampleConfig(impressions=200, ads=ads, categories=4, users=20, category_backgrounds=True, seed=1),
           out, log=lambda *a: None)
  path = os.path.join(out, "ads", "ads.csv")
  titles = read_titles(path)
  rows = list(read_catalog(path, out, 32, log_every=0))
  images = np.stack([np.asarray(Image.open(io.BytesIO(png)).convert("RGB")) for _, _, png, _ in rows])
  ids = [r[0] for r in rows]
  return ids, np.array([r[1] for r in rows]), images, [titles[a] for a in ids]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
  """~18 s: 240 ads at 32x32, 100 steps of 32 for the encoder and as many for the reference."""
  ids, cats, images, titles = _sample_catalogue(str(tmp_path_factory.mktemp("catalogue")), 240)
  cfg = PretrainConfig("light", 32, steps=100, batch_size=32, seed=0, log_every=0)
  return pretrain(ids, cats, images, titles, cfg)


@pytest.mark.slow  # pretrains and fits the reference: ~20 s
def test_pretrained_encoder_separates_categories_far_better_than_random_weights(pretrained):
  m = pretrained.metrics
  p, r, chance = m["pretrained"], m["random"], m["chance"]
  assert m["ads"]["heldout"] >= 30 and m["categories"] == 4 and m["vocab_size"] == 4 * 8 + 20
  # Held out, same architecture, same heads, same steps: only the encoder's weights differ.
  assert p["category_top1"] >= 0.9 and p["category_top1"] >= r["category_top1"] + 0.15, m
  assert 1 - p["category_top1"] <= (1 - r["category_top1"]) / 3, m     # a third of the errors at most
  assert p["category_top1"] >= chance["category_top1"] + 0.4, m
  assert p["title_word_recall_at_10"] > r["title_word_recall_at_10"] + 0.1, m
  assert p["title_word_recall_at_10"] > chance["title_word_recall_at_10"], m
  assert p["steps_per_s"] > 0 and r["steps_per_s"] > 0
  json.dumps(m)   # metrics.json


def test_the_weights_file_starts_a_tower_with_any_attention_from_the_saved_backbone(tmp_path):
  path = str(tmp_path / "backbone.weights.h5")
  tower = build_visual_tower(BackboneConfig("light", 32), AttentionConfig("none"), name="src")
  save_backbone_weights(tower, path)
  images = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
  inputs = {IMAGE_INPUT: images, CATEGORY_INPUT: np.ones(8, "int64")}
  want = np.asarray(feature_model(tower)(inputs, training=False))
  fresh = build_visual_tower(BackboneConfig("light", 32), AttentionConfig("none"))
  assert not np.allclose(np.asarray(feature_model(fresh)(inputs, training=False)), want)
  for kind in ("none", "cscnn"):   # attention on the light net's branches reorders its layers
    dst = build_visual_tower(BackboneConfig("light", 32, weights=path), AttentionConfig(kind), 5)
    if kind == "none":
      np.testing.assert_allclose(np.asarray(feature_model(dst)(inputs, training=False)), want, rtol=1e-5, atol=1e-5)
    loaded = load_backbone_weights(dst, path)
    assert "stem_conv" in loaded and "conv1_down_conv" in loaded and len(loaded) == 12
    for name in loaded:
      for a, b in zip(dst.get_layer(name).weights, tower.get_layer(name).weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # frozen for the fixed variant
  fixed = build_visual_tower(BackboneConfig("light", 32, weights=path, freeze=True), AttentionConfig("none"))
  assert not fixed.get_layer("stem_conv").trainable and fixed.get_layer("x_v").trainable


def test_a_wrong_weights_file_stops_naming_the_layer_and_both_shapes(tmp_path):
  light = build_visual_tower(BackboneConfig("light", 32), AttentionConfig("none"))
  path = str(tmp_path / "light.weights.h5")
  save_backbone_weights(light, path)
  dst = build_visual_tower(BackboneConfig("resnet18", 32), AttentionConfig("cscnn"), 3)
  before = [np.asarray(w).copy() for w in dst.weights]
  with pytest.raises(ValueError, match=r"layer 'stem_conv' variable 0 \(stem_conv/kernel\): shape \(3, 3, 3, 16\) "
                                       r"in .*light\.weights\.h5 \(conv2d\), \(7, 7, 3, 64\) in the model"):
    load_backbone_weights(dst, path)
  assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(before, dst.weights))   # nothing loaded
  wide = build_visual_tower(BackboneConfig("light", 32, light_channels=(16, 32, 64, 128)), AttentionConfig("none"))
  with pytest.raises(ValueError, match=r"layer 'conv3_conv' variable 0 \(conv3_conv/kernel\): shape \(3, 3, 64, 64\) "
                                       r"in .*, \(3, 3, 64, 128\) in the model"):
    load_backbone_weights(wide, path)
  with pytest.raises(ValueError, match=r"weights='catalogue' names CataloguePretrain's artifact"):
    build_visual_tower(BackboneConfig("light", 32, weights="catalogue"))


def test_pipeline_run_stops_on_a_wrong_weights_file_before_the_pipeline(tmp_path, capsys):
  from cscnn.cli import main
  light = build_visual_tower(BackboneConfig("light", 32), AttentionConfig("none"))
  path = str(tmp_path / "light.weights.h5")
  save_backbone_weights(light, path)
  run = ["pipeline", "run", "--data", str(tmp_path), "--output", str(tmp_path / "out"), "--skip-input-check"]
  assert main(run + ["--backbone", "resnet18", "--visual-init", path]) == 2
  err = capsys.readouterr().err
  assert "layer 'stem_conv'" in err and "(3, 3, 3, 16)" in err and "(7, 7, 3, 64)" in err, err
  assert main(run + ["--variant", "none", "--visual-init", "catalogue"]) == 2
  assert "--variant none has none" in capsys.readouterr().err
  assert main(run + ["--visual-init", "cataloge"]) == 2
  assert "cataloge: no such file (nor one of scratch, catalogue, imagenet)" in capsys.readouterr().err
  assert not os.path.exists(tmp_path / "out")


def test_visual_init_becomes_the_trainers_backbone_weights(tmp_path):
  from cscnn.cli.pipeline import _backbone_weights
  from tfx_pipeline.trainer import resolve_catalogue_init
  from models.visual import VisualConfig
  assert _backbone_weights("scratch") is None and _backbone_weights("catalogue") == "catalogue"
  assert _backbone_weights("imagenet") == "imagenet"
  assert _backbone_weights("x.weights.h5") == os.path.abspath("x.weights.h5")
  visual = VisualConfig(backbone_weights="catalogue")
  assert resolve_catalogue_init(visual, "/a/b").backbone_weights == "/a/b/backbone.weights.h5"
  assert resolve_catalogue_init(VisualConfig(), "/a/b") == VisualConfig()
  with pytest.raises(ValueError, match="needs CataloguePretrain's artifact"):
    resolve_catalogue_init(visual, None)


def test_the_pipeline_pretrains_between_the_catalogue_and_the_trainer_only_when_asked():
  from tfx_pipeline.local_runner import nodes
  from tfx_pipeline.settings import TrainerSettings
  from models.visual import VisualConfig
  settings = TrainerSettings(visual=VisualConfig(backbone_weights="catalogue"))
  up = {n["id"]: n["upstream"] for n in nodes(trainer=settings)}
  assert up["CataloguePretrain"] == ["AdCatalogGen"]
  assert "CataloguePretrain" in up["VisualTrainer"]
  assert not any("Pretrain" in n["id"] for n in nodes(trainer=TrainerSettings()))


def test_split_vocabulary_and_augmentation_are_deterministic_and_light():
  ids = [f"ad{i:05d}" for i in range(2000)]
  held = [is_heldout(a, 0.2) for a in ids]
  assert held == [is_heldout(a, 0.2) for a in ids] and 0.17 < np.mean(held) < 0.23
  assert word_vocabulary(["a b", "b c", "b"], 2) == ["b", "a"]
  multi, wid = encode_titles(["a b", "z", ""], ["b", "a"])
  assert multi.tolist() == [[1, 1], [0, 0], [0, 0]] and wid.tolist() == [[1, 2], [0, 0], [0, 0]]
  import tensorflow as tf
  x = tf.constant(np.random.default_rng(0).uniform(0, 255, (16, 32, 32, 3)), tf.float32)
  y = augment(x, tf.random.Generator.from_seed(0), 0.03).numpy()
  assert y.shape == x.shape and y.min() >= 0 and y.max() <= 255
  assert not np.allclose(y, x.numpy())
  # a small shift: images stay far closer to themselves than to other images
  own = np.abs(y - x.numpy()).mean((1, 2, 3))
  other = np.abs(y - np.roll(x.numpy(), 1, 0)).mean((1, 2, 3))
  assert (own < other).all() or np.mean(own) < np.mean(other)


def test_the_summary_prints_the_pretraining_beside_the_reference():
  from tfx_pipeline.summary import format_summary
  metrics = {"pretrained": {"category_top1": 0.93, "title_word_recall_at_10": 0.61},
             "random": {"category_top1": 0.41, "title_word_recall_at_10": 0.33}, "ads": {"heldout": 57}}
  text = format_summary({"pretrain": {"uri": "/x", "metrics": metrics}})
  assert ("catalogue pretraining (57 held-out ads): category top-1 0.930 (random weights 0.410), "
          "title-word recall@10 0.610 (random 0.330)") in text
  assert "catalogue pretraining" not in format_summary({})


@pytest.fixture(scope="module")
def catalogue_run(tmp_path_factory):
  """`pipeline run --visual-init catalogue` on the tiny sample of the e2e tests (~6 min)."""
  from conftest import RUN, TINY, cscnn
  base = tmp_path_factory.mktemp("catalogue_init")
  data, out = str(base / "data"), str(base / "out")
  cscnn("data", "sample", "--out", data, "--seed", "1", *TINY)
  run = cscnn("pipeline", "run", "--data", data, "--output", out, *RUN, "--visual-init", "catalogue",
              "--pretrain-steps", "20", "--beam-arg=--direct_running_mode=multi_processing",
              "--beam-arg=--direct_num_workers=2")
  summary = json.loads(cscnn("pipeline", "summary", "--output", out, "--json").stdout)
  return {"out": out, "stdout": run.stdout, "summary": summary}


@pytest.mark.slow
def test_pipeline_run_with_catalogue_init_pretrains_then_trains_from_it_and_pushes(catalogue_run):
  import glob
  from models.pretrain import METRICS_FILE, WEIGHTS_FILE
  s = catalogue_run["summary"]
  assert s["components"]["CataloguePretrain"] == "COMPLETE", s["components"]
  uri = s["pretrain"]["uri"]
  assert os.path.isfile(os.path.join(uri, WEIGHTS_FILE))
  with open(os.path.join(uri, METRICS_FILE)) as f:
    metrics = json.load(f)
  assert metrics == s["pretrain"]["metrics"] and metrics["config"]["steps"] == 20
  for side in ("pretrained", "random"):
    assert 0 <= metrics[side]["category_top1"] <= 1 and 0 <= metrics[side]["title_word_recall_at_10"] <= 1
  assert "catalogue pretraining (" in catalogue_run["stdout"]
  (meta,) = glob.glob(os.path.join(catalogue_run["out"], "pipeline", "VisualTrainer", "model", "*", "Format-Serving",
                                   "training.json"))
  with open(meta) as f:
    assert json.load(f)["visual"]["backbone_weights"] == os.path.join(uri, WEIGHTS_FILE)
  assert s["blessed"] is True and s["pushed"] is True, s
