"""The model server with the official `tensorflow_serving.apis` stubs, on a model pushed by the
pipeline (the session's pipeline run): gRPC and REST round trips, errors, a version swap under
load, batching, a bounded load test, and the predict CLI."""

import base64
import csv
import json
import logging
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
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc,
                                     regression_pb2)

from conftest import ROOT
from serving.batching import Batcher
from serving.client import candidate_example, candidate_tensors, predict_request
from serving.errors import Unavailable
from serving.model_manager import BatchingConfig, ModelConfig, ModelManager
from serving.server import ModelServer, RequestLimits
from spec import features as F
S = F.DEFAULT_SPEC

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
  return predict_request(name, candidates, signature, version)


@pytest.mark.slow
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
  assert set(sigs.signature_def["serving_raw"].inputs) == {f.name for f in S.features}


@pytest.mark.slow
def test_grpc_on_tf_examples_predict_regress_classify(server, candidates, expected):
  predict, _ = _stub(server)
  req = predict_pb2.PredictRequest(model_spec={"name": MODEL})           # serving_default
  req.inputs["examples"].CopyFrom(tf.make_tensor_proto(
      [candidate_example(c).SerializeToString() for c in candidates[:10]], dtype=tf.string))
  out = tf.make_ndarray(predict.Predict(req, timeout=10).outputs["ctr"]).ravel()
  np.testing.assert_allclose(out, expected[:10], atol=1e-6)
  reg = regression_pb2.RegressionRequest(model_spec={"name": MODEL})
  reg.input.example_list.examples.extend([candidate_example(c) for c in candidates[:3]])
  values = [r.value for r in predict.Regress(reg, timeout=10).result.regressions]
  np.testing.assert_allclose(values, expected[:3], atol=1e-6)
  cls = classification_pb2.ClassificationRequest(model_spec={"name": MODEL})
  cls.input.example_list.examples.extend([candidate_example(c) for c in candidates[:3]])
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
  return {f.name: int(c[f.name]) if f.dtype is int else c[f.name] for f in S.features}


@pytest.mark.slow
def test_rest_row_and_columnar_formats(server, candidates, expected):
  status, body = _http(server, f"/v1/models/{MODEL}:predict",
                       {"signature_name": "serving_raw", "instances": [_typed(c) for c in candidates[:5]]})
  assert status == 200
  np.testing.assert_allclose([p["ctr"][0] for p in body["predictions"]], expected[:5], atol=1e-6)
  cols = {f.name: [_typed(c)[f.name] for c in candidates[:5]] for f in S.features}
  status, body = _http(server, f"/v1/models/{MODEL}/versions/1:predict",
                       {"signature_name": "serving_raw", "inputs": cols})
  assert status == 200
  np.testing.assert_allclose(np.ravel(body["outputs"]["ctr"]), expected[:5], atol=1e-6)
  status, body = _http(server, f"/v1/models/{MODEL}")
  assert status == 200 and body["model_version_status"][0]["state"] == "AVAILABLE"
  status, body = _http(server, f"/v1/models/{MODEL}/metadata")
  assert status == 200 and "serving_raw" in body["metadata"]["signature_def"]["signatureDef"]


@pytest.mark.slow
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


def shifted_version(src, dst, delta):
  """A copy of the SavedModel `src` at `dst` with the output bias moved by `delta`: the same
  graph and signatures, different scores."""
  shutil.copytree(src, dst)
  reader = tf.train.load_checkpoint(os.path.join(src, "variables", "variables"))
  shapes = reader.get_variable_to_shape_map()
  names, tensors, shifted = sorted(shapes), [], 0
  for k in names:
    value = reader.get_tensor(k)
    if "/bias/" in k and "optimizer" not in k and shapes[k] == [1]:
      value, shifted = value + delta, shifted + 1
    tensors.append(tf.constant(value))
  assert shifted >= 1, "no output bias found"
  tf.raw_ops.SaveV2(prefix=os.path.join(dst, "variables", "variables"), tensor_names=names,
                    shape_and_slices=[""] * len(names), tensors=tensors)


