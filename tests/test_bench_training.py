"""`cscnn bench training --json`: the figures it prints are consistent with what it timed.

Speed itself is not asserted (that is what the benchmark is for); what is checked is that every
configuration of the grid is present, that images/s counts unique images (de-duplication) and
that the derived ratios are the medians of the per-round paired ratios of the times shown, with
an interval that brackets them.
"""

import json
import statistics

import pytest

from cscnn.bench import goal_verdict, paired_ratio

from conftest import cscnn


@pytest.fixture(scope="module")
def bench():
  proc = cscnn("bench", "training", "--backbones", "light", "--per-ad", "1,5", "--batch", "10",
               "--rounds", "3", "--measure-seconds", "0.05", "--groups", "attention,dedup,frozen", "--json",
               "--quiet")
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # the benchmark (the bench fixture): ~40 s
def test_every_configuration_is_timed(bench):
  assert set(bench["results"]) == {
      "light/none/G5/dedup", "light/cbam/G5/dedup", "light/cscnn/G5/dedup",
      "light/cscnn/G1/dedup", "light/cscnn/G1/nodedup", "light/cscnn/G5/nodedup",
      "light/fixed/G5/images", "light/fixed/G5/features"}
  assert bench["batch"] == 10 and bench["rounds"] == 3
  assert bench["machine"]["cores"] >= 1 and bench["machine"]["cpu"]
  for r in bench["results"].values():
    assert r["step_ms"] > 0 and len(r["round_ms"]) == 3 and r["steps_per_measurement"] >= 1
    assert r["step_ms"] == pytest.approx(statistics.median(r["round_ms"]), abs=0.01)
    assert r["impressions_per_s"] == pytest.approx(10 / (r["step_ms"] / 1000), rel=0.02)


@pytest.mark.slow
def test_unique_images_follow_impressions_per_ad(bench):
  res = bench["results"]
  assert res["light/cscnn/G1/dedup"]["unique_images"] == 10      # 10 impressions, 10 ads
  assert res["light/cscnn/G5/dedup"]["unique_images"] == 2       # 10 impressions, 2 ads
  g5 = res["light/cscnn/G5/nodedup"]
  assert g5["unique_images_per_s"] == pytest.approx(g5["impressions_per_s"] / 5, rel=0.02)


def _paired_median(res, num, den):
  return statistics.median(a / b for a, b in zip(res[num]["round_ms"], res[den]["round_ms"]))


@pytest.mark.slow
def test_ratios_are_medians_of_paired_rounds(bench):
  res = bench["results"]
  ratio = bench["light_cscnn_over_cbam_step_ratio"]
  assert ratio == pytest.approx(_paired_median(res, "light/cscnn/G5/dedup", "light/cbam/G5/dedup"), abs=0.002)
  lo, hi = bench["light_cscnn_over_cbam_step_ratio_ci90"]
  assert lo - 0.001 <= ratio <= hi + 0.001
  assert bench["light_cscnn_over_cbam_goal"] == goal_verdict(lo, hi)
  for g in (1, 5):
    assert bench[f"light_dedup_speedup_G{g}"] == pytest.approx(
        _paired_median(res, f"light/cscnn/G{g}/nodedup", f"light/cscnn/G{g}/dedup"), abs=0.002)
  assert bench["light_frozen_features_speedup"] == pytest.approx(
      _paired_median(res, "light/fixed/G5/images", "light/fixed/G5/features"), abs=0.002)


def test_paired_ratio_by_hand():
  # per-round ratios 2, 1 and 4 -> median 2 (the ratio of the two medians would be 3 / 1)
  median, lo, hi = paired_ratio([2.0, 3.0, 4.0], [1.0, 3.0, 1.0])
  assert median == 2.0
  assert 1.0 <= lo <= median <= hi <= 4.0
  # every round agrees: the interval collapses onto the ratio
  assert paired_ratio([1.1] * 5, [1.0] * 5)[1:] == pytest.approx((1.1, 1.1))
  with pytest.raises(ValueError, match="equal, non-empty"):
    paired_ratio([1.0, 2.0], [1.0])


def test_goal_verdict():
  assert goal_verdict(0.98, 1.04) == "met"
  assert goal_verdict(1.06, 1.12) == "missed"
  assert goal_verdict(1.02, 1.08) == "undecided"


@pytest.mark.slow  # three CLI processes: ~14 s
def test_bad_options_are_refused_before_any_model_is_built():
  unknown = cscnn("bench", "training", "--backbones", "light,resnet81", "--attention", "cbam,se",
                  "--quiet", check=False)
  assert unknown.returncode == 2
  assert "unknown resnet81, se:" in unknown.stderr and "resnet18" in unknown.stderr
  assert "built and warmed up" not in unknown.stderr
  rounds = cscnn("bench", "training", "--backbones", "light", "--rounds", "0", check=False)
  assert rounds.returncode == 2 and "rounds must be >= 1" in rounds.stderr
  groups = cscnn("bench", "training", "--backbones", "light", "--groups", "frozen,speed", check=False)
  assert groups.returncode == 2 and "unknown speed" in groups.stderr and "frozen" in groups.stderr
  per_ad = cscnn("bench", "training", "--per-ad", "1,x", check=False)
  assert per_ad.returncode == 2 and "--per-ad" in per_ad.stderr
