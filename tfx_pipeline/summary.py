"""Reads a pipeline run's outcome back from MLMD and the Evaluator's output."""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List

import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2

from spec import features as F
from tfx_pipeline.evaluation import BASELINE_GATE_FILE, BASELINE_METRICS_FILE, load_metrics
from tfx_pipeline.local_runner import paths
from tfx_pipeline.metrics import auc_standard_error


def _store(metadata_path: str) -> mlmd.MetadataStore:
  if not os.path.exists(metadata_path):
    raise FileNotFoundError(f"no MLMD store at {metadata_path}: run `cscnn pipeline run` first")
  cfg = metadata_store_pb2.ConnectionConfig()
  cfg.sqlite.filename_uri = metadata_path
  cfg.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
  return mlmd.MetadataStore(cfg)


def _latest(store, type_name):
  artifacts = store.get_artifacts_by_type(type_name)
  return max(artifacts, key=lambda a: a.id) if artifacts else None


_DONE = (metadata_store_pb2.Execution.COMPLETE, metadata_store_pb2.Execution.CACHED)


def _latest_run(store) -> Dict[str, Any]:
  """The newest pipeline run: its id, the state of each component that started in it, and its
  output artifacts by type name (the newest of each type), cached outputs included."""
  ctx_types = {t.id: t.name for t in store.get_context_types()}
  runs = [c for c in store.get_contexts() if ctx_types.get(c.type_id) == "pipeline_run"]
  if not runs:
    return {"id": None, "states": {}, "outputs": {}, "unfinished": [], "by_component": {}}
  run = max(runs, key=lambda c: (c.create_time_since_epoch, c.id))
  exec_types = {t.id: t.name for t in store.get_execution_types()}
  executions = store.get_executions_by_context(run.id)
  states, unfinished = {}, []
  for e in sorted(executions, key=lambda e: e.id):
    component = exec_types.get(e.type_id, "?").rsplit(".", 1)[-1]
    states[component] = metadata_store_pb2.Execution.State.Name(e.last_known_state)
    if e.last_known_state not in _DONE:
      unfinished.append(component)
  events = store.get_events_by_execution_ids([e.id for e in executions]) if executions else []
  out_events = [ev for ev in events if ev.type == metadata_store_pb2.Event.OUTPUT]
  out_ids = sorted({ev.artifact_id for ev in out_events})
  art_types = {t.id: t.name for t in store.get_artifact_types()}
  component_of = {e.id: exec_types.get(e.type_id, "?").rsplit(".", 1)[-1] for e in executions}
  producer = {ev.artifact_id: component_of.get(ev.execution_id) for ev in out_events}
  outputs: Dict[str, Any] = {}
  by_component: Dict[str, Any] = {}
  for a in store.get_artifacts_by_id(out_ids) if out_ids else []:
    name = art_types.get(a.type_id)
    if name not in outputs or a.id > outputs[name].id:
      outputs[name] = a
    by_component.setdefault(producer.get(a.id), []).append(a)
  return {"id": run.name, "states": states, "outputs": outputs, "unfinished": unfinished,
          "by_component": by_component}


def _transform_config(store) -> Dict[str, str]:
  """What the latest Transform counted for the cold-ad slice and the category column it was
  told (its ``custom_config``)."""
  types = {t.id: t.name for t in store.get_execution_types()}
  runs = [e for e in store.get_executions() if types.get(e.type_id, "").endswith(".Transform")]
  out = {"cold_by": F.COLD_BY[0], "category": F.DEFAULT_SPEC.category}
  if runs:
    prop = max(runs, key=lambda e: e.id).custom_properties.get("custom_config")
    config = json.loads(prop.string_value) if prop is not None and prop.string_value else None
    if isinstance(config, dict) and config.get("cold_by") in F.COLD_BY:
      out["cold_by"] = config["cold_by"]
    if isinstance(config, dict) and isinstance(config.get("spec"), dict):
      out["category"] = F.FeatureSpec.from_dict(config["spec"]).category
  return out


