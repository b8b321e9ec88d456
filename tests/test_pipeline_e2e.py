"""The whole TFX pipeline on a tiny sample, run as a user runs it (`python -m cscnn ...`).

Two runs share one output folder: a normal run (DCN + CSCNN trained end to end on the images,
visual table, CNN-free serving model; blessed, pushed) and a crippled run (DCN without images,
learning rate 0: NOT_BLESSED, serving directory unchanged). A third run on data that violates
the schema is stopped by ExampleValidator + AnomaliesGate before training.
"""

import csv
import hashlib
import json
import os
import subprocess
import sys
import glob
import textwrap

import numpy as np
import pytest

from conftest import ROOT, RUN, cscnn


def _serving_state(serving_root):
  state = {}
  for dirpath, _, files in os.walk(serving_root):
    for name in files:
      path = os.path.join(dirpath, name)
      with open(path, "rb") as f:
        state[os.path.relpath(path, serving_root)] = hashlib.sha256(f.read()).hexdigest()
  return state


def _mlmd_blessings(metadata_path):
  import ml_metadata as mlmd
  from ml_metadata.proto import metadata_store_pb2
  cfg = metadata_store_pb2.ConnectionConfig()
  cfg.sqlite.filename_uri = metadata_path
  store = mlmd.MetadataStore(cfg)
  return [a.custom_properties["blessed"].int_value
          for a in sorted(store.get_artifacts_by_type("ModelBlessing"), key=lambda a: a.id)]


@pytest.mark.slow
def test_first_run_is_blessed_and_pushed_as_numeric_version(run_dir):
  s = run_dir["first"]
  assert s["blessed"] is True and s["pushed"] is True, s
  versions = os.listdir(run_dir["serving"])
  assert len(versions) == 1 and versions[0].isdigit()
  assert os.path.isfile(os.path.join(run_dir["serving"], versions[0], "saved_model.pb"))
  assert s["pushed_to"].rstrip("/") == os.path.join(run_dir["serving"], versions[0])
  assert _mlmd_blessings(os.path.join(run_dir["out"], "metadata.sqlite")) == [1]
  # metrics overall, per category and on cold ads
  assert s["metrics"]["overall"]["auc"] > 0.58
  assert {k for k in s["metrics"] if k.startswith("category_id=")} == {f"category_id={k}" for k in range(1, 5)}
  assert s["metrics"]["ad_is_cold=1"]["example_count"] > 0
  assert s["metrics"]["ad_is_cold=0"]["example_count"] > s["metrics"]["ad_is_cold=1"]["example_count"]
  assert "== pipeline run summary ==" in run_dir["first_stdout"] and "cold ads" in run_dir["first_stdout"]
  assert s["cold_by"] == "impressions" and "(fewer than 5 training impressions)" in run_dir["first_stdout"]
  t = s["visual_table"]
  assert t["rows"] == t["catalogue_ads"] == 80 and t["dim"] == 150 and t["eval_coverage"] > 0.9


def _pushed(run_dir):
  version = sorted(os.listdir(run_dir["serving"]))[0]
  return os.path.join(run_dir["serving"], version)


@pytest.mark.slow
def test_pushed_model_has_the_table_and_no_convolution(run_dir):
  from tensorflow.core.protobuf import saved_model_pb2
  sm = saved_model_pb2.SavedModel()
  with open(os.path.join(_pushed(run_dir), "saved_model.pb"), "rb") as f:
    sm.ParseFromString(f.read())
  graph = sm.meta_graphs[0].graph_def
  ops = {n.op for n in graph.node} | {n.op for fn in graph.library.function for n in fn.node_def}
  assert "MatMul" in ops, "sanity: the DCN's dense layers are there"
  assert not {op for op in ops if "Conv" in op}, sorted(op for op in ops if "Conv" in op)
  assert "LowerBound" in ops or "UpperBound" in ops, "the table lookup (searchsorted) is in the graph"
  import tensorflow as tf
  shapes = {n.split("/")[-3]: s for n, s in tf.train.list_variables(
      os.path.join(_pushed(run_dir), "variables", "variables")) if n.startswith("model/")}
  assert shapes["vectors"] == [80, 150] and shapes["keys"] == [80], shapes   # one row per ad


