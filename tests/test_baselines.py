"""The heuristic baselines (models/baselines.py) against hand-computed numbers, the Keras layer
against its numpy twin, a save/load round trip, and the baseline gate's config."""

import math

import keras
import numpy as np
import pytest

from models import baselines as B
from spec.features import DEFAULT_SPEC

# user, ad key, category, label; hand-computed below.
ROWS = np.array([
    (0, 10, 0, 1), (0, 20, 0, 1), (0, 30, 1, 0),
    (1, 10, 0, 1), (1, 30, 1, 1), (1, 20, 0, 0),
    (2, 20, 0, 1), (2, 10, 0, 0),
])


def _fit(**kw):
  return B.fit_baselines(ROWS[:, 0], ROWS[:, 1], ROWS[:, 2], ROWS[:, 3], num_users=3, num_categories=2, **kw)


def _score(kind, users, ads, cats, t):
  c = B.counts_numpy(t, np.array(users), np.array(ads), np.array(cats))
  return np.asarray(B.score(kind, c, t.blend_weights, float(t.ad_positives.max())), np.float64)


def test_counts_by_hand():
  t = _fit()
  assert t.ad_keys.tolist() == [10, 20, 30]
  assert t.ad_positives.tolist() == [2, 2, 1] and t.ad_rows.tolist() == [3, 3, 2]
  assert t.user_positives.tolist() == [2, 2, 1]
  np.testing.assert_allclose(t.category_prior, [5 / 7, 2 / 7], rtol=1e-6)   # (4 + 1) / (5 + 2), (1 + 1) / 7
  # positive sets {10, 20}, {10, 30}, {20}: cos(10, 20) = 1 / sqrt(2 * 2), cos(10, 30) = 1 / sqrt(2 * 1)
  assert t.ad_users.tolist() == [2, 2, 1]
  nb = {int(t.ad_keys[a]): {int(t.ad_keys[j]): float(c / math.sqrt(t.ad_users[a] * t.ad_users[j]))
                            for j, c in zip(t.neighbors[a], t.cooccurrence[a]) if j >= 0}
        for a in range(3)}
  assert nb[10] == pytest.approx({20: 0.5, 30: 1 / math.sqrt(2)})
  assert nb[20] == pytest.approx({10: 0.5}) and nb[30] == pytest.approx({10: 1 / math.sqrt(2)})


def test_scores_by_hand():
  t = _fit()
  # popularity: log1p(P_a) / log1p(P_max)
  np.testing.assert_allclose(_score(B.POPULARITY, [0, 0], [30, 99], [1, 1], t), [math.log(2) / math.log(3), 0])
  # the user's category share, shrunk by b = 1 towards the prior: u0 in cat 1: (0 + 2/7) / (2 + 1)
  np.testing.assert_allclose(_score(B.CATEGORY_AFFINITY, [0, 1], [30, 30], [1, 1], t),
                             [(2 / 7) / 3, (1 + 2 / 7) / 3], rtol=1e-6)
  # item kNN: u2 has {20}: x = cos(10, 20) = 0.5 -> 1/3; u0 has {10, 20}: x(30) = cos(30, 10)
  x = 1 / math.sqrt(2)
  np.testing.assert_allclose(_score(B.ITEM_KNN, [2, 0, 2], [10, 30, 30], [0, 1, 1], t),
                             [1 / 3, x / (1 + x), 0], rtol=1e-6)
  # an unknown user (id outside the table) and an unknown ad know nothing
  c = B.counts_numpy(t, np.array([7]), np.array([99]), np.array([0]))
  assert c["ad_positives"][0] == c["uc_positives"][0] == c["user_positives"][0] == c["knn"][0] == 0


def test_leave_one_out_counts_by_hand():
  """A training row's counts without the row: u0's positive (10, cat 0) and u1's positive
  (30, cat 1), and a negative row, which changes only the ad's row count."""
  t = _fit()
  c = B.counts_numpy(t, np.array([0, 1, 0]), np.array([10, 30, 30]), np.array([0, 1, 1]),
                     labels=np.array([1, 1, 0]))
  np.testing.assert_allclose(c["ad_positives"], [1, 0, 1])
  np.testing.assert_allclose(c["ad_rows"], [2, 1, 1])
  np.testing.assert_allclose(c["uc_positives"], [1, 0, 0])
  np.testing.assert_allclose(c["user_positives"], [1, 1, 2])
  # u0, ad 10: neighbour 20 is u0's; co(10, 20) = 1 was u0's own pair -> 0 without it.
  # u1, ad 30: neighbour 10 is u1's; co(30, 10) = 1 was u1's own pair -> 0.
  # u0, ad 30 (negative): 10 is u0's; cos(30, 10) = 1 / sqrt(1 * 2) with nothing left out.
  np.testing.assert_allclose(c["knn"], [0, 0, 1 / math.sqrt(2)])


def test_blend_is_a_logistic_regression_on_leave_one_out_counts():
  t = _fit()
  assert t.blend_weights.shape == (len(B.BLEND_FEATURES),)
  s = _score(B.BLEND, ROWS[:, 0], ROWS[:, 1], ROWS[:, 2], t)
  f = np.stack([np.asarray(v) for v in B.blend_features(
      B.counts_numpy(t, ROWS[:, 0], ROWS[:, 1], ROWS[:, 2]))], 1)
  np.testing.assert_allclose(s, 1 / (1 + np.exp(-(f @ t.blend_weights.astype(np.float64)))), rtol=1e-5)


