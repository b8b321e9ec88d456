"""The MovieLens-1M posters loader (cscnn/data/movielens.py) on a tiny fake source in the real
file formats, with hand-computable outputs; and ~50 real users when the shared copy exists."""

import collections
import csv
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from cscnn.data.movielens import (MOVIELENS_SPEC, MovieLensConfig, SourceError, clicked_categories, convert, decade,
                                  title_words)
from spec.files import DATA_SPEC_FILE, load
from tfx_pipeline import configs
from spec import features as F
from tfx_pipeline.input_check import check_impressions, detect_layout

S = F.DEFAULT_SPEC

REAL_SOURCE = os.path.join(os.path.dirname(ROOT), "shared", "data", "movielens1m_posters")

MOVIES = [  # MovieID::Title::Genres, written in ISO-8859-1 like the real file
    "1::Toy Story (1995)::Animation|Children's|Comedy",
    "2::Jumanji (1995)::Adventure|Children's|Fantasy",
    "3::Misérables, Les (1995)::Drama|Musical",
    "4::Metropolis (1927)::Sci-Fi",
    "5::Casablanca (1942)::Drama|Romance|War",
    "6::Alien (1979)::Action|Horror|Sci-Fi",
    "7::She's the One (1996)::Comedy|Romance",
    "8::Never Rated (2000)::Comedy",
    "9::Nanook of the North (1922)::Documentary",
]
USERS = ["1::F::1::10::48067", "2::M::56::16::70072", "3::M::25::15::55117", "4::F::35::0::A1B2C",
         "5::M::18::4::90210"]
RATINGS = {1: [1, 2, 3, 4, 5], 2: [1, 3, 5, 6, 7, 9], 3: [1, 2], 4: [3, 4, 5, 6], 5: [4, 6, 9]}
# the catalogue: every rated movie; expected (category = first genre's index, brand, title words)
ADS = {"m1": (3, "d1990", "toy story"), "m2": (2, "d1990", "jumanji"),
       "m3": (8, "d1990", "miserables les"), "m4": (15, "d1920", "metropolis"),
       "m5": (8, "d1940", "casablanca"), "m6": (1, "d1970", "alien"),
       "m7": (5, "d1990", "shes the one"), "m9": (7, "d1920", "nanook of the north")}
ADS_IDS = [int(a[1:]) for a in ADS]
CFG = MovieLensConfig(users=0, negatives=2, eval_negatives=3, seed=0)


def _fake_source(root):
  root.mkdir(parents=True, exist_ok=True)
  (root / "movies.dat").write_bytes(("\n".join(MOVIES) + "\n").encode("iso-8859-1"))
  (root / "users.dat").write_text("\n".join(USERS) + "\n")
  with open(root / "ratings.csv", "w") as f:
    f.write("user_id,movie_id,rating\n")
    for u, ms in RATINGS.items():
      for i, m in enumerate(ms):
        f.write(f"{u},{m},{1 + (u + i) % 5}\n")
  posters = root / "posters"
  posters.mkdir()
  for m in (1, 3, 4, 5, 6, 7, 8):
    Image.new("RGB", (6, 9), (20 * m, 40, 90)).save(posters / f"{m}.jpg", format="JPEG")
  Image.new("RGB", (6, 9), (200, 10, 10)).save(posters / "2.jpg", format="PNG")   # like 3575.jpg
  Image.new("L", (6, 9), 77).save(posters / "5.jpg", format="JPEG")              # grayscale
  return root                                                                      # 9: no poster


def _quiet(*_):
  pass


