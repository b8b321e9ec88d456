"""`cscnn report`: an HTML page about the latest pipeline run in OUTPUT, for a person.

It shows whether the candidate was blessed and why, AUC per slice (overall, per category, warm
and cold ads) against the baseline model (the latest blessed one, when there was one), the ROC
curve and the calibration (predicted against observed CTR) from TFMA's plots, and the spatial
attention maps of the panel of ads logged by the trainer. PNGs are written beside the page.
"""

from __future__ import annotations

import base64
import glob
import html
import os
from typing import List

import numpy as np

from tfx_pipeline.evaluation import slice_name
from tfx_pipeline.summary import run_summary


def _plots(eval_uri: str):
  """(fpr, tpr) and calibration buckets (predicted, observed, count) of the overall slice."""
  import tensorflow_model_analysis as tfma  # pylint: disable=import-outside-toplevel
  roc, calib = None, None
  for p in tfma.load_plots(eval_uri):
    if slice_name(p.slice_key) != "overall":
      continue
    for kv in p.plot_keys_and_values:
      if kv.key.model_name == "baseline":
        continue
      v = kv.value
      if v.HasField("confusion_matrix_at_thresholds"):
        ms = v.confusion_matrix_at_thresholds.matrices
        fpr = [m.false_positives / max(m.false_positives + m.true_negatives, 1e-9) for m in ms]
        tpr = [m.true_positives / max(m.true_positives + m.false_negatives, 1e-9) for m in ms]
        roc = (np.array(fpr), np.array(tpr))
      if v.HasField("calibration_histogram_buckets"):
        rows = [(b.total_weighted_refined_prediction.value / b.num_weighted_examples.value,
                 b.total_weighted_label.value / b.num_weighted_examples.value, b.num_weighted_examples.value)
                for b in v.calibration_histogram_buckets.buckets if b.num_weighted_examples.value > 0]
        calib = np.array(rows)
  return roc, calib


def _png(fig, path: str) -> str:
  fig.savefig(path, dpi=110, bbox_inches="tight")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  plt.close(fig)
  return path


def _img_tag(path: str, alt: str) -> str:
  with open(path, "rb") as f:
    data = base64.b64encode(f.read()).decode()
  return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _label(name: str) -> str:
  return {"ad_is_cold=1": "cold ads", "ad_is_cold=0": "warm ads"}.get(name, name)


def _slice_order(name: str):
  kind, _, value = name.partition("=")
  return (name != "overall", kind, float(value) if value.replace(".", "", 1).isdigit() else value)


