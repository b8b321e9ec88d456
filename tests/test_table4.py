"""Paper Table 4 in the BPR setting (cscnn/table4.py): eq. 13 by hand, the negative sampler,
the reader's errors, and on a tiny colour-keyed data set that the image rows rank cold ads that
BPR-MF cannot, with the frozen encoder left unchanged by VBPR and trained by the CNN rows."""

import csv
import json
import os

import numpy as np
import pytest
from PIL import Image

from conftest import cscnn
from cscnn.table4 import (BPRConfig, Interactions, per_user_auc, read_interactions, run_table, sample_negatives,
                          write_table)
from spec.features import COLD_THRESHOLD

COLOURS = {0: (220, 30, 30), 1: (30, 30, 220)}   # category 0: red posters, 1: blue
HEADER = ["label", "user_id", "ad_id"]


def test_per_user_auc_by_hand():
  rows = np.array([[0, 0, 1], [0, 1, 0], [0, 2, 0],            # user 0: 0.9 over 0.5, under 0.95 -> 1/2
                   [1, 3, 1], [1, 4, 0], [1, 5, 0], [1, 6, 0],  # user 1: 0.2 over 0.1, 0.1, under 0.3 -> 2/3
                   [2, 0, 1], [2, 1, 0]])                        # user 2: a tie counts as wrong -> 0
  scores = np.array([0.9, 0.5, 0.95, 0.2, 0.1, 0.1, 0.3, 0.4, 0.4])
  mean, users = per_user_auc(rows, scores)
  assert users == 3 and mean == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)
  cold = np.zeros(7, bool)
  cold[3] = True                                                 # only user 1's held-out ad is cold
  assert per_user_auc(rows, scores, cold) == (pytest.approx(2 / 3), 1)
  assert per_user_auc(rows[rows[:, 0] == 0], scores[rows[:, 0] == 0], cold)[1] == 0


def test_negatives_are_never_the_users_positives():
  rng = np.random.default_rng(0)
  n_ads = 4
  train = np.array([[0, 0], [0, 1], [0, 2], [1, 3]])
  keys = np.unique(train[:, 0] * n_ads + train[:, 1])
  users = np.array([0, 1] * 500)
  neg = sample_negatives(rng, users, n_ads, keys)
  assert set(neg[users == 0]) == {3}
  assert set(neg[users == 1]) == {0, 1, 2}
  with pytest.raises(ValueError, match="nearly every ad"):
    sample_negatives(rng, np.array([0]), 3, np.array([0, 1, 2]))


def _write(path, rows, header=HEADER):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(header)
    w.writerows(rows)