def _read(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def _by_user(rows):
  out = collections.defaultdict(lambda: {"pos": [], "neg": []})
  for r in rows:
    out[int(r["user_id"][1:])]["pos" if r[S.label] == "1" else "neg"].append(int(r[S.ad][1:]))
  return out


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  base = tmp_path_factory.mktemp("ml")
  src = _fake_source(base / "src")
  out = base / "out"
  summary = convert(str(src), str(out), CFG, log=_quiet)
  return {"src": src, "out": out, "summary": summary,
          "train": _read(out / "impressions" / "train" / "impressions.csv"),
          "eval": _read(out / "impressions" / "eval" / "impressions.csv"),
          "validation": _read(out / "validation" / "impressions.csv"),
          "ads": _read(out / "ads" / "ads.csv")}


def test_catalogue_rows(converted):
  ads = converted["ads"]
  assert list(ads[0]) == ["ad_id", "category_id", "brand_id", "title_words", "image"]
  assert {a["ad_id"]: (int(a["category_id"]), a["brand_id"], a["title_words"]) for a in ads} == ADS
  for a in ads:   # absolute paths into the source, nothing copied
    assert os.path.isabs(a["image"])
    assert a["image"] == os.path.join(str(converted["src"]), "posters", a["ad_id"][1:] + ".jpg")
  assert not os.path.exists(converted["out"] / "posters")


def test_split_sizes_per_user(converted):
  train, evals, val = (_by_user(converted[k]) for k in ("train", "eval", "validation"))
  n_train = {u: len(ms) - 2 if len(ms) >= 3 else len(ms) for u, ms in RATINGS.items()}
  for u, ms in RATINGS.items():
    assert len(train[u]["pos"]) == n_train[u]
    assert len(train[u]["neg"]) == CFG.negatives * n_train[u]
  # exactly one held-out positive per user with >= 3 ratings; user 3 (2 ratings): train only
  assert sorted(evals) == sorted(val) == [1, 2, 4, 5]
  for u in (1, 2, 4, 5):
    assert len(evals[u]["pos"]) == len(val[u]["pos"]) == 1
    unrated = set(ADS_IDS) - set(RATINGS[u])
    assert len(evals[u]["neg"]) == len(set(evals[u]["neg"])) == min(CFG.eval_negatives, len(unrated))
  # user 1's and user 2's unrated movies are all drawn (M = 3 >= 3 resp. 2 candidates)
  assert sorted(evals[1]["neg"]) == sorted(val[1]["neg"]) == [6, 7, 9]
  assert sorted(evals[2]["neg"]) == [2, 4]
  s = converted["summary"]
  assert s["rows"] == {"train": 36, "eval": 15, "validation": 15}
  assert s["positives"] == {"train": 12, "eval": 4, "validation": 4}
  assert (s["users"], s["users_without_holdout"], s["movies"]) == (5, 1, 8)
  assert (s["missing_posters"], s["missing_poster_movie_ids"]) == (1, [9])


def test_held_out_and_negatives(converted):
  train, evals, val = (_by_user(converted[k]) for k in ("train", "eval", "validation"))
  for u, rated in RATINGS.items():
    parts = [train[u]["pos"], evals[u]["pos"], val[u]["pos"]]
    assert sorted(sum(parts, [])) == sorted(rated)          # a partition of the user's ratings
    for split in (train, evals, val):
      assert not set(split[u]["neg"]) & set(rated)          # negatives never rated by the user
      assert set(split[u]["neg"]) <= set(ADS_IDS)


def test_feature_mapping(converted):
  rows = converted["train"] + converted["eval"] + converted["validation"]
  assert list(converted["train"][0]) == list(MOVIELENS_SPEC.raw_columns)
  assert load(os.path.join(converted["out"], DATA_SPEC_FILE)) == MOVIELENS_SPEC
  city = {1: "zip4_F", 2: "zip7_M", 3: "zip5_M", 4: "zipx_F", 5: "zip9_M"}
  age = {1: "1", 2: "56", 3: "25", 4: "35", 5: "18"}
  for r in rows:
    u = int(r["user_id"][1:])
    assert (r["user_city"], r["user_age"]) == (city[u], age[u])
    assert (int(r["category_id"]), r["brand_id"], r["title_words"]) == ADS[r["ad_id"]]
    assert (r["hour"], r["weekday"], r["query_words"]) == ("0", "0", "noquery")


def test_clicked_categories_from_training_positives_only(converted):
  assert clicked_categories(np.array([8, 8, 1, 3, 3, 3, 2, 15, 7])) == "3 8 1 2 7"
  train = _by_user(converted["train"])
  held_out = _by_user(converted["eval"] + converted["validation"])
  rows = converted["train"] + converted["eval"] + converted["validation"]
  for u in RATINGS:
    counts = collections.Counter(ADS[f"m{m}"][0] for m in train[u]["pos"])
    expected = " ".join(str(c) for c, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:5])
    assert {r["clicked_categories"] for r in rows if r["user_id"] == f"u{u}"} == {expected}
  # user 5 rated three movies of three different genres: one trains, two are held out
  (only,) = train[5]["pos"]
  assert {r["clicked_categories"] for r in rows if r["user_id"] == "u5"} == {str(ADS[f"m{only}"][0])}
  for m in held_out[5]["pos"]:
    assert str(ADS[f"m{m}"][0]) not in next(r["clicked_categories"] for r in rows if r["user_id"] == "u5")


