"""A Python client for the CTR model over TF Serving's gRPC API (the official
`tensorflow_serving.apis` stubs), usable against `cscnn serve` or a real TF Serving."""

from __future__ import annotations

import csv
import json
from typing import Dict, List, Mapping, Optional, Sequence

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (get_model_status_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from spec.features import DEFAULT_SPEC, FeatureSpec
from spec.names import SERVING_RAW


class CandidateError(ValueError):
  """A candidate row lacks a feature or has a bad value."""


def read_candidates(path: str) -> List[Dict[str, object]]:
  """Candidates from a CSV file (header = feature names) or a JSON file (a list of objects,
  or TF Serving's ``{"instances": [...]}``)."""
  if path.endswith(".json"):
    with open(path) as f:
      data = json.load(f)
    rows = data["instances"] if isinstance(data, dict) else data
  else:
    with open(path, newline="") as f:
      rows = list(csv.DictReader(f))
  if not rows:
    raise CandidateError(f"{path}: no candidates")
  return rows


def _typed(spec: FeatureSpec, column: str, value: object, i: int):
  kind = spec.raw_dtype(column)
  if kind is str:
    return str(value if value is not None else "")
  try:
    return kind(value)
  except (TypeError, ValueError):
    what = "an integer" if kind is int else "a number"
    raise CandidateError(f"candidate {i}: feature {column!r} must be {what}, got {value!r}") from None


def _values(spec: FeatureSpec, candidates: Sequence[Mapping[str, object]], column: str) -> list:
  values = []
  for i, c in enumerate(candidates):
    if column not in c:
      raise CandidateError(f"candidate {i}: missing feature {column!r}")
    values.append(_typed(spec, column, c[column], i))
  return values


def candidate_tensors(candidates: Sequence[Mapping[str, object]],
                      spec: FeatureSpec = DEFAULT_SPEC) -> Dict[str, tf.Tensor]:
  """Raw feature tensors (shape [N]) for the ``serving_raw`` signature: one per serving column
  of `spec` (the model's feature spec), typed as the spec says."""
  return {c: tf.constant(_values(spec, candidates, c), dtype=spec.raw_tensor_dtype(c))
          for c in spec.serving_columns}


def candidate_example(candidate: Mapping[str, object], spec: FeatureSpec = DEFAULT_SPEC) -> tf.train.Example:
  """One candidate's raw features as the tf.Example that ``serving_default``, Classify and
  Regress take (int features as int64_list, float ones as float_list, the others as UTF-8 bytes)."""
  feats = {}
  for c in spec.serving_columns:
    v = _values(spec, [candidate], c)[0]
    kind = spec.raw_dtype(c)
    feats[c] = (tf.train.Feature(int64_list=tf.train.Int64List(value=[v])) if kind is int else
                tf.train.Feature(float_list=tf.train.FloatList(value=[v])) if kind is float else
                tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode()])))
  return tf.train.Example(features=tf.train.Features(feature=feats))


def predict_request(model: str, candidates, signature: str = SERVING_RAW,
                    version: Optional[int] = None, spec: FeatureSpec = DEFAULT_SPEC) -> predict_pb2.PredictRequest:
  """A PredictRequest of the candidates' raw feature tensors (as `tf.make_tensor_proto` writes them)."""
  request = predict_pb2.PredictRequest()
  request.model_spec.name = model
  request.model_spec.signature_name = signature
  if version is not None:
    request.model_spec.version.value = version
  for k, t in candidate_tensors(candidates, spec).items():
    request.inputs[k].CopyFrom(tf.make_tensor_proto(t))
  return request


class CtrClient:
  def __init__(self, target: str, timeout: float = 10.0, spec: FeatureSpec = DEFAULT_SPEC):
    self.spec = spec
    self.channel = grpc.insecure_channel(target)
    self.predictions = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
    self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)
    self.timeout = timeout

  def predict_request(self, model: str, candidates, signature: str = SERVING_RAW,
                      version: Optional[int] = None) -> predict_pb2.PredictRequest:
    return predict_request(model, candidates, signature, version, self.spec)

  def predict(self, model: str, candidates, signature: str = SERVING_RAW,
              version: Optional[int] = None) -> Dict[str, np.ndarray]:
    response = self.predictions.Predict(self.predict_request(model, candidates, signature, version),
                                        timeout=self.timeout)
    out = {k: tf.make_ndarray(v).reshape(-1) for k, v in response.outputs.items()}
    out["model_version"] = np.array([response.model_spec.version.value])
    return out

  def status(self, model: str):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = model
    return self.models.GetModelStatus(request, timeout=self.timeout)

  def close(self):
    self.channel.close()
