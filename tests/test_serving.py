"""The model server with the official `tensorflow_serving.apis` stubs, on a model pushed by the
pipeline (the session's pipeline run): gRPC and REST round trips, errors, a version swap under
load, batching, a bounded load test, and the predict CLI."""

import csv
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc,
                                     regression_pb2)

from conftest import ROOT
from serving.client import CtrClient, candidate_tensors
from serving.model_manager import BatchingConfig, ModelConfig, ModelManager
from serving.server import ModelServer
from tfx_pipeline import features as F

MODEL = "cscnn_ctr"


@pytest.fixture(scope="module")
def pushed(run_dir):
  versions = sorted(os.listdir(run_dir["serving"]))
  return os.path.join(run_dir["serving"], versions[0])


@pytest.fixture(scope="module")
def candidates(run_dir):
  with open(os.path.join(run_dir["data"], "impressions", "impressions.csv")) as f:
    rows = list(csv.DictReader(f))[:200]
  for r in rows:
    r.pop("label")
  return rows


@pytest.fixture(scope="module")
def expected(pushed, candidates):
  """Scores of the same SavedModel called in process."""
  m = tf.saved_model.load(pushed)
  return m.signatures["serving_raw"](**candidate_tensors(candidates))["ctr"].numpy().ravel()


def _start(tmp_path, pushed, batching=BatchingConfig(), poll=0.2, versions=(1,)):
  base = tmp_path / MODEL
  for v in versions:
    shutil.copytree(pushed, base / str(v))
  manager = ModelManager([ModelConfig(MODEL, str(base))], poll_interval=poll, batching=batching)
  return ModelServer(manager, port=0, rest_port=0).start(), base


@pytest.fixture(scope="module")
def server(tmp_path_factory, pushed):
  srv, _ = _start(tmp_path_factory.mktemp("srv"), pushed)
  yield srv
  srv.stop()


def _stub(srv):
  channel = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
  return (prediction_service_pb2_grpc.PredictionServiceStub(channel),
          model_service_pb2_grpc.ModelServiceStub(channel))


def _request(candidates, signature="serving_raw", name=MODEL, version=None):
  req = predict_pb2.PredictRequest()
  req.model_spec.name = name
  req.model_spec.signature_name = signature
  if version is not None:
    req.model_spec.version.value = version
  for k, t in candidate_tensors(candidates).items():
    req.inputs[k].CopyFrom(tf.make_tensor_proto(t))
  return req


def _example(c):
  feats = {}
  for f in F.FEATURES:
    if f.dtype is int:
      feats[f.name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(c[f.name])]))
    else:
      feats[f.name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[c[f.name].encode()]))
  return tf.train.Example(features=tf.train.Features(feature=feats))


def test_grpc_predict_status_and_metadata(server, candidates, expected):
  predict, models = _stub(server)
  resp = predict.Predict(_request(candidates[:100]), timeout=30)
  np.testing.assert_allclose(tf.make_ndarray(resp.outputs["ctr"]).ravel(), expected[:100], atol=1e-6)
  assert set(resp.outputs) == {"ctr", "visual_fallback"} and resp.model_spec.version.value == 1
  status = models.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(
      model_spec={"name": MODEL}), timeout=10)
  assert [(s.version, s.state) for s in status.model_version_status] == [
      (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)]
  meta_req = get_model_metadata_pb2.GetModelMetadataRequest(model_spec={"name": MODEL},
                                                            metadata_field=["signature_def"])
  meta = predict.GetModelMetadata(meta_req, timeout=10)
  sigs = get_model_metadata_pb2.SignatureDefMap()
  meta.metadata["signature_def"].Unpack(sigs)
  assert {"serving_default", "serving_raw"} <= set(sigs.signature_def)
  assert set(sigs.signature_def["serving_raw"].inputs) == {f.name for f in F.FEATURES}


def test_grpc_on_tf_examples_predict_regress_classify(server, candidates, expected):
  predict, _ = _stub(server)
  req = predict_pb2.PredictRequest(model_spec={"name": MODEL})           # serving_default
  req.inputs["examples"].CopyFrom(tf.make_tensor_proto(
      [_example(c).SerializeToString() for c in candidates[:10]], dtype=tf.string))
  out = tf.make_ndarray(predict.Predict(req, timeout=10).outputs["ctr"]).ravel()
  np.testing.assert_allclose(out, expected[:10], atol=1e-6)
  reg = regression_pb2.RegressionRequest(model_spec={"name": MODEL})
  reg.input.example_list.examples.extend([_example(c) for c in candidates[:3]])
  values = [r.value for r in predict.Regress(reg, timeout=10).result.regressions]
  np.testing.assert_allclose(values, expected[:3], atol=1e-6)
  cls = classification_pb2.ClassificationRequest(model_spec={"name": MODEL})
  cls.input.example_list.examples.extend([_example(c) for c in candidates[:3]])
  first = predict.Classify(cls, timeout=10).result.classifications[0]
  assert [c.label for c in first.classes] == ["0", "1"]
  assert abs(first.classes[1].score - expected[0]) < 1e-6