def test_clicked_ads_are_the_users_other_training_positives(converted):
  train = _by_user(converted["train"])
  for split in ("train", "eval", "validation"):
    for r in converted[split]:
      u = int(r["user_id"][1:])
      expected = {f"m{m}" for m in train[u]["pos"]}
      if split == "train" and r["label"] == "1":
        expected -= {r["ad_id"]}                   # its own movie and label are not its input
      got = r["clicked_ads"].split()
      assert got == [F.EMPTY_LIST] if not expected else sorted(got) == sorted(expected), (split, r)
    for r in converted[split]:                     # clicked_genres: the same movies' categories
      ads = r["clicked_ads"].split()
      expected = [F.EMPTY_LIST] if ads == [F.EMPTY_LIST] else [str(ADS[m][0]) for m in ads]
      assert r["clicked_genres"].split() == expected, (split, r)
  # the same order for all of a user's rows: the eval rows' lists are equal
  for u in RATINGS:
    lists = {r["clicked_ads"] for r in converted["eval"] if r["user_id"] == f"u{u}"}
    assert len(lists) <= 1


def test_pre_split_layout_passes_the_input_check(converted):
  out = str(converted["out"])
  assert detect_layout(out) == configs.LAYOUT_PRE_SPLIT
  assert check_impressions(out, MOVIELENS_SPEC) == 36 + 15


def _digest(out):
  h = hashlib.sha256()
  for rel in ("impressions/train/impressions.csv", "impressions/eval/impressions.csv",
              "validation/impressions.csv", "ads/ads.csv"):
    h.update((out / rel).read_bytes())
  return h.hexdigest()


def test_same_seed_same_bytes_and_user_subsets(converted, tmp_path):
  src = converted["src"]
  convert(str(src), str(tmp_path / "a"), CFG, log=_quiet)
  convert(str(src), str(tmp_path / "b"), MovieLensConfig(users=0, negatives=2, eval_negatives=3, seed=1), log=_quiet)
  assert _digest(tmp_path / "a") == _digest(converted["out"])
  assert _digest(tmp_path / "b") != _digest(converted["out"])
  # --users 2: two users, each split exactly as in the full conversion (seeded per user)
  s = convert(str(src), str(tmp_path / "c"), MovieLensConfig(users=2, negatives=2, eval_negatives=3), log=_quiet)
  assert s["users"] == 2
  sub = _read(tmp_path / "c" / "impressions" / "train" / "impressions.csv") + \
      _read(tmp_path / "c" / "impressions" / "eval" / "impressions.csv")
  users = {r["user_id"] for r in sub}
  assert len(users) == 2
  full = [r for r in converted["train"] + converted["eval"] if r["user_id"] in users]
  key = lambda r: tuple(r.values())  # noqa: E731
  assert sorted(map(key, sub)) == sorted(map(key, full))