@pytest.fixture(scope="module")
def versions(tmp_path_factory, pushed, candidates):
  """Versions 1-4 of the pushed model with different scores, and each one's scores of the
  first 20 candidates called in process."""
  base = tmp_path_factory.mktemp("versions")
  dirs, scores = {}, {}
  for v in (1, 2, 3, 4):
    dirs[v] = str(base / str(v))
    shifted_version(pushed, dirs[v], 0.6 * (v - 1))
    m = tf.saved_model.load(dirs[v])
    scores[v] = m.signatures["serving_raw"](**candidate_tensors(candidates[:20]))["ctr"].numpy().ravel()
  for v in (2, 3, 4):
    assert np.abs(scores[v] - scores[v - 1]).min() > 1e-3, "versions must differ in every score"
  return {"dirs": dirs, "scores": scores}


class _Traffic:
  """Client threads sending 5-candidate Predict requests until stopped (at most `seconds`);
  records each answer's version, and as errors: RPC failures, scores that are not those of
  the version the answer names, and a thread seeing an older version after a newer one."""

  def __init__(self, srv, candidates, scores, threads=6, seconds=120):
    self.predict, _ = _stub(srv)
    self.candidates, self.scores = candidates, scores
    self.seen, self.errors, self._stop = [], [], threading.Event()
    self._deadline = time.time() + seconds
    self._threads = [threading.Thread(target=self._loop, args=(k,), daemon=True) for k in range(threads)]
    for t in self._threads:
      t.start()

  def _loop(self, k):
    last, i = 0, 0
    while not self._stop.is_set() and time.time() < self._deadline:
      lo = (k * 3 + i) % 15
      i += 1
      try:
        r = self.predict.Predict(_request(self.candidates[lo:lo + 5]), timeout=10)
      except grpc.RpcError as e:
        self.errors.append((e.code(), e.details()))
        continue
      v = r.model_spec.version.value
      if not np.allclose(tf.make_ndarray(r.outputs["ctr"]).ravel(), self.scores[v][lo:lo + 5], atol=1e-5):
        self.errors.append(("scores are not version %d's" % v, lo))
      if v < last:
        self.errors.append(("went back", last, v))
      last = v
      self.seen.append(v)

  def wait_for(self, version, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline and version not in self.seen[-20:]:
      time.sleep(0.05)
    assert version in self.seen, f"version {version} never answered; errors {self.errors[:3]}"

  def stop(self):
    self._stop.set()
    for t in self._threads:
      t.join(timeout=30)
    assert not any(t.is_alive() for t in self._threads), "a request hung"


class _Log(logging.Handler):
  def __init__(self):
    super().__init__()
    self.lines = []

  def emit(self, record):
    self.lines.append(record.getMessage())


@pytest.mark.slow
def test_swaps_under_load_with_batching_no_failure_no_mixup(tmp_path, versions, candidates):
  base = tmp_path / MODEL
  shutil.copytree(versions["dirs"][1], base / "1")
  manager = ModelManager([ModelConfig(MODEL, str(base))], poll_interval=0.1,
                         batching=BatchingConfig(True, max_batch_size=64, batch_timeout=0.002))
  srv = ModelServer(manager, port=0).start()
  try:
    traffic = _Traffic(srv, candidates, versions["scores"])
    traffic.wait_for(1)
    for v in (2, 3, 4):
      shutil.copytree(versions["dirs"][v], base / str(v))
      traffic.wait_for(v)
    time.sleep(0.5)
    traffic.stop()
    assert not traffic.errors, traffic.errors[:5]
    assert set(traffic.seen) == {1, 2, 3, 4} and traffic.seen[-1] == 4
    assert srv.manager.status(MODEL) == [(4, "AVAILABLE")]
  finally:
    srv.stop()


@pytest.mark.slow
def test_version_written_slowly_and_touched_never_goes_back(tmp_path, versions, candidates):
  """Version 2 arrives file by file in the order tf.saved_model.save writes (variables, then
  saved_model.pb, then fingerprint.pb), with two polls after every file, and its files are
  touched after it loaded; requests run all along."""
  base = tmp_path / MODEL
  shutil.copytree(versions["dirs"][1], base / "1")
  log, logger = _Log(), logging.getLogger("cscnn.serving")
  level = logger.level
  logger.setLevel(logging.INFO)
  logger.addHandler(log)
  manager = ModelManager([ModelConfig(MODEL, str(base))], poll_interval=3600)   # polled by the test
  srv = ModelServer(manager, port=0).start()
  try:
    traffic = _Traffic(srv, candidates, versions["scores"], threads=2)
    traffic.wait_for(1)
    src, dst = versions["dirs"][2], base / "2"
    files = sorted(os.path.relpath(os.path.join(d, f), src) for d, _, fs in os.walk(src) for f in fs)
    last = ["saved_model.pb", "fingerprint.pb"]
    files = [f for f in files if f not in last] + [f for f in last if f in files]
    served = []
    for f in files:
      os.makedirs(os.path.dirname(dst / f), exist_ok=True)
      shutil.copy2(os.path.join(src, f), dst / f)
      for _ in range(2):
        manager.poll_once()
        served.append((f, manager.get(MODEL).version))
    for _ in range(3):                       # touched after loading
      time.sleep(0.02)
      for f in files:
        os.utime(dst / f)
      manager.poll_once()
      served.append(("touched", manager.get(MODEL).version))
    traffic.wait_for(2)
    traffic.stop()
    assert not traffic.errors, traffic.errors[:5]
    before_pb = [v for f, v in served[:2 * files.index("saved_model.pb")]]
    assert set(before_pb) == {1}, served
    versions_served = [v for _, v in served]
    assert versions_served == sorted(versions_served) and versions_served[-1] == 2, served
    loads = [m for m in log.lines if m.startswith(f"loaded {MODEL}")]
    assert [m.split()[3] for m in loads] == ["1", "2"], log.lines
  finally:
    logger.removeHandler(log)
    logger.setLevel(level)
    srv.stop()


@pytest.mark.slow
def test_request_that_took_a_version_finishes_on_it_after_the_swap(tmp_path, versions, candidates):
  base = tmp_path / MODEL
  shutil.copytree(versions["dirs"][1], base / "1")
  manager = ModelManager([ModelConfig(MODEL, str(base))], poll_interval=3600,
                         batching=BatchingConfig(True, max_batch_size=64, batch_timeout=0.001))
  manager.start()
  try:
    shutil.copytree(versions["dirs"][2], base / "2")
    manager.poll_once()                      # version 2 seen once: not stable yet
    inputs = {k: v.numpy() for k, v in candidate_tensors(candidates[:5]).items()}
    with manager.lease(MODEL) as old:
      swap = threading.Thread(target=manager.poll_once, daemon=True)
      swap.start()
      deadline = time.time() + 60
      while manager.get(MODEL).version != 2 and time.time() < deadline:
        time.sleep(0.05)
      assert manager.get(MODEL).version == 2 and swap.is_alive(), "the unload must wait for the lease"
      out = old.run("serving_raw", inputs)["ctr"].ravel()
      np.testing.assert_allclose(out, versions["scores"][1][:5], atol=1e-5)
    swap.join(timeout=30)
    assert not swap.is_alive()
    assert manager.status(MODEL) == [(2, "AVAILABLE")]
  finally:
    manager.stop()


@pytest.mark.slow
def test_corrupt_version_is_skipped_and_serving_goes_on(tmp_path, versions, candidates):
  base = tmp_path / MODEL
  shutil.copytree(versions["dirs"][1], base / "1")
  srv = ModelServer(ModelManager([ModelConfig(MODEL, str(base))], poll_interval=0.1), port=0).start()
  try:
    traffic = _Traffic(srv, candidates, versions["scores"], threads=2)
    traffic.wait_for(1)
    shutil.copytree(versions["dirs"][2], base / "2")
    data = [f for f in os.listdir(base / "2" / "variables") if f.startswith("variables.data")][0]
    with open(base / "2" / "variables" / data, "r+b") as f:
      f.truncate(os.path.getsize(base / "2" / "variables" / data) // 2)
    time.sleep(2.0)                          # several polls: version 2 is tried once and skipped
    shutil.copytree(versions["dirs"][3], base / "3")
    traffic.wait_for(3)
    traffic.stop()
    assert not traffic.errors, traffic.errors[:5]
    assert 2 not in traffic.seen and traffic.seen[-1] == 3
  finally:
    srv.stop()


@pytest.mark.slow
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


@pytest.mark.slow
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


def test_servable_calls_a_signature_flat_with_each_input_in_its_place(tmp_path):
  """The servable calls a signature with its tensors in the function's flat order and its
  captured variable (`_flat_call`, no keyword front end): inputs declared out of sorted order,
  of three dtypes, each land in their own place, as in the keyword call."""
  from serving.model_manager import Servable

  class Module(tf.Module):
    def __init__(self):
      super().__init__()
      self.scale = tf.Variable(2.0)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="zeta"),
                                  tf.TensorSpec([None], tf.string, name="alpha"),
                                  tf.TensorSpec([None], tf.int64, name="mid")])
    def score(self, zeta, alpha, mid):
      return {"out": zeta * self.scale * 10 + tf.cast(mid, tf.float32)
              + 100 * tf.cast(tf.strings.length(alpha), tf.float32)}

  module = Module()
  tf.saved_model.save(module, str(tmp_path / "1"), signatures={"serving_default": module.score})
  servable = Servable(MODEL, 1, str(tmp_path / "1"), BatchingConfig())
  assert servable._flat_calls["serving_default"] is not None
  inputs = {"mid": np.array([3, 4]), "alpha": np.array([b"a", b"bbb"], dtype=object),
            "zeta": np.array([1.0, 2.0], np.float32)}
  got = servable.run("serving_default", inputs)["out"]
  want = servable.signatures["serving_default"](**{k: tf.constant(v) for k, v in inputs.items()})["out"]
  np.testing.assert_array_equal(got, [123.0, 344.0])
  np.testing.assert_array_equal(got, want.numpy())


