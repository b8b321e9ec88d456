"""The ablation harness: cells are pipeline runs, finished cells are kept on a rerun, and the
table and plot are written."""

import csv
import json
import os

import pytest

from conftest import TINY, cscnn


@pytest.mark.slow  # pipeline runs
def test_ablation_runs_cells_once_and_writes_table(tmp_path, monkeypatch):
  data, out = str(tmp_path / "data"), str(tmp_path / "exp")
  cscnn("data", "sample", "--out", data, "--seed", "5", *TINY)
  args = ["experiment", "ablation", "--data", data, "--output", out, "--variants", "none,cscnn",
          "--seeds", "1", "--train-steps", "20", "--run-arg=--eval-steps=3"]
  first = cscnn(*args)
  assert "[2/2] cscnn seed 0: AUC" in first.stdout
  # Each cell says it started and where its log is; the log holds the run's log and its summary.
  log_path = os.path.join(out, "cells", "none_seed0", "log.txt")
  assert f"[1/2] none seed 0: running (its log, as it goes: {log_path})" in first.stdout
  cell_log = open(log_path).read()
  assert "running TFX pipeline" in cell_log and '"metrics"' in cell_log
  assert "1 to train, about" in first.stdout and "0 to train, about 0 min" in first.stdout
  # The two cells shared one ExampleGen / Transform execution (TFX cache), not one each.
  transform_runs = os.listdir(os.path.join(out, "run", "pipeline", "Transform", "transform_graph"))
  trainer_runs = os.listdir(os.path.join(out, "run", "pipeline", "Trainer", "model"))
  assert len(transform_runs) == 1 and len(trainer_runs) == 1, (transform_runs, trainer_runs)
  result = os.path.join(out, "cells", "cscnn_seed0", "result.json")
  stamp = os.stat(result).st_mtime_ns
  again = cscnn(*args)
  assert again.stdout.count("done before, kept") == 2
  assert os.stat(result).st_mtime_ns == stamp
  with open(os.path.join(out, "variants.csv")) as f:
    rows = list(csv.DictReader(f))
  kinds = ["blend", "category_affinity", "item_knn", "popularity"]
  assert [r["configuration"] for r in rows] == ["none", "cscnn"] + [f"baseline: {k}" for k in kinds]
  with open(result) as f:
    r = json.load(f)
  # the baselines' rows are the cells' BaselineGen figures (the same data: the same for both cells)
  assert sorted(r["baselines"]) == kinds
  for row, k in zip(rows[2:], kinds):
    assert abs(float(row["per_user_auc_mean"]) - r["baselines"][k]["per_user_auc"]) < 1e-9, k
  assert abs(float(rows[1]["auc_mean"]) - r["auc"]) < 1e-9 and 0 < r["auc"] < 1
  assert r["per_user_auc"] is not None and 0 < r["cold_rows"] < r["eval_rows"]
  assert r["cold_auc"] is not None
  assert "| none | 1 |" in open(os.path.join(out, "variants.md")).read()
  assert os.path.getsize(os.path.join(out, "variants.png")) > 5000
  # Other arguments into the same output are refused before any cell runs (finetune, new and
  # first in the grid, is not started), naming the kept cell; that cell stays as it was.
  other = cscnn("experiment", "ablation", "--data", data, "--output", out, "--variants", "finetune,none",
                "--seeds", "1", "--train-steps", "30", "--run-arg=--eval-steps=3", check=False)
  assert other.returncode == 1 and "cell none seed 0" in other.stderr and "--output" in other.stderr
  assert not os.path.exists(os.path.join(out, "cells", "finetune_seed0"))
  assert os.stat(result).st_mtime_ns == stamp
  # A cell of another grid with the configuration of a finished cell (same data, arguments and
  # seed) takes that cell's result instead of training the same model again.
  from cscnn import experiment  # pylint: disable=import-outside-toplevel
  monkeypatch.setitem(experiment.GRIDS, "again", [("cscnn_again", ["--variant", "cscnn"])])
  def trainer_runs():   # the DCN's Trainer and the image variants' VisualTrainer
    pipeline = os.path.join(out, "run", "pipeline")
    return sorted(f"{c}/{r}" for c in ("Trainer", "VisualTrainer")
                  if os.path.isdir(os.path.join(pipeline, c, "model"))
                  for r in os.listdir(os.path.join(pipeline, c, "model")))
  trained = trainer_runs()
  assert any(t.startswith("VisualTrainer/") for t in trained), trained   # the cscnn cell's
  logs = []
  again_results = experiment.run_ablation(
      data, out, grid="again", seeds=1, log=logs.append,
      run_args=["--train-steps", "20", "--backbone", "light", "--eval-steps=3"])
  assert "its result reused" in logs[0] and "cscnn seed 0" in logs[0], logs
  assert again_results[0]["auc"] == r["auc"] and again_results[0]["same_as"] == "cscnn"
  assert trainer_runs() == trained
  with open(os.path.join(out, "cells", "cscnn_again_seed0", "result.json")) as f:
    assert json.load(f)["label"] == "cscnn_again"
  # Each grid has its own table: the second grid's did not overwrite the first's.
  assert "| cscnn_again | 1 |" in open(os.path.join(out, "again.md")).read()
  variants_md = open(os.path.join(out, "variants.md")).read()
  assert "| none | 1 |" in variants_md and "cscnn_again" not in variants_md


