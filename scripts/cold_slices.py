"""The cold-ad comparison of a finished pipeline run at several coldness thresholds: AUC of the
pushed model and of every baseline on eval rows whose ad has fewer than T training positives,
each with its Hanley-McNeil standard error, and the model's paired gain over the best baseline
with a bootstrap interval (rows resampled within positives and within negatives).

  bin/env python scripts/cold_slices.py --run OUT --data DATA [--model SAVEDMODEL] [--against SAVEDMODEL]
      [--thresholds 5,10,20,40]

The pipeline's own cold slice is T = 5 (the paper's definition, `spec.features.COLD_THRESHOLD`).
At a few thousand users few held-out positives fall below it, so one slice cannot tell the model
and the baselines apart; the wider thresholds show whether the gap is one of coldness or of noise.
OUT is a `cscnn pipeline run --output` folder; DATA the data folder it ran on (its training CSV
gives the positives per ad). Both models score ExampleGen's eval split through `serving_default`.
"""

from __future__ import annotations

import argparse
import collections
import csv
import glob
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _one(pattern: str) -> str:
  found = sorted(glob.glob(pattern))
  if not found:
    raise SystemExit(f"nothing matches {pattern}: is --run a finished `pipeline run --output` folder?")
  return found[-1]


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
  """Mann-Whitney AUC with ties counted as one half."""
  from scipy.stats import rankdata
  pos = labels == 1
  n_pos, n_neg = int(pos.sum()), int((~pos).sum())
  if n_pos == 0 or n_neg == 0:
    return float("nan")
  ranks = rankdata(scores)
  return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def paired_interval(a: np.ndarray, b: np.ndarray, labels: np.ndarray, rounds: int, seed: int = 0):
  """5th and 95th percentile of AUC(a) - AUC(b) over stratified bootstrap resamples of the rows."""
  rng = np.random.default_rng(seed)
  pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
  if len(pos) == 0 or len(neg) == 0:
    return float("nan"), float("nan")
  diffs = []
  for _ in range(rounds):
    idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
    diffs.append(auc(a[idx], labels[idx]) - auc(b[idx], labels[idx]))
  return float(np.percentile(diffs, 5)), float(np.percentile(diffs, 95))


def train_positives(data: str, spec) -> collections.Counter:
  paths = sorted(glob.glob(os.path.join(data, "impressions", "train", "*.csv")))
  if not paths:
    raise SystemExit(f"no {data}/impressions/train/*.csv: the script needs the pre-split layout")
  counts = collections.Counter()
  for path in paths:
    with open(path, newline="") as f:
      for row in csv.DictReader(f):
        if int(row[spec.label]) == 1:
          counts[row[spec.ad]] += 1
  return counts


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--run", required=True, help="a `cscnn pipeline run --output` folder")
  ap.add_argument("--data", required=True, help="the data folder the run read")
  ap.add_argument("--model", help="the SavedModel to score (default: the run's latest pushed version)")
  ap.add_argument("--thresholds", default="5,10,20,40", help="cold: fewer than T training positives")
  ap.add_argument("--against", help="another SavedModel (e.g. the same run without images): the gain "
                  "column compares the model with it instead of the best baseline")
  ap.add_argument("--bootstrap", type=int, default=500, help="resamples for the paired interval")
  args = ap.parse_args()
  thresholds = [int(t) for t in args.thresholds.split(",")]
  import tensorflow as tf

  from spec.features import DEFAULT_SPEC
  from spec.files import DATA_SPEC_FILE, load
  from spec.names import OUTPUT_KEY
  from tfx_pipeline.metrics import auc_standard_error

  spec_path = os.path.join(args.data, DATA_SPEC_FILE)
  spec = load(spec_path) if os.path.exists(spec_path) else DEFAULT_SPEC
  pipeline = os.path.join(args.run, "pipeline")
  files = glob.glob(os.path.join(_one(os.path.join(pipeline, "CsvExampleGen", "examples", "*")), "Split-eval", "*"))
  rows = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]
  parsed = [tf.train.Example.FromString(r).features.feature for r in rows]
  labels = np.array([p[spec.label].int64_list.value[0] for p in parsed])
  ads = [p[spec.ad].bytes_list.value[0].decode() for p in parsed]
  counts = train_positives(args.data, spec)
  ad_positives = np.array([counts.get(a, 0) for a in ads])

  models = {"model": args.model or _one(os.path.join(args.run, "serving", "*", "*"))}
  if args.against:
    models["against"] = args.against
  baselines = _one(os.path.join(pipeline, "BaselineGen", "baselines", "*"))
  for kind in sorted(os.listdir(baselines)):
    if os.path.exists(os.path.join(baselines, kind, "saved_model.pb")):
      models[kind] = os.path.join(baselines, kind)
  scores = {}
  batch = 4096
  for name, path in models.items():
    fn = tf.saved_model.load(path).signatures["serving_default"]
    out = []
    for i in range(0, len(rows), batch):
      res = fn(examples=tf.constant(rows[i:i + batch]))
      out.append(res[OUTPUT_KEY].numpy().reshape(-1))
    scores[name] = np.concatenate(out)
    print(f"scored {len(rows):,} eval rows with {name} ({path})", file=sys.stderr)

  names = list(models)
  print(f"run {args.run}; {len(rows):,} eval rows, {int(labels.sum()):,} positives")
  reference = "against" if args.against else "best baseline"
  print("| cold: fewer than T training positives | rows | positives | "
        + " | ".join(names) + f" | model - {reference} [90% bootstrap] |")
  print("|---" * (len(names) + 4) + "|")
  for t in thresholds + [None]:
    sel = ad_positives < t if t is not None else np.ones(len(rows), bool)
    y = labels[sel]
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    aucs = {n: auc(scores[n][sel], y) for n in names}
    cells = [f"{aucs[n]:.4f} ± {auc_standard_error(aucs[n], n_pos, n_neg):.3f}" for n in names]
    base = ["against"] if args.against else [n for n in names if n != "model"]
    best = max(base, key=lambda n: aucs[n]) if base else None
    gain = ""
    if best is not None:
      lo, hi = paired_interval(scores["model"][sel], scores[best][sel], y, args.bootstrap)
      gain = f"{aucs['model'] - aucs[best]:+.4f} over {best} [{lo:+.4f}, {hi:+.4f}]"
    label = f"T = {t}" if t is not None else "all rows"
    print(f"| {label} | {len(y):,} | {n_pos:,} | " + " | ".join(cells) + f" | {gain} |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