def test_batcher_merges_every_queued_request_into_one_call():
  """While the model runs request 0, twenty more queue up; they make one merged call."""
  gate, calls = threading.Event(), []

  def fn(x):
    calls.append(len(x["x"]))
    assert gate.wait(30)
    return {"y": x["x"] * 2}

  batcher = Batcher(fn, max_batch_size=64, batch_timeout=0.001, request_timeout=60)
  results = {}

  def client(k):
    results[k] = batcher.submit({"x": np.array([k, -k])})["y"].tolist()

  threads = [threading.Thread(target=client, args=(0,), daemon=True)]
  threads[0].start()
  deadline = time.time() + 30
  while not calls and time.time() < deadline:
    time.sleep(0.01)
  threads += [threading.Thread(target=client, args=(k,), daemon=True) for k in range(1, 21)]
  for t in threads[1:]:
    t.start()
  while batcher._queue.qsize() < 20 and time.time() < deadline:  # pylint: disable=protected-access
    time.sleep(0.01)
  gate.set()
  for t in threads:
    t.join(timeout=30)
  batcher.stop()
  assert calls == [2, 40]
  assert results == {k: [2 * k, -2 * k] for k in range(21)}


def test_batcher_stop_racing_submits_serves_or_refuses_never_hangs():
  """Every submit racing `stop` either gets its own result or UNAVAILABLE, within a bound."""
  for i in range(300):
    batcher = Batcher(lambda x: {"y": x["x"] * 2}, max_batch_size=4, batch_timeout=0.0002,
                      request_timeout=5, name=f"race-{i}")
    outcomes = []

    def client(k, batcher=batcher, outcomes=outcomes):
      try:
        y = batcher.submit({"x": np.array([k])})["y"]
        outcomes.append("ok" if y.tolist() == [2 * k] else f"wrong {y}")
      except Unavailable:
        outcomes.append("unavailable")
      except Exception as e:  # pylint: disable=broad-except
        outcomes.append(repr(e))

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(4)]
    for t in threads[:2]:
      t.start()
    batcher.stop()
    for t in threads[2:]:
      t.start()
    for t in threads:
      t.join(timeout=10)
    assert not any(t.is_alive() for t in threads), f"iteration {i}: a submit hung"
    assert len(outcomes) == 4 and set(outcomes) <= {"ok", "unavailable"}, (i, outcomes)