def test_grid_cells_at_the_defaults_are_the_variants_cells():
  """Table 5's cbam / cscnn and Figure 5's C' = 20 and H' = 7 are the configurations of the
  variants grid's cbam and cscnn cells, spelled the same way so that their results are shared."""
  from cscnn.experiment import cells_for  # pylint: disable=import-outside-toplevel
  variants = dict(cells_for("variants", ["cbam", "cscnn"]))
  table5, figure5 = dict(cells_for("table5", [])), dict(cells_for("figure5", []))
  assert table5["cbam"] == variants["cbam"] and table5["cscnn"] == variants["cscnn"]
  assert figure5["C'=20"] == figure5["H'=7"] == variants["cscnn"]
  assert figure5["C'=40"] == ["--variant", "cscnn", "--channel-prior", "40"]
  assert table5["se_prior"] == ["--variant", "cscnn", "--attention", "se_prior"]
  assert len(table5) == 6 and len(figure5) == 11


def test_init_grid_cells_and_their_steps_against_scratch():
  """Each variant from each start; the scratch cell is the variants grid's cell of the variant
  (its result is shared); each pretrained start is compared with scratch of its own variant."""
  from cscnn.experiment import cells_for, steps_for  # pylint: disable=import-outside-toplevel
  cells = cells_for("init", ["fixed", "cscnn"], ["scratch", "catalogue", "imagenet"])
  assert [label for label, _ in cells] == ["fixed-scratch", "fixed-catalogue", "fixed-imagenet",
                                          "cscnn-scratch", "cscnn-catalogue", "cscnn-imagenet"]
  by_label = dict(cells)
  assert by_label["fixed-scratch"] == dict(cells_for("variants", ["fixed"]))["fixed"]
  assert by_label["cscnn-catalogue"] == ["--variant", "cscnn", "--visual-init", "catalogue"]
  assert steps_for("init", [label for label, _ in cells]) == [
      ("fixed-scratch", "fixed-catalogue"), ("fixed-scratch", "fixed-imagenet"),
      ("cscnn-scratch", "cscnn-catalogue"), ("cscnn-scratch", "cscnn-imagenet")]
  assert steps_for("init", ["fixed-catalogue", "fixed-imagenet"]) == []     # no scratch to compare with
  for variants, inits in ((["none"], ["scratch", "catalogue"]), (["fixed"], ["scratch", "pretrained"]),
                          (["fixd"], ["scratch"])):
    with pytest.raises(ValueError, match=variants[0] if variants[0] != "fixed" else "pretrained"):
      cells_for("init", variants, inits)


@pytest.mark.slow  # CLI processes: ~12 s
def test_ablation_refuses_unknown_variants_and_variants_with_another_grid(tmp_path):
  """Both mistakes stop before any cell runs, naming what is wrong."""
  out = str(tmp_path / "exp")
  typo = cscnn("experiment", "ablation", "--data", str(tmp_path), "--output", out,
               "--variants", "none,cbma", check=False)
  assert typo.returncode == 1 and "cbma" in typo.stderr and "cscnn" in typo.stderr
  mixed = cscnn("experiment", "ablation", "--data", str(tmp_path), "--output", out,
                "--grid", "table5", "--variants", "cbam", check=False)
  assert mixed.returncode == 2 and "--variants" in mixed.stderr and "table5" in mixed.stderr
  imagenet = cscnn("experiment", "ablation", "--data", str(tmp_path), "--output", out,
                   "--grid", "init", "--inits", "scratch,imagenet", check=False)
  assert imagenet.returncode == 2 and "--backbone efficientnet_lite0" in imagenet.stderr
  assert not os.path.exists(os.path.join(out, "cells"))


