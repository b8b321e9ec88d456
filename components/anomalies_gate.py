"""AnomaliesGate: stops the pipeline before Transform/Trainer when ExampleValidator found
anomalies, printing every anomaly (feature, short and long description) and the split.

ExampleValidator only records anomalies; TFX does not stop on them by itself.
"""


import json
import os

from tfx import v1 as tfx
from tfx.utils import io_utils
from tensorflow_metadata.proto.v0 import anomalies_pb2

ANOMALIES_FILE = "SchemaDiff.pb"   # tfx.components.example_validator.executor.DEFAULT_FILE_NAME


class DataAnomaliesError(RuntimeError):
  """Raised when the input data does not match the curated schema."""


def describe_anomalies(anomalies_uri: str, split_names) -> str:
  """Human-readable text of all anomalies found under `anomalies_uri`, '' if none."""
  lines = []
  for split in split_names:
    path = os.path.join(anomalies_uri, f"Split-{split}", ANOMALIES_FILE)
    if not os.path.exists(path):
      continue
    anomalies = anomalies_pb2.Anomalies()
    anomalies.ParseFromString(io_utils.read_bytes_file(path))
    for feature, info in sorted(anomalies.anomaly_info.items()):
      reasons = "; ".join(r.description or r.short_description for r in info.reason)
      lines.append(f"  split {split!r}, feature {feature!r}: {info.short_description}: {reasons}")
    if anomalies.HasField("dataset_anomaly_info"):
      info = anomalies.dataset_anomaly_info
      lines.append(f"  split {split!r}, dataset: {info.short_description}: {info.description}")
  return "\n".join(lines)


@tfx.dsl.components.component
def AnomaliesGate(anomalies: tfx.dsl.components.InputArtifact[
                      tfx.types.standard_artifacts.ExampleAnomalies],
                  code_version: tfx.dsl.components.Parameter[str] = "",
                  ) -> tfx.dsl.components.OutputDict(passed=int):
  """Fails (stopping downstream components) if any split has an anomaly."""
  splits = json.loads(anomalies.split_names)
  text = describe_anomalies(anomalies.uri, splits)
  if text:
    raise DataAnomaliesError(
        "ExampleValidator found anomalies in the input data; the pipeline stops before "
        f"training (schema: tfx_pipeline/schema/schema.pbtxt):\n{text}")
  return {"passed": 1}
