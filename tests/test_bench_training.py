"""`cscnn bench training --json`: the figures it prints are consistent with what it timed.

Speed itself is not asserted (that is what the benchmark is for); what is checked is that every
configuration of the grid is present, that images/s counts unique images (de-duplication) and
that the derived ratios are computed from the medians shown.
"""

import json

import pytest

from conftest import cscnn


@pytest.fixture(scope="module")
def bench():
  proc = cscnn("bench", "training", "--backbones", "light", "--per-ad", "1,5", "--batch", "10",
               "--rounds", "2", "--json", "--quiet")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_configuration_is_timed(bench):
  assert set(bench["results"]) == {
      "light/none/G5/dedup", "light/cbam/G5/dedup", "light/cscnn/G5/dedup",
      "light/cscnn/G1/dedup", "light/cscnn/G1/nodedup", "light/cscnn/G5/nodedup"}
  assert bench["batch"] == 10 and bench["rounds"] == 2
  assert bench["machine"]["cores"] >= 1 and bench["machine"]["cpu"]
  for r in bench["results"].values():
    assert r["step_ms"] > 0
    assert r["impressions_per_s"] == pytest.approx(10 / (r["step_ms"] / 1000), rel=0.02)


def test_unique_images_follow_impressions_per_ad(bench):
  res = bench["results"]
  assert res["light/cscnn/G1/dedup"]["unique_images"] == 10      # 10 impressions, 10 ads
  assert res["light/cscnn/G5/dedup"]["unique_images"] == 2       # 10 impressions, 2 ads
  g5 = res["light/cscnn/G5/nodedup"]
  assert g5["unique_images_per_s"] == pytest.approx(g5["impressions_per_s"] / 5, rel=0.02)


def test_ratios_come_from_the_medians(bench):
  res = bench["results"]
  assert bench["light_cscnn_over_cbam_step_ratio"] == pytest.approx(
      res["light/cscnn/G5/dedup"]["step_ms"] / res["light/cbam/G5/dedup"]["step_ms"], abs=0.002)
  for g in (1, 5):
    assert bench[f"light_dedup_speedup_G{g}"] == pytest.approx(
        res[f"light/cscnn/G{g}/nodedup"]["step_ms"] / res[f"light/cscnn/G{g}/dedup"]["step_ms"], abs=0.002)