def test_table_gives_mean_and_sample_std_and_no_std_for_one_seed(tmp_path):
  from cscnn.experiment import write_table  # pylint: disable=import-outside-toplevel

  def cell(label, seed, auc, cold):
    return {"label": label, "seed": seed, "auc": auc, "per_user_auc": auc - 0.01, "cold_auc": cold}

  # "a": AUC 0.70 / 0.72 / 0.74 -> mean 0.72, sample std sqrt((0.02^2 + 0 + 0.02^2) / 2) = 0.02;
  # cold AUC missing in one seed -> mean of the other two. "b": one seed -> no std.
  results = [cell("a", 1, 0.72, 0.60), cell("a", 0, 0.70, None), cell("a", 2, 0.74, 0.64),
             cell("b", 0, 0.75, 0.66)]
  paths = write_table(results, ["a", "b"], str(tmp_path))
  md = open(paths["markdown"]).read().splitlines()
  assert md[2] == "| a | 3 | 0.7200 ± 0.0200 | 0.7100 ± 0.0200 | 0.6200 ± 0.0283 | 0.7000, 0.7200, 0.7400 |"
  assert md[3] == "| b | 1 | 0.7500 | 0.7400 | 0.6600 | 0.7500 |"
  with open(paths["csv"]) as f:
    rows = {r["configuration"]: r for r in csv.DictReader(f)}
  assert abs(float(rows["a"]["auc_std"]) - 0.02) < 1e-12
  assert rows["b"]["auc_std"] == "" and float(rows["b"]["auc_mean"]) == 0.75


def test_steps_give_gains_paired_by_seed_and_the_margin_against_the_seed_std(tmp_path):
  from cscnn.experiment import steps_for, write_table  # pylint: disable=import-outside-toplevel

  def cell(label, seed, auc, cold=None):
    return {"label": label, "seed": seed, "auc": auc, "per_user_auc": auc, "cold_auc": cold}

  # a: 0.70 / 0.72 / 0.74 (mean 0.72, std 0.02); b: 0.73 / 0.76 / 0.76 (mean 0.75, std 0.0173):
  # paired gains 0.03 / 0.04 / 0.02 -> +0.03 ± 0.01, and 0.03 > max(0.02, 0.0173) -> yes.
  # c: 0.74 / 0.77 / 0.78 (mean 0.7633): gains over b 0.01 / 0.01 / 0.02 -> +0.0133 ± 0.0058,
  # not above c's std 0.0208 (nor b's 0.0173) -> no. d has one seed: no std to compare with.
  # Cold AUC a -> b: gains 0.05 / 0.04 on the two seeds that have it -> +0.045 ± 0.0071.
  results = [cell("a", 0, 0.70, 0.60), cell("a", 1, 0.72, 0.62), cell("a", 2, 0.74),
             cell("b", 0, 0.73, 0.65), cell("b", 1, 0.76, 0.66), cell("b", 2, 0.76, 0.70),
             cell("c", 0, 0.74), cell("c", 1, 0.77), cell("c", 2, 0.78), cell("d", 0, 0.80)]
  labels = ["a", "b", "c", "d"]
  assert steps_for("variants", labels) == [("a", "b"), ("b", "c"), ("c", "d")]
  paths = write_table(results, labels, str(tmp_path), "variants")
  md = open(paths["markdown"]).read().splitlines()
  assert "| a -> b | 3 | +0.0300 ± 0.0100 | +0.0300 ± 0.0100 | +0.0450 ± 0.0071 | yes |" in md
  assert "| b -> c | 3 | +0.0133 ± 0.0058 | +0.0133 ± 0.0058 | n/a | no |" in md
  assert "| c -> d | 1 | +0.0600 | +0.0600 | n/a | n/a (one seed) |" in md
  with open(paths["steps_csv"]) as f:
    rows = {r["step"]: r for r in csv.DictReader(f)}
  assert abs(float(rows["a -> b"]["auc_gain_std"]) - 0.01) < 1e-12
  assert rows["b -> c"]["auc_gain_beyond_std"] == "False"
  # Table 5 compares each kind with and without the prior; Figure 5 is a sweep, no steps.
  assert steps_for("table5", ["se", "se_prior", "cbam", "cscnn"]) == [("se", "se_prior"), ("cbam", "cscnn")]
  assert steps_for("figure5", ["C'=5", "C'=10"]) == []
  # the same grid rerun with one configuration: no steps, and the earlier steps CSV goes
  write_table(results, ["a"], str(tmp_path), "variants")
  assert not os.path.exists(paths["steps_csv"])
  assert "Gains paired by seed" not in open(paths["markdown"]).read()