def render_report(output_dir: str, report_dir: str = None) -> str:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  s = run_summary(output_dir)
  if "metrics" not in s:
    raise FileNotFoundError(f"no Evaluator output in {output_dir}: the run stopped before evaluation")
  report_dir = report_dir or os.path.join(output_dir, "report")
  os.makedirs(report_dir, exist_ok=True)
  metrics, base = s["metrics"], s.get("baseline_metrics", {})
  slices = sorted((k for k in metrics if "auc" in metrics[k]), key=_slice_order)
  pngs: List[str] = []

  fig, ax = plt.subplots(figsize=(max(6, len(slices) * 0.9), 3.6))
  x = np.arange(len(slices))
  ax.bar(x - 0.2, [metrics[k]["auc"] for k in slices], 0.4, label="candidate")
  if base:
    ax.bar(x + 0.2, [base.get(k, {}).get("auc", np.nan) for k in slices], 0.4, label="baseline (latest blessed)")
  ax.set_xticks(x, [_label(k) for k in slices], rotation=30, ha="right")
  lo = min(metrics[k]["auc"] for k in slices)
  ax.set_ylim(max(0.0, lo - 0.1), 1.0)
  ax.set_ylabel("AUC")
  ax.legend()
  ax.set_title("AUC per slice")
  pngs.append(_png(fig, os.path.join(report_dir, "auc_per_slice.png")))

  roc, calib = _plots(s["evaluation_uri"])
  if roc is not None:
    fig, ax = plt.subplots(figsize=(4, 4))
    order = np.argsort(roc[0])
    ax.plot(roc[0][order], roc[1][order], label=f"candidate (AUC {metrics['overall']['auc']:.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC (overall)")
    ax.legend(loc="lower right")
    pngs.append(_png(fig, os.path.join(report_dir, "roc.png")))
  if calib is not None and len(calib):
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.scatter(calib[:, 0], calib[:, 1], s=np.clip(calib[:, 2] / calib[:, 2].max() * 120, 5, 120))
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("mean predicted CTR")
    ax.set_ylabel("observed CTR")
    ax.set_title("calibration (overall)")
    pngs.append(_png(fig, os.path.join(report_dir, "calibration.png")))

  attention = sorted(glob.glob(os.path.join(output_dir, "pipeline", "*Trainer", "model_run", "*",
                                            "attention_maps.png")), key=os.path.getmtime)
  blessed = s.get("blessed")
  why = s.get("validation_failures") or []
  rows = "".join(
      f"<tr><td>{html.escape(_label(k))}</td><td>{int(metrics[k].get('example_count', 0))}</td>"
      f"<td>{metrics[k]['auc']:.4f}</td><td>{base.get(k, {}).get('auc', float('nan')):.4f}</td>"
      f"<td>{metrics[k].get('per_user_auc', float('nan')):.4f}</td>"
      f"<td>{metrics[k].get('mean_prediction', float('nan')):.4f}</td>"
      f"<td>{metrics[k].get('mean_label', float('nan')):.4f}</td></tr>"
      for k in slices)
  verdict = ("<p class=ok>Blessed: the candidate passed the AUC floor and did not lose to the latest "
             "blessed model"
             + (" or to the heuristic baselines" if (s.get("baseline_gate") or {}).get("enabled") else "")
             + (f"; pushed to <code>{html.escape(s.get('pushed_to', ''))}</code>" if s.get("pushed") else "")
             + ".</p>") if blessed else (
      "<p class=bad>Not blessed, so not pushed. Failed checks:</p><ul>"
      + "".join(f"<li>{html.escape(f)}</li>" for f in why) + "</ul>")
  baselines = s.get("baselines") or {}
  gate = s.get("baseline_gate") or {}
  baseline_rows = "".join(
      f"<tr><td>{html.escape(name)}{' (best)' if name == baselines.get('best') else ''}</td>"
      f"<td>{m.get('overall', {}).get('auc', float('nan')):.4f}</td>"
      f"<td>{m.get('overall', {}).get('per_user_auc', float('nan')):.4f}</td>"
      f"<td>{m.get('ad_is_cold=1', {}).get('auc', float('nan')):.4f}</td></tr>"
      for name, m in [("this model", metrics)] + sorted(baselines.get("metrics", {}).items()))
  baselines_html = ("<h2>Heuristic baselines</h2><p>Fitted on the training split by BaselineGen and "
                    "evaluated by TFMA on the same eval rows"
                    + (f"; the model needs a per-user AUC of at least {gate['bound']:.4f} (best baseline "
                       f"{html.escape(str(gate['best']))} + margin {gate['margin']:g})" if gate.get("enabled") else
                       "; the baseline gate is off")
                    + ".</p><table><tr><th>model</th><th>AUC</th><th>per-user AUC</th><th>cold-ad AUC</th></tr>"
                    + baseline_rows + "</table>") if baselines else ""
  table = s.get("visual_table")
  table_html = (f"<p>Visual table: {table['rows']} ads x {table['dim']}, coverage of the evaluation "
                f"impressions {table['eval_coverage']:.1%}, serving model {table['serving_model_bytes']:,} bytes.</p>"
                if table else "")
  slice_head = ("<tr><th>slice</th><th>rows</th><th>AUC</th><th>baseline AUC</th><th>per-user AUC</th>"
                "<th>mean prediction</th><th>observed CTR</th></tr>")
  attention_html = (_img_tag(attention[-1], "attention maps") + "<p>Rows: a fixed panel of ads from several "
                    "categories; columns: image, attention map of the last attention module, overlay.</p>"
                    ) if attention else "<p>No attention maps (a variant without spatial attention).</p>"
  page = f"""<!doctype html><html><head><meta charset="utf-8"><title>CSCNN pipeline report</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}td,th{{padding:2px 10px;text-align:right}}
td:first-child{{text-align:left}}.ok{{color:#17692b;font-weight:bold}}.bad{{color:#a11;font-weight:bold}}
img{{max-width:100%;margin:8px 0}}</style></head><body>
<h1>CSCNN pipeline report</h1><p>Run output: <code>{html.escape(s['output'])}</code></p>
{verdict}{table_html}{baselines_html}
<h2>AUC per slice</h2>
<table>{slice_head}{rows}</table>
{''.join(_img_tag(p, os.path.basename(p)) for p in pngs)}
<h2>Spatial attention maps</h2>
{attention_html}
</body></html>"""
  path = os.path.join(report_dir, "index.html")
  with open(path, "w") as f:
    f.write(page)
  return path
