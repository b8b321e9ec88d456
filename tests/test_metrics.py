"""The per-user AUC of eq. 13 as a TFMA metric, on a hand-computable case."""

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing import util as beam_util
from tensorflow_model_analysis.metrics import metric_types

from tfx_pipeline.metrics import PerUserAUC, mean_user_auc, user_auc

# user a: clicked 0.9; not clicked 0.5, 0.95  -> pairs (0.9>0.5) yes, (0.9>0.95) no  -> 1/2
# user b: clicked 0.2, 0.8; not clicked 0.5   -> (0.2>0.5) no, (0.8>0.5) yes        -> 1/2
# user c: no click                            -> no pairs, left out
# user d: clicked 0.7; not clicked 0.1        -> 1
# user e: clicked 0.4; not clicked 0.4 (tie)  -> 0 (strict indicator)
USERS = {
    "a": ([1, 0, 0], [0.9, 0.5, 0.95]),
    "b": ([1, 1, 0], [0.2, 0.8, 0.5]),
    "c": ([0, 0], [0.3, 0.6]),
    "d": ([1, 0], [0.7, 0.1]),
    "e": ([1, 0], [0.4, 0.4]),
}
EXPECTED = (0.5 + 0.5 + 1.0 + 0.0) / 4


def test_user_auc_by_hand():
  assert [user_auc(*USERS[u]) for u in "abcde"] == [0.5, 0.5, None, 1.0, 0.0]


def test_mean_user_auc_by_hand_with_users_interleaved():
  rows = [(u, y, p) for u in "abcde" for y, p in zip(*USERS[u])]
  rows = rows[::2] + rows[1::2]        # every user's rows apart from each other
  users, labels, scores = zip(*rows)
  assert mean_user_auc(users, labels, scores) == EXPECTED
  assert np.isnan(mean_user_auc(["c", "c"], [0, 0], [0.3, 0.6]))


def test_per_user_auc_tfma_combiner():
  computations = PerUserAUC().computations(query_key="user_id")
  combiner = computations[0].combiner
  key = computations[0].keys[0]
  inputs = [metric_types.StandardMetricInputs(labels=np.array(y, dtype=float),
                                              predictions=np.array(p, dtype=float),
                                              example_weights=np.ones(len(y)))
            for y, p in USERS.values()]
  with beam.Pipeline() as p:
    result = p | beam.Create(inputs) | beam.CombineGlobally(combiner)

    def check(got):
      assert len(got) == 1
      assert got[0][key] == pytest.approx(EXPECTED)

    beam_util.assert_that(result, check)


def test_per_user_auc_needs_a_query_key():
  with pytest.raises(ValueError, match="query_key"):
    PerUserAUC().computations()


def test_auc_standard_error_hand_cases_and_a_simulation():
  from tfx_pipeline.metrics import auc_standard_error
  # One pair at AUC 0.5: Q1 = Q2 = 1/3, so SE^2 = 0.5 * 0.5 / 1.
  assert auc_standard_error(0.5, 1, 1) == pytest.approx(0.5)
  assert auc_standard_error(1.0, 8, 100) == pytest.approx(0.0)
  assert np.isnan(auc_standard_error(0.7, 0, 100))
  # Few positives, many negatives: the spread of the AUC over many draws of such a slice.
  rng = np.random.default_rng(0)
  pos, neg, draws = 8, 400, 2000
  aucs = [user_auc(np.r_[np.ones(pos), np.zeros(neg)],
                   np.r_[rng.exponential(1.0, pos) * 3.0, rng.exponential(1.0, neg)]) for _ in range(draws)]
  mean, spread = float(np.mean(aucs)), float(np.std(aucs))
  assert 0.7 < mean < 0.8                                  # exponential scores: AUC = 3 / (3 + 1)
  assert auc_standard_error(mean, pos, neg) == pytest.approx(spread, rel=0.1)


def test_cold_slices_auc_and_paired_interval_by_hand():
  """scripts/cold_slices.py: slice AUC with ties as one half, and a paired bootstrap interval
  that is exactly 0 for a model against itself and positive for a strictly better one."""
  import importlib.util
  import os

  from conftest import ROOT
  spec = importlib.util.spec_from_file_location("cold_slices", os.path.join(ROOT, "scripts", "cold_slices.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  labels = np.array([0, 0, 1, 1])
  # pairs (pos, neg): 0.35>0.1 yes, 0.35>0.4 no, 0.8>0.1 yes, 0.8>0.4 yes -> 3/4
  assert mod.auc(np.array([0.1, 0.4, 0.35, 0.8]), labels) == 0.75
  assert mod.auc(np.array([0.5, 0.2, 0.5, 0.9]), labels) == (1 + 1 + 0.5 + 1) / 4   # one tie: 1/2
  assert np.isnan(mod.auc(np.array([0.1, 0.2]), np.array([0, 0])))
  rng = np.random.default_rng(0)
  y = np.array([0] * 60 + [1] * 20)
  weak = rng.normal(size=80) + 0.3 * y
  assert mod.paired_interval(weak, weak, y, rounds=50) == (0.0, 0.0)
  lo, hi = mod.paired_interval(weak + 3.0 * y, weak, y, rounds=50)
  assert 0 < lo <= hi


def test_poster_signal_visual_similarity_by_hand():
  """scripts/poster_signal.py: cos(v_a, mean of the history's v_h), unknown ads left out, 0 for an
  unknown candidate or an empty history. v_b = (0, 1), v_c = (1, 1)/sqrt 2: their mean points at
  67.5 degrees, so against v_a = (1, 0) the similarity is cos 67.5 = 0.382683."""
  import importlib.util
  import os

  import pandas as pd

  from conftest import ROOT
  spec = importlib.util.spec_from_file_location("poster_signal", os.path.join(ROOT, "scripts", "poster_signal.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  v = np.array([[1.0, 0.0], [0.0, 1.0], [2 ** -0.5, 2 ** -0.5]])
  index = {"a": 0, "b": 1, "c": 2}
  ads = pd.Series(["a", "a", "zz", "b", "c"])
  history = pd.Series(["b c", "b c unknown", "b", None, "c"])
  np.testing.assert_allclose(mod.visual_similarity(v, index, ads, history), [0.382683, 0.382683, 0.0, 0.0, 1.0],
                             atol=1e-6)