def test_popularity_negatives_follow_one_plus_training_positives_and_skip_rated_movies():
  from cscnn.data.movielens import popularity_negatives
  weights = np.array([1.0, 5.0, 1.0, 3.0, 2.0])
  draws = popularity_negatives(np.array([1, 4]), 20000, weights, seed=0, user_id=7)
  share = np.bincount(draws, minlength=5) / len(draws)
  np.testing.assert_allclose(share, [0.2, 0.0, 0.2, 0.6, 0.0], atol=0.015)   # 1 : 1 : 3 over 0, 2, 3
  np.testing.assert_array_equal(draws, popularity_negatives(np.array([1, 4]), 20000, weights, 0, 7))
  assert len(popularity_negatives(np.array([0, 1, 2, 3, 4]), 5, weights, 0, 7)) == 0   # rated everything


def test_popularity_negatives_change_only_the_training_negatives(converted, tmp_path):
  cfg = MovieLensConfig(users=0, negatives=40, eval_negatives=3, seed=0, train_negatives="popularity")
  convert(str(converted["src"]), str(tmp_path / "p"), cfg, log=_quiet)
  uniform = tmp_path / "u"
  convert(str(converted["src"]), str(uniform), MovieLensConfig(users=0, negatives=40, eval_negatives=3, seed=0),
          log=_quiet)
  for rel in (("impressions", "eval", "impressions.csv"), ("validation", "impressions.csv")):
    assert _read(tmp_path.joinpath("p", *rel)) == _read(uniform.joinpath(*rel))
  pop, uni = (_by_user(_read(d / "impressions" / "train" / "impressions.csv")) for d in (tmp_path / "p", uniform))
  positives = collections.Counter(m for u in pop.values() for m in u["pos"])
  for u, rated in RATINGS.items():
    assert sorted(pop[u]["pos"]) == sorted(uni[u]["pos"])
    assert len(pop[u]["neg"]) == 40 * len(pop[u]["pos"]) and not set(pop[u]["neg"]) & set(rated)
  # user 3 rated movies 1 and 2; among the rest, the most trained-on movie is drawn most often
  drawn = collections.Counter(pop[3]["neg"])
  top = max((m for m in ADS_IDS if m not in RATINGS[3]), key=lambda m: positives[m])
  rare = min((m for m in ADS_IDS if m not in RATINGS[3]), key=lambda m: positives[m])
  assert positives[top] > positives[rare] and drawn[top] > drawn[rare]
  summary = json.loads((tmp_path / "p" / "summary.json").read_text())
  assert "by 1 + training positives" in summary["protocol"] and summary["config"]["train_negatives"] == "popularity"
  with pytest.raises(ValueError, match="--train-negatives"):
    MovieLensConfig(train_negatives="popular")


def test_catalogue_images_through_ad_catalog_gen_reader(converted):
  from components.ad_catalog import CatalogError, read_catalog
  out = str(converted["out"])
  ads = {ad: ok for ad, _, _, ok in read_catalog(os.path.join(out, "ads", "ads.csv"), out, 8, "blank", log_every=0,
                                                  max_blank_share=0.2)}   # 1 of 8 posters missing
  assert ads == {a: int(a != "m9") for a in ADS}   # m2 is a PNG named .jpg, m5 grayscale: fine
  with pytest.raises(CatalogError, match=r"ad 'm9': image file .*posters/9.jpg does not exist"):
    list(read_catalog(os.path.join(out, "ads", "ads.csv"), out, 8, "error", log_every=0))