@pytest.mark.slow
def test_garbage_and_oversized_inputs_get_tf_serving_codes_never_unknown(tmp_path, versions, candidates):
  """Random bytes, malformed tensors and JSON, and requests over the row and byte limits, through
  gRPC and REST with batching on, mixed with good requests that must keep their scores."""
  base = tmp_path / MODEL
  shutil.copytree(versions["dirs"][1], base / "1")
  manager = ModelManager([ModelConfig(MODEL, str(base))], poll_interval=0.2,
                         batching=BatchingConfig(True, max_batch_size=64, batch_timeout=0.002))
  srv = ModelServer(manager, port=0, rest_port=0, limits=RequestLimits(max_rows=50, max_bytes=64 << 10)).start()
  try:
    predict, _ = _stub(srv)
    rng = np.random.default_rng(0)
    codes = []

    def code(call, req):
      try:
        call(req, timeout=10)
      except grpc.RpcError as e:
        codes.append(e.code())
        return e.code(), e.details()
      return grpc.StatusCode.OK, ""

    def junk_examples(n):
      req = predict_pb2.PredictRequest(model_spec={"name": MODEL})    # serving_default
      req.inputs["examples"].CopyFrom(tf.make_tensor_proto(
          [rng.bytes(int(rng.integers(1, 200))) for _ in range(n)], dtype=tf.string))
      return req

    good_errors = []

    def good_client(k):
      for i in range(10):
        lo = (k + i) % 15
        if i % 2:      # tf.Examples to serving_default: batched with the junk requests
          req = predict_pb2.PredictRequest(model_spec={"name": MODEL})
          req.inputs["examples"].CopyFrom(tf.make_tensor_proto(
              [candidate_example(c).SerializeToString() for c in candidates[lo:lo + 5]], dtype=tf.string))
        else:
          req = _request(candidates[lo:lo + 5])
        try:
          r = predict.Predict(req, timeout=10)
          if not np.allclose(tf.make_ndarray(r.outputs["ctr"]).ravel(), versions["scores"][1][lo:lo + 5], atol=1e-5):
            good_errors.append(("scores", lo))
        except grpc.RpcError as e:
          good_errors.append(e.code())

    def bad_client():
      for _ in range(10):
        c, details = code(predict.Predict, junk_examples(3))
        if c != grpc.StatusCode.INVALID_ARGUMENT or "examples" not in details:
          good_errors.append(("junk", c, details[:200]))

    threads = [threading.Thread(target=good_client, args=(k,), daemon=True) for k in range(3)]
    threads += [threading.Thread(target=bad_client, daemon=True) for _ in range(2)]
    for t in threads:
      t.start()
    for t in threads:
      t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a request hung"
    assert not good_errors, good_errors[:5]

    c, details = code(predict.Predict, junk_examples(1))
    assert c == grpc.StatusCode.INVALID_ARGUMENT and "Could not parse example input" in details, details
    bad = _request(candidates[:2])
    bad.inputs["hour"].CopyFrom(tensor_pb2.TensorProto(dtype=types_pb2.DT_INT64, tensor_shape={"dim": [{"size": 2}]},
                                                       tensor_content=b"\x01\x02\x03"))
    c, details = code(predict.Predict, bad)
    assert c == grpc.StatusCode.INVALID_ARGUMENT and "hour" in details, details
    wrong_type = candidate_example(candidates[0])
    wrong_type.features.feature["hour"].CopyFrom(tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"\xff\xfe"])))
    cls = classification_pb2.ClassificationRequest(model_spec={"name": MODEL})
    cls.input.example_list.examples.extend([wrong_type])
    assert code(predict.Classify, cls)[0] == grpc.StatusCode.INVALID_ARGUMENT
    c, details = code(predict.Predict, _request(candidates[:51]))
    assert c == grpc.StatusCode.INVALID_ARGUMENT and "at most 50" in details and "input" in details, details
    reg = regression_pb2.RegressionRequest(model_spec={"name": MODEL})
    reg.input.example_list.examples.extend([candidate_example(c) for c in candidates[:51]])
    assert code(predict.Regress, reg)[0] == grpc.StatusCode.INVALID_ARGUMENT
    big = junk_examples(1)
    big.inputs["examples"].CopyFrom(tf.make_tensor_proto([b"x" * (80 << 10)], dtype=tf.string))
    assert code(predict.Predict, big)[0] == grpc.StatusCode.RESOURCE_EXHAUSTED

    url = f"http://127.0.0.1:{srv.rest_port}/v1/models/{MODEL}:predict"

    def post(data):
      req = urllib.request.Request(url, data=data, method="POST")
      try:
        with urllib.request.urlopen(req, timeout=30) as r:
          return r.status, json.loads(r.read())
      except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())

    b64 = lambda b: {"b64": base64.b64encode(b).decode()}  # noqa: E731
    for body, status in [
        (json.dumps({"instances": [b64(rng.bytes(64)) for _ in range(3)]}).encode(), 400),
        (json.dumps({"instances": [{"b64": "not base64!"}]}).encode(), 400),
        (rng.bytes(300), 400),
        (b"[1, 2]", 400),
        (json.dumps({"instances": "abc"}).encode(), 400),
        (json.dumps({"signature_name": "serving_raw",
                     "instances": [{**_typed(candidates[0]), "hour": {"x": 1}}]}).encode(), 400),
        (json.dumps({"signature_name": "serving_raw",
                     "instances": [_typed(c) for c in candidates[:51]]}).encode(), 400),
        (json.dumps({"instances": [b64(b"x" * (80 << 10))]}).encode(), 413)]:
      got, reply = post(body)
      assert got == status and reply.get("error"), (body[:80], got, reply)
    got, reply = post(json.dumps(
        {"instances": [b64(candidate_example(c).SerializeToString()) for c in candidates[:3]]}).encode())
    assert got == 200, reply
    assert grpc.StatusCode.UNKNOWN not in codes
    r = predict.Predict(_request(candidates[:5]), timeout=10)        # still serving
    np.testing.assert_allclose(tf.make_ndarray(r.outputs["ctr"]).ravel(), versions["scores"][1][:5], atol=1e-5)
  finally:
    srv.stop()


