"""Sample data generator, curated schema and the CSV pre-flight check."""

import csv
import dataclasses
import hashlib
import json
import os

import numpy as np
import pytest
from PIL import Image

from conftest import quadrant_colours

from cscnn.data.sample import COLOURS, SampleConfig, generate
from spec import features as F
from tfx_pipeline.input_check import InputDataError, check_impressions
from tfx_pipeline.schema import SCHEMA_PATH, schema_text

S = F.DEFAULT_SPEC


def _tree_digest(root):
  h = hashlib.sha256()
  for dirpath, _, files in sorted(os.walk(root)):
    for name in sorted(files):
      path = os.path.join(dirpath, name)
      h.update(os.path.relpath(path, root).encode())
      with open(path, "rb") as f:
        h.update(f.read())
  return h.hexdigest()


def _quiet(*_):
  pass


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
  out = tmp_path_factory.mktemp("sample")
  summary = generate(SampleConfig(impressions=20000, ads=200, categories=4, seed=3), str(out), log=_quiet)
  return out, summary


def test_same_seed_same_bytes(tmp_path):
  cfg = SampleConfig(impressions=300, ads=20, seed=7)
  generate(cfg, str(tmp_path / "a"), log=_quiet)
  generate(cfg, str(tmp_path / "b"), log=_quiet)
  generate(SampleConfig(impressions=300, ads=20, seed=8), str(tmp_path / "c"), log=_quiet)
  assert _tree_digest(tmp_path / "a") == _tree_digest(tmp_path / "b")
  assert _tree_digest(tmp_path / "a") != _tree_digest(tmp_path / "c")


def test_files_and_images(sample):
  out, summary = sample
  with open(out / "impressions" / "impressions.csv") as f:
    rows = list(csv.DictReader(f))
  assert tuple(rows[0].keys()) == S.raw_columns
  assert len(rows) == 20000
  with open(out / "ads" / "ads.csv") as f:
    ads = list(csv.DictReader(f))
  assert len(ads) == 200
  img = Image.open(out / ads[0]["image"])
  assert img.format == "PNG" and img.size == (32, 32) and img.mode == "RGB"
  assert summary["cold_ads_lt5"] > 0, "the popularity tail must leave cold ads"


def test_clicks_depend_on_category_specific_visual_properties(sample):
  """Within a category, ads whose disc in the category's key quadrant has the preferred colour
  (read from the pixels) get a clearly higher CTR; the same colour elsewhere in the image does
  not help; the preference differs between categories."""
  out, summary = sample
  prefs = summary["visual_preferences"]
  assert len({(p["colour"], p["quadrant"]) for p in prefs.values()}) == len(prefs)
  colours = {}
  with open(out / "ads" / "ads.csv") as f:
    for ad in csv.DictReader(f):
      colours[ad["ad_id"]] = quadrant_colours(Image.open(out / ad["image"]))
  hits = {"key": [0, 0], "elsewhere": [0, 0], "absent": [0, 0]}
  with open(out / "impressions" / "impressions.csv") as f:
    for r in csv.DictReader(f):
      c = colours[r["ad_id"]]
      p = prefs[r["category_id"]]
      if c[p["quadrant"]] == p["colour"]:
        group = "key"
      elif p["colour"] in c.values():
        group = "elsewhere"
      else:
        group = "absent"
      hits[group][0] += int(r["label"])
      hits[group][1] += 1
  ctr = {g: clicks / shown for g, (clicks, shown) in hits.items()}
  assert ctr["key"] > ctr["elsewhere"] + 0.15, ctr
  assert abs(ctr["elsewhere"] - ctr["absent"]) < 0.05, ctr


def test_overlays_clutter_the_images_and_leave_the_clicks_and_the_key_discs_alone(tmp_path):
  """--overlays N adds N palette-coloured squares of side S // 16 to each image and nothing
  else: the impressions, clicks, ads and visual ground truth are those of the bare images, and
  the disc colours still read back the same from the pixels."""
  bare = SampleConfig(impressions=300, ads=20, seed=7, overlays=0)
  generate(bare, str(tmp_path / "bare"), log=_quiet)
  generate(dataclasses.replace(bare, overlays=25), str(tmp_path / "ov"), log=_quiet)
  for rel in ("impressions/impressions.csv", "ads/ads.csv"):
    assert (tmp_path / "bare" / rel).read_bytes() == (tmp_path / "ov" / rel).read_bytes(), rel
  truth = [json.loads((tmp_path / d / "visual.json").read_text())["visual_preferences"] for d in ("bare", "ov")]
  assert truth[0] == truth[1]
  palette = np.array(list(COLOURS.values()))
  for name in sorted(os.listdir(tmp_path / "bare" / "images")):
    a = np.asarray(Image.open(tmp_path / "bare" / "images" / name)).astype(int)
    b = np.asarray(Image.open(tmp_path / "ov" / "images" / name)).astype(int)
    changed = np.any(a != b, axis=-1)
    assert 0 < changed.sum() <= 25 * 2 * 2, (name, changed.sum())    # 25 squares of 2 x 2 at S = 32
    assert all((palette == px).all(-1).any() for px in b[changed]), name
    assert quadrant_colours(a) == quadrant_colours(b), name


