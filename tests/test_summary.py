"""`pipeline summary` reads the newest pipeline run from MLMD, on a real SQLite MLMD store
written the way TFX records runs: a pipeline_run context per run, executions with their states,
output artifacts attached by OUTPUT events."""

import os

import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2 as pb

from tfx_pipeline.summary import format_summary, run_summary


def _store(path):
  cfg = pb.ConnectionConfig()
  cfg.sqlite.filename_uri = path
  cfg.sqlite.connection_mode = pb.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
  return mlmd.MetadataStore(cfg)


class _Runs:
  def __init__(self, store):
    self.store = store
    self.run_type = store.put_context_type(pb.ContextType(name="pipeline_run"))
    self.exec_types = {c: store.put_execution_type(pb.ExecutionType(name=f"tfx.components.{c.lower()}.component.{c}"))
                       for c in ("Trainer", "Evaluator", "Pusher")}
    self.art_types = {a: store.put_artifact_type(pb.ArtifactType(name=a))
                      for a in ("Model", "ModelBlessing", "PushedModel")}

  def run(self, name, steps):
    """steps: (component, state, [(artifact type, custom properties)])."""
    [ctx_id] = self.store.put_contexts([pb.Context(type_id=self.run_type, name=name)])
    ctx = self.store.get_contexts_by_id([ctx_id])[0]
    for component, state, outputs in steps:
      execution = pb.Execution(type_id=self.exec_types[component], last_known_state=state)
      pairs = []
      for type_name, props in outputs:
        a = pb.Artifact(type_id=self.art_types[type_name], uri=f"/x/{name}/{type_name}",
                        state=pb.Artifact.LIVE)
        for k, v in props.items():
          if isinstance(v, int):
            a.custom_properties[k].int_value = v
          else:
            a.custom_properties[k].string_value = v
        pairs.append((a, pb.Event(type=pb.Event.OUTPUT)))
      self.store.put_execution(execution, pairs, [ctx])


def test_summary_is_the_latest_run_not_the_newest_artifacts(tmp_path):
  out = str(tmp_path / "out")
  os.makedirs(out)
  runs = _Runs(_store(os.path.join(out, "metadata.sqlite")))
  runs.run("run-1", [("Trainer", pb.Execution.COMPLETE, [("Model", {})]),
                     ("Evaluator", pb.Execution.COMPLETE, [("ModelBlessing", {"blessed": 1})]),
                     ("Pusher", pb.Execution.COMPLETE, [("PushedModel", {"pushed": 1, "pushed_destination": "/s/1"})])])
  first = run_summary(out)
  assert first["run_id"] == "run-1" and first["run_finished"] and first["blessed"] and first["pushed"]

  # A later run whose Trainer failed: no blessing and no push of its own; run 1's are not shown.
  runs.run("run-2", [("Trainer", pb.Execution.FAILED, [])])
  s = run_summary(out)
  assert s["run_id"] == "run-2" and s["run_finished"] is False and s["unfinished"] == ["Trainer"]
  assert "blessed" not in s and "pushed" not in s, s
  text = format_summary(s)
  assert "did not finish: Trainer FAILED" in text and "blessed: NO" in text and "pushed: no" in text

  # A run killed during the Trainer leaves it RUNNING: also unfinished.
  runs.run("run-3", [("Trainer", pb.Execution.RUNNING, [])])
  s = run_summary(out)
  assert s["unfinished"] == ["Trainer"] and s["components"] == {"Trainer": "RUNNING"}

  # A finished one-component run (as an Airflow task) shows its own output and, for what it did
  # not produce, the newest earlier one.
  runs.run("run-4", [("Pusher", pb.Execution.COMPLETE, [("PushedModel", {"pushed": 0})])])
  s = run_summary(out)
  assert s["run_finished"] and s["pushed"] is False and s["blessed"] is True