@pytest.mark.slow
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


@pytest.mark.slow
def test_profile_puts_every_op_of_the_serving_graph_in_its_stage(tmp_path, pushed, candidates):
  """`bench serving --profile` on the pushed model: every server stage is timed, and the TF
  profiler's op times land in the stages they belong to (tf.Example parsing only in
  serving_default; the Transform layer, the visual-table lookup and each part of the DCN in
  both). The durations themselves are not checked; that is the benchmark's job."""
  from cscnn.bench import GRAPH_STAGES, profile_serving
  base = tmp_path / MODEL
  shutil.copytree(pushed, base / "1")
  p = profile_serving(str(base), MODEL, candidates[:20], requests=3, trace_calls=2, log=lambda *a, **k: None)
  assert set(p["stages"]) == {"grpc_decode", "tensor_decoding", "validation", "graph_call", "signature",
                              "output_encoding", "handler"}
  assert all(0 < s["p50_ms"] <= s["p99_ms"] for s in p["stages"].values())
  raw, default = p["graph_serving_raw"], p["graph_serving_default"]
  assert set(raw) == set(default) == {label for _, label in GRAPH_STAGES}
  assert raw["tf.Example parsing"] == 0 < default["tf.Example parsing"]
  for _, label in GRAPH_STAGES[1:-1]:
    assert raw[label] > 0 and default[label] > 0, label