def _end_to_end_dir(out):
  return glob.glob(os.path.join(out, "pipeline", "VisualTrainer", "model", "*", "Format-Serving"))[0]


@pytest.mark.slow
def test_serving_model_matches_end_to_end_model(run_dir):
  """Paper 3.4: for ads in the table, the table-based serving model scores exactly what the
  end-to-end model (CNN on the image) scores."""
  import keras
  import tensorflow as tf
  import tensorflow_transform as tft
  from tfx_pipeline.catalog import load_catalog_arrays
  from spec import features as F
  S = F.DEFAULT_SPEC
  from tfx_pipeline.trainer import END_TO_END_MODEL, ImageIndex

  out = run_dir["out"]
  e2e = keras.models.load_model(os.path.join(_end_to_end_dir(out), END_TO_END_MODEL))
  tft_out = tft.TFTransformOutput(glob.glob(os.path.join(out, "pipeline", "Transform", "transform_graph", "*"))[0])
  catalog = glob.glob(os.path.join(out, "pipeline", "AdCatalogGen", "examples", "*"))[0]
  ids, _, images = load_catalog_arrays(catalog, 32)
  index = ImageIndex(ids, images)
  with open(os.path.join(run_dir["data"], "impressions", "impressions.csv")) as f:
    rows = list(csv.DictReader(f))[:64]
  raw = {f.name: tf.constant([[int(r[f.name]) if f.dtype is int else r[f.name]] for r in rows],
                             dtype=tf.int64 if f.dtype is int else tf.string) for f in S.features}
  transformed = tft_out.transform_features_layer()(raw)
  x = {t.name: transformed[t.name] for t in e2e.inputs if t.name in transformed}
  x["image"] = index.lookup(transformed[F.IMAGE_KEY])
  expected = np.asarray(e2e(x, training=False)).ravel()
  served = tf.saved_model.load(_pushed(run_dir)).signatures["serving_raw"](
      **{f.name: tf.reshape(raw[f.name], [-1]) for f in S.features})
  assert np.all(served["visual_fallback"].numpy() == 0)
  np.testing.assert_allclose(served["ctr"].numpy().ravel(), expected, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_tensorboard_has_attention_map_images_and_throughput(run_dir):
  import tensorflow as tf
  run = glob.glob(os.path.join(run_dir["out"], "pipeline", "VisualTrainer", "model_run", "*"))[0]
  tags = set()
  for path in glob.glob(os.path.join(run, "**", "events.out.tfevents.*"), recursive=True):
    for event in tf.compat.v1.train.summary_iterator(path):
      for v in event.summary.value:
        tags.add((v.tag, v.metadata.plugin_data.plugin_name))
  assert any(t.startswith("attention_maps/") and p == "images" for t, p in tags), tags
  for name in ("impressions_per_s", "unique_images_per_s", "learning_rate", "epoch_loss", "epoch_auc"):
    assert any(t == name for t, _ in tags), (name, tags)
  assert os.path.getsize(os.path.join(run, "attention_maps.png")) > 1000


@pytest.mark.slow
def test_saved_model_scores_in_a_fresh_process(run_dir):
  """Both signatures load and agree in a new process; unknown ids go to OOV, not an error."""
  version = os.listdir(run_dir["serving"])[0]
  script = textwrap.dedent(f"""
    import csv, json
    import numpy as np, tensorflow as tf
    from spec import features as F
    S = F.DEFAULT_SPEC
    m = tf.saved_model.load({os.path.join(run_dir['serving'], version)!r})
    rows = list(csv.DictReader(open({os.path.join(run_dir['data'], 'impressions', 'impressions.csv')!r})))[:20]
    rows[0]["ad_id"] = "never_seen_ad"; rows[0]["user_id"] = "never_seen_user"
    def example(r):
      feats = {{}}
      for f in S.features:
        if f.dtype is int:
          feats[f.name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(r[f.name])]))
        else:
          feats[f.name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[r[f.name].encode()]))
      return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()
    a = m.signatures["serving_default"](examples=tf.constant([example(r) for r in rows]))["ctr"].numpy()
    raw = {{f.name: tf.constant([int(r[f.name]) if f.dtype is int else r[f.name] for r in rows],
                               dtype=tf.int64 if f.dtype is int else tf.string) for f in S.features}}
    b = m.signatures["serving_raw"](**raw)["ctr"].numpy()
    fb = m.signatures["serving_default"](examples=tf.constant([example(r) for r in rows]))["visual_fallback"].numpy()
    print(json.dumps({{"a": a.ravel().tolist(), "b": b.ravel().tolist(), "fallback": fb.ravel().tolist(),
                      "inputs": sorted(m.signatures["serving_default"].structured_input_signature[1])}}))
  """)
  proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  got = json.loads(proc.stdout.strip().splitlines()[-1])
  assert got["inputs"] == ["examples"]
  assert len(got["a"]) == 20 and all(0 < p < 1 for p in got["a"])
  assert max(abs(x - y) for x, y in zip(got["a"], got["b"])) < 1e-6
  assert len(set(round(p, 6) for p in got["a"])) > 5, "scores should differ between impressions"
  assert got["fallback"][0] == 1 and not any(got["fallback"][1:]), "unknown ad -> category mean, flagged"


@pytest.mark.slow
def test_crippled_trainer_is_not_blessed_and_serving_dir_unchanged(run_dir):
  before = _serving_state(run_dir["serving"])
  # This second run also counts cold ads by training positives instead of impressions.
  cscnn("pipeline", "run", "--data", run_dir["data"], "--output", run_dir["out"], *RUN,
        "--learning-rate", "0", "--variant", "none", "--cold-by", "positives")
  s = json.loads(cscnn("pipeline", "summary", "--output", run_dir["out"], "--json").stdout)
  assert s["blessed"] is False and s["pushed"] is False, s
  assert s["validation_failures"], "the summary must say why the model was not blessed"
  assert _serving_state(run_dir["serving"]) == before
  assert _mlmd_blessings(os.path.join(run_dir["out"], "metadata.sqlite")) == [1, 0]
  # same eval rows; an ad with 5+ impressions can have fewer than 5 positives, never the reverse
  cold = lambda summary: summary["metrics"]["ad_is_cold=1"]["example_count"]  # noqa: E731
  assert s["cold_by"] == "positives"
  assert s["metrics"]["overall"]["example_count"] == run_dir["first"]["metrics"]["overall"]["example_count"]
  assert cold(s) > cold(run_dir["first"])


@pytest.mark.slow
def test_schema_anomalies_stop_the_pipeline_before_training(run_dir, tmp_path):
  bad = tmp_path / "bad"
  os.makedirs(bad / "impressions")
  with open(os.path.join(run_dir["data"], "impressions", "impressions.csv")) as f:
    rows = list(csv.reader(f))
  hour = rows[0].index("hour")
  for r in rows[1:200]:
    r[hour] = "31"                                   # outside the schema's 0-23 domain
  with open(bad / "impressions" / "impressions.csv", "w", newline="") as f:
    csv.writer(f).writerows(rows)
  out = tmp_path / "out"
  proc = cscnn("pipeline", "run", "--data", str(bad), "--output", str(out), *RUN,
               "--skip-input-check", "--variant", "none", check=False)
  assert proc.returncode == 1
  assert "anomalies" in proc.stderr and "'hour'" in proc.stderr, proc.stderr[-2000:]
  assert not os.path.exists(out / "pipeline" / "Trainer"), "training must not start"
  assert not os.path.exists(out / "serving")


@pytest.mark.slow
def test_missing_catalogue_is_reported_before_the_pipeline_starts(run_dir, tmp_path):
  os.makedirs(tmp_path / "impressions")
  with open(os.path.join(run_dir["data"], "impressions", "impressions.csv")) as f:
    (tmp_path / "impressions" / "impressions.csv").write_text(f.read())
  proc = cscnn("pipeline", "run", "--data", str(tmp_path), "--output", str(tmp_path / "o"), check=False)
  assert proc.returncode == 2 and "ads/ads.csv" in proc.stderr and "--variant none" in proc.stderr


def test_bad_csv_is_rejected_with_file_line_and_field(tmp_path):
  (tmp_path / "impressions").mkdir()
  (tmp_path / "impressions" / "x.csv").write_text("label,user_id\n1,u1\n")
  proc = cscnn("pipeline", "run", "--data", str(tmp_path), "--output", str(tmp_path / "o"), check=False)
  assert proc.returncode == 2
  assert "x.csv: missing column(s)" in proc.stderr and "'ad_id'" in proc.stderr


@pytest.mark.slow
def test_report_renders_from_the_run(run_dir, tmp_path):
  proc = cscnn("report", "--output", run_dir["out"], "--report-dir", str(tmp_path))
  page = (tmp_path / "index.html").read_text()
  latest = json.loads(cscnn("pipeline", "summary", "--output", run_dir["out"], "--json").stdout)
  if latest["blessed"]:
    assert "Blessed:" in page
  else:                                            # the crippled run may have come last
    assert "Not blessed" in page and all(f in page for f in latest["validation_failures"])
  assert "AUC per slice" in page and "cold ads" in page
  assert page.count("<img") >= 4, "AUC bars, ROC, calibration and attention maps"
  for name in ("auc_per_slice.png", "roc.png", "calibration.png"):
    assert (tmp_path / name).stat().st_size > 5000, name
  assert "per_user_auc" in run_dir["first"]["metrics"]["overall"]
  assert 0.5 < run_dir["first"]["metrics"]["overall"]["per_user_auc"] <= 1.0
  assert str(tmp_path) in proc.stdout


@pytest.mark.slow
def test_tensorboard_command_serves_the_training_logs(run_dir):
  import socket
  import urllib.request
  import time
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  proc = subprocess.Popen([sys.executable, "-m", "cscnn", "tensorboard", "--output", run_dir["out"],
                           "--port", str(port)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
  try:
    deadline, runs = time.time() + 90, None
    while time.time() < deadline and runs is None:
      try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=5) as r:
          runs = json.loads(r.read())
      except OSError:
        time.sleep(1)
    assert runs, "TensorBoard did not answer"
  finally:
    proc.terminate()
    proc.wait(timeout=30)


@pytest.mark.slow
def test_baselines_are_fitted_exported_and_evaluated_beside_the_model(run_dir):
  s = run_dir["first"]
  b = s["baselines"]
  assert set(b["metrics"]) == {"popularity", "category_affinity", "item_knn", "blend"}
  for name, m in b["metrics"].items():
    assert m["overall"]["example_count"] == s["metrics"]["overall"]["example_count"], name
    assert 0 < m["overall"]["per_user_auc"] < 1 and "ad_is_cold=1" in m, name
  assert b["best_per_user_auc"] == max(m["overall"]["per_user_auc"] for m in b["metrics"].values())
  assert "<- best baseline" in run_dir["first_stdout"]
  # each baseline is a servable SavedModel with the model's signatures
  import tensorflow as tf
  m = tf.saved_model.load(os.path.join(b["uri"], "blend"))
  assert {"serving_default", "serving_raw", "transform_features"} <= set(m.signatures)


@pytest.mark.slow
def test_a_model_below_the_best_baseline_is_not_blessed_nor_pushed(run_dir, tmp_path):
  """The gate on: a copy of the run's MLMD store, so the cache reuses ExampleGen ... BaselineGen;
  the DCN is trained again (45 steps: below the blend on this sample), floor and regression
  rules relaxed, so only the baseline gate can refuse it."""
  import shutil
  out = tmp_path / "out"
  out.mkdir()
  shutil.copy(os.path.join(run_dir["out"], "metadata.sqlite"), out / "metadata.sqlite")
  args = [a for a in RUN if not a.startswith("--baseline-margin")]
  proc = cscnn("pipeline", "run", "--data", run_dir["data"], "--output", str(out), *args, "--cache",
               "--variant", "none", "--auc-floor", "0", "--auc-tolerance", "1", "--baseline-margin", "0")
  s = json.loads(cscnn("pipeline", "summary", "--output", str(out), "--json").stdout)
  gate = s["baseline_gate"]
  assert gate["enabled"] and gate["bound"] == pytest.approx(s["baselines"]["best_per_user_auc"])
  assert s["metrics"]["overall"]["per_user_auc"] < gate["bound"], "this sample's DCN should lose to the blend"
  assert s["blessed"] is False and s["pushed"] is False, s
  assert [f for f in s["validation_failures"] if f.startswith("per_user_auc")], s["validation_failures"]
  assert not os.path.exists(out / "serving" / "cscnn_ctr") or not os.listdir(out / "serving" / "cscnn_ctr")
  assert "baseline gate: per-user AUC must be >=" in proc.stdout