@pytest.mark.parametrize("kind", B.KINDS)
def test_keras_layer_equals_numpy_and_survives_save_and_load(kind, tmp_path):
  t = _fit()
  model = B.build_baseline_model(kind, t, DEFAULT_SPEC)
  users = np.array([0, 1, 2, 2, 0, 5], np.int64)
  ads = np.array([10, 20, 30, 10, 99, 20], np.int64)
  cats = np.array([0, 0, 1, 0, 1, 0], np.int64)
  inputs = dict(zip(B.baseline_inputs(DEFAULT_SPEC), (users, ads, cats)))
  got = np.asarray(model(inputs)["ctr"])[:, 0]
  np.testing.assert_allclose(got, _score(kind, users, ads, cats, t), rtol=1e-5, atol=1e-7)
  assert ((got >= 0) & (got <= 1)).all()
  path = str(tmp_path / "m.keras")
  model.save(path)
  again = keras.models.load_model(path)
  np.testing.assert_allclose(np.asarray(again(inputs)["ctr"])[:, 0], got, rtol=1e-6)


@pytest.mark.parametrize("kind", B.KINDS)
def test_equal_counts_score_bit_identical_at_every_batch_position(kind):
  """Rows with the same counts score exactly alike wherever they sit in a batch (float32 log1p /
  sigmoid differ in the last bit between vectorised and scalar code), so a tie stays a tie
  however TFMA batches the eval rows: every (user, ad) pair of a random fit, at each position of
  batches of 3, 13 and 240 rows (scalar and vector code), gets one value."""
  rng = np.random.default_rng(0)
  n_users, n_ads = 12, 20
  rows = np.stack([rng.integers(0, n_users, 3000), rng.integers(0, n_ads, 3000) + 100,
                   np.zeros(3000, np.int64), rng.integers(0, 2, 3000)], 1)
  rows[:, 2] = (rows[:, 1] - 100) % 3
  t = B.fit_baselines(rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3], num_users=n_users, num_categories=3)
  model = B.build_baseline_model(kind, t, DEFAULT_SPEC)
  users = np.tile(np.arange(n_users), n_ads)
  ads = np.repeat(np.arange(n_ads) + 100, n_users)
  cats = (ads - 100) % 3
  names = B.baseline_inputs(DEFAULT_SPEC)
  seen = {}
  for batch in (3, 13, 240):
    for start in range(0, len(users), batch):
      sl = slice(start, start + batch)
      got = np.asarray(model(dict(zip(names, (users[sl], ads[sl], cats[sl]))))["ctr"])[:, 0]
      for u, a, v in zip(users[sl], ads[sl], got):
        seen.setdefault((int(u), int(a)), set()).add(float(v))
  assert max(len(v) for v in seen.values()) == 1, [k for k, v in seen.items() if len(v) > 1][:5]
  if kind == B.POPULARITY:   # one score per ad, and ads with equal positives tie exactly
    positives = dict(zip(t.ad_keys.tolist(), t.ad_positives.tolist()))
    by_positives = {}
    for (_, a), v in seen.items():
      by_positives.setdefault(positives[a], set()).update(v)
    assert all(len(v) == 1 for v in by_positives.values())


def test_bad_rows_are_refused():
  with pytest.raises(ValueError, match="labels must be 0 or 1"):
    B.fit_baselines([0], [1], [0], [2], num_users=1, num_categories=1)
  with pytest.raises(ValueError, match=r"user ids must lie in \[0, 1\)"):
    B.fit_baselines([3], [1], [0], [1], num_users=1, num_categories=1)
  with pytest.raises(ValueError, match="no training rows"):
    B.fit_baselines([], [], [], [], num_users=1, num_categories=1)
  with pytest.raises(ValueError, match="unknown baseline"):
    B.BaselineScorer("median", 1, 1, 1, 1, 1, 1)


def test_gate_adds_a_per_user_auc_bound_and_leaves_the_rest():
  from components.gated_evaluator import gated_config
  from tfx_pipeline.evaluation import PER_USER_AUC_CLASS, eval_config
  base = eval_config(0.6, 0.01)
  gated = gated_config(base, {"best": "blend", "best_per_user_auc": 0.7}, 0.002)
  bounds = [t.threshold.value_threshold.lower_bound.value
            for spec in gated.metrics_specs for m in spec.metrics if m.class_name == PER_USER_AUC_CLASS
            for t in m.per_slice_thresholds]
  assert bounds == [pytest.approx(0.702)]
  auc = [m for spec in gated.metrics_specs for m in spec.metrics if m.class_name == "AUC"][0]
  assert auc.per_slice_thresholds[0].threshold.value_threshold.lower_bound.value == pytest.approx(0.6)
  assert gated_config(base, {"best": "blend", "best_per_user_auc": 0.7}, -1) == base   # gate off
  assert not any(m.per_slice_thresholds for spec in base.metrics_specs for m in spec.metrics
                 if m.class_name == PER_USER_AUC_CLASS), "the input config is not modified"