def _metrics(eval_uri: str, baseline: bool = False) -> Dict[str, Dict[str, float]]:
  """{slice name: {metric: value}} for the candidate model (or the baseline)."""
  by_model = load_metrics(eval_uri)
  if baseline:
    return by_model.get("baseline", {})
  return {k: v for name, m in by_model.items() if name != "baseline" for k, v in m.items()}


def run_summary(output_dir: str) -> Dict[str, Any]:
  """Blessing, push destination and metrics of the latest run written to `output_dir` (the
  newest MLMD pipeline run), with the state of each of its components."""
  import tensorflow_model_analysis as tfma  # pylint: disable=import-outside-toplevel
  p = paths(output_dir)
  store = _store(p["metadata"])
  summary: Dict[str, Any] = {"output": os.path.abspath(output_dir), **_transform_config(store)}
  run = _latest_run(store)
  summary["run_id"], summary["components"] = run["id"], run["states"]
  summary["run_finished"] = not run["unfinished"]
  if run["unfinished"]:
    summary["unfinished"] = run["unfinished"]

  def latest(type_name):
    """An unfinished run reports only its own outputs; a finished run that did not produce
    this type (a one-component run, as the Airflow tasks) reports the newest one."""
    if type_name in run["outputs"] or run["unfinished"]:
      return run["outputs"].get(type_name)
    return _latest(store, type_name)

  evaluation = latest("ModelEvaluation")
  blessing = latest("ModelBlessing")
  pushed = latest("PushedModel")
  if evaluation is not None:
    summary["metrics"] = _metrics(evaluation.uri)
    summary["baseline_metrics"] = _metrics(evaluation.uri, baseline=True)
    summary["evaluation_uri"] = evaluation.uri
    result = tfma.load_validation_result(evaluation.uri)
    summary["validation_ok"] = bool(result.validation_ok)
    failures: List[str] = []
    for per_slice in result.metric_validations_per_slice:
      for f in per_slice.failures:
        failures.append(f"{f.metric_key.name}{' (change vs baseline)' if f.metric_key.is_diff else ''}"
                        f" = {f.metric_value.double_value.value:.4f}: {f.message}")
    summary["validation_failures"] = failures
    gate_file = os.path.join(evaluation.uri, BASELINE_GATE_FILE)
    if os.path.exists(gate_file):
      with open(gate_file) as f:
        summary["baseline_gate"] = json.load(f)
  baselines = latest("cscnn.Baselines")
  if baselines is not None and os.path.exists(os.path.join(baselines.uri, BASELINE_METRICS_FILE)):
    with open(os.path.join(baselines.uri, BASELINE_METRICS_FILE)) as f:
      b = json.load(f)
    summary["baselines"] = {"best": b["best"], "best_per_user_auc": b["best_per_user_auc"],
                            "metrics": b["metrics"], "uri": baselines.uri}
  table = latest("cscnn.VisualTable")
  if table is not None:
    stats = os.path.join(table.uri, "stats.json")
    if os.path.exists(stats):
      with open(stats) as f:
        summary["visual_table"] = json.load(f)
  for component, artifacts in run["by_component"].items():   # CataloguePretrain's metrics.json
    for a in artifacts:
      metrics_file = os.path.join(a.uri, "metrics.json")
      if component and "Pretrain" in component and os.path.exists(metrics_file):
        with open(metrics_file) as f:
          summary["pretrain"] = {"uri": a.uri, "metrics": json.load(f)}
  if blessing is not None:
    summary["blessed"] = bool(blessing.custom_properties["blessed"].int_value)
  if pushed is not None:
    summary["pushed"] = bool(pushed.custom_properties["pushed"].int_value)
    if summary["pushed"]:
      summary["pushed_to"] = pushed.custom_properties["pushed_destination"].string_value
  return summary


def _auc_with_error(m: Dict[str, float]) -> str:
  """``AUC ± its standard error (N positives)`` of a slice's metrics; the error says how much of
  a difference between two models on a small slice is the draw of its rows."""
  auc, rows = m.get("auc", float("nan")), m.get("example_count", 0)
  positives = int(round(rows * m.get("mean_label", float("nan")))) if rows and "mean_label" in m else None
  if positives is None or auc != auc:
    return f"{auc:.4f}"
  return f"{auc:.4f} ± {auc_standard_error(auc, positives, int(rows) - positives):.4f} ({positives} positives)"