def test_category_backgrounds_shift_each_categorys_background_and_nothing_else(tmp_path):
  """--category-backgrounds gives category k of K the background mean 80 + 96 (k - 1) / (K - 1)
  (here K = 6: 80, 99.2, 118.4, 137.6, 156.8, 176 instead of 128); the discs, impressions, clicks
  and ads stay those of the default images."""
  bare = SampleConfig(impressions=300, ads=24, seed=7)
  generate(bare, str(tmp_path / "bare"), log=_quiet)
  generate(dataclasses.replace(bare, category_backgrounds=True), str(tmp_path / "cb"), log=_quiet)
  for rel in ("impressions/impressions.csv", "ads/ads.csv"):
    assert (tmp_path / "bare" / rel).read_bytes() == (tmp_path / "cb" / rel).read_bytes(), rel
  level = {1: 80.0, 2: 99.2, 3: 118.4, 4: 137.6, 5: 156.8, 6: 176.0}
  palette = np.array(list(COLOURS.values()))
  with open(tmp_path / "bare" / "ads" / "ads.csv") as f:
    ads = list(csv.DictReader(f))
  assert {int(a["category_id"]) for a in ads} == set(level)
  for ad in ads:
    a = np.asarray(Image.open(tmp_path / "bare" / ad["image"])).astype(int)
    b = np.asarray(Image.open(tmp_path / "cb" / ad["image"])).astype(int)
    disc = (a[..., None, :] == palette).all(-1).any(-1)
    assert (a[disc] == b[disc]).all() and quadrant_colours(a) == quadrant_colours(b), ad["ad_id"]
    shift = (b[~disc] - a[~disc]).mean()
    assert abs(shift - (level[int(ad["category_id"])] - 128)) < 0.6, (ad["ad_id"], shift)


def test_sample_config_validation():
  with pytest.raises(ValueError, match="--ads"):
    SampleConfig(ads=0)
  with pytest.raises(ValueError, match="--overlays"):
    SampleConfig(overlays=-1)


def test_committed_schema_is_generated_from_features():
  with open(SCHEMA_PATH) as f:
    assert f.read() == schema_text(), "run `bin/cscnn schema --write`"


def test_feature_description_validation():
  with pytest.raises(ValueError, match="kind"):
    F.Feature("x", "embedding", str)
  with pytest.raises(ValueError, match="numeric features are int or float"):
    F.Feature("x", F.NUMERIC, str)
  with pytest.raises(ValueError, match="space-separated"):
    F.Feature("x", F.MULTI, int)


def _write(tmp_path, text):
  d = tmp_path / "impressions"
  d.mkdir(parents=True, exist_ok=True)
  (d / "impressions.csv").write_text(text)
  return str(tmp_path)


def _good_row(**overrides):
  row = {"label": "1", "user_id": "u1", "user_city": "c", "user_age": "2", "ad_id": "a",
         "category_id": "1", "brand_id": "b", "hour": "3", "weekday": "1", "query_words": "q",
         "title_words": "t", "clicked_categories": "1 2"}
  row.update(overrides)
  return ",".join(row[c] for c in S.raw_columns)


def test_input_check_accepts_good_rows(tmp_path):
  root = _write(tmp_path, ",".join(S.raw_columns) + "\n" + _good_row() + "\n" + _good_row(query_words="") + "\n")
  assert check_impressions(root) == 2


@pytest.mark.parametrize("row, expected", [
    (_good_row(hour="noon"), r"impressions.csv:3: field 'hour' must be an integer, got 'noon'"),
    (_good_row(label="2"), r"impressions.csv:3: field 'label' must be 0 or 1"),
    (_good_row(ad_id=""), r"impressions.csv:3: field 'ad_id' is empty"),
    (_good_row() + ",extra", r"impressions.csv:3: 13 fields, header has 12"),
])
def test_input_check_names_file_line_and_field(tmp_path, row, expected):
  root = _write(tmp_path, ",".join(S.raw_columns) + "\n" + _good_row() + "\n" + row + "\n")
  with pytest.raises(InputDataError, match=expected):
    check_impressions(root)


def test_input_check_missing_column(tmp_path):
  cols = [c for c in S.raw_columns if c != "weekday"]
  root = _write(tmp_path, ",".join(cols) + "\n")
  with pytest.raises(InputDataError, match=r"missing column\(s\) \['weekday'\] that the feature spec names"):
    check_impressions(root)


def test_input_check_names_a_column_the_spec_does_not_declare(tmp_path):
  root = _write(tmp_path, ",".join(S.raw_columns) + ",clicked_ads\n" + _good_row() + ",m1 m2\n")
  with pytest.raises(InputDataError, match=r"column\(s\) \['clicked_ads'\] are not in the feature spec"):
    check_impressions(root)