def _http(srv, path, body=None):
  data = json.dumps(body).encode() if body is not None else None
  req = urllib.request.Request(f"http://127.0.0.1:{srv.rest_port}{path}", data=data,
                               method="POST" if data is not None else "GET")
  try:
    with urllib.request.urlopen(req, timeout=30) as r:
      return r.status, json.loads(r.read())
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read())


def _typed(c):
  return {f.name: int(c[f.name]) if f.dtype is int else c[f.name] for f in F.FEATURES}


def test_rest_row_and_columnar_formats(server, candidates, expected):
  status, body = _http(server, f"/v1/models/{MODEL}:predict",
                       {"signature_name": "serving_raw", "instances": [_typed(c) for c in candidates[:5]]})
  assert status == 200
  np.testing.assert_allclose([p["ctr"][0] for p in body["predictions"]], expected[:5], atol=1e-6)
  cols = {f.name: [_typed(c)[f.name] for c in candidates[:5]] for f in F.FEATURES}
  status, body = _http(server, f"/v1/models/{MODEL}/versions/1:predict",
                       {"signature_name": "serving_raw", "inputs": cols})
  assert status == 200
  np.testing.assert_allclose(np.ravel(body["outputs"]["ctr"]), expected[:5], atol=1e-6)
  status, body = _http(server, f"/v1/models/{MODEL}")
  assert status == 200 and body["model_version_status"][0]["state"] == "AVAILABLE"
  status, body = _http(server, f"/v1/models/{MODEL}/metadata")
  assert status == 200 and "serving_raw" in body["metadata"]["signature_def"]["signatureDef"]


def test_errors_have_tf_serving_codes_and_server_survives(server, candidates, expected):
  predict, models = _stub(server)

  def code(req, call=None):
    with pytest.raises(grpc.RpcError) as e:
      (call or predict.Predict)(req, timeout=10)
    return e.value.code(), e.value.details()

  assert code(_request(candidates[:2], name="nope"))[0] == grpc.StatusCode.NOT_FOUND
  assert code(_request(candidates[:2], version=99))[0] == grpc.StatusCode.NOT_FOUND
  assert code(_request(candidates[:2], signature="nope"))[0] == grpc.StatusCode.NOT_FOUND
  bad = _request(candidates[:2])
  bad.inputs["not_a_feature"].CopyFrom(tf.make_tensor_proto([1]))
  c, details = code(bad)
  assert c == grpc.StatusCode.INVALID_ARGUMENT and "not_a_feature" in details
  bad = _request(candidates[:2])
  bad.inputs["user_age"].CopyFrom(tf.make_tensor_proto(["old", "young"]))
  c, details = code(bad)
  assert c == grpc.StatusCode.INVALID_ARGUMENT and "user_age" in details
  bad = _request(candidates[:2])
  bad.inputs["hour"].CopyFrom(tf.make_tensor_proto([1, 2, 3], dtype=tf.int64))
  c, details = code(bad)
  assert c == grpc.StatusCode.INVALID_ARGUMENT and "batch size" in details
  bad = _request(candidates[:2])
  bad.inputs["hour"].CopyFrom(tf.make_tensor_proto([[1], [2]], dtype=tf.int64))
  c, details = code(bad)
  assert c == grpc.StatusCode.INVALID_ARGUMENT and "shape" in details
  st = get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "nope"})
  assert code(st, models.GetModelStatus)[0] == grpc.StatusCode.NOT_FOUND
  assert _http(server, "/v1/models/nope:predict", {"instances": [1]})[0] == 404
  assert _http(server, f"/v1/models/{MODEL}:predict", {"instances": [{"hour": 1}]})[0] == 400
  assert _http(server, f"/v1/models/{MODEL}:predict", {"signature_name": "serving_raw",
                                                         "instances": [{"x": 1}]})[0] == 400
  resp = predict.Predict(_request(candidates[:3]), timeout=10)   # still serving
  np.testing.assert_allclose(tf.make_ndarray(resp.outputs["ctr"]).ravel(), expected[:3], atol=1e-6)