def format_summary(s: Dict[str, Any]) -> str:
  lines = ["", "== pipeline run summary =="]
  if s.get("run_id"):
    lines.append(f"run {s['run_id']}")
  if not s.get("run_finished", True):
    states = s.get("components", {})
    lines.append("the run did not finish: " + ", ".join(f"{c} {states.get(c, '?')}" for c in s.get("unfinished", []))
                 + "; only this run's outputs are shown")
  metrics = s.get("metrics", {})
  overall = metrics.get("overall", {})
  if overall:
    lines.append(f"eval rows: {int(overall.get('example_count', 0))}   AUC overall: "
                 f"{overall.get('auc', float('nan')):.4f}   mean label {overall.get('mean_label', 0):.4f}"
                 f"   mean prediction {overall.get('mean_prediction', 0):.4f}")
    if "per_user_auc" in overall:
      lines.append(f"per-user AUC (eq. 13): {overall['per_user_auc']:.4f}")
    cats = sorted((k for k in metrics if k.startswith(s.get("category", F.DEFAULT_SPEC.category) + "=")),
                  key=lambda k: int(k.split("=")[1]) if k.split("=")[1].isdigit() else k)
    for k in cats:
      m = metrics[k]
      lines.append(f"  {k:<16} rows {int(m.get('example_count', 0)):>6}   AUC {m.get('auc', float('nan')):.4f}")
    for k in sorted(k for k in metrics if k.startswith(F.COLD_KEY + "=")):
      m, cold = metrics[k], k.endswith("=1")
      note = f"   (fewer than {F.COLD_THRESHOLD} training {s.get('cold_by', F.COLD_BY[0])})" if cold else ""
      lines.append(f"  {'cold ads' if cold else 'warm ads':<16} rows {int(m.get('example_count', 0)):>6}"
                   f"   AUC {_auc_with_error(m)}{note}")
  baselines = s.get("baselines")
  if baselines:
    cold = f"{F.COLD_KEY}=1"
    lines.append("baselines (fitted on the training split, evaluated by TFMA on the same rows):")
    rows = [("model", metrics)] + sorted(baselines["metrics"].items())
    for name, m in rows:
      o, c = m.get("overall", {}), m.get(cold, {})
      best = "   <- best baseline" if name == baselines["best"] else ""
      lines.append(f"  {name:<18} AUC {o.get('auc', float('nan')):.4f}   per-user AUC "
                   f"{o.get('per_user_auc', float('nan')):.4f}   cold-ad AUC {_auc_with_error(c)}{best}")
  pretrain = (s.get("pretrain") or {}).get("metrics")
  if pretrain:
    p, r = pretrain["pretrained"], pretrain["random"]
    recall = next((k for k in p if k.startswith("title_word_recall_at_")), None)
    lines.append(f"catalogue pretraining ({pretrain['ads']['heldout']} held-out ads): category top-1 "
                 f"{p['category_top1']:.3f} (random weights {r['category_top1']:.3f}), "
                 + (f"title-word recall@{recall.rsplit('_', 1)[-1]} {p[recall]:.3f} (random {r[recall]:.3f})"
                    if recall else ""))
  table = s.get("visual_table")
  if table:
    lines.append(f"visual table: {table['rows']} ads x {table['dim']} ({table['table_bytes']:,} bytes), "
                 f"eval coverage {table['eval_coverage']:.1%}; serving model {table['serving_model_bytes']:,} bytes")
  blessed = s.get("blessed")
  lines.append(f"blessed: {'yes' if blessed else 'NO'}")
  gate = s.get("baseline_gate") or {}
  if gate.get("enabled"):
    lines.append(f"baseline gate: per-user AUC must be >= {gate['bound']:.4f} (best baseline "
                 f"{gate['best']} {gate['best_per_user_auc']:.4f} + margin {gate['margin']:g})")
  for f in s.get("validation_failures", []):
    lines.append(f"  failed: {f}")
  if s.get("pushed"):
    lines.append(f"pushed to: {s['pushed_to']}")
  else:
    lines.append("pushed: no (serving directory unchanged)")
  return "\n".join(lines)