def test_wrong_source_names_the_missing_file(tmp_path, converted):
  with pytest.raises(SourceError, match="is not a folder"):
    convert(str(tmp_path / "nowhere"), str(tmp_path / "o"), CFG, log=_quiet)
  src = _fake_source(tmp_path / "src")
  (src / "movies.dat").unlink()
  with pytest.raises(SourceError, match=f"{src / 'movies.dat'} does not exist"):
    convert(str(src), str(tmp_path / "o"), CFG, log=_quiet)
  proc = subprocess.run([sys.executable, "-m", "cscnn", "data", "movielens", "--source", str(src),
                         "--out", str(tmp_path / "o")], cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 2 and f"{src / 'movies.dat'} does not exist" in proc.stderr
  with pytest.raises(SourceError, match="inside the repository"):
    convert(str(converted["src"]), os.path.join(ROOT, "movielens_here"), CFG, log=_quiet)
  assert not os.path.exists(os.path.join(ROOT, "movielens_here"))
  (tmp_path / "flat" / "impressions").mkdir(parents=True)
  (tmp_path / "flat" / "impressions" / "impressions.csv").write_text("label\n")
  with pytest.raises(SourceError, match="already holds flat impressions files"):
    convert(str(converted["src"]), str(tmp_path / "flat"), CFG, log=_quiet)


def test_title_parsing():
  assert title_words("American President, The (1995)") == "american president the"
  assert title_words("City of Lost Children, The (Cité des enfants perdus, La) (1995)") == \
      "city of lost children the cite des enfants perdus la"
  assert (decade("Toy Story (1995)"), decade("Metropolis (1927)"), decade("2001 (2000)")) == \
      ("d1990", "d1920", "d2000")


@pytest.mark.skipif(not os.path.isdir(REAL_SOURCE), reason=f"{REAL_SOURCE} is absent")
def test_real_movielens_50_users(tmp_path):
  s = convert(REAL_SOURCE, str(tmp_path), MovieLensConfig(users=50), log=_quiet)
  assert (s["users"], s["movies"], s["missing_posters"]) == (50, 3706, 7)
  assert s["positives"]["eval"] == s["positives"]["validation"] == 50   # every ML-1M user has >= 20 ratings
  assert s["rows"]["eval"] == 50 * 21 and s["negatives"]["train"] == 4 * s["positives"]["train"]
  assert check_impressions(str(tmp_path), MOVIELENS_SPEC) == s["rows"]["train"] + s["rows"]["eval"]
  with open(tmp_path / "summary.json") as f:
    assert json.load(f)["users"] == 50


def test_new_movies_get_no_training_row_and_keep_their_held_out_ratings(converted, tmp_path):
  from cscnn.data.movielens import new_movie_mask
  cfg = MovieLensConfig(users=0, negatives=2, eval_negatives=3, seed=0, new_movies=0.375)
  summary = convert(str(converted["src"]), str(tmp_path), cfg, log=_quiet)
  catalogue = sorted(ADS_IDS)
  new = {m for m, is_new in zip(catalogue, new_movie_mask(len(catalogue), 0.375, 0)) if is_new}
  assert len(new) == 3 == summary["new_movies"]                      # round(0.375 * 8)
  train = _by_user(_read(tmp_path / "impressions" / "train" / "impressions.csv"))
  held = {name: _by_user(_read(tmp_path.joinpath(*rel))) for name, rel in
          (("eval", ("impressions", "eval", "impressions.csv")), ("validation", ("validation", "impressions.csv")))}
  before = {name: _by_user(converted[name]) for name in ("eval", "validation")}
  for u, rated in RATINGS.items():
    trained = set(train[u]["pos"]) | set(train[u]["neg"])
    assert not trained & new, (u, trained & new)
    # the held-out positives are those of the shared protocol (same draws), new movies included
    out = set(held["eval"][u]["pos"]) | set(held["validation"][u]["pos"])
    assert out == set(before["eval"][u]["pos"]) | set(before["validation"][u]["pos"])
    assert set(train[u]["pos"]) == set(rated) - out - new            # other ratings of new movies dropped
    assert len(train[u]["neg"]) == 2 * len(train[u]["pos"]) and not set(train[u]["neg"]) & set(rated)
  rows = _read(tmp_path / "impressions" / "train" / "impressions.csv")
  assert not {int(a[1:]) for r in rows for a in r["clicked_ads"].split() if a.startswith("m")} & new
  eval_rows = _read(tmp_path / "impressions" / "eval" / "impressions.csv")
  on_new = [r[S.label] for r in eval_rows if int(r[S.ad][1:]) in new]
  assert summary["eval_positives_on_new_movies"] == on_new.count("1") > 0        # the test can see a new movie
  assert summary["eval_negatives_on_new_movies"] == on_new.count("0") > 0        # and rank it against others
  with pytest.raises(ValueError, match="--new-movies"):
    MovieLensConfig(new_movies=1.0)