def test_new_version_goes_live_under_load_with_no_failed_request(tmp_path, pushed, candidates, expected):
  srv, base = _start(tmp_path, pushed, poll=0.1)
  try:
    predict, models = _stub(srv)
    seen, errors, stop = [], [], threading.Event()

    def loop():
      while not stop.is_set():
        try:
          r = predict.Predict(_request(candidates[:20]), timeout=10)
          np.testing.assert_allclose(tf.make_ndarray(r.outputs["ctr"]).ravel(), expected[:20], atol=1e-6)
          seen.append(r.model_spec.version.value)
        except Exception as e:  # pylint: disable=broad-except
          errors.append(e)

    threads = [threading.Thread(target=loop) for _ in range(3)]
    for t in threads:
      t.start()
    time.sleep(0.5)
    # A half-written version 2: files arrive without saved_model.pb; it must not be loaded.
    half = base / "2"
    shutil.copytree(os.path.join(pushed, "variables"), half / "variables")
    time.sleep(0.8)
    assert max(seen) == 1
    for name in os.listdir(pushed):
      src = os.path.join(pushed, name)
      if name != "variables":
        (shutil.copytree if os.path.isdir(src) else shutil.copy2)(src, half / name)
    deadline = time.time() + 30
    while time.time() < deadline and (not seen or seen[-1] != 2):
      time.sleep(0.1)
    time.sleep(0.5)
    stop.set()
    for t in threads:
      t.join()
    assert not errors, errors[:3]
    assert 1 in seen and seen[-1] == 2 and len(seen) > 20
    status = models.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(model_spec={"name": MODEL}))
    assert [s.version for s in status.model_version_status] == [2]       # version 1 unloaded
  finally:
    srv.stop()


def test_bounded_load_from_several_threads(server, candidates, expected):
  predict, _ = _stub(server)
  errors, counts = [], []

  def worker(offset):
    n = 0
    for i in range(400):
      lo = (offset * 37 + i * 5) % (len(candidates) - 5)
      try:
        r = predict.Predict(_request(candidates[lo:lo + 5]), timeout=10)
        got = tf.make_ndarray(r.outputs["ctr"]).ravel()
        if not np.allclose(got, expected[lo:lo + 5], atol=1e-6):
          errors.append(("mismatch", lo))
        n += 1
      except grpc.RpcError as e:
        errors.append(e.code())
    counts.append(n)

  threads = [threading.Thread(target=worker, args=(k,)) for k in range(5)]
  for t in threads:
    t.start()
  for t in threads:
    t.join(timeout=300)
  assert not errors, errors[:5]
  assert sum(counts) == 2000


def test_batching_merges_concurrent_requests(tmp_path, pushed, candidates, expected):
  srv, _ = _start(tmp_path, pushed, batching=BatchingConfig(True, max_batch_size=64, batch_timeout=0.005))
  try:
    predict, _ = _stub(srv)
    results, errors = {}, []

    def worker(k):
      for i in range(15):
        j = (k * 15 + i) % len(candidates)
        try:
          r = predict.Predict(_request([candidates[j]]), timeout=10)
          results[j] = float(tf.make_ndarray(r.outputs["ctr"]).ravel()[0])
        except grpc.RpcError as e:
          errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
      t.start()
    for t in threads:
      t.join()
    assert not errors
    for j, p in results.items():
      assert abs(p - expected[j]) < 1e-6
    batcher = srv.manager.get(MODEL)._batchers["serving_raw"]
    assert batcher.batches < 120, "concurrent requests should share batches"
  finally:
    srv.stop()


def test_predict_cli_csv_and_json(server, candidates, expected, tmp_path):
  path = tmp_path / "c.csv"
  with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(candidates[0]))
    w.writeheader()
    w.writerows(candidates[:4])
  out = subprocess.run([sys.executable, "-m", "cscnn", "predict", "--server", f"127.0.0.1:{server.port}",
                        "--model", MODEL, "--input", str(path), "--json"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  np.testing.assert_allclose(json.loads(out.stdout.strip().splitlines()[-1])["ctr"], expected[:4], atol=1e-6)
  (tmp_path / "c.json").write_text(json.dumps({"instances": [_typed(c) for c in candidates[:2]]}))
  out = subprocess.run([sys.executable, "-m", "cscnn", "predict", "--server", f"127.0.0.1:{server.port}",
                        "--model", MODEL, "--input", str(tmp_path / "c.json")], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0 and "ctr" in out.stdout and "model version 1" in out.stdout
  bad = subprocess.run([sys.executable, "-m", "cscnn", "predict", "--server", f"127.0.0.1:{server.port}",
                        "--model", "nope", "--input", str(path)], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
  assert bad.returncode == 1 and "NOT_FOUND" in bad.stderr
