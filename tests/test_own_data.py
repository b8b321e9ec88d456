"""Bring your own data, as a new user would: impressions with other column names, a price, a
behaviour sequence with its ages and no query words; `cscnn spec infer` drafts the spec,
`pipeline run --spec` trains and pushes, and the pushed model is served over gRPC and scores
through both the tf.Example and the raw signature."""

import csv
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from conftest import TINY, cscnn
from serving.client import CtrClient, candidate_example, read_candidates
from serving.model_manager import ModelManager, ModelConfig
from serving.server import ModelServer
from spec.features import NUMERIC, SEQUENCE
from spec.files import load

pytestmark = pytest.mark.slow

# our column -> the sample's column
RENAMED = {"click": "label", "customer": "user_id", "city": "user_city", "age_group": "user_age",
           "item": "ad_id", "genre": "category_id", "maker": "brand_id", "hour": "hour",
           "title": "title_words"}


def _own_data(sample: str, out: str) -> None:
  """The sample's impressions under other names, without query_words and clicked_categories,
  with a price and the customer's recent items (a sequence) with their ages in days."""
  with open(os.path.join(sample, "impressions", "impressions.csv")) as f:
    rows = list(csv.DictReader(f))
  rng = np.random.default_rng(0)
  os.makedirs(os.path.join(out, "impressions"))
  with open(os.path.join(out, "impressions", "impressions.csv"), "w", newline="") as f:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(list(RENAMED) + ["price", "recent_items", "recent_ages"])
    recent = {}
    for r in rows:
      seen = recent.setdefault(r["user_id"], [])
      price = float(np.round(rng.lognormal(3.0, 1.5), 2))
      w.writerow([r[c] for c in RENAMED.values()] + [
          price, " ".join(seen[-4:]) or "_", " ".join(str(len(seen) - i) for i in range(len(seen[-4:]))) or "_"])
      if r["label"] == "1":
        seen.append(r["ad_id"])


@pytest.fixture(scope="module")
def own_run(tmp_path_factory):
  base = tmp_path_factory.mktemp("own")
  sample, data, out = str(base / "sample"), str(base / "data"), str(base / "out")
  spec_path = str(base / "spec.yaml")
  cscnn("data", "sample", "--out", sample, "--seed", "2", *TINY)
  _own_data(sample, data)
  inferred = cscnn("spec", "infer", "--data", data, "--out", spec_path)
  run = cscnn("pipeline", "run", "--data", data, "--output", out, "--spec", spec_path, "--variant", "none",
              "--train-steps", "30", "--eval-steps", "3", "--auc-floor", "0", "--baseline-margin=-1")
  summary = json.loads(cscnn("pipeline", "summary", "--output", out, "--json").stdout)
  serving = os.path.join(out, "serving", "cscnn_ctr")
  return {"data": data, "spec": spec_path, "inferred": inferred.stdout, "run": run.stdout,
          "summary": summary, "pushed": os.path.join(serving, sorted(os.listdir(serving))[0])}


def test_spec_infer_reads_the_columns_kinds_and_roles(own_run):
  spec = load(own_run["spec"])
  assert spec.labels == ("click",)
  assert (spec.user, spec.ad, spec.category) == ("customer", "item", "genre")
  assert spec.feature("price").kind == NUMERIC and spec.feature("price").normalize == "log1p_zscore"
  recent = spec.feature("recent_items")
  assert recent.kind == SEQUENCE and recent.time_column == "recent_ages" and recent.max_len == 4
  assert spec.feature("title").kind == "multi" and spec.feature("genre").dtype is int
  assert "query_words" not in spec.feature_names


def test_the_run_follows_the_spec(own_run):
  s = own_run["summary"]
  assert s["pushed"] is True, s
  assert any(k.startswith("genre=") for k in s["metrics"]), sorted(s["metrics"])   # sliced by the category role
  assert s["metrics"]["overall"]["per_user_auc"] > 0.5
  with open(os.path.join(os.path.dirname(os.path.dirname(own_run["pushed"])), "..", "schema",
                         "schema.pbtxt")) as f:
    schema = f.read()
  assert 'name: "price"' in schema and "type: FLOAT" in schema and "query_words" not in schema


def test_served_model_scores_through_both_signatures(own_run, tmp_path):
  spec = load(own_run["spec"])
  with open(os.path.join(own_run["data"], "impressions", "impressions.csv")) as f:
    candidates = [{k: v for k, v in r.items() if k != "click"} for r in list(csv.DictReader(f))[:12]]
  candidates[0]["item"] = "an_item_never_seen"
  path = tmp_path / "candidates.json"
  path.write_text(json.dumps({"instances": candidates}))
  assert read_candidates(str(path)) == candidates

  base = tmp_path / "cscnn_ctr"
  shutil.copytree(own_run["pushed"], base / "1")
  server = ModelServer(ModelManager([ModelConfig("cscnn_ctr", str(base))]), port=0, rest_port=0).start()
  try:
    client = CtrClient(f"127.0.0.1:{server.port}", spec=spec)
    raw = client.predict("cscnn_ctr", candidates)["ctr"]
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "cscnn_ctr"
    request.model_spec.signature_name = "serving_default"
    examples = [candidate_example(c, spec).SerializeToString() for c in candidates]
    request.inputs["examples"].CopyFrom(tf.make_tensor_proto(examples, dtype=tf.string))
    by_example = tf.make_ndarray(client.predictions.Predict(request, timeout=30).outputs["ctr"]).ravel()
    client.close()
  finally:
    server.stop()
  assert raw.shape == (12,) and np.all((raw > 0) & (raw < 1))
  np.testing.assert_allclose(by_example, raw, atol=1e-6)
  in_process = tf.saved_model.load(own_run["pushed"]).signatures["serving_raw"]
  inputs = in_process.structured_input_signature[1]
  assert set(inputs) == set(spec.serving_columns) and inputs["price"].dtype == tf.float32