def test_a_kept_cell_from_other_code_says_so_and_one_from_this_code_does_not(tmp_path):
  """Both cells are on disk (nothing runs); the log names the code that ran the older one."""
  from cscnn.experiment import run_ablation  # pylint: disable=import-outside-toplevel
  from tfx_pipeline.code_version import code_fingerprint  # pylint: disable=import-outside-toplevel
  data, out = str(tmp_path / "data"), str(tmp_path / "exp")
  for label, code in (("none", "0123456789abcdef"), ("cscnn", code_fingerprint())):
    os.makedirs(os.path.join(out, "cells", f"{label}_seed0"))
    with open(os.path.join(out, "cells", f"{label}_seed0", "result.json"), "w") as f:
      json.dump({"label": label, "seed": 0, "auc": 0.7, "per_user_auc": 0.7, "cold_auc": None,
                 "args": [os.path.abspath(data), "--variant", label], "code_version": code}, f)
  lines = []
  run_ablation(data, out, variants=["none", "cscnn"], seeds=1, log=lines.append)
  assert lines == [f"[1/2] none seed 0: done before, kept (run by code 0123456789abcdef; the code is "
                   f"now {code_fingerprint()})",
                   "[2/2] cscnn seed 0: done before, kept"]


def _write_cells(folder, label, data, aucs, eval_rows=100):
  """Finished cells as `run_ablation` leaves them: one result.json per seed."""
  for seed, auc in enumerate(aucs):
    cell = os.path.join(folder, "cells", f"{label}_seed{seed}")
    os.makedirs(cell)
    with open(os.path.join(cell, "result.json"), "w") as f:
      json.dump({"label": label, "seed": seed, "auc": auc, "per_user_auc": auc, "cold_auc": None,
                 "eval_rows": eval_rows, "args": [data, "--variant", label]}, f)


def test_compare_pairs_cells_of_two_folders_by_seed_against_the_first(tmp_path):
  a, b, out = str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "cmp")
  _write_cells(a, "none", "/data", [0.70, 0.72])
  _write_cells(b, "cscnn", "/data", [0.73, 0.76, 0.80])
  _write_cells(b, "none", "/data", [0.50, 0.50])   # another label in b: not taken for "img"
  # base 0.70 / 0.72 (mean 0.71, std 0.0141); img 0.73 / 0.76 / 0.80 (mean 0.7633, std 0.0351);
  # paired on seeds 0 and 1: 0.03 / 0.04 -> +0.035 ± 0.0071; 0.0533 > 0.0351 -> yes.
  proc = cscnn("experiment", "compare", "--output", out, f"base={a}:none", f"img={b}:cscnn")
  md = open(os.path.join(out, "compare.md")).read().splitlines()
  assert "| base | 2 | 0.7100 ± 0.0141 | 0.7100 ± 0.0141 | n/a | 0.7000, 0.7200 |" in md
  assert "| img | 3 | 0.7633 ± 0.0351 | 0.7633 ± 0.0351 | n/a | 0.7300, 0.7600, 0.8000 |" in md
  assert "| base -> img | 2 | +0.0350 ± 0.0071 | +0.0350 ± 0.0071 | n/a | yes |" in md
  assert f"- img: `{b}` cells labelled `cscnn` (data `/data`, 100 eval rows)" in md
  assert "| base -> img |" in proc.stdout
  assert os.path.getsize(os.path.join(out, "compare_gains.png")) > 0


def test_compare_refuses_cells_of_other_data_and_names_them(tmp_path):
  from cscnn.experiment import compare, parse_configuration  # pylint: disable=import-outside-toplevel
  a, b, c = (str(tmp_path / n) for n in "abc")
  _write_cells(a, "none", "/data", [0.70])
  _write_cells(b, "cscnn", "/data_grey", [0.71])
  _write_cells(c, "cscnn", "/data", [0.71], eval_rows=90)
  assert parse_configuration(f"x={a}") == ("x", a, "x")
  assert parse_configuration(f"x={a}:none") == ("x", a, "none")
  with pytest.raises(ValueError, match="NAME=FOLDER"):
    parse_configuration(a)
  with pytest.raises(ValueError, match=r"ran on /data_grey with 100 eval rows, base .* on /data with 100"):
    compare([("base", a, "none"), ("grey", b, "cscnn")], str(tmp_path / "out"))
  assert not os.path.exists(tmp_path / "out")
  compare([("base", a, "none"), ("grey", b, "cscnn")], str(tmp_path / "out"), other_data=True)
  with pytest.raises(ValueError, match="with 90 eval rows"):   # another split: never paired
    compare([("base", a, "none"), ("c", c, "cscnn")], str(tmp_path / "out"), other_data=True)
  with pytest.raises(ValueError, match=r"no finished cell labelled 'cbam' in .*b/cells \(labels there: cscnn\)"):
    compare([("base", a, "none"), ("cbam", b, "cbam")], str(tmp_path / "out"))
  proc = cscnn("experiment", "compare", "--output", str(tmp_path / "o2"), f"base={a}:none", check=False)
  assert proc.returncode == 1 and "two or more configurations" in proc.stderr