def _colour_data(root, users=16, warm=12, cold=4, size=16):
  """Users 0..N-1 like colour u % 2. Per colour `warm` ads with training positives and `cold`
  ads with none. Each user: positives on 6 warm ads of their colour; validation and test hold
  out one cold ad of their colour against the cold ads of the other colour."""
  rng = np.random.default_rng(1)
  ads, by = [], {0: {"warm": [], "cold": []}, 1: {"warm": [], "cold": []}}
  os.makedirs(root / "ads" / "img")
  for c in (0, 1):
    for kind, n in (("warm", warm), ("cold", cold)):
      for k in range(n):
        ad = f"a{c}{kind[0]}{k}"
        noise = rng.integers(-25, 25, (size, size, 3))
        Image.fromarray(np.clip(np.array(COLOURS[c]) + noise, 0, 255).astype(np.uint8)).save(
            root / "ads" / "img" / f"{ad}.png")
        ads.append([ad, c, f"ads/img/{ad}.png", f"{['red', 'blue'][c]} poster {k}"])
        by[c][kind].append(ad)
  _write(root / "ads" / "ads.csv", ads, ["ad_id", "category_id", "image", "title_words"])
  train, test, validation = [], [], []
  for u in range(users):
    c = u % 2
    for ad in rng.choice(by[c]["warm"], 6, replace=False):
      train.append([1, f"u{u}", ad])
    for split, pick in ((test, 0), (validation, 1)):
      split.append([1, f"u{u}", by[c]["cold"][(u // 2 + pick) % cold]])
      split.extend([0, f"u{u}", ad] for ad in by[1 - c]["cold"])
  _write(root / "impressions" / "train" / "impressions.csv", train)
  _write(root / "impressions" / "eval" / "impressions.csv", test)
  _write(root / "validation" / "impressions.csv", validation)
  return root


def test_reader_maps_the_splits_and_names_bad_rows(tmp_path):
  root = _colour_data(tmp_path / "d")
  inter = read_interactions(str(root), image_size=16)
  assert isinstance(inter, Interactions)
  assert len(inter.ads) == 32 and inter.images.shape == (32, 16, 16, 3) and len(inter.train) == 16 * 6
  assert inter.train.shape[1] == 2 and set(inter.test[:, 2]) == {0, 1}
  positives = np.bincount(inter.train[:, 1], minlength=32)
  assert all(inter.cold[i] for i, a in enumerate(inter.ads) if a[2] == "c")   # no training positive
  assert list(inter.cold) == [p < COLD_THRESHOLD for p in positives]
  with open(root / "validation" / "impressions.csv", "a") as f:
    f.write("2,u1,a0w0\n")
  with pytest.raises(ValueError, match=r"validation/impressions.csv:\d+: label must be 0 or 1"):
    read_interactions(str(root))
  _write(root / "validation" / "impressions.csv", [[1, "u1", "nope"]])
  with pytest.raises(ValueError, match=r"validation/impressions.csv:2: ad 'nope' is not in"):
    read_interactions(str(root))


@pytest.fixture(scope="module")
def colour_table(tmp_path_factory):
  """BPR-MF, VBPR on a frozen random-weight encoder given as a weights file, and DVBPR (the CNN
  end to end, no category) from the same file, one seed each, on the colour data."""
  import keras
  from models.backbones import save_backbone_weights
  from models.visual import VisualConfig, build_tower
  base = tmp_path_factory.mktemp("t4")
  root = _colour_data(base / "d")
  keras.utils.set_random_seed(3)
  weights = str(base / "random.weights.h5")
  save_backbone_weights(build_tower(VisualConfig(variant="finetune", image_size=16), 2), weights)
  cfg = BPRConfig(epochs=6, batch_size=32, learning_rate=0.02, l2=0.0, image_size=16)
  out = base / "out"
  results = run_table(str(root), str(out), ("bpr-mf", "vbpr", "dvbpr"), 1, cfg, weights, log=lambda *_: None)
  return {"root": root, "out": out, "cfg": cfg, "weights": weights,
          "by": {r["method"]: r for r in results}}


def test_images_rank_cold_ads_that_bpr_mf_cannot(colour_table):
  by = colour_table["by"]
  # every held-out ad is cold (no training positive): BPR-MF has only random gamma_a for them
  assert by["bpr-mf"]["cold_users"] == by["bpr-mf"]["wide_cold_users"] == 16
  assert by["bpr-mf"]["cold_auc"] == by["bpr-mf"]["wide_cold_auc"] == by["bpr-mf"]["auc"]
  assert by["bpr-mf"]["auc"] < 0.8
  assert by["vbpr"]["auc"] > 0.95
  assert by["dvbpr"]["auc"] > 0.95          # images alone: DVBPR has no category input
  assert all(len(r["epochs"]) == 6 for r in by.values())
  best = by["vbpr"]["epochs"][by["vbpr"]["best_epoch"] - 1]
  assert best["validation_auc"] == max(e["validation_auc"] for e in by["vbpr"]["epochs"])
  assert by["vbpr"]["auc"] == best["auc"]


def test_table_and_cells_written_and_a_changed_configuration_refused(colour_table):
  out = colour_table["out"]
  text = (out / "table4.md").read_text()
  assert "| BPR-MF | 1 |" in text and "| VBPR | 1 |" in text and "0.7964 / 0.7718" in text
  with open(out / "cells" / "vbpr_seed0.json") as f:
    assert json.load(f)["visual_init"] == colour_table["weights"]
  kept = run_table(str(colour_table["root"]), str(out), ("bpr-mf",), 1, colour_table["cfg"], "scratch",
                   log=lambda *_: None)
  assert kept[0]["auc"] == colour_table["by"]["bpr-mf"]["auc"]
  other = BPRConfig(**{**colour_table["cfg"].__dict__, "epochs": 2})
  with pytest.raises(ValueError, match="another configuration"):
    run_table(str(colour_table["root"]), str(out), ("bpr-mf",), 1, other, "scratch", log=lambda *_: None)


def test_table_pairs_the_steps_gains_by_seed(tmp_path):
  def cell(method, seed, auc, cold):
    return {"method": method, "seed": seed, "auc": auc, "cold_auc": cold, "wide_cold_auc": auc - 0.2,
            "best_epoch": 3, "users": 10, "cold_users": 2, "wide_cold_users": 4, "wall_time_s": 1.0}
  # VBPR - BPR-MF per seed: +0.02, +0.04, and seed 2 has no VBPR cell, so it is left out.
  # Cold: seed 0 has no cold user (NaN) and leaves its gain out; seed 1 gains 0.5 - 0.4.
  results = [cell("bpr-mf", 0, 0.80, float("nan")), cell("bpr-mf", 1, 0.70, 0.4), cell("bpr-mf", 2, 0.9, 0.4),
             cell("vbpr", 0, 0.82, 0.3), cell("vbpr", 1, 0.74, 0.5)]
  text = write_table(results, str(tmp_path))
  assert "| BPR-MF | 3 | 0.8000 ± 0.1000 | 0.4000 ± 0.0000 |" in text    # its NaN cold AUC left out
  assert "| BPR-MF -> VBPR | 2 | +0.0300 ± 0.0141 | +0.1000 | +0.0300 ± 0.0141 | +0.0200, +0.0400 |" in text
  assert "DVBPR" not in text.split("Gains paired")[1]      # a step needs both of its methods
  assert (tmp_path / "table4.md").read_text() == text


def test_vbpr_keeps_the_encoder_frozen_and_cscnn_trains_it():
  import tensorflow as tf
  from cscnn.table4 import _Model
  inter = Interactions(["u0", "u1"], ["a", "b", "c"], np.array([0, 1, 0]), np.array([[0, 0], [1, 1]]),
                       np.zeros((0, 3), np.int64), np.zeros((0, 3), np.int64),
                       np.random.default_rng(0).integers(0, 255, (3, 16, 16, 3)).astype(np.uint8))
  cfg = BPRConfig(image_size=16)
  vbpr = _Model("vbpr", inter, cfg, None, seed=0)
  names = {v.path for v in vbpr.trainable_variables}
  assert any(n.startswith("E/") for n in names) and not any("conv" in n for n in names)
  cs = _Model("cscnn", inter, cfg, None, seed=0)
  assert any("conv" in v.path for v in cs.trainable_variables)
  scores, _ = vbpr(tf.constant([0, 1, 0]), tf.constant([0, 1, 2]))
  assert scores.shape == (3,)


def test_cli_refuses_vbpr_from_scratch(tmp_path):
  root = _colour_data(tmp_path / "d")
  proc = cscnn("experiment", "table4", "--data", str(root), "--output", str(tmp_path / "o"),
               "--methods", "vbpr", "--visual-init", "scratch", check=False)
  assert proc.returncode == 1 and "pretrained, frozen encoder" in proc.stderr


def test_positives_and_negatives_share_one_batch_norm_pass():
  """In training mode an ad's score depends on the set of ads in the batch (batch norm), not on
  whether it stands as positive or negative: with two passes, an ad alone among the positives
  would be normalised to a constant."""
  import tensorflow as tf
  from cscnn.table4 import _Model
  rng = np.random.default_rng(0)
  inter = Interactions(["u0"], ["a", "b", "c"], np.array([0, 1, 0]), np.array([[0, 0]]),
                       np.zeros((0, 3), np.int64), np.zeros((0, 3), np.int64),
                       rng.integers(0, 255, (3, 16, 16, 3)).astype(np.uint8))
  model = _Model("dvbpr", inter, BPRConfig(image_size=16), None, seed=0)
  u = tf.constant([0, 0])
  s_i, _, _ = model.pair(u, tf.constant([0, 0]), tf.constant([1, 2]), training=True)
  _, s_j, _ = model.pair(u, tf.constant([1, 2]), tf.constant([0, 0]), training=True)
  np.testing.assert_allclose(s_i.numpy(), s_j.numpy(), rtol=1e-5)
  s_mixed, _, _ = model.pair(u, tf.constant([0, 1]), tf.constant([2, 2]), training=True)
  assert abs(float(s_mixed[0]) - float(s_i[0])) < 1e-5          # same ads in the batch: same score