@pytest.mark.slow
def test_server_path_gives_the_scores_of_tensorflows_own_codec(tmp_path, pushed, candidates):
  """The server's request path (`serving/tensors.py`: numpy views on the TensorProtos, outputs as
  content bytes) against the path it replaced, written out here with TensorFlow's own codec
  (`tf.make_ndarray` -> the signature -> `tf.make_tensor_proto`): the same scores to 1e-5 on 200
  candidates, as raw tensors and as tf.Examples."""
  from serving.server import PredictionService
  base = tmp_path / MODEL
  shutil.copytree(pushed, base / "1")
  manager = ModelManager([ModelConfig(MODEL, str(base))])
  manager.poll_once(initial=True)
  loaded = tf.saved_model.load(str(base / "1"))
  examples = predict_pb2.PredictRequest(model_spec={"name": MODEL})
  examples.inputs["examples"].CopyFrom(tf.make_tensor_proto(
      [candidate_example(c).SerializeToString() for c in candidates], dtype=tf.string))
  try:
    for request, signature in ((_request(candidates), "serving_raw"), (examples, "serving_default")):
      wire = request.SerializeToString()
      ours = PredictionService(manager).Predict(predict_pb2.PredictRequest.FromString(wire), None)
      ours = predict_pb2.PredictResponse.FromString(ours.SerializeToString())
      parsed = predict_pb2.PredictRequest.FromString(wire)
      inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in parsed.inputs.items()}
      theirs = {k: tf.make_tensor_proto(v.numpy()) for k, v in loaded.signatures[signature](**inputs).items()}
      assert set(ours.outputs) == set(theirs) == {"ctr", "visual_fallback"}
      for k, proto in theirs.items():
        want = tf.make_ndarray(proto)
        got = tf.make_ndarray(ours.outputs[k])
        assert got.shape == want.shape == (len(candidates), 1) and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
  finally:
    manager.stop()
